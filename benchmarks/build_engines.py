"""Index build engines side by side: the local build vs ``--engine ray`` on the same cores.

    nice -n 19 python benchmarks/build_engines.py [--passages 2000] [--cpus N] [--engines local,ray]
        [--embed-backend torch] [--no-dense] [--gpus N]

The corpus is synthetic: --passages passages whose texts recombine 3-6 random sentences of the
sample corpus (searchagent/sample/corpus.jsonl.gz) and whose titles are sample titles with a
number, so any size can be made. Each engine builds BM25 + dense (bundled MiniLM, Flat; the
backend from --embed-backend) or, with --no-dense, BM25 alone (the corpus sizes where embedding
on 2 cores would take hours) in its own child process, Ray with ``num_cpus=--cpus`` (local torch uses the same cores). Reported:
seconds per build stage (the manifest's ``build_seconds``; ray's "docstore" stage also reads,
parses and counts BM25 terms in parallel), wall seconds of the whole call, the driver's peak
RSS and, sampled every 0.2 s, the peak sum over Ray's worker processes (``ray::*``) of RSS and
of USS (USS leaves out shared pages: torch's libraries, the object store) and the peak RSS sum
over every process Ray started. With --gpus N (a GPU machine), Ray embeds with one actor per
GPU and the local build embeds on CUDA. Writes bench-out/build_engines.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import OUT, ROOT, table  # noqa: E402

STAGES = ["ray_start", "docstore", "bm25", "embed", "vector_index"]
MB = 1 << 20


def synthetic_corpus(path: Path, n: int, seed: int = 0) -> None:
    rows = [json.loads(line) for line in
            gzip.open(ROOT / "searchagent/sample/corpus.jsonl.gz", "rt", encoding="utf-8")]
    sentences = [s for row in rows for s in re.split(r"(?<=[.!?])\s+", row["text"]) if s]
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            text = " ".join(rng.sample(sentences, rng.randint(3, 6)))
            title = f"{rng.choice(rows)['title']} {i}"
            out.write(json.dumps({"id": f"p{i}", "title": title, "text": text}) + "\n")


class Sampler(threading.Thread):
    """Peak memory, every 0.2 s: this process's RSS and sums over its descendants (Ray's
    processes)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks = {"driver_rss": 0, "workers_rss": 0, "workers_uss": 0, "all_rss": 0}
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.wait(0.2):
            sums = dict.fromkeys(self.peaks, 0)
            sums["driver_rss"] = me.memory_info().rss
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                    sums["all_rss"] += rss
                    if child.name().startswith("ray::") or \
                            " ".join(child.cmdline()[:1]).startswith("ray::"):
                        sums["workers_rss"] += rss
                        sums["workers_uss"] += child.memory_full_info().uss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            for key, value in sums.items():
                self.peaks[key] = max(self.peaks[key], value)


def child(engine: str, corpus: str, out: str, cpus: int, gpus: int, config) -> None:
    """One build in this process; prints its measurements as JSON on the last line."""
    import torch

    from index.build import build_index

    torch.set_num_threads(cpus)
    sampler = Sampler()
    sampler.start()
    started = time.perf_counter()
    manifest = build_index(corpus, out, config, engine=engine, num_cpus=cpus,
                           num_gpus=gpus if engine == "ray" else 0)
    wall = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    print(json.dumps({"engine": engine, "wall": wall, "stages": manifest["build_seconds"],
                      "passages": manifest["counts"]["passages"],
                      **sampler.peaks,   # this child's exact peak replaces the 0.2 s sample
                      "driver_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--embed-backend", default="torch")
    parser.add_argument("--no-dense", action="store_true", help="BM25 only")
    parser.add_argument("--gpus", type=int, default=0, help="Ray's embedding actors, one per GPU")
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "CORPUS", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from searchagent.config import Config

        config = Config()
        config.index.dense = not args.no_dense
        config.index.embed_backend = args.embed_backend
        return child(*args.child, args.cpus, args.gpus, config)
    results = []
    with tempfile.TemporaryDirectory(prefix="build-engines-") as work:
        corpus = Path(work) / "corpus.jsonl"
        synthetic_corpus(corpus, args.passages)
        for engine in args.engines.split(","):
            command = [sys.executable, __file__, "--cpus", str(args.cpus),
                       "--gpus", str(args.gpus), "--embed-backend", args.embed_backend,
                       "--child", engine, str(corpus), str(Path(work) / engine)
                       ] + ["--no-dense"] * args.no_dense
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                sys.exit(f"{engine} build failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = [[r["engine"], *[r["stages"].get(s, "-") for s in STAGES], r["wall"],
             round(r["passages"] / r["wall"], 1), r["driver_rss"] // MB,
             r["workers_rss"] // MB or "-", r["workers_uss"] // MB or "-",
             r["all_rss"] // MB or "-"] for r in results]
    built = "BM25 only" if args.no_dense else f"BM25 + dense ({args.embed_backend})"
    print(f"{args.passages} synthetic passages, {built}, {args.cpus} cores; seconds per "
          "stage; memory peaks in MB")
    print(table(["engine", *STAGES, "wall s", "passages/s", "driver RSS", "workers ΣRSS",
                 "workers ΣUSS", "all Ray ΣRSS"], rows))
    OUT.mkdir(exist_ok=True)
    (OUT / "build_engines.json").write_text(json.dumps(
        {"passages": args.passages, "cpus": args.cpus, "gpus": args.gpus,
         "dense": not args.no_dense,
         "embed_backend": args.embed_backend, "results": results}, indent=2))


if __name__ == "__main__":
    main()
