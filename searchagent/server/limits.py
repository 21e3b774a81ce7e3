"""Request limits: body size (413), API key (401), bounded admission (429 + Retry-After)."""

from __future__ import annotations

import hmac
import json
import math
import threading
import time
from collections import Counter, OrderedDict, deque
from typing import Hashable

OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/")
OPEN_PREFIXES = ("/static/", "/docs-assets/")   # the page's and the docs' files
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

    def __init__(self, app, max_bytes: int, observe=lambda path, status: None):
        self.app, self.max_bytes, self.observe = app, max_bytes, observe

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            self.observe(scope["path"], 413)
            return await _send_json(send, 413, self._body(int(declared)))
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break                                   # the client went away
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                self.observe(scope["path"], 413)
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

    def __init__(self, app, api_key: str, observe=lambda path, status: None):
        self.app, self.key, self.observe = app, api_key.encode(), observe

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
            self.observe(scope["path"], 401)
            return await _send_json(send, 401, {"error": "missing or wrong API key",
                                                "detail": "send Authorization: Bearer KEY"},
                                    [(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


class Admission:
    """Deadline-aware admission for answer requests, by a high quantile of measured demand.

    The generator is shared: requests running side by side slow each other down (on a
    2-core machine a request's run time grows about linearly with the number beside it).
    So each finished request yields its *demand*: run time / the average number of
    requests running while it ran (a time-weighted count). A request's expected demand is
    the ``quantile`` (nearest rank, default p90) of the last ``window`` demands of its
    *kind* (the route passes strategy, k and hops). A kind not measured yet is expected to
    take the quantile of all kinds (before any finishes: ``expected_service_s``, else the
    whole deadline), and once other kinds have been measured, runs one request at a time
    until one of its own has been. A mean
    let the long (multi-hop, ~3x a closed-book) questions run past the
    deadline; one quantile for every kind let a single very heavy request (k 50, 8 hops)
    refuse light ones for the next minute, and priced a first heavy one like the light
    ones (four admitted at once, all cut at the deadline). A new request finishes after
    about the summed demand of those admitted plus its own: it is admitted when that fits
    in ``deadline_s`` (and fewer than ``capacity`` are admitted), or when nothing is
    admitted (so there is always something to measure). Otherwise it is refused with
    ``Retry-After`` = the time for enough admitted requests to finish, the shortest first.
    The refusal path only reads numbers under a lock; quantiles are computed when a
    request ends. ``service_s`` is the quantile over all kinds (for metrics)."""

    QUANTILE = 0.9                                 # of the recent demands
    WINDOW = 32                                    # recent finished requests kept
    KINDS = 256                                    # kinds remembered (least recent dropped)

    def __init__(self, sessions: int, max_queue: int, deadline_s: float,
                 expected_service_s: float = 0.0, clock=time.monotonic,
                 quantile: float = QUANTILE, window: int = WINDOW):
        if not 0.0 < quantile <= 1.0 or window < 1:
            raise ValueError(f"need 0 < quantile <= 1 and window >= 1, got {quantile}, {window}")
        self.sessions = max(1, sessions)
        self.capacity = self.sessions + max_queue
        self.deadline_s = deadline_s
        self.quantile = quantile
        self.window = window
        self.service_s = expected_service_s if expected_service_s > 0 else deadline_s
        self.measured = 0                          # finished requests measured so far
        self._demands: deque[float] = deque(maxlen=window)
        self._kinds: OrderedDict[Hashable, tuple[deque, float]] = OrderedDict()
        self._running: Counter = Counter()         # admitted requests per kind
        self._lock = threading.Lock()
        self._clock = clock
        self.admitted = 0
        self.rejected_total = 0
        self._changes: deque[tuple[float, int]] = deque(maxlen=4096)  # (time, running)
        self._changes.append((clock(), 0))

    @staticmethod
    def nearest_rank(values, q: float) -> float:
        """The ``q`` quantile of ``values`` by nearest rank (always one of the values)."""
        ordered = sorted(values)
        return ordered[max(0, math.ceil(round(q * len(ordered), 9)) - 1)]

    def expected_demand(self, kind: Hashable = None) -> float:
        """The demand a new request of ``kind`` is expected to make of the generator."""
        return self._kinds[kind][1] if kind in self._kinds else self.service_s

    def _fits(self, work: list[float], need: float) -> bool:
        return not work or (len(work) < self.capacity
                            and math.fsum(work) + need <= self.deadline_s + 1e-9)

    def _set_admitted(self, n: int) -> None:
        self.admitted = n
        self._changes.append((self._clock(), min(n, self.sessions)))

    def _mean_running(self, since: float, now: float) -> float:
        """Time-weighted mean number of requests running over ``[since, now]``."""
        area, end = 0.0, now
        for at, running in reversed(self._changes):
            area += running * max(0.0, end - max(at, since))
            end = at
            if at <= since:
                break
        return area / (now - since) if now > since else 1.0

    def try_acquire(self, kind: Hashable = None) -> tuple[bool, int]:
        """-> (admitted, Retry-After seconds for a refused request)."""
        admitted, wait, _ = self.acquire(kind)
        return admitted, wait

    def acquire(self, kind: Hashable = None) -> tuple[bool, int, str]:
        """-> (admitted, Retry-After seconds, why refused): ``"capacity"`` (``capacity``
        admitted already), ``"unmeasured"`` (one of this kind runs and none has finished
        yet) or ``"deadline"`` (it would not finish in time); ``""`` when admitted."""
        with self._lock:
            need = self.expected_demand(kind)
            work = sorted(self.expected_demand(k) for k, count in self._running.items()
                          for _ in range(count))
            probing = self.measured > 0 and kind not in self._kinds and self._running[kind] > 0
            if not probing and self._fits(work, need):
                self._running[kind] += 1
                self._set_admitted(self.admitted + 1)
                return True, 0, ""
            self.rejected_total += 1
            if probing:                            # until the first of its kind is measured
                return False, max(1, math.ceil(need)), "unmeasured"
            why = "capacity" if len(work) >= self.capacity else "deadline"
            wait = 0.0
            while not self._fits(work, need):
                wait += work.pop(0)                # the shortest finishes first
            return False, max(1, math.ceil(wait)), why

    def release(self, service_s: float | None = None, kind: Hashable = None) -> None:
        """One admitted request of ``kind`` finished; ``service_s`` is its run time when it
        counts."""
        with self._lock:
            now = self._clock()
            if service_s is not None and service_s > 0:
                demand = service_s / max(1.0, self._mean_running(now - service_s, now))
                self._demands.append(demand)
                self.service_s = self.nearest_rank(self._demands, self.quantile)
                own = self._kinds.pop(kind, (deque(maxlen=self.window), 0.0))[0]
                own.append(demand)
                self._kinds[kind] = (own, self.nearest_rank(own, self.quantile))
                while len(self._kinds) > self.KINDS:
                    self._kinds.popitem(last=False)
                self.measured += 1
            self._running[kind] -= 1
            if self._running[kind] <= 0:
                del self._running[kind]
            self._set_admitted(self.admitted - 1)
