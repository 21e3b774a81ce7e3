"""What opening a FAISS index costs after many updates, before and after compaction.

    .venv/bin/python -m benchmarks.faiss_updates --factories Flat,HNSW32 --added 50000

An index over ``--base`` sample passages is built per factory; ``--generations`` updates
then add ``--added`` passages in all. Their vectors are random unit vectors (this measures
opening the index, not embedding: the encoder is replaced by a random one, the rest of
each update is the real ``LivingIndex``). Then, side by side, the median of ``--repeat``:

- *open from disk*: ``Searcher.vector_index`` as it opens a generation: the FAISS file
  plus every update's segment added (what each generation a server opened used to pay);
- *next generation (server)*: ``LiveSearcher`` after one more one-passage update: the
  previous generation's index copied and the new segment added;
- *open after compaction*: ``index compact`` folded the segments into one FAISS file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index.build import build_index  # noqa: E402
from index.living import LivingIndex  # noqa: E402
from retrievers.live_searcher import LiveSearcher  # noqa: E402
from retrievers.searcher import Searcher  # noqa: E402
from searchagent.config import Config  # noqa: E402
from searchagent.types import Passage  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "searchagent" / "sample" / "corpus.jsonl.gz"


class RandomEncoder:
    """Unit random vectors of the index's dimension (stands in for embedding only)."""

    def __init__(self, dim: int, seed: int = 0):
        self.dim, self.rng = dim, np.random.default_rng(seed)

    def encode(self, texts, batch_size=None) -> np.ndarray:
        out = self.rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def median_seconds(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def open_from_disk(folder: Path) -> None:
    searcher = Searcher(folder, verify="size")
    try:
        searcher.vector_index
    finally:
        searcher.close()


def measure(factory: str, args, scratch: Path) -> dict:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(args.base)]
    corpus = scratch / f"base-{factory}.jsonl"
    corpus.write_text("".join(lines))
    folder = scratch / f"index-{factory}"
    config = Config().updated({"index": {"faiss": factory, "bm25": False}}, "benchmark")
    build_index(corpus, folder, config)
    dim = json.loads((folder / "manifest.json").read_text())["components"]["dense"]["dim"]
    per = args.added // args.generations
    with LivingIndex(folder) as living:
        living.use_encoder(RandomEncoder(dim))
        for g in range(args.generations):
            living.add([Passage(id=f"syn-{g}-{i}", title="", text=f"synthetic {g} {i}")
                        for i in range(per)])
    row = {"factory": factory, "rows": args.base + per * args.generations}
    row["disk"] = median_seconds(lambda: open_from_disk(folder), args.repeat)
    live = LiveSearcher(folder)
    try:
        live.current.vector_index
        live.writer.use_encoder(RandomEncoder(dim, seed=1))
        live.add([Passage(id="one-more", title="", text="one more")])
        row["follow"] = median_seconds(lambda: follow(live), args.repeat)
    finally:
        live.close()
    with LivingIndex(folder) as living:
        living.compact(drop_old=True)
    row["compacted"] = median_seconds(lambda: open_from_disk(folder), args.repeat)
    return row


def follow(live: LiveSearcher) -> None:
    """Open the current generation again the way a server opens its next one: a copy of
    the previous generation's index (here: the same generation's, so nothing to add)."""
    fresh = Searcher(live.folder, live.config, verify="size", docstore=live.docstore)
    try:
        fresh.open_vector_index_after(live.current)
    finally:
        fresh.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factories", default="Flat,HNSW32")
    parser.add_argument("--base", type=int, default=500)
    parser.add_argument("--added", type=int, default=50_000)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faiss-updates-") as scratch:
        rows = [measure(f, args, Path(scratch)) for f in args.factories.split(",")]
    print(f"\n{args.base} built passages + {args.added} added in {args.generations} "
          f"updates; median of {args.repeat}, seconds\n")
    print("| factory | rows | open from disk (segments re-added) | next generation (copy + "
          "new segment) | open after compaction | disk / next generation |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['factory']} | {r['rows']} | {r['disk']:.3f} | {r['follow']:.3f} | "
              f"{r['compacted']:.3f} | {r['disk'] / r['follow']:.0f}x |")


if __name__ == "__main__":
    main()
