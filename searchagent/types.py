"""The small protocols at the stage boundaries (see DESIGN.md, "Boundaries")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Passage:
    """One unit of the corpus as stored in the doc store."""

    id: str
    title: str
    text: str


@dataclass
class Hit:
    """One retrieved passage with its score; ``row`` is the index-internal integer id."""

    id: str
    score: float
    title: str
    text: str
    row: int = -1


@dataclass
class SearchStats:
    """What one vector-index search spent; ``partial`` means a deadline or cancel cut it."""

    seconds: float = 0.0
    partial: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class VectorIndex(Protocol):
    """Inner-product search over normalized vectors; ids are rows of the doc store."""

    dim: int

    def search(self, queries: np.ndarray, k: int, *, params: dict | None = None,
               deadline: float | None = None) -> tuple[np.ndarray, np.ndarray, SearchStats]:
        ...


@runtime_checkable
class Retriever(Protocol):
    """Text in, ranked passages out. ``budget`` may carry a deadline or candidate cap."""

    def search(self, query: str, k: int, *, budget: dict | None = None) -> list[Hit]:
        ...
