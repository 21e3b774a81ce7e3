"""One request's agent session: its progress (for priority), its cancel switch and its trace.

The trace is recorded by the scheduler's generator proxy and retriever wrapper as steps
happen, so a request cut by its deadline can still return what it did (the 504 body),
and a streaming client can receive each step as it is recorded.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


class SessionCancelled(Exception):
    """The session's request was abandoned (deadline passed or server stopping)."""


@dataclass
class Session:
    id: str
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None                  # a time.monotonic() instant
    cancel: threading.Event = field(default_factory=threading.Event)
    retrievals: int = 0
    generations: int = 0
    context_tokens: int = 0
    session_wait_s: float = 0.0                    # admitted, waiting for a session thread
    queue_wait_s: float = 0.0                      # generation calls waiting in the queue
    run_s: float | None = None                     # its work's run time, once finished
    generate_s: float = 0.0
    retrieve_s: float = 0.0
    partial_retrievals: int = 0
    events: list[dict] = field(default_factory=list)
    listener: Callable[[dict], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, kind: str, **detail: Any) -> dict:
        event = {"kind": kind, "t": round(time.monotonic() - self.started, 4), **detail}
        with self._lock:
            self.events.append(event)
            listener = self.listener
        if listener is not None:
            listener(event)
        return event

    def trace(self) -> list[dict]:
        with self._lock:
            return list(self.events)

    def expired(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.deadline is not None and now >= self.deadline

    def check(self) -> None:
        """Raise SessionCancelled if the session was cancelled or ran past its deadline."""
        if self.cancel.is_set() or self.expired():
            self.cancel.set()
            raise SessionCancelled(f"session {self.id} was cancelled")

    def remaining(self, now: float | None = None) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))

    def timings(self) -> dict[str, float | int]:
        return {"total_s": round(time.monotonic() - self.started, 4),
                "session_wait_s": round(self.session_wait_s, 4),
                "queue_wait_s": round(self.queue_wait_s, 4),
                "generate_s": round(self.generate_s, 4),
                "retrieve_s": round(self.retrieve_s, 4),
                "generations": self.generations, "retrievals": self.retrievals,
                "partial_retrievals": self.partial_retrievals}
