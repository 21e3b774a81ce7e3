"""Retrieval quality and speed on the pooled HotpotQA corpus: BM25 vs dense vs hybrid.

    python benchmarks/retrieval.py [--faiss Flat] [--limit 0]

Pools every context paragraph of the HotpotQA files in ../shared/data that have them
(de-duplicated by title+text), builds one index (timing each stage), then uses every
question of those files as a query: recall@{2,5,10,20} of the supporting paragraphs
(matched by title) and per-query latency for each retrieval mode.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import OUT, SHARED_DATA, percentiles_ms, table  # noqa: E402
from eval.loaders import load_dataset  # noqa: E402
from eval.pooling import pool_corpus  # noqa: E402
from index.build import build_index  # noqa: E402
from index.manifest import read_manifest  # noqa: E402
from retrievers.searcher import Searcher  # noqa: E402
from searchagent.config import load_config  # noqa: E402

HOTPOT_FILES = ["megagonlabs__RPT/dev.jsonl", "megagonlabs__RPT/train.jsonl",
                "xindili-cmu__anlp-project-multihop/dev_subsampled.jsonl"]
CUTOFFS = (2, 5, 10, 20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faiss", default="Flat")
    parser.add_argument("--limit", type=int, default=0, help="questions (0 = all)")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    paths = [SHARED_DATA / "hotpotqa" / f for f in HOTPOT_FILES]
    work = OUT / "retrieval"
    work.mkdir(parents=True, exist_ok=True)
    corpus, index_dir = work / "hotpot_pool.jsonl", work / f"index-{args.faiss.replace(',', '_')}"
    if args.rebuild or not corpus.exists():
        stats = pool_corpus({"hotpotqa": [str(p) for p in paths]}, corpus)
        print(f"pooled {stats['passages']} passages from {stats['paragraphs']} paragraphs")
    config = load_config(env={}, cli={"index": {"faiss": args.faiss}})
    if args.rebuild or not index_dir.exists():
        build_index(corpus, index_dir, config, overwrite=True)
    manifest = read_manifest(index_dir)

    examples = {}
    for path in paths:
        for example in load_dataset("hotpotqa", str(path)):
            examples.setdefault(example.id, example)
    questions = [e for e in examples.values() if e.supporting_titles]
    if args.limit:
        questions = questions[:args.limit]

    searcher = Searcher(index_dir, config)
    searcher.search("warm up", 5, "hybrid")
    rows = []
    for mode in ("bm25", "dense", "hybrid"):
        recalls = {k: 0.0 for k in CUTOFFS}
        latencies = []
        for example in questions:
            start = time.perf_counter()
            hits = searcher.search(example.question, max(CUTOFFS), mode)
            latencies.append(time.perf_counter() - start)
            gold = set(example.supporting_titles)
            for k in CUTOFFS:
                recalls[k] += len(gold & {h.title for h in hits[:k]}) / len(gold)
        lat = percentiles_ms(latencies)
        rows.append([mode] + [recalls[k] / len(questions) for k in CUTOFFS]
                    + [lat["p50"], lat["p95"]])
    print(f"\n{manifest['counts']['passages']} passages, {len(questions)} questions, "
          f"vector index {args.faiss}")
    print(table(["mode"] + [f"recall@{k}" for k in CUTOFFS] + ["p50 ms", "p95 ms"], rows))
    build = manifest["build_seconds"]
    print()
    print(table(["stage", "seconds"], [[stage, secs] for stage, secs in build.items()]))
    print(f"\nembedding throughput: {manifest['components']['dense']['passages_per_second']} "
          "passages/s")


if __name__ == "__main__":
    main()
