"""Memory and open files of an updatable server's searcher over many small updates.

    .venv/bin/python -m benchmarks.live_updates_memory --index demo-index --updates 150

A copy of ``--index`` is opened as ``retrievers.live_searcher.LiveSearcher`` (what
``searchagent serve --allow-updates`` holds); then ``--updates`` times: add one passage
(one generation, as one small ``POST /v1/documents`` does) and run one hybrid search.
Prints resident memory, open file descriptors and the generations readers still lease,
every ``--every`` updates. Each update opens the new generation's searcher; what happens
to the replaced one decides whether memory stays flat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.leases import held_generations  # noqa: E402
from retrievers.live_searcher import LiveSearcher  # noqa: E402
from searchagent.types import Passage  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="demo-index", type=Path)
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--every", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="live-memory-") as scratch:
        folder = Path(scratch) / "index"
        shutil.copytree(args.index, folder)
        live = LiveSearcher(folder)
        live.search("Insomnia director", 10, "hybrid")      # every component loaded
        print(f"index {args.index}: {live.counts()['live']} passages, {args.updates} "
              "updates of one passage, a hybrid search after each\n")
        print("| updates | RSS MB | open files | generations still leased | s per update |")
        print("|---|---|---|---|---|")
        started = time.perf_counter()

        def row(n: int, seconds: str) -> None:
            print(f"| {n} | {rss_mb():.0f} | {open_files()} | "
                  f"{len(held_generations(folder, live.generation))} | {seconds} |", flush=True)

        row(0, "-")
        for n in range(1, args.updates + 1):
            live.add([Passage(f"bench-{n}", f"Benchmark passage {n}",
                              f"Passage number {n} added while the server searches.")])
            live.search(f"Benchmark passage {n}", 10, "hybrid")
            if n % args.every == 0 or n == args.updates:
                row(n, f"{(time.perf_counter() - started) / n:.2f}")
        live.close()


if __name__ == "__main__":
    main()
