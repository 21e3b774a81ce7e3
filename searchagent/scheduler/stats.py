"""What the scheduler spends: generator busy/idle/stalled time, queue waits, batches, cuts.

Time is integrated over state changes: whenever the generator starts or stops, or a
session or retrieval starts or ends, the interval since the last change is added to
``active`` (some session in flight), ``busy`` (the generator working) and ``stall``
(the generator idle with an empty queue while some retrieval is in flight: generation
waiting on retrieval).
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field

WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Histogram:
    """Cumulative Prometheus-style histogram (bucket upper bounds in seconds)."""

    bounds: tuple[float, ...] = WAIT_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts):
            running += n
            out.append((bound, running))
        return out


class SchedulerStats:
    """Thread-safe counters and time integrals; ``snapshot()`` returns plain numbers."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()
        self.sessions = self.retrievals_in_flight = 0
        self.calls_running = 0                # backend calls under way
        self.active_s = self.busy_s = self.stall_s = 0.0
        self.counters = {"sessions_total": 0, "generations_total": 0, "batches_total": 0,
                         "retrievals_total": 0, "nonstall_cuts_total": 0,
                         "partial_retrievals_total": 0, "generation_errors_total": 0,
                         "cancelled_generations_total": 0,
                         "prompt_tokens_total": 0, "completion_tokens_total": 0,
                         "cached_prompt_tokens_total": 0}
        self.queue_wait = Histogram()
        self.retrieval_seconds = Histogram()
        self.max_batch_seen = 0

    @property
    def busy(self) -> bool:
        """The generator is working: some backend call is under way."""
        return self.calls_running > 0

    def _advance(self) -> None:
        now = self._clock()
        dt, self._last = now - self._last, now
        if self.sessions > 0 or self.busy:
            self.active_s += dt
            if self.busy:
                self.busy_s += dt
            elif self.retrievals_in_flight > 0:
                self.stall_s += dt

    def session(self, delta: int) -> None:
        with self._lock:
            self._advance()
            self.sessions += delta
            if delta > 0:
                self.counters["sessions_total"] += delta

    def retrieval(self, delta: int, seconds: float | None = None, partial: bool = False) -> None:
        with self._lock:
            self._advance()
            self.retrievals_in_flight += delta
            if seconds is not None:
                self.counters["retrievals_total"] += 1
                self.counters["partial_retrievals_total"] += int(partial)
                self.retrieval_seconds.observe(seconds)

    def generator(self, busy: bool) -> None:
        """A backend call starts (``busy``) or ends; the generator is busy while any runs."""
        with self._lock:
            self._advance()
            self.calls_running += 1 if busy else -1

    def batch(self, waits: list[float], results: list) -> None:
        """One backend call served len(results) generation calls after these queue waits."""
        with self._lock:
            self.counters["batches_total"] += 1
            self.counters["generations_total"] += len(results)
            for result in results:
                self.counters["cancelled_generations_total"] += \
                    getattr(result, "finish_reason", "") == "cancelled"
                self.counters["prompt_tokens_total"] += result.prompt_tokens
                self.counters["completion_tokens_total"] += result.completion_tokens
                self.counters["cached_prompt_tokens_total"] += getattr(result, "cached_tokens", 0)
            self.max_batch_seen = max(self.max_batch_seen, len(results))
            for wait in waits:
                self.queue_wait.observe(wait)

    def bump(self, name: str, by: int = 1) -> None:
        with self._lock:
            self.counters[name] += by

    def snapshot(self) -> dict:
        with self._lock:
            self._advance()
            idle = self.active_s - self.busy_s
            return {**self.counters, "active_seconds": self.active_s,
                    "generator_busy_seconds": self.busy_s,
                    "generator_idle_seconds": idle,
                    "generator_idle_fraction": idle / self.active_s if self.active_s else 0.0,
                    "retrieval_stall_seconds": self.stall_s,
                    "sessions_active": self.sessions,
                    "retrievals_in_flight": self.retrievals_in_flight,
                    "queue_wait_seconds_sum": self.queue_wait.total,
                    "queue_wait_seconds_count": self.queue_wait.count,
                    "max_batch_seen": self.max_batch_seen,
                    "kv_reuse_fraction": (self.counters["cached_prompt_tokens_total"]
                                          / max(1, self.counters["prompt_tokens_total"]))}
