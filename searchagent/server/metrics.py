"""Prometheus text exposition of request counts/latencies and the scheduler's statistics."""

from __future__ import annotations

import threading
from collections import Counter

from searchagent.scheduler.stats import Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
PREFIX = "searchagent"


class RequestMetrics:
    """Per-route status counts and the answer latency histogram (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.responses: Counter[tuple[str, int]] = Counter()
        self.answer_latency = Histogram(LATENCY_BUCKETS)
        self.arms: Counter[str] = Counter()

    def observe(self, route: str, status: int, seconds: float | None = None,
                arm: str | None = None) -> None:
        with self._lock:
            self.responses[(route, status)] += 1
            if seconds is not None:
                self.answer_latency.observe(seconds)
            if arm:
                self.arms[arm] += 1


def _line(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return f"{PREFIX}_{name}{{{inner}}} {value}"
    return f"{PREFIX}_{name} {value}"


def _histogram(name: str, help_text: str, hist: Histogram) -> list[str]:
    lines = [f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} histogram"]
    lines += [_line(f"{name}_bucket", n, {"le": le}) for le, n in hist.cumulative()]
    lines += [_line(f"{name}_sum", hist.total), _line(f"{name}_count", hist.count)]
    return lines


GAUGES = {
    "sessions_active": "agent sessions running now",
    "retrievals_in_flight": "retrievals running now",
    "generator_idle_fraction": "share of active time the generator was idle",
    "max_batch_seen": "largest generation batch so far",
    "kv_reuse_fraction": "share of prompt tokens whose KV state was reused",
}
COUNTERS = {
    "active_seconds": "seconds with at least one session in flight",
    "generator_busy_seconds": "seconds the generator was working",
    "generator_idle_seconds": "active seconds the generator was idle",
    "retrieval_stall_seconds": "seconds the generator idled with an empty queue while "
                               "retrievals ran",
    "sessions_total": "sessions started", "generations_total": "generation calls served",
    "batches_total": "backend generate() calls", "retrievals_total": "retrievals finished",
    "nonstall_cuts_total": "retrievals cut by the non-stall rule",
    "partial_retrievals_total": "retrievals that returned best-so-far",
    "generation_errors_total": "generation calls that failed",
    "cancelled_generations_total": "generation calls stopped mid-decoding (request cut "
                                   "or abandoned)",
    "prompt_tokens_total": "prompt tokens generated over",
    "completion_tokens_total": "tokens generated",
    "cached_prompt_tokens_total": "prompt tokens whose KV state was reused",
}


def render(requests: RequestMetrics, scheduler_stats: dict, queue_wait: Histogram,
           extra_gauges: dict[str, float]) -> str:
    """The whole /metrics page."""
    lines: list[str] = []
    with requests._lock:
        lines += [f"# HELP {PREFIX}_http_responses_total responses by route and status",
                  f"# TYPE {PREFIX}_http_responses_total counter"]
        lines += [_line("http_responses_total", n, {"route": r, "status": str(s)})
                  for (r, s), n in sorted(requests.responses.items())]
        lines += [f"# HELP {PREFIX}_answers_by_arm_total answers by the arm that ran",
                  f"# TYPE {PREFIX}_answers_by_arm_total counter"]
        lines += [_line("answers_by_arm_total", n, {"arm": a})
                  for a, n in sorted(requests.arms.items())]
        lines += _histogram("answer_latency_seconds", "end-to-end answer latency (both answer routes)",
                            requests.answer_latency)
    lines += _histogram("queue_wait_seconds", "time generation calls waited in the queue",
                        queue_wait)
    for name, help_text in COUNTERS.items():
        if name in scheduler_stats:
            lines += [f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} counter",
                      _line(name, scheduler_stats[name])]
    for name, help_text in GAUGES.items():
        if name in scheduler_stats:
            lines += [f"# HELP {PREFIX}_{name} {help_text}", f"# TYPE {PREFIX}_{name} gauge",
                      _line(name, scheduler_stats[name])]
    for name, value in sorted(extra_gauges.items()):
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += [f"# TYPE {PREFIX}_{name} {kind}", _line(name, value)]
    return "\n".join(lines) + "\n"
