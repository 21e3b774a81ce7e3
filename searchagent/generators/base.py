"""The Generator protocol: batched requests in, results with token accounting out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from searchagent.errors import InputError


@dataclass
class GenRequest:
    """One chat-style generation request; ``messages`` are OpenAI-style dicts.

    A final ``assistant`` message is a prefill: the reply continues that text (and the
    result holds only the continuation)."""

    messages: list[dict]
    max_new_tokens: int = 48
    temperature: float = 0.0
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    session: str = ""          # lets a backend reuse a session's KV prefix between hops
    cancel: Any = field(default=None, repr=False, compare=False)
    """A ``threading.Event``: once set, the backend stops decoding and returns the text
    so far with ``finish_reason`` "cancelled" (the request was cut or abandoned)."""

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    token_logprobs: list[float] | None = None
    cached_tokens: int = 0     # prompt tokens whose KV state was reused, not recomputed
    finish_reason: str = ""    # "stop" (end of turn or stop string) | "length" | "cancelled"

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


def check_request(request: GenRequest, index: int = 0) -> None:
    """Reject malformed requests with the field named (shared by every backend)."""
    where = f"requests[{index}]"
    if not isinstance(request, GenRequest):
        raise InputError(f"expected a GenRequest, got {type(request).__name__}", field=where)
    if not request.messages:
        raise InputError("no messages", field=f"{where}.messages")
    for i, message in enumerate(request.messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
                or message.get("role") not in ("system", "user", "assistant"):
            raise InputError("each message needs a role (system|user|assistant) and string "
                             "content", field=f"{where}.messages[{i}]")
    if request.max_new_tokens <= 0:
        raise InputError(f"must be positive, got {request.max_new_tokens}",
                         field=f"{where}.max_new_tokens")
    if request.temperature < 0:
        raise InputError(f"must be >= 0, got {request.temperature}",
                         field=f"{where}.temperature")


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Text up to the earliest stop string, and whether one was found.

    A stop string lying wholly inside the text's leading whitespace does not count: a model
    that opens its reply with a blank line (SmolLM2 often does after the prefilled answer
    marker) would otherwise return an empty answer under the strategies' ``stop=["\\n"]``."""
    lead = len(text) - len(text.lstrip())
    cut = min((pos for pos in (_find_after(text, s, lead) for s in stops if s) if pos >= 0),
              default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _find_after(text: str, stop: str, lead: int) -> int:
    """First position of ``stop`` in ``text`` that does not end within ``text[:lead]``."""
    pos = text.find(stop)
    while 0 <= pos and pos + len(stop) <= lead:
        pos = text.find(stop, pos + 1)
    return pos


def split_prefill(messages: list[dict]) -> tuple[list[dict], str]:
    """``(conversation, prefill)``: a trailing assistant message is text to continue."""
    if messages and messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, ""
