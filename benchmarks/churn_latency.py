"""Warm latency of the churn experiment's indexes side by side at the end.

    .venv/bin/python -m benchmarks.churn_latency --out bench-out/churn --rounds 20

Per-round latencies in ``benchmarks/churn.py`` are taken minutes apart on a shared machine,
so other load moves them more than the index does. Here the build (generation 0, a copy
kept aside: the updaters reuse the space its postings leave), (a) LIRE and (b) append-only at the last round,
and (c) the rebuild answer the same queries, each warmed up then timed in turn (the four
together outgrow the page cache), the sequence repeated; p50/p99 are medians over passes. Adds ``side_by_side`` to ``benchmarks/results/churn.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.ann_data import Mixture
from benchmarks.churn import K, RESULTS, add_run_args, round_draw, search_params
from index.spann import SpannIndex


def side_by_side(systems: dict[str, tuple[Path, int | None]], queries: np.ndarray,
                 params: dict, passes: int = 3, repeats: int = 2) -> dict[str, dict]:
    """Each system in turn: one warm-up pass, then ``passes`` timed passes (its own postings
    in the page cache, not the others': together they outgrow RAM); the whole sequence
    ``repeats`` times. p50/p99: medians over a system's timed passes."""
    times: dict[str, list[list[float]]] = {name: [] for name in systems}
    for _ in range(repeats):
        for name, (folder, gen) in systems.items():
            with SpannIndex.open(folder, generation=gen, verify="size") as index:
                for query in queries:                                  # warm up
                    index.search(query[None], K, params=params)
                for _ in range(passes):
                    seconds = []
                    for query in queries:
                        tick = time.perf_counter()
                        index.search(query[None], K, params=params)
                        seconds.append(time.perf_counter() - tick)
                    times[name].append(seconds)
    return {name: {"p50_ms": round(1e3 * float(np.median([np.percentile(s, 50) for s in runs])), 3),
                   "p99_ms": round(1e3 * float(np.median([np.percentile(s, 99) for s in runs])), 3),
                   "passes": len(runs)}
            for name, runs in times.items()}


def systems_of(out: Path, rounds: int) -> dict[str, tuple[Path, int | None]]:
    return {"build (round 0)": (out / "build", 0), "(a) LIRE": (out / "lire", rounds),
            "(b) append-only": (out / "append", rounds), "(c) rebuild": (out / "rebuild", None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(parser)
    parser.add_argument("--name", default="churn")
    args = parser.parse_args()
    mixture = Mixture(max(10, args.n // 1000), 384, 0)
    queries = round_draw(mixture, args.rounds, args.drift, args.queries, "queries")
    result = side_by_side(systems_of(args.out, args.rounds), queries,
                          search_params(args))
    path = RESULTS / f"{args.name}.json"
    data = json.loads(path.read_text())
    data["side_by_side"] = result
    path.write_text(json.dumps(data, indent=2) + "\n")
    for name, row in result.items():
        print(f"{name:<18} p50 {row['p50_ms']:>7} ms   p99 {row['p99_ms']:>7} ms")


if __name__ == "__main__":
    main()
