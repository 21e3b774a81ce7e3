"""Memory and open files of an updatable server's searcher over many small updates.

    .venv/bin/python -m benchmarks.live_updates_memory --index demo-index --updates 150

A copy of ``--index`` is opened as ``retrievers.live_searcher.LiveSearcher`` (what
``searchagent serve --allow-updates`` holds); then ``--updates`` times: add one passage
(one generation, as one small ``POST /v1/documents`` does) and run one hybrid search.
Prints resident memory, open file descriptors and the generations readers still lease,
every ``--every`` updates, and the index folder's files and size with the mean seconds
per update since the last row. Each update opens the new generation's searcher; what
happens to the replaced one decides whether memory stays flat. ``--compact-every``
(``server.compact_every``; 0: never, as before that setting) bounds the folder.
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
from searchagent.config import Config  # noqa: E402
from searchagent.types import Passage  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def file_size(path: Path) -> int | None:
    """A file's size; None for a folder, or a file removed since it was listed (a lease)."""
    try:
        return path.stat().st_size if path.is_file() else None
    except FileNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default="demo-index", type=Path)
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--compact-every", type=int, default=Config().server.compact_every)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="live-memory-") as scratch:
        folder = Path(scratch) / "index"
        shutil.copytree(args.index, folder)
        config = Config().updated({"server": {"compact_every": args.compact_every}}, "bench")
        live = LiveSearcher(folder, config)
        live.search("Insomnia director", 10, "hybrid")      # every component loaded
        print(f"index {args.index}: {live.counts()['live']} passages, {args.updates} "
              f"updates of one passage, a hybrid search after each, compact every "
              f"{args.compact_every or 'never'}\n")
        print("| updates | RSS MB | open files | generations still leased | index files | "
              "index MB | s per update (since the last row) |")
        print("|---|---|---|---|---|---|---|")
        started, last = time.perf_counter(), 0

        def row(n: int, seconds: str) -> None:
            sizes = [file_size(f) for f in folder.rglob("*")]
            sizes = [size for size in sizes if size is not None]
            print(f"| {n} | {rss_mb():.0f} | {open_files()} | "
                  f"{len(held_generations(folder, live.generation))} | {len(sizes)} | "
                  f"{sum(sizes) / 1e6:.1f} | {seconds} |", flush=True)

        row(0, "-")
        for n in range(1, args.updates + 1):
            live.add([Passage(f"bench-{n}", f"Benchmark passage {n}",
                              f"Passage number {n} added while the server searches.")])
            live.search(f"Benchmark passage {n}", 10, "hybrid")
            if n % args.every == 0 or n == args.updates:
                row(n, f"{(time.perf_counter() - started) / (n - last):.2f}")
                started, last = time.perf_counter(), n
        live.close()


if __name__ == "__main__":
    main()
