"""The answer service behind the HTTP layer: generator, scheduler, strategies or agent.

Every answer request becomes a scheduler session; its strategy (picked by the agent's
policy for ``auto`` when the agent is available) runs on a session thread with the
scheduler's generator proxy and retriever wrappers.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

from searchagent.config import Config
from searchagent.errors import BackendError, ConflictError, SearchAgentError
from searchagent.generators.base import GenRequest
from searchagent.strategies.base import ARMS
from searchagent.scheduler import (ScheduledSearcher, Scheduler, SchedulerOptions, Session,
                                   schedule_strategy)

FALLBACK_ARM = "single"
DELIVERIES_KEPT = 10_000       # request ids whose delivery is remembered for feedback
ANSWERING = "answering"


class UnavailableGenerator:
    """Stands in for a generator that could not be built; every call says why."""

    name = "unavailable"

    def __init__(self, reason: str):
        self.reason = reason

    def generate(self, requests):
        raise BackendError(self.reason)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)


class AnswerService:
    def __init__(self, searcher: Any, config: Config, generator: Any = None,
                 use_agent: bool = True):
        self.config, self.searcher = config, searcher
        self.backend_error: str | None = None
        self.warm_up_error: str | None = None
        if generator is None:
            generator = self._build_generator()
        self.backend = generator
        self.scheduler = Scheduler(generator, SchedulerOptions.from_server_config(config.server))
        self.scheduled_searcher = ScheduledSearcher(searcher, self.scheduler)
        self._strategies: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.agent = self._build_agent() if use_agent else None
        self.draining = False
        self._deliveries: OrderedDict[str, int | str] = OrderedDict()  # id -> status

    def _build_generator(self) -> Any:
        from searchagent.generators.factory import make_generator

        try:
            return make_generator(self.config.generator, sessions=self.config.server.sessions)
        except BackendError as exc:
            self.backend_error = f"generator backend unavailable: {exc}"
            return UnavailableGenerator(self.backend_error)

    def _build_agent(self) -> Any:
        """The agent (policy picks the arm for ``auto``), its strategies pre-built over the
        scheduler's searcher and generator so their retrieval goes through the scheduler."""
        if importlib.util.find_spec("searchagent.agent") is None:
            return None
        from searchagent.agent import Agent

        agent = Agent(self.scheduled_searcher, self.scheduler.generator, self.config)
        for arm in ARMS:
            agent.strategies[arm] = self.strategy(arm)
        return agent

    # ---- readiness --------------------------------------------------------------------
    def warm_up(self, timeout_s: float = 30.0) -> None:
        """One tiny generation through the scheduler, to find a dead backend early."""
        session = Session(id="warm-up", deadline=time.monotonic() + timeout_s)
        request = GenRequest(messages=[{"role": "system", "content": "Reply with one word."},
                                       {"role": "user", "content": "Ready?"}],
                             max_new_tokens=1, session="")
        future = self.scheduler.submit(session, lambda s: self.scheduler.generator.generate(
            [request]))
        try:
            future.result(timeout=timeout_s + 1)
        except BackendError:
            pass                   # the scheduler keeps it as last_backend_error (/readyz)
        except Exception as exc:  # noqa: BLE001 -- reported by /readyz
            self.warm_up_error = f"generator warm-up failed: {type(exc).__name__}: {exc}"

    def readiness(self) -> tuple[bool, str]:
        """Ready unless shutting down, the generator is missing, or its last call failed
        (the scheduler clears that on the next success)."""
        if self.draining:
            return False, "shutting down"
        if self.backend_error:
            return False, self.backend_error
        if self.warm_up_error and not self.scheduler.stats.counters["generations_total"]:
            return False, self.warm_up_error       # until a generation has succeeded
        if self.scheduler.last_backend_error:
            return False, f"generator backend unavailable: {self.scheduler.last_backend_error}"
        return True, "ready"

    # ---- answering --------------------------------------------------------------------
    def strategy(self, arm: str) -> Any:
        from searchagent.strategies.factory import make_strategy

        with self._lock:
            if arm not in self._strategies:
                built = make_strategy(arm, self.scheduled_searcher, self.scheduler.generator,
                                      self.config)
                self._strategies[arm] = schedule_strategy(built, self.scheduler)
            return self._strategies[arm]

    def start(self, session_id: str, question: str, arm: str, ctx: dict,
              deadline: float) -> tuple[Session, Future]:
        """Admit one question as a session; the future resolves to an ``Answer``."""
        session = Session(id=session_id, deadline=deadline)
        ctx = {**ctx, "session": session_id, "request_id": session_id,
               "on_step": session.record,
               "budget": {"deadline": deadline, "cancel": session.cancel}}

        def work(session: Session):
            started = time.monotonic()
            try:
                if self.agent is not None:
                    return self.agent.answer(question, strategy=arm, ctx=ctx)
                return self.strategy(FALLBACK_ARM if arm == "auto" else arm).run(question, ctx)
            finally:
                session.run_s = time.monotonic() - started
        future = self.scheduler.submit(session, work)
        self.delivered(session_id, ANSWERING)
        return session, future

    def delivered(self, request_id: str, status: int | str) -> None:
        """Note what the client got for a request: its HTTP status (``ANSWERING`` until
        then); feedback is taken only for a delivered answer (200)."""
        with self._lock:
            self._deliveries[request_id] = status
            self._deliveries.move_to_end(request_id)
            while len(self._deliveries) > DELIVERIES_KEPT:
                self._deliveries.popitem(last=False)

    def feedback(self, request_id: str, gold: str | None, reward: float | None) -> dict:
        """Hand feedback to the agent (its online policy learns from it). An unknown id
        raises InputError naming ``request_id``; a request still being answered, or one
        whose client got no answer (504, 499, an error), raises ConflictError."""
        if self.agent is None:
            raise SearchAgentError("this server runs without an agent (serve --no-agent), "
                                   "so there is no policy to give feedback to")
        with self._lock:
            status = self._deliveries.get(request_id)
        if status == ANSWERING:
            raise ConflictError(f"request {request_id} is still being answered: give "
                                "feedback once its answer has arrived", field="request_id")
        if status not in (None, 200):
            raise ConflictError(f"request {request_id} ended with status {status}, so no "
                                "answer reached the client to give feedback on",
                                field="request_id")
        return self.agent.feedback(request_id, gold=gold, reward=reward)

    def close(self, drain: bool = True) -> None:
        """Stop the scheduler (``drain``: after the running sessions), then the agent: its
        online learner saves the policy with the feedback taken since the last snapshot
        and closes its decision journal."""
        self.draining = True
        self.scheduler.stop(drain=drain)
        if self.agent is not None:
            self.agent.close()
