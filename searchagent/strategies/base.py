"""The Strategy protocol and the Answer every strategy returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

ARMS = ("parametric", "single", "multi")


@dataclass
class Step:
    """One traced step: kind is 'generate' or 'retrieve'."""

    kind: str
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Answer:
    answer: str
    strategy: str
    passages: list[dict] = field(default_factory=list)   # {id, title, score}
    retrieval_calls: int = 0
    hops: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    confidence: float | None = None                       # mean token log-probability
    trace: list[Step] = field(default_factory=list)


@runtime_checkable
class Strategy(Protocol):
    name: str

    def run(self, question: str, ctx: "dict | None" = None) -> Answer:
        ...
