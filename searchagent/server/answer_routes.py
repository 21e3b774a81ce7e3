"""``POST /v1/answer`` and ``POST /v1/answer/stream`` (server-sent events).

Each request is admitted first (``limits.Admission``: 429 with ``Retry-After`` when it would
not finish within ``server.request_timeout_s``, 503 while draining), then runs as one
session of the ``AnswerService``'s scheduler; a session past its deadline ends in a 504 with
its trace so far. Failures map to statuses in ``outcome``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from searchagent.config import Config
from searchagent.errors import BackendError, InputError, SearchAgentError
from searchagent.scheduler import SessionCancelled
from searchagent.server import openapi
from searchagent.server.limits import Admission
from searchagent.server.models import AnswerRequest, AnswerResponse
from searchagent.server.responses import error, invalid_input, plain
from searchagent.server.service import AnswerService


CLIENT_CLOSED = 499                # nginx's status for a request its client abandoned


def settled(future) -> asyncio.Future:
    """The session's future on this loop, its exception marked as retrieved even when
    nobody awaits it any more (after a 504), so asyncio logs no stray traceback."""
    wrapped = asyncio.wrap_future(future)
    wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())
    return wrapped


async def client_gone(request: Request, period_s: float = 0.2) -> None:
    """Returns once the client has closed the connection."""
    while not await request.is_disconnected():
        await asyncio.sleep(period_s)


def request_kind(body: AnswerRequest) -> tuple:
    """What a request's demand depends on: its strategy, and the k (rounded up to a power
    of two) and hops that strategy uses."""
    k = None if body.k is None else 1 << (body.k - 1).bit_length()
    if body.strategy == "parametric":
        return (body.strategy,)
    if body.strategy == "single":
        return (body.strategy, k)
    return (body.strategy, k, body.max_hops)


def kind_text(kind: tuple) -> str:
    """``request_kind`` in words, e.g. ``strategy=multi, k<=4, max_hops=3``."""
    parts = [f"strategy={kind[0]}"]
    if len(kind) > 1 and kind[1] is not None:
        parts.append(f"k<={kind[1]}")
    if len(kind) > 2 and kind[2] is not None:
        parts.append(f"max_hops={kind[2]}")
    return ", ".join(parts)


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(plain(data))}\n\n"


def mount_answers(app: FastAPI, config: Config) -> None:
    """Add the two answer routes to ``app`` (its state holds the service and admission)."""

    def admit(request: Request, body: AnswerRequest):
        """-> (service, session, future) or an error response."""
        service: AnswerService = request.app.state.service
        admission: Admission = request.app.state.admission
        if service.draining:
            return error(503, "server is shutting down", headers={"Retry-After": "5"})
        if service.backend_error:          # the generator could not even be built
            return error(503, service.backend_error)
        kind = request_kind(body)
        admitted, wait, why = admission.acquire(kind)
        if not admitted:
            return error(429, "too many requests in flight", refusal(why, kind, admission),
                         headers={"Retry-After": str(wait)}, reason=why)
        ctx = {key: value for key, value in (("k", body.k), ("max_hops", body.max_hops),
                                              ("lam", body.lam)) if value is not None}
        request_id = uuid.uuid4().hex
        deadline = time.monotonic() + config.server.request_timeout_s
        try:
            session, future = service.start(request_id, body.question.strip(), body.strategy,
                                            ctx, deadline)
        except RuntimeError:
            admission.release(kind=kind)
            return error(503, "server is shutting down", headers={"Retry-After": "5"})
        future.add_done_callback(
            lambda f: admission.release(service_time(session, f), kind))
        return service, session, future

    def refusal(why: str, kind: tuple, admission: Admission) -> str:
        """Why a request was refused (``Admission.acquire``), in the 429's ``detail``."""
        held = f"{admission.admitted} admitted (up to {admission.sessions} run at once)"
        if why == "capacity":
            return (f"{held}: that is the most server.sessions + server.max_queue = "
                    f"{admission.capacity} allow")
        if why == "unmeasured":
            return (f"{held}, one of them like this one ({kind_text(kind)}), and none "
                    "like it has finished yet: one at a time until its service time is "
                    "measured")
        return (f"{held}, and this one needs ~{admission.expected_demand(kind):.1f} s of "
                "shared generator time: it would not finish within "
                f"server.request_timeout_s={config.server.request_timeout_s}")

    def delivered(route: str, service, session, response, started: float) -> int:
        """Record how an answer request ended, for feedback and ``/metrics`` (its latency,
        and its arm when answered); return its status."""
        status = response.status_code if isinstance(response, JSONResponse) else 200
        service.delivered(session.id, status)
        app.state.metrics.observe(route, status, time.monotonic() - started,
                                  None if status != 200 else response["arm"])
        return status

    def abandoned(route: str, service, session) -> None:
        """The client is gone before its answer: stop the work, note a 499."""
        session.cancel.set()
        service.delivered(session.id, CLIENT_CLOSED)
        app.state.metrics.observe(route, CLIENT_CLOSED)

    def service_time(session, future) -> float | None:
        """The run time that counts as a service-time measurement: an answer's, or one cut
        by its deadline (a lower bound); not a failure's or a cancelled request's."""
        if future.cancelled() or session.run_s is None:
            return None
        exc = future.exception()
        if exc is None or (isinstance(exc, SessionCancelled) and session.expired()):
            return session.run_s
        return None

    def outcome(session, exc: BaseException | None, answer=None) -> JSONResponse | dict:
        """The response for a finished (or failed) session."""
        if exc is None:
            return answer_body(session, answer)
        if isinstance(exc, (asyncio.TimeoutError, SessionCancelled)):
            session.cancel.set()
            return error(504, "request deadline passed",
                         f"server.request_timeout_s={config.server.request_timeout_s}",
                         request_id=session.id, trace=session.trace(), timings=session.timings())
        if isinstance(exc, BackendError):
            return error(503, f"generator backend unavailable: {exc}", request_id=session.id)
        if isinstance(exc, InputError):
            return invalid_input(exc, request_id=session.id)
        if isinstance(exc, SearchAgentError):
            return error(500, str(exc), request_id=session.id)
        return error(500, f"internal error: {type(exc).__name__}: {exc}", request_id=session.id)

    def answer_body(session, answer) -> dict:
        decision = next((s.detail for s in answer.trace if s.kind == "policy"), {})
        return AnswerResponse(
            request_id=decision.get("request_id") or session.id, answer=answer.answer,
            arm=answer.strategy,
            passages=answer.passages, steps=answer.retrieval_calls, hops=answer.hops,
            confidence=answer.confidence,
            timings={**session.timings(), "strategy_s": round(answer.seconds, 4),
                     "prompt_tokens": answer.prompt_tokens,
                     "completion_tokens": answer.completion_tokens},
            trace=[{"kind": s.kind, "seconds": round(s.seconds, 4), **plain(s.detail)}
                   for s in answer.trace]).model_dump()

    @app.post("/v1/answer", response_model=AnswerResponse, responses=openapi.ANSWER)
    async def answer(body: AnswerRequest, request: Request):
        """Answer a question; ``strategy`` auto lets the policy pick the arm."""
        started = time.monotonic()
        admitted = admit(request, body)
        if isinstance(admitted, JSONResponse):
            app.state.metrics.observe("/v1/answer", admitted.status_code)
            return admitted
        service, session, future = admitted
        done, gone = settled(future), asyncio.ensure_future(client_gone(request))
        try:
            finished, _ = await asyncio.wait({done, gone}, timeout=session.remaining(),
                                             return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            session.cancel.set()
            raise
        finally:
            gone.cancel()
        if done in finished:
            exc = done.exception()
            response = outcome(session, exc, None if exc else done.result())
        elif gone in finished:         # nobody will read the answer: stop working on it
            abandoned("/v1/answer", service, session)
            return Response(status_code=CLIENT_CLOSED)
        else:
            response = outcome(session, asyncio.TimeoutError())
        delivered("/v1/answer", service, session, response, started)
        return response

    @app.post("/v1/answer/stream", response_class=openapi.EventStream,
              responses=openapi.STREAM)
    async def answer_stream(body: AnswerRequest, request: Request):
        """Server-sent events: one ``step`` event per generation/retrieval as it happens,
        then ``answer`` (or ``error``)."""
        started = time.monotonic()
        admitted = admit(request, body)
        if isinstance(admitted, JSONResponse):
            app.state.metrics.observe("/v1/answer/stream", admitted.status_code)
            return admitted
        service, session, future = admitted
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        session.listener = lambda event: loop.call_soon_threadsafe(events.put_nowait, event)
        for event in session.trace():
            events.put_nowait(event)
        done = settled(future)
        reported = False           # the answer or error event's status is recorded

        def closed() -> None:
            """The response ended (also before its first byte, when the client left so
            early that ``events_until_done`` never ran): without an answer or error
            recorded, the client is gone, so stop the work and note a 499."""
            if not reported:
                abandoned("/v1/answer/stream", service, session)

        async def events_until_done():
            nonlocal reported
            yield sse("start", {"request_id": session.id})
            getter = None
            try:
                while True:
                    getter = asyncio.ensure_future(events.get())
                    finished, _ = await asyncio.wait({getter, done},
                                                     timeout=session.remaining(),
                                                     return_when=asyncio.FIRST_COMPLETED)
                    if getter in finished:
                        yield sse("step", getter.result())
                        continue
                    break
            finally:
                getter.cancel()    # a client gone mid-wait leaves no pending task behind
            while not events.empty():
                yield sse("step", events.get_nowait())
            exc = None if done in finished else asyncio.TimeoutError()
            if exc is None and done.exception() is not None:
                exc = done.exception()
            response = outcome(session, exc, None if exc else done.result())
            status = delivered("/v1/answer/stream", service, session, response, started)
            reported = True
            if status != 200:
                yield sse("error", {"status": status, **json.loads(response.body)})
            else:
                yield sse("answer", response)
        return ClosingEventStream(events_until_done(), closed)


class ClosingEventStream(openapi.EventStream):
    """An event stream that calls ``on_close()`` once the response is over, however it
    ended: completed, the client gone mid-stream, or gone before the generator started."""

    def __init__(self, content, on_close) -> None:
        super().__init__(content)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()
