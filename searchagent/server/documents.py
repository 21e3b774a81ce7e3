"""``POST /v1/documents`` (upsert) and ``DELETE /v1/documents`` (by id).

Off unless the server runs with ``--allow-updates`` (403 otherwise); behind the API key
like every other route. Updates run one at a time on a worker thread; each commits one
index generation (``docs/index-updates.md``) before the response is sent, and the next
request searches it.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from searchagent.errors import InputError, SearchAgentError
from searchagent.server import openapi
from searchagent.server.models import DeleteRequest, UpdateResponse, UpsertRequest
from searchagent.types import Passage


def mount_documents(app: FastAPI, searcher, enabled: bool, error, invalid_input) -> None:
    async def run(request: Request, route: str, change, field_of):
        if not enabled:
            app.state.metrics.observe(route, 403)
            return error(403, "index updates are off: start the server with --allow-updates")
        try:
            result = await run_in_threadpool(change)
        except InputError as exc:
            app.state.metrics.observe(route, 422)
            return invalid_input(exc, None if exc.item is None else field_of(exc))
        except SearchAgentError as exc:
            app.state.metrics.observe(route, 500)
            return error(500, str(exc))
        app.state.metrics.observe(route, 200)
        return UpdateResponse(**{k: v for k, v in result.items()
                                 if k in UpdateResponse.model_fields})

    @app.post("/v1/documents", response_model=UpdateResponse, responses=openapi.DOCUMENTS)
    async def upsert(body: UpsertRequest, request: Request):
        """Insert documents; an existing id is replaced. One index generation."""
        passages = [Passage(d.id, d.title.strip(), d.text.strip()) for d in body.documents]
        return await run(request, "/v1/documents", lambda: searcher.add(passages),
                         lambda exc: f"body.documents.{exc.item}.{exc.field}")

    @app.delete("/v1/documents", response_model=UpdateResponse, responses=openapi.DOCUMENTS)
    async def delete(body: DeleteRequest, request: Request):
        """Delete documents by id (unknown ids are listed in ``missing_ids``)."""
        return await run(request, "/v1/documents", lambda: searcher.delete(body.ids),
                         lambda exc: f"body.ids.{exc.item}")
