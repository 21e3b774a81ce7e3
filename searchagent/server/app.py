"""The FastAPI app: /v1/answer (+ /v1/answer/stream), /v1/search, /v1/feedback, health,
readiness, Prometheus metrics and the OpenAPI docs (/docs)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from searchagent import __version__
from searchagent.config import Config
from searchagent.errors import BackendError, ConflictError, InputError, SearchAgentError
from searchagent.scheduler import SessionCancelled
from searchagent.server import metrics, openapi
from searchagent.server.documents import mount_documents
from searchagent.server.limits import Admission, ApiKeyMiddleware, BodyLimitMiddleware
from searchagent.server.models import (AnswerRequest, AnswerResponse, FeedbackRequest,
                                       FeedbackResponse, SearchRequest, SearchResponse)
from searchagent.server.page import mount_page
from searchagent.server.service import AnswerService


def error(status: int, message: str, detail: Any = None, headers: dict | None = None,
          **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail, **extra}, status_code=status,
                        headers=headers)


def invalid_input(exc: InputError, **extra: Any) -> JSONResponse:
    """A 422 shaped like a request validation error (``ValidationErrorBody``)."""
    return error(422, str(exc), [{"field": exc.field or "body", "message": str(exc),
                                  "type": "value_error"}], **extra)


def settled(future) -> asyncio.Future:
    """The session's future on this loop, its exception marked as retrieved even when
    nobody awaits it any more (after a 504), so asyncio logs no stray traceback."""
    wrapped = asyncio.wrap_future(future)
    wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())
    return wrapped


def create_app(searcher: Any, config: Config | None = None, *, generator: Any = None,
               use_agent: bool = True, warm_up: bool = True) -> FastAPI:
    """The app over an opened ``Searcher``; the generator comes from ``config.generator``
    unless one is given. Service start/stop happen in the app's lifespan."""
    config = config or Config()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = await run_in_threadpool(AnswerService, searcher, config, generator, use_agent)
        app.state.service = service
        if warm_up and service.backend_error is None:
            await run_in_threadpool(service.warm_up, min(config.server.request_timeout_s, 60))
        try:
            yield
        finally:
            await run_in_threadpool(service.close, True)

    app = FastAPI(title="searchagent", version=__version__, lifespan=lifespan,
                  description="Adaptive retrieval-augmented question answering.")
    app.state.config = config
    app.state.admission = Admission(config.server.sessions, config.server.max_queue,
                                    config.server.request_timeout_s,
                                    config.server.expected_service_s)
    app.state.metrics = metrics.RequestMetrics()
    if config.server.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.server.api_key)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.server.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        detail = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg"),
                   "type": e.get("type")} for e in exc.errors()]
        app.state.metrics.observe(request.url.path, 422)
        return error(422, "invalid request", detail)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        """400 (unreadable body), 404, 405 ... in the same ``{error, detail}`` shape."""
        return error(exc.status_code, HTTPStatus(exc.status_code).phrase, exc.detail,
                     headers=getattr(exc, "headers", None))

    mount_page(app)                    # the web page at / (static files in the package)
    mount_documents(app, searcher, config.server.allow_updates, error, invalid_input)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", responses=openapi.READY)
    async def readyz(request: Request):
        service = getattr(request.app.state, "service", None)
        ok, reason = service.readiness() if service else (False, "starting")
        body = {"ready": ok, "reason": reason}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_page(request: Request):
        service: AnswerService = request.app.state.service
        scheduler, admission = service.scheduler, request.app.state.admission
        ok, _ = service.readiness()
        gauges = {"queue_length": scheduler.pending()["queued"],
                  "admitted_requests": admission.admitted,
                  "admission_capacity": admission.capacity,
                  "admission_service_seconds": round(admission.service_s, 4),
                  "rejected_requests_total": admission.rejected_total, "ready": int(ok),
                  "generation_batch_limit": scheduler.batch_size,
                  **_index_gauges(searcher.manifest)}
        return metrics.render(request.app.state.metrics, scheduler.stats.snapshot(),
                              scheduler.stats.queue_wait, gauges)

    def admit(request: Request, body: AnswerRequest):
        """-> (service, session, future) or an error response."""
        service: AnswerService = request.app.state.service
        admission: Admission = request.app.state.admission
        if service.draining:
            return error(503, "server is shutting down", headers={"Retry-After": "5"})
        if service.backend_error:          # the generator could not even be built
            return error(503, service.backend_error)
        admitted, wait = admission.try_acquire()
        if not admitted:
            return error(429, "too many requests in flight",
                         f"{admission.admitted} admitted ({admission.sessions} at once, each "
                         f"~{admission.service_s:.1f} s of shared generator time): a new one "
                         f"would not finish within "
                         f"server.request_timeout_s={config.server.request_timeout_s}",
                         headers={"Retry-After": str(wait)})
        ctx = {key: value for key, value in (("k", body.k), ("max_hops", body.max_hops),
                                              ("lam", body.lam)) if value is not None}
        request_id = uuid.uuid4().hex
        deadline = time.monotonic() + config.server.request_timeout_s
        try:
            session, future = service.start(request_id, body.question.strip(), body.strategy,
                                            ctx, deadline)
        except RuntimeError:
            admission.release()
            return error(503, "server is shutting down", headers={"Retry-After": "5"})
        future.add_done_callback(lambda f: admission.release(service_time(session, f)))
        return service, session, future

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
            request_id=decision.get("request_id") or session.id, answer=answer.answer, arm=answer.strategy,
            passages=answer.passages, steps=answer.retrieval_calls, hops=answer.hops,
            confidence=answer.confidence,
            timings={**session.timings(), "strategy_s": round(answer.seconds, 4),
                     "prompt_tokens": answer.prompt_tokens,
                     "completion_tokens": answer.completion_tokens},
            trace=[{"kind": s.kind, "seconds": round(s.seconds, 4), **_plain(s.detail)}
                   for s in answer.trace]).model_dump()

    @app.post("/v1/answer", response_model=AnswerResponse, responses=openapi.ANSWER)
    async def answer(body: AnswerRequest, request: Request):
        """Answer a question; ``strategy`` auto lets the policy pick the arm."""
        started = time.monotonic()
        admitted = admit(request, body)
        if isinstance(admitted, JSONResponse):
            app.state.metrics.observe("/v1/answer", admitted.status_code)
            return admitted
        _, session, future = admitted
        try:
            result = await asyncio.wait_for(asyncio.shield(settled(future)),
                                            timeout=session.remaining())
            response = outcome(session, None, result)
        except BaseException as exc:  # noqa: BLE001 -- every failure maps to a status
            if isinstance(exc, asyncio.CancelledError):
                session.cancel.set()
                raise
            response = outcome(session, exc)
        status = response.status_code if isinstance(response, JSONResponse) else 200
        app.state.metrics.observe("/v1/answer", status, time.monotonic() - started,
                                  None if status != 200 else response["arm"])
        return response

    @app.post("/v1/answer/stream", response_class=openapi.EventStream,
              responses=openapi.STREAM)
    async def answer_stream(body: AnswerRequest, request: Request):
        """Server-sent events: one ``step`` event per generation/retrieval as it happens,
        then ``answer`` (or ``error``)."""
        admitted = admit(request, body)
        if isinstance(admitted, JSONResponse):
            app.state.metrics.observe("/v1/answer/stream", admitted.status_code)
            return admitted
        _, session, future = admitted
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        session.listener = lambda event: loop.call_soon_threadsafe(events.put_nowait, event)
        for event in session.trace():
            events.put_nowait(event)
        done = settled(future)

        async def stream():
            yield _sse("start", {"request_id": session.id})
            while True:
                getter = asyncio.ensure_future(events.get())
                finished, _ = await asyncio.wait({getter, done}, timeout=session.remaining(),
                                                 return_when=asyncio.FIRST_COMPLETED)
                if getter in finished:
                    yield _sse("step", getter.result())
                    continue
                getter.cancel()
                while not events.empty():
                    yield _sse("step", events.get_nowait())
                exc = None if done in finished else asyncio.TimeoutError()
                if exc is None and done.exception() is not None:
                    exc = done.exception()
                response = outcome(session, exc, None if exc else done.result())
                status = 200
                if isinstance(response, JSONResponse):
                    status = response.status_code
                    yield _sse("error", {"status": status, **json.loads(response.body)})
                else:
                    yield _sse("answer", response)
                app.state.metrics.observe("/v1/answer/stream", status)
                return
        return openapi.EventStream(stream())

    @app.post("/v1/search", response_model=SearchResponse, responses=openapi.SEARCH)
    async def search(body: SearchRequest, request: Request):
        """Retrieve passages (no generation)."""
        started = time.perf_counter()
        try:
            hits = await run_in_threadpool(searcher.search, body.query.strip(), body.k, body.mode)
        except InputError as exc:
            app.state.metrics.observe("/v1/search", 422)
            return invalid_input(exc)
        except SearchAgentError as exc:            # e.g. a damaged index file, named
            app.state.metrics.observe("/v1/search", 500)
            return error(500, str(exc))
        app.state.metrics.observe("/v1/search", 200)
        return SearchResponse(hits=[{"id": h.id, "score": h.score, "title": h.title,
                                     "text": h.text} for h in hits],
                              seconds=time.perf_counter() - started)

    @app.post("/v1/feedback", response_model=FeedbackResponse, responses=openapi.FEEDBACK)
    async def feedback(body: FeedbackRequest, request: Request):
        """Tell the online policy how an answer went (gold answer or a reward)."""
        service: AnswerService = request.app.state.service
        try:
            detail = await run_in_threadpool(service.feedback, body.request_id, body.gold,
                                             body.reward)
        except ConflictError as exc:
            app.state.metrics.observe("/v1/feedback", 409)
            return error(409, str(exc), body.request_id)
        except InputError as exc:
            if exc.field == "request_id" and "unknown" in str(exc):
                app.state.metrics.observe("/v1/feedback", 404)
                return error(404, str(exc), body.request_id)
            app.state.metrics.observe("/v1/feedback", 422)
            return invalid_input(exc)
        except SearchAgentError as exc:
            app.state.metrics.observe("/v1/feedback", 503)
            return error(503, str(exc))
        app.state.metrics.observe("/v1/feedback", 200)
        return FeedbackResponse(request_id=body.request_id, accepted=True, detail=_plain(detail))

    return app


def _index_gauges(manifest: dict) -> dict:
    counts = manifest.get("counts", {})
    return {"index_generation": manifest.get("generation", 0),
            "index_live_passages": counts.get("passages", 0),
            "index_deleted_passages": counts.get("deleted", 0)}


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(_plain(data))}\n\n"


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy numbers, tuples, odd objects become plain values)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item")
                                 else str(o)))
