"""Response bodies every route shares: the ``{error, detail}`` shape of every error status,
and 422s shaped like request validation errors."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from searchagent.errors import InputError
from searchagent.json_values import plain


def error(status: int, message: str, detail: Any = None, headers: dict | None = None,
          **extra: Any) -> JSONResponse:
    return JSONResponse(plain({"error": message, "detail": detail, **extra}),
                        status_code=status, headers=headers)


def invalid_input(exc: InputError, field: str | None = None, **extra: Any) -> JSONResponse:
    """A 422 shaped like a request validation error (``ValidationErrorBody``); ``field``
    is the request path of what was wrong (default: ``body.<the error's field>``)."""
    if field is None:
        field = exc.field or "body"
        field = field if field.startswith("body") else f"body.{field}"
    return error(422, str(exc), [{"field": field, "message": str(exc),
                                  "type": "value_error"}], **extra)
