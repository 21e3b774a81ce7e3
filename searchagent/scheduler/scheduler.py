"""The scheduler: session threads, one generation worker, a retrieval executor, non-stall.

Every request is a session running its strategy on a session thread. The strategy's
generator is a proxy (``proxy.py``) that puts each call into the request queue and
blocks; the single generation worker pops calls in queue order (batched up to
``max_batch`` when the backend batches) and completes them; for a backend that serves
calls concurrently (an OpenAI-compatible server, which batches them itself) it dispatches
each call as a slot frees, up to the backend's ``max_parallel`` in flight. Retrieval runs on the
retrieval executor (``retrieval.py``), so while one session retrieves the worker serves
the others. Non-stall: when the worker finds the queue empty while retrievals have run
past ``retrieval_budget_s``, it sets their cancel events and they return best-so-far.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from searchagent.errors import BackendError, BatchErrors
from searchagent.scheduler.proxy import SchedulingGenerator
from searchagent.scheduler.queues import PriorityWeights, Ticket, make_queue
from searchagent.scheduler.session import Session
from searchagent.scheduler.stats import SchedulerStats

IDLE_POLL_S = 0.05
CONCURRENT_BACKENDS = ("openai",)


@dataclass
class SchedulerOptions:
    queue: str = "priority"               # fcfs | priority
    non_stall: bool = True
    sessions: int = 16                    # sessions running at once (session threads)
    max_batch: int = 8                    # generation calls per backend call, if it batches
    retrieval_budget_s: float = 0.05      # non-stall: retrievals past this may be cut
    retrieval_workers: int = 2
    weights: PriorityWeights = field(default_factory=PriorityWeights)

    @classmethod
    def from_server_config(cls, server) -> "SchedulerOptions":
        return cls(queue=server.scheduler, non_stall=server.non_stall,
                   sessions=server.sessions, max_batch=server.max_batch,
                   retrieval_budget_s=server.retrieval_budget_ms / 1000.0,
                   retrieval_workers=server.retrieval_workers)


@dataclass
class RetrievalHandle:
    session: Session
    started: float
    cancel: threading.Event = field(default_factory=threading.Event)
    cut: bool = False                     # cancelled by the non-stall rule


def backend_batch_size(backend: Any, wanted: int) -> int:
    """How many calls one ``generate`` may carry. A backend that decodes a list one by one
    (llama.cpp here) gets 1: batching it would only make early calls wait for late ones.
    The transformers backend pads a list into one batch (its ``batch_size``); a concurrent
    backend (``calls_in_flight``) gets 1 per dispatch, several dispatches at once; any
    backend may state its own ``max_batch``."""
    limit = getattr(backend, "max_batch", None) or getattr(backend, "batch_size", None) or 1
    return max(1, min(wanted, int(limit)))


def calls_in_flight(backend: Any) -> int:
    """How many ``generate`` calls may run at once: the backend's ``max_parallel`` for one
    that sends each call to a server (which batches them itself), else 1."""
    if getattr(backend, "name", "") in CONCURRENT_BACKENDS:
        return max(1, int(getattr(backend, "max_parallel", 1)))
    return 1


class Scheduler:
    def __init__(self, backend: Any, options: SchedulerOptions | None = None):
        self.backend = backend
        self.options = options or SchedulerOptions()
        self.queue = make_queue(self.options.queue, self.options.weights)
        self.batch_size = backend_batch_size(backend, self.options.max_batch)
        in_flight = calls_in_flight(backend)
        self._slots = threading.BoundedSemaphore(in_flight)
        self._dispatch = ThreadPoolExecutor(in_flight, "generation") if in_flight > 1 else None
        self.stats = SchedulerStats()
        self.generator = SchedulingGenerator(self)
        self.last_backend_error: str | None = None
        self._cond = threading.Condition()
        self._retrievals: dict[int, RetrievalHandle] = {}
        self._sessions: dict[str, Session] = {}
        self._local = threading.local()
        self._stopping = False
        self._session_pool = ThreadPoolExecutor(self.options.sessions, "session")
        self.retrieval_pool = ThreadPoolExecutor(self.options.retrieval_workers, "retrieval")
        self._worker = threading.Thread(target=self._run_worker, name="generation-worker",
                                        daemon=True)
        self._worker.start()

    # ---- sessions -------------------------------------------------------------------
    def submit(self, session: Session, work: Callable[[Session], Any]) -> Future:
        """Run ``work(session)`` on a session thread; generation/retrieval inside it is
        attributed to ``session``."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("scheduler is stopping")
            self._sessions[session.id] = session

        def run() -> Any:
            session.session_wait_s = time.monotonic() - session.started
            self._local.session = session
            self.stats.session(+1)
            try:
                session.check()
                return work(session)
            finally:
                self._local.session = None
                self.stats.session(-1)
                with self._cond:
                    self._sessions.pop(session.id, None)

        future = self._session_pool.submit(run)
        future.add_done_callback(lambda f: self._forget(session, f))
        return future

    def _forget(self, session: Session, future: Future) -> None:
        if future.cancelled():
            with self._cond:
                self._sessions.pop(session.id, None)

    def session_for(self, session_id: str = "") -> Session:
        """The session a generation/retrieval call belongs to (by id, else this thread's)."""
        if session_id:
            with self._cond:
                found = self._sessions.get(session_id)
            if found is not None:
                return found
        current = getattr(self._local, "session", None)
        return current if current is not None else Session(id=session_id or "adhoc")

    # ---- generation -----------------------------------------------------------------
    def enqueue(self, tickets: list[Ticket]) -> None:
        with self._cond:
            if self._stopping and not self._worker.is_alive():
                raise RuntimeError("scheduler is stopped")
            for ticket in tickets:
                self.queue.push(ticket)
            self._cond.notify_all()

    def _run_worker(self) -> None:
        while True:
            self._slots.acquire()           # a call in flight fewer than the backend allows
            with self._cond:
                batch = self.queue.pop_batch(self.batch_size, time.monotonic())
                while not batch:
                    if self._stopping:
                        self._slots.release()
                        return
                    wait = self._cut_stalled_retrievals() if self.options.non_stall \
                        else IDLE_POLL_S
                    self._cond.wait(timeout=wait)
                    batch = self.queue.pop_batch(self.batch_size, time.monotonic())
            try:
                if self._dispatch is not None:
                    self._dispatch.submit(self._serve, batch)
                    continue
            except RuntimeError:            # shut down by stop(): serve it here instead
                pass
            self._serve(batch)

    def _serve(self, batch: list[Ticket]) -> None:
        try:
            self._complete(batch)
        finally:
            self._slots.release()

    def _complete(self, batch: list[Ticket]) -> None:
        start = time.monotonic()
        for ticket in batch:
            ticket.started = start
        self.stats.generator(True)
        try:
            outcomes = self.backend.generate([t.request for t in batch])
        except BatchErrors as exc:           # some requests failed, each with its own error
            outcomes = exc.outcomes
        except BaseException as exc:  # noqa: BLE001 -- handed to the waiting sessions
            outcomes = [exc] * len(batch)
        self.stats.generator(False)
        served = [(t, o) for t, o in zip(batch, outcomes) if not isinstance(o, BaseException)]
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        self.stats.bump("generation_errors_total", len(failed))
        if served:                          # the backend answered: it is up
            self.last_backend_error = None
            self.stats.batch([start - t.enqueued for t, _ in served], [o for _, o in served])
        elif any(isinstance(o, BackendError) for o in failed):
            self.last_backend_error = str(next(o for o in failed if isinstance(o, BackendError)))
        for ticket, outcome in zip(batch, outcomes):
            if isinstance(outcome, BaseException):
                ticket.finish(error=outcome)
            else:
                ticket.finish(result=outcome)

    # ---- retrieval and non-stall ----------------------------------------------------
    def retrieval_begin(self, session: Session) -> RetrievalHandle:
        handle = RetrievalHandle(session, time.monotonic())
        with self._cond:
            self._retrievals[id(handle)] = handle
            self._cond.notify_all()          # an idle worker re-times its non-stall check
        self.stats.retrieval(+1)
        return handle

    def retrieval_end(self, handle: RetrievalHandle, seconds: float, partial: bool) -> None:
        with self._cond:
            self._retrievals.pop(id(handle), None)
        self.stats.retrieval(-1, seconds, partial)

    def _cut_stalled_retrievals(self) -> float:
        """Called by the idle worker (lock held): cancel retrievals past the budget;
        return how long to wait before looking again."""
        now, budget, wait = time.monotonic(), self.options.retrieval_budget_s, IDLE_POLL_S
        for handle in self._retrievals.values():
            over = now - handle.started - budget
            if over >= 0 and not handle.cancel.is_set():
                handle.cancel.set()
                handle.cut = True
                self.stats.bump("nonstall_cuts_total")
            elif over < 0:
                wait = min(wait, -over)
        return max(wait, 0.001)

    # ---- lifecycle ------------------------------------------------------------------
    def pending(self) -> dict[str, int]:
        with self._cond:
            return {"queued": len(self.queue), "sessions": len(self._sessions),
                    "retrievals": len(self._retrievals)}

    def stop(self, drain: bool = True) -> None:
        """Stop taking sessions; with ``drain`` finish the running ones first."""
        if not drain:
            with self._cond:
                for session in self._sessions.values():
                    session.cancel.set()
        self._session_pool.shutdown(wait=True, cancel_futures=not drain)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._worker.join(timeout=30)
        if self._dispatch is not None:
            self._dispatch.shutdown(wait=False)
        self.retrieval_pool.shutdown(wait=False, cancel_futures=True)
