"""Overload: what a real ``searchagent serve`` answers at a sustainable rate and at twice it.

One server (priority + non-stall, default admission, ``--timeout`` as the request
deadline) over the bundled sample index; the same seeded question mix as
``benchmarks/serve.py`` at ``--rate`` and 2 x ``--rate``. Per rate: status histogram,
share of 429 and 504, p50/p95 latency of the answered requests, p95 time to a 429,
goodput (answers within the deadline per second of the run) and the server's RSS
before and after. Bounded: ``--requests`` per rate, the client timeout, 127.0.0.1 only.

    .venv/bin/python benchmarks/overload.py [--rate 0.25] [--requests 24] [--timeout 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import OUT, table  # noqa: E402
from benchmarks.serve import LIGHT, ServerProcess, drive, ensure_index, workload  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.25, help="the sustainable rate (req/s)")
    parser.add_argument("--requests", type=int, default=24, help="requests per rate")
    parser.add_argument("--timeout", type=float, default=60.0, help="request deadline (s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    index = ensure_index(OUT / "serve-index")
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           **{f"SEARCHAGENT__{k}": v for k, v in LIGHT.items()}}
    server = ServerProcess(index, ["--scheduler", "priority", "--non-stall", "--timeout",
                                   str(args.timeout)], env, OUT / "overload-server.log")
    rows = []
    try:
        asyncio.run(drive(server.url, workload(3, 10.0, seed=99), args.timeout + 30))
        for rate in (args.rate, 2 * args.rate):
            before = rss_mb(server.process.pid)
            results = asyncio.run(drive(server.url, workload(args.requests, rate, args.seed),
                                        args.timeout + 30))
            statuses = Counter(r["status"] for r in results)
            ok = [r["latency"] for r in results if r["status"] == 200]
            refused = [r["latency"] for r in results if r["status"] == 429]
            span = max(r["done"] for r in results) - min(r["sent"] for r in results)
            good = sum(1 for r in results if r["status"] == 200 and r["latency"] <= args.timeout)
            rows.append([rate, " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
                         statuses[429] / len(results), statuses[504] / len(results),
                         float(np.percentile(ok, 50)) if ok else float("nan"),
                         float(np.percentile(ok, 95)) if ok else float("nan"),
                         1000 * float(np.percentile(refused, 95)) if refused else float("nan"),
                         good / span, before, rss_mb(server.process.pid)])
            print(f"  rate {rate}: {dict(statuses)}", flush=True)
    finally:
        server.stop()
    print(table(["offered req/s", "statuses", "429 share", "504 share", "p50 s (200)",
                 "p95 s (200)", "p95 ms (429)", "goodput req/s", "RSS MB before",
                 "RSS MB after"], rows))
    if len(rows) == 2 and rows[0][7] > 0:
        print(f"\ngoodput at 2x / at 1x: {rows[1][7] / rows[0][7]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
