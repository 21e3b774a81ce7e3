"""SPFresh's churn experiment at our scale: a SPANN index kept fresh in place (LIRE) vs
append-only updates vs a full rebuild, side by side in one run.

    .venv/bin/python -m benchmarks.churn --n 1000000 --rounds 20 --cache bench-out/ann \
        --out bench-out/churn

Start from the synthetic mixture (``--data real``: the 113k MiniLM set), then per round
delete 1% of the live vectors and insert 1% new ones drawn from the mixture with its
cluster weights shifted a little further each round (the distribution drifts; queries are
drawn from the current mixture). After every round, for (a) LIRE and (b) append-only:
recall@10 against exact search over the live vectors at fixed search settings, warm
single-query p50/p99 latency (and at the end, interleaved side by side:
``churn_latency.py``), postings read per query, posting lengths, disk bytes and
insert throughput (vectors/s, embedding excluded; commit time separately). At the end (c)
a full rebuild over the live vectors, measured the same way. Writes
``benchmarks/results/churn.json``, ``churn.md`` and ``churn.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from benchmarks.ann_data import Mixture, real, synthetic
from benchmarks.churn_report import plot, report
from index.spann import SpannIndex, build_spann

RESULTS = Path(__file__).resolve().parent / "results"
K = 10


def drifted(mixture: Mixture, round_: int, drift: float, seed: int) -> Mixture:
    """The mixture with cluster weights tilted by ``exp(drift * round * z)``, z fixed."""
    z = np.random.default_rng(seed).standard_normal(len(mixture.weights))
    moved = Mixture.__new__(Mixture)
    moved.__dict__.update(mixture.__dict__)
    weights = mixture.weights * np.exp(drift * round_ * z)
    moved.weights = weights / weights.sum()
    return moved


def round_draw(mixture: Mixture, round_: int, drift: float, count: int, what: str
               ) -> np.ndarray:
    """Round ``round_``'s ``inserts`` or ``queries``: the same draw in every churn script."""
    seed = {"inserts": 1000, "queries": 5000}[what] + round_
    return drifted(mixture, round_, drift, 11).draw(count, seed)


def churn_round(rng, live: np.ndarray, vectors: np.ndarray, n: int, per_round: int,
                round_: int, mixture: Mixture | None, drift: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Apply round ``round_``'s deletes and inserts to ``live`` and ``vectors`` (the same
    draws in every churn script); returns (deleted rows, inserted rows). Without a mixture
    (the real set) the inserts are perturbed copies of random base vectors."""
    dead = rng.choice(np.flatnonzero(live), size=per_round, replace=False)
    live[dead] = False
    rows = np.arange(n + (round_ - 1) * per_round, n + round_ * per_round)
    if mixture is not None:
        fresh = round_draw(mixture, round_, drift, per_round, "inserts")
    else:
        dim = vectors.shape[1]
        src = rng.choice(n, per_round)
        fresh = vectors[src] + 0.05 * rng.standard_normal((per_round, dim)).astype(
            np.float32) / np.sqrt(dim)
        fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    vectors[rows] = fresh
    live[rows] = True
    return dead, rows


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The run every churn script re-creates (its draws depend on these) and the fixed
    search settings it is measured with."""
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument("--drift", type=float, default=0.1)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("bench-out/churn"))
    parser.add_argument("--max-postings", type=int, default=80)
    parser.add_argument("--ef-search", type=int, default=None,
                        help="head graph search breadth (default: 2 x --max-postings)")


def search_params(args) -> dict:
    """SPANN search settings of ``add_run_args``. The head graph's breadth defaults to
    twice the heads asked for: faiss raises an ``efSearch`` under k to k, and at k = 80
    that found only 84% of the 80 nearest heads after 20 churn rounds (86% on the
    rebuild), costing LIRE 0.7 points of recall@10 and the rebuild 0.2 (BENCHMARKS.md)."""
    ef = 2 * args.max_postings if args.ef_search is None else args.ef_search
    return {"max_postings": args.max_postings, "ef_search": ef}


def exact_top(live_rows: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    best = np.full((len(queries), K), -1, dtype=np.int64)
    best_s = np.full((len(queries), K), -np.inf, dtype=np.float32)
    for lo in range(0, len(live_rows), 250_000):
        rows = live_rows[lo:lo + 250_000]
        index.reset()
        index.add(vectors[rows])
        s, i = index.search(queries, K)
        all_s, all_i = np.hstack([best_s, s]), np.hstack([best, rows[i]])
        top = np.argsort(-all_s, axis=1)[:, :K]
        best_s, best = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return best


def measure(index: SpannIndex, queries: np.ndarray, truth: np.ndarray, params: dict,
            rows_of=None) -> dict:
    """Recall@10, warm single-query latency, postings read per query."""
    index.search(queries[:20], K, params=params)                       # warm up
    found, seconds, postings = [], [], []
    for query in queries:
        tick = time.perf_counter()
        ids, _, stats = index.search(query[None], K, params=params)
        seconds.append(time.perf_counter() - tick)
        postings.append(stats.extra["postings_read"])
        found.append(ids[0] if rows_of is None else rows_of[np.maximum(ids[0], 0)])
    recall = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)])
    return {"recall": round(float(recall), 4),
            "p50_ms": round(1e3 * float(np.percentile(seconds, 50)), 3),
            "p99_ms": round(1e3 * float(np.percentile(seconds, 99)), 3),
            "postings_per_query": round(float(np.mean(postings)), 1)}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def posting_lengths(index: SpannIndex) -> dict:
    counts = index.reader.table[:, 1]
    counts = counts[counts > 0]
    return {"postings": int(len(counts)), "len_p50": int(np.percentile(counts, 50)),
            "len_p99": int(np.percentile(counts, 99)), "len_max": int(counts.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(parser)
    parser.add_argument("--data", choices=["synthetic", "real"], default="synthetic")
    parser.add_argument("--cache", type=Path, default=Path("bench-out/ann"))
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--name", default="churn")
    parser.add_argument("--no-fill-split", action="store_true",
                        help="LIRE without filling a split's new postings from the neighbours "
                             "it reads (index/spann/refill.py)")
    args = parser.parse_args()
    from index.spann.lire import SpannUpdater

    if args.data == "real":
        base_path, _ = real(args.cache, args.data_dir, args.queries)
        mixture = None
    else:
        base_path, _ = synthetic(args.cache, args.n, queries=args.queries)
        mixture = Mixture(max(10, args.n // 1000), 384, 0)
    base = np.load(base_path, mmap_mode="r")
    n, dim = base.shape
    per_round = int(round(args.churn * n))
    capacity = n + per_round * args.rounds
    vectors = np.empty((capacity, dim), dtype=np.float32)
    vectors[:n] = base
    live = np.ones(capacity, dtype=bool)
    live[n:] = False
    params = search_params(args)

    args.out.mkdir(parents=True, exist_ok=True)
    lire_dir, append_dir = args.out / "lire", args.out / "append"
    for folder in (lire_dir, append_dir):
        shutil.rmtree(folder, ignore_errors=True)
    tick = time.perf_counter()
    build = build_spann(base, lire_dir)
    build_s = time.perf_counter() - tick
    shutil.copytree(lire_dir, append_dir)
    shutil.rmtree(args.out / "build", ignore_errors=True)      # round 0 for the side by side:
    shutil.copytree(lire_dir, args.out / "build")              # the updaters reuse its space
    updaters = {"lire": SpannUpdater(lire_dir, fill_split=not args.no_fill_split),
                "append": SpannUpdater(append_dir, append_only=True)}
    rng = np.random.default_rng(7)
    rounds = []
    for r in range(args.rounds + 1):
        if r:
            dead, rows = churn_round(rng, live, vectors, n, per_round, r, mixture, args.drift)
        queries = (round_draw(mixture, r, args.drift, args.queries, "queries")
                   if mixture is not None else
                   vectors[rng.choice(np.flatnonzero(live), args.queries)])
        truth = exact_top(np.flatnonzero(live), vectors, queries)
        entry = {"round": r, "live": int(live.sum())}
        for name, updater in updaters.items():
            stats = {}
            if r:
                tick = time.perf_counter()
                updater.delete(dead)
                updater.insert(rows, vectors[rows])
                stats["update_s"] = time.perf_counter() - tick
                tick = time.perf_counter()
                summary = updater.commit(r)
                updater.reclaim()       # generation r is final here: its gaps are free space
                stats["commit_s"] = time.perf_counter() - tick
                stats["inserts_per_s"] = round(per_round / stats["update_s"], 1)
                stats["with_commit_per_s"] = round(
                    per_round / (stats["update_s"] + stats["commit_s"]), 1)
                changes = summary.get("changes", {})
                stats.update({k: changes.get(k, 0) for k in
                              ("splits", "trimmed", "merges", "reassigned", "relocations",
                               "filled")})
                stats["appended_mb"] = round(changes.get("bytes_appended", 0) / 1e6, 1)
            folder = lire_dir if name == "lire" else append_dir
            with SpannIndex.open(folder, generation=r if r else None, verify="size") as index:
                stats.update(measure(index, queries, truth, params))
                stats.update(posting_lengths(index))
            stats["disk_mb"] = round(folder_bytes(folder) / 1e6, 1)
            entry[name] = stats
        rounds.append(entry)
        print(json.dumps(entry), flush=True)

    rebuild_dir = args.out / "rebuild"
    live_rows = np.flatnonzero(live)
    tick = time.perf_counter()
    build_spann(vectors[live_rows], rebuild_dir)
    rebuild_s = time.perf_counter() - tick
    with SpannIndex.open(rebuild_dir) as index:
        rebuild = measure(index, queries, truth, params, rows_of=live_rows)
        rebuild.update(posting_lengths(index))
    rebuild.update({"build_s": round(rebuild_s, 1),
                    "disk_mb": round(folder_bytes(rebuild_dir) / 1e6, 1)})
    from benchmarks.churn_latency import side_by_side, systems_of   # (it imports this module)

    for updater in updaters.values():
        updater.close()
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "n": n, "dim": dim,
              "per_round": per_round, "search": params, "build_s": round(build_s, 1),
              "build": build, "rounds": rounds, "rebuild": rebuild,
              "side_by_side": side_by_side(systems_of(args.out, args.rounds), queries, params)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = report(result)
    (RESULTS / f"{args.name}.md").write_text(text)
    plot(result, RESULTS / f"{args.name}.png")
    print(text)


if __name__ == "__main__":
    main()
