"""Generation request queues: one interface, FCFS and priority implementations, one factory.

The priority queue follows SearchAgent-X: a waiting generation call gets a *level* from
its session's progress (retrieval rounds done), age and context length -- sessions that
are further along, older and hold more context go first, so they finish and free their
state -- and within a level the call that has waited longest goes first. Levels are
recomputed at every pop because age grows while a call waits.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from searchagent.errors import InputError

if TYPE_CHECKING:
    from searchagent.scheduler.session import Session

QUEUE_KINDS = ("fcfs", "priority")


@dataclass
class Ticket:
    """One generation call waiting for the worker; ``done`` is set once it has a result."""

    request: Any
    session: "Session"
    enqueued: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    started: float | None = None
    abandoned: bool = False        # the session gave up (deadline); the worker skips it

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


@dataclass(frozen=True)
class PriorityWeights:
    """How a session's progress maps to a level (higher level = served first)."""

    per_round: int = 1              # +1 level per retrieval round done
    age_step_s: float = 2.0         # +1 level per this many seconds of session age
    context_step: int = 512         # +1 level per this many context tokens
    max_level: int = 8


def priority_level(ticket: Ticket, now: float, weights: PriorityWeights) -> int:
    session = ticket.session
    level = weights.per_round * session.retrievals
    if weights.age_step_s > 0:
        level += int((now - session.started) / weights.age_step_s)
    if weights.context_step > 0:
        level += session.context_tokens // weights.context_step
    return min(level, weights.max_level)


class RequestQueue(abc.ABC):
    """Waiting generation calls. Not thread-safe: the scheduler holds its lock around calls."""

    kind: str

    def __init__(self) -> None:
        self._items: list[Ticket] = []

    def __len__(self) -> int:
        return len(self._items)

    def push(self, ticket: Ticket) -> None:
        self._items.append(ticket)

    def pop_batch(self, max_items: int, now: float) -> list[Ticket]:
        """Remove and return up to ``max_items`` tickets in service order (abandoned dropped)."""
        self._items = [t for t in self._items if not t.abandoned]
        if not self._items:
            return []
        order = self._order(now)
        chosen = set(order[:max_items])
        batch = [self._items[i] for i in order[:max_items]]
        self._items = [t for i, t in enumerate(self._items) if i not in chosen]
        return batch

    def oldest_wait(self, now: float) -> float:
        return max((now - t.enqueued for t in self._items), default=0.0)

    @abc.abstractmethod
    def _order(self, now: float) -> list[int]:
        """Indices of ``self._items`` in the order they should be served."""


class FCFSQueue(RequestQueue):
    """First come, first served."""

    kind = "fcfs"

    def _order(self, now: float) -> list[int]:
        return sorted(range(len(self._items)), key=lambda i: self._items[i].enqueued)


class PriorityQueue(RequestQueue):
    """Highest level first; within a level, longest wait first."""

    kind = "priority"

    def __init__(self, weights: PriorityWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or PriorityWeights()

    def _order(self, now: float) -> list[int]:
        key: Callable[[int], tuple] = lambda i: (  # noqa: E731
            -priority_level(self._items[i], now, self.weights), self._items[i].enqueued)
        return sorted(range(len(self._items)), key=key)


def make_queue(kind: str, weights: PriorityWeights | None = None) -> RequestQueue:
    if kind == "fcfs":
        return FCFSQueue()
    if kind == "priority":
        return PriorityQueue(weights)
    raise InputError(f"unknown scheduler queue {kind!r} (choose from {', '.join(QUEUE_KINDS)})",
                     field="server.scheduler")
