"""Request limits: body size (413), API key (401), bounded admission (429 + Retry-After)."""

from __future__ import annotations

import hmac
import json
import math
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
    """Deadline-aware admission for answer requests.

    ``service_s`` is the measured service time (an EWMA of finished requests' run time;
    before any finishes, ``expected_service_s`` or else the whole deadline). With ``n``
    requests admitted, a new one would wait ``ceil(max(0, n - sessions + 1) / sessions) *
    service_s`` for a slot; it is admitted when a slot is free, or when that wait plus
    ``service_s`` fits in ``deadline_s`` (and ``n < capacity``). Otherwise it is refused
    with ``Retry-After`` = the predicted time until enough admitted requests finish for
    one more to fit (they finish at ``sessions / service_s`` a second)."""

    ALPHA = 0.3                                    # weight of the newest measurement

    def __init__(self, sessions: int, max_queue: int, deadline_s: float,
                 expected_service_s: float = 0.0):
        self.sessions = max(1, sessions)
        self.capacity = self.sessions + max_queue
        self.deadline_s = deadline_s
        self.service_s = expected_service_s if expected_service_s > 0 else deadline_s
        self.measured = 0                          # finished requests measured so far
        self._lock = threading.Lock()
        self.admitted = 0
        self.rejected_total = 0

    def _wait(self, n: int) -> float:
        """Predicted queue wait of a request arriving with ``n`` admitted: its queue position
        / sessions, in whole service times (requests started together finish together)."""
        return math.ceil(max(0, n - self.sessions + 1) / self.sessions) * self.service_s

    def _fits(self, n: int) -> bool:
        return n < self.capacity and (n < self.sessions
                                      or self._wait(n) + self.service_s <= self.deadline_s)

    def try_acquire(self) -> tuple[bool, int]:
        """-> (admitted, Retry-After seconds for a refused request)."""
        with self._lock:
            n = self.admitted
            if self._fits(n):
                self.admitted += 1
                return True, 0
            self.rejected_total += 1
            fit = n - 1
            while fit >= 0 and not self._fits(fit):
                fit -= 1                           # the most admitted at which one fits
            finishing = n - fit                    # requests that must finish first
            return False, max(1, math.ceil(finishing * self.service_s / self.sessions))

    def release(self, service_s: float | None = None) -> None:
        """One admitted request finished; ``service_s`` is its run time when it counts."""
        with self._lock:
            self.admitted -= 1
            if service_s is not None:
                self.service_s = (service_s if self.measured == 0 else
                                  self.ALPHA * service_s + (1 - self.ALPHA) * self.service_s)
                self.measured += 1
