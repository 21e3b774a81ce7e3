"""The Generator protocol: batched requests in, results with token accounting out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable


@dataclass
class GenRequest:
    """One chat-style generation request; ``messages`` are OpenAI-style dicts."""

    messages: list[dict]
    max_new_tokens: int = 48
    temperature: float = 0.0
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    session: str = ""          # lets a backend reuse a session's KV prefix between hops


@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    token_logprobs: list[float] | None = None

    @property
    def mean_logprob(self) -> float | None:
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        ...

    def count_tokens(self, text: str) -> int:
        ...
