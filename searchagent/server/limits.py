"""Request limits: body size (413), API key (401), bounded admission (429 + Retry-After)."""

from __future__ import annotations

import hmac
import json
import threading

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc", "/")
OPEN_PREFIXES = ("/static/",)          # the web page's script and style sheet
DRAIN_BYTES = 16 << 20                 # of a refused body read and dropped, at most


async def _send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """ASGI middleware: 413 when a body is (declared or turns out) larger than the cap.

    The body is read here, before the app sees it, so a chunked body without a length
    gets the 413 too (an error raised inside the app's body read would become a 400)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, self._body(int(declared)))
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break                                   # the client went away
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await _send_json(send, 413, self._body(seen, declared is None))
                return await _drain(receive, message, DRAIN_BYTES)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    def _body(self, size: int, chunked: bool = False) -> dict:
        size_text = f"{size}+ bytes (chunked, read so far)" if chunked else f"{size} bytes"
        return {"error": "request body too large",
                "detail": f"{size_text} > server.max_body_bytes={self.max_bytes}"}


async def _drain(receive, message: dict, limit: int) -> None:
    """Read and drop the rest of a refused body (up to ``limit`` bytes), so a client that
    sends it all before reading gets the 413 instead of a reset connection."""
    dropped = 0
    while message.get("more_body", False) and dropped < limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))


class ApiKeyMiddleware:
    """ASGI middleware: when a key is set, every path but the open ones needs it
    (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``)."""

    def __init__(self, app, api_key: str):
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope["path"] in OPEN_PATHS
                or scope["path"].startswith(OPEN_PREFIXES)):
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
