"""SPANN build with its stages (clustering, replication, posting writes) local vs in Ray tasks.

    .venv/bin/python -m benchmarks.spann_ray --n 1000000 --cache bench-out/ann [--cpus 2]

The synthetic mixture of ``benchmarks/ann_data.py`` (cached ``.npy``), built by
``build_spann`` twice: its stages in this process (``LocalStages``), then
``index.build_ray_spann.RayStages`` on a local Ray with ``--cpus`` CPUs (Ray's start-up
is timed apart). Prints the stages' seconds, the peak memory during each build (sampled
every 0.2 s: this process's RSS, and the sum over Ray's worker processes) and whether
every file came out identical.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.ann_data import synthetic
from benchmarks.build_engines import MB, Sampler
from benchmarks.common import table
from index.spann import build_spann


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--cache", type=Path, default=Path("bench-out/ann"))
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    import ray

    from index.build_ray_spann import RayStages

    path = synthetic(args.cache, args.n)[0]
    dim = np.load(path, mmap_mode="r").shape[1]
    work = Path(tempfile.mkdtemp(prefix="spann-ray-", dir=args.cache))
    rows, files = [], {}
    try:
        for engine in ("local", "ray"):
            stages, ray_start = None, 0.0
            if engine == "ray":
                tick = time.perf_counter()
                ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                         logging_level="WARNING")
                ray_start = time.perf_counter() - tick
                stages = RayStages(path)
            vectors = np.load(path, mmap_mode="r")    # mapped afresh: RSS counts its pages
            sampler = Sampler()
            sampler.start()
            tick = time.perf_counter()
            summary = build_spann(vectors, work / engine, stages=stages)
            wall = time.perf_counter() - tick
            sampler.stop.set()
            sampler.join()
            del vectors
            gc.collect()                               # unmap before the next engine
            peaks = {key: value // MB for key, value in sampler.peaks.items()}
            seconds = summary["build_seconds"]
            rows.append([engine, f"{ray_start:.1f}" if engine == "ray" else "-",
                         f"{seconds['clustering']:.1f}", f"{seconds['replication']:.1f}",
                         f"{seconds['postings']:.1f}", f"{seconds['head_index']:.1f}",
                         f"{wall:.1f}", peaks["driver_rss"], peaks["workers_rss"] or "-"])
            files[engine] = json.loads((work / engine / "spann.json").read_text())["files"]
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nSPANN build, {args.n:,} x {dim} synthetic, {args.cpus} CPUs; "
          f"identical files: {files['local'] == files['ray']}\n")
    print(table(["engine", "Ray start s", "clustering s", "replication s", "postings s",
                 "head graph s", "build wall s", "driver peak RSS MB",
                 "Ray workers peak ΣRSS MB"], rows))


if __name__ == "__main__":
    main()
