"""Response bodies every route shares: the ``{error, detail}`` shape of every error status,
422s shaped like request validation errors, and JSON-safe copies of values for bodies."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

from searchagent.errors import InputError


def error(status: int, message: str, detail: Any = None, headers: dict | None = None,
          **extra: Any) -> JSONResponse:
    return JSONResponse(plain({"error": message, "detail": detail, **extra}),
                        status_code=status, headers=headers)


def invalid_input(exc: InputError, field: str | None = None, **extra: Any) -> JSONResponse:
    """A 422 shaped like a request validation error (``ValidationErrorBody``); ``field``
    is the request path of what was wrong (default: ``body.<the error's field>``)."""
    if field is None:
        field = exc.field if (exc.field or "body").startswith("body") else f"body.{exc.field}"
    return error(422, str(exc), [{"field": field or "body", "message": str(exc),
                                  "type": "value_error"}], **extra)


def plain(value: Any) -> Any:
    """JSON-safe copy (numpy numbers, tuples, odd objects become plain values; NaN and
    infinities, which JSON has not, become null)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item")
                                 else str(o)), parse_constant=lambda name: None)
