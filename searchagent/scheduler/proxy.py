"""The Generator that strategies see: each call joins the scheduler's queue and blocks.

It attributes the call to its session (``GenRequest.session`` or the session thread),
keeps the session's context length current for the priority queue, and records each
call (queue wait, tokens, seconds) in the session's trace.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

from searchagent.generators.base import GenRequest, GenResult
from searchagent.scheduler.queues import Ticket
from searchagent.scheduler.session import SessionCancelled

if TYPE_CHECKING:
    from searchagent.scheduler.scheduler import Scheduler

CANCEL_POLL_S = 0.05


def estimate_tokens(request: GenRequest) -> int:
    """A cheap context-length estimate (about 4 characters a token) before the real count."""
    return sum(len(str(m.get("content", ""))) for m in request.messages) // 4


class SchedulingGenerator:
    """Generator protocol over the scheduler; safe to share between session threads."""

    def __init__(self, scheduler: "Scheduler"):
        self._scheduler = scheduler
        self.name = f"scheduled:{getattr(scheduler.backend, 'name', 'generator')}"

    def __getattr__(self, name: str):
        # backend extras a strategy may read (e.g. the context size); never generate().
        return getattr(self._scheduler.backend, name)

    def count_tokens(self, text: str) -> int:
        return self._scheduler.backend.count_tokens(text)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        requests = list(requests)
        if not requests:
            return []
        session = self._scheduler.session_for(requests[0].session)
        session.check()
        for request in requests:
            request.session = request.session or session.id
            if request.cancel is None:     # a cut session stops decoding mid-call
                request.cancel = session.cancel
        session.context_tokens = max(session.context_tokens,
                                     max(estimate_tokens(r) for r in requests))
        enqueued = time.monotonic()
        tickets = [Ticket(r, session, enqueued) for r in requests]
        self._scheduler.enqueue(tickets)
        for ticket in tickets:
            while not ticket.done.wait(CANCEL_POLL_S):
                if session.cancel.is_set() or session.expired():
                    for other in tickets:
                        other.abandoned = True
                    session.cancel.set()
                    raise SessionCancelled(f"session {session.id} ran past its deadline "
                                           "while waiting for the generator")
        for ticket in tickets:
            if ticket.error is not None:
                raise ticket.error
        finished = time.monotonic()
        results = [t.result for t in tickets]
        wait = max(t.started - t.enqueued for t in tickets)
        seconds = finished - min(t.started for t in tickets)
        session.generations += len(results)
        session.queue_wait_s += wait
        session.generate_s += seconds
        session.context_tokens = max(r.prompt_tokens + r.completion_tokens for r in results)
        session.record("generate", queue_wait_s=round(wait, 4), seconds=round(seconds, 4),
                       prompt_tokens=sum(r.prompt_tokens for r in results),
                       completion_tokens=sum(r.completion_tokens for r in results),
                       text=results[-1].text[:300])
        return results
