"""The FastAPI app: /v1/answer (+ /v1/answer/stream, in ``answer_routes``), /v1/search,
/v1/feedback, health, readiness, Prometheus metrics and the OpenAPI docs (/docs)."""

from __future__ import annotations

import time
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
from searchagent.errors import ConflictError, InputError, SearchAgentError
from searchagent.server import metrics, openapi
from searchagent.server.answer_routes import mount_answers
from searchagent.server.documents import mount_documents
from searchagent.server.limits import Admission, ApiKeyMiddleware, BodyLimitMiddleware
from searchagent.server.models import (FeedbackRequest, FeedbackResponse, SearchRequest,
                                       SearchResponse)
from searchagent.server.page import mount_docs, mount_page
from searchagent.server.responses import error, invalid_input, plain
from searchagent.server.service import AnswerService


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
                  description="Adaptive retrieval-augmented question answering.",
                  docs_url=None, redoc_url=None)    # /docs: mount_docs, offline
    app.state.config = config
    app.state.admission = Admission(config.server.sessions, config.server.max_queue,
                                    config.server.request_timeout_s,
                                    config.server.expected_service_s)
    app.state.metrics = metrics.RequestMetrics()

    def observe_refusal(path: str, status: int) -> None:
        """A refusal sent before any route ran (413, 401, 405): counted under the route
        it was for; a path no route has (a 404) is not, which keeps the labels bounded."""
        if any(getattr(route, "path", None) == path for route in app.routes):
            app.state.metrics.observe(path, status)

    if config.server.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.server.api_key,
                           observe=observe_refusal)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.server.max_body_bytes,
                       observe=observe_refusal)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        unreadable = [e for e in exc.errors() if e.get("type") == "json_invalid"]
        if unreadable:            # not JSON at all: 400, where the parser stopped
            detail = [{"field": "body", "type": "json_invalid",
                       "message": f"{e.get('msg')} at character {e.get('loc', ('', '?'))[-1]}"}
                      for e in unreadable]
            app.state.metrics.observe(request.url.path, 400)
            return error(400, "the body is not valid JSON", detail)
        detail = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg"),
                   "type": e.get("type")} for e in exc.errors()]
        app.state.metrics.observe(request.url.path, 422)
        return error(422, "invalid request", detail)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        """400 (unreadable body), 404, 405 ... in the same ``{error, detail}`` shape."""
        observe_refusal(request.url.path, exc.status_code)
        return error(exc.status_code, HTTPStatus(exc.status_code).phrase, exc.detail,
                     headers=getattr(exc, "headers", None))

    mount_page(app)                    # the web page at / (static files in the package)
    mount_docs(app)
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

    mount_answers(app, config)         # /v1/answer and /v1/answer/stream

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
        return FeedbackResponse(request_id=body.request_id, accepted=True, detail=plain(detail))

    return app


def _index_gauges(manifest: dict) -> dict:
    counts = manifest.get("counts", {})
    return {"index_generation": manifest.get("generation", 0),
            "index_live_passages": counts.get("passages", 0),
            "index_deleted_passages": counts.get("deleted", 0)}

