"""Request limits: body size (413), API key (401), bounded admission (429 + Retry-After)."""

from __future__ import annotations

import hmac
import json
import threading

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc")


async def _send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """ASGI middleware: 413 when a body is (declared or turns out) larger than the cap."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, self._body(int(declared)))
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(seen)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge as exc:
            if not started:
                await _send_json(send, 413, self._body(exc.size))

    def _body(self, size: int) -> dict:
        return {"error": "request body too large",
                "detail": f"{size} bytes > server.max_body_bytes={self.max_bytes}"}


class _TooLarge(Exception):
    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


class ApiKeyMiddleware:
    """ASGI middleware: when a key is set, every path but the open ones needs it
    (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``)."""

    def __init__(self, app, api_key: str):
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key") or b""
        auth = headers.get(b"authorization") or b""
        if auth.lower().startswith(b"bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given, self.key):
            return await _send_json(send, 401, {"error": "missing or wrong API key",
                                                "detail": "send Authorization: Bearer KEY"},
                                    [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


class Admission:
    """At most ``capacity`` answer requests admitted (running or waiting) at once."""

    def __init__(self, capacity: int, retry_after_s: float = 1.0):
        self.capacity, self.retry_after_s = capacity, retry_after_s
        self._lock = threading.Lock()
        self.admitted = 0
        self.rejected_total = 0

    def try_acquire(self) -> bool:
        with self._lock:
            if self.admitted >= self.capacity:
                self.rejected_total += 1
                return False
            self.admitted += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.admitted -= 1

    def retry_after(self, mean_service_s: float | None) -> int:
        """Seconds a rejected client should wait: about one service time, at least 1."""
        return max(1, round(mean_service_s or self.retry_after_s))
