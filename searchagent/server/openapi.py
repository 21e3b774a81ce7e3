"""What each route documents beyond its 200: the statuses and bodies the server really
sends (``ErrorBody``; a 422 is ``ValidationErrorBody``), and the stream's event-stream."""

from __future__ import annotations

from starlette.responses import StreamingResponse

from searchagent.server.models import ErrorBody, Readiness, ValidationErrorBody

WHY = {
    400: "the body could not be read",
    401: "missing or wrong API key (only when the server has one)",
    403: "index updates are off (start the server with --allow-updates)",
    404: "no answer with this request id (unknown or forgotten)",
    409: "this request id already has feedback, is still being answered, or got no answer",
    413: "body larger than server.max_body_bytes (declared or chunked)",
    422: "invalid fields, each named (e.g. body.question)",
    500: "a named failure: an index file found damaged, or an update that failed (the "
         "index stays at its previous generation)",
    429: "would not finish within the deadline (or admission is full); retry after Retry-After seconds",
    503: "the generator backend is unavailable, or the server is shutting down",
    504: "the request deadline passed; the body holds the partial trace",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                               "schema": {"type": "string"}}}


def errors(*codes: int, by_ref: bool = False) -> dict:
    """``responses=`` entries for the given error statuses. ``by_ref``: name the JSON
    schema (for a route whose own media type is not JSON; another route defines it)."""
    out: dict = {}
    for code in codes:
        model = ValidationErrorBody if code == 422 else ErrorBody
        out[code] = {"description": WHY[code]}
        if by_ref:
            ref = {"$ref": f"#/components/schemas/{model.__name__}"}
            out[code]["content"] = {"application/json": {"schema": ref}}
        else:
            out[code]["model"] = model
        if code == 429:
            out[code]["headers"] = RETRY_AFTER
    return out


class EventStream(StreamingResponse):
    """Server-sent events (``text/event-stream``)."""

    media_type = "text/event-stream"


def _event(name: str, data: dict) -> dict:
    return {"properties": {"event": {"const": name},
                           "data": {"contentMediaType": "application/json",
                                    "contentSchema": data}}}


EVENT = {   # one server-sent event; its data is JSON
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"type": "string", "enum": ["start", "step", "answer", "error"]},
                   "data": {"type": "string"}},
    "oneOf": [
        _event("start", {"type": "object", "required": ["request_id"],
                         "properties": {"request_id": {"type": "string"}}}),
        _event("step", {"type": "object", "required": ["kind"],
                        "properties": {"kind": {"type": "string"}}}),
        _event("answer", {"$ref": "#/components/schemas/AnswerResponse"}),
        _event("error", {"type": "object", "required": ["status", "error"],
                         "properties": {"status": {"type": "integer"},
                                        "error": {"type": "string"}}})]}

ANSWER = errors(400, 401, 413, 422, 429, 500, 503, 504)
STREAM = {200: {"description": "server-sent events: start, step (one per policy decision, "
                               "retrieval, generation, context fit), then answer or error "
                               "(with the status it would have had)",
                "content": {"text/event-stream": {"schema": EVENT}}},
          **errors(400, 401, 413, 422, 429, 500, 503, 504, by_ref=True)}
SEARCH = errors(400, 401, 413, 422, 500)
DOCUMENTS = errors(400, 401, 403, 413, 422, 500)
FEEDBACK = errors(400, 401, 404, 409, 413, 422, 503)
READY = {200: {"model": Readiness, "description": "ready"},
         503: {"model": Readiness, "description": "not ready, with the reason"}}
