"""The small protocols at the stage boundaries (see DESIGN.md, "Boundaries")."""

from __future__ import annotations

import threading
import time
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
               deadline: float | None = None, cancel: threading.Event | None = None
               ) -> tuple[np.ndarray, np.ndarray, SearchStats]:
        """``deadline`` / ``cancel``: stop early where the index can (SPANN between
        posting reads; a FAISS call runs to its end) and say so in ``stats.partial``."""
        ...


@runtime_checkable
class Retriever(Protocol):
    """Text in, ranked passages out. ``budget`` may carry a deadline or candidate cap."""

    def search(self, query: str, k: int, *, budget: dict | None = None) -> list[Hit]:
        ...


def search_with_stats(retriever: Any, query: str, k: int, *, budget: dict | None = None,
                      exclude: Any = ()) -> tuple[list[Hit], dict]:
    """``retriever.search_with_stats`` where it has one; else its ``search``, asked for
    ``len(exclude)`` more, with the ``exclude`` rows left out, and no stats."""
    if hasattr(retriever, "search_with_stats"):
        return retriever.search_with_stats(query, k, budget=budget, exclude=exclude)
    hits = retriever.search(query, k + len(exclude), budget=budget)
    return [h for h in hits if h.row not in exclude][:k], {}


def budget_spent(budget: dict | None) -> bool:
    """A search budget's ``cancel`` event fired or its ``deadline`` (a
    ``time.monotonic()`` instant) passed."""
    budget = budget or {}
    cancel, deadline = budget.get("cancel"), budget.get("deadline")
    return bool((cancel is not None and cancel.is_set())
                or (deadline is not None and time.monotonic() > deadline))
