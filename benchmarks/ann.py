"""SPANN-style disk index vs FAISS (IVF on disk, HNSW in RAM, Flat), side by side.

    .venv/bin/python -m benchmarks.ann --datasets real,syn100k,syn1m,syn2m \
        --cache bench-out/ann --queries 1000 --cold-queries 200

Per dataset: build every system (cached under ``--cache``; build time and bytes on disk
recorded), exact ground truth by FAISS Flat, then each system is measured in a fresh
process (``benchmarks.ann_worker``): recall@10 against single-thread p50/p99 latency per
setting (warm and cold), QPS with 2 threads, and resident memory of the loaded index.
Writes ``benchmarks/results/ann.json``, ``ann.md`` (tables) and ``ann_recall_latency.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.ann_data import real, synthetic
from benchmarks.ann_report import plot, tables
from benchmarks.ann_systems import SYSTEMS, build

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"syn20k": 20_000, "syn100k": 100_000, "syn1m": 1_000_000, "syn2m": 2_000_000}


def ground_truth(base_path: Path, queries: np.ndarray, out: Path, k: int = 100) -> np.ndarray:
    """Exact top-k by inner product, streaming the base in blocks."""
    if out.exists():
        return np.load(out)
    import faiss

    base = np.load(base_path, mmap_mode="r")
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for lo in range(0, len(base), 200_000):
        index = faiss.IndexFlatIP(base.shape[1])
        index.add(np.ascontiguousarray(base[lo:lo + 200_000], dtype=np.float32))
        s, i = index.search(queries, k)
        all_s, all_i = np.hstack([best_s, s]), np.hstack([best_i, i + lo])
        top = np.argsort(-all_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    np.save(out, best_i)
    return best_i


def dataset(name: str, cache: Path, data: Path, n_queries: int):
    if name == "real":
        base, queries = real(cache, data, n_queries)
    else:
        base, queries = synthetic(cache, SIZES[name], queries=n_queries)
    return base, np.ascontiguousarray(queries[:n_queries], dtype=np.float32)


def measure(name: str, system: str, folder: Path, base: Path, qpath: Path, gtpath: Path,
            cold_queries: int) -> dict:
    path = os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ann_worker", system, str(folder),
                           str(base), str(qpath), str(gtpath), str(cold_queries)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}/{system} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="real,syn100k,syn1m")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--cache", default="bench-out/ann")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--cold-queries", type=int, default=200)
    parser.add_argument("--results", default=str(RESULTS), help="folder for json/md/png")
    parser.add_argument("--merge", nargs="*", default=[],
                        help="only merge these result JSONs (e.g. from another machine) and report")
    parser.add_argument("--machine", default=f"{os.cpu_count()} CPUs (dev machine)",
                        help="label for the tables")
    parser.add_argument("--skip", default="", help="dataset:system pairs to skip, e.g. syn2m:hnsw")
    args = parser.parse_args(argv)
    cache, data = Path(args.cache), Path(args.data)
    skip = set(filter(None, args.skip.split(",")))
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    out_json = results_dir / "ann.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    for path in args.merge:
        results.update(json.loads(Path(path).read_text()))
    for name in ([] if args.merge else args.datasets.split(",")):
        base, queries = dataset(name, cache, data, args.queries)
        qpath, gtpath = cache / f"{name}-queries.npy", cache / f"{name}-gt.npy"
        np.save(qpath, queries)
        start = time.perf_counter()
        ground_truth(base, queries, gtpath)
        n, dim = np.load(base, mmap_mode="r").shape
        entry = results.setdefault(name, {})
        entry.update({"n": n, "dim": dim, "queries": len(queries), "machine": args.machine,
                      "gt_seconds": round(time.perf_counter() - start, 1)})
        for system in args.systems.split(","):
            if f"{name}:{system}" in skip:
                continue
            folder = cache / "indexes" / name / system
            print(f"[{name}] building {system}", flush=True)
            info = build(system, base, folder)
            print(f"[{name}] measuring {system}", flush=True)
            entry.setdefault("systems", {})[system] = {
                **info, **measure(name, system, folder, base, qpath, gtpath, args.cold_queries)}
            out_json.write_text(json.dumps(results, indent=1))
    text = tables(results)
    out_json.write_text(json.dumps(results, indent=1))
    (results_dir / "ann.md").write_text(text)
    try:
        plot(results, results_dir / "ann_recall_latency.png")
    except ImportError:
        print("matplotlib missing: no plot written", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
