"""A chunked index with and without ``retrieval.windows_per_doc`` (pooled HotpotQA, BM25).

    .venv/bin/python benchmarks/windows.py [--chunks 20:5,40:10] [--limit 0]

Builds BM25 indexes of the pooled HotpotQA paragraphs (``benchmarks/retrieval.py``'s
corpus, 9,943 passages) cut into windows of W words overlapping by O, then asks every
question with windows_per_doc 0 (all windows), 1 (the default) and 2, side by side in one run: recall@k
of the supporting paragraphs (by title, as ``benchmarks/retrieval.py``), the distinct
documents among the top k, and the median search latency.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import OUT, SHARED_DATA, table  # noqa: E402
from benchmarks.retrieval import HOTPOT_FILES  # noqa: E402
from eval.loaders import load_dataset  # noqa: E402
from eval.pooling import pool_corpus  # noqa: E402
from index.build import build_index  # noqa: E402
from retrievers.searcher import Searcher  # noqa: E402
from retrievers.windows import document_id  # noqa: E402
from searchagent.config import Config  # noqa: E402

CUTOFFS = (2, 5, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="20:5,40:10", help="WORDS:OVERLAP,...")
    parser.add_argument("--limit", type=int, default=0, help="questions (0 = all)")
    args = parser.parse_args()
    paths = [SHARED_DATA / "hotpotqa" / f for f in HOTPOT_FILES]
    work = OUT / "retrieval"
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "hotpot_pool.jsonl"
    if not corpus.exists():
        pool_corpus({"hotpotqa": [str(p) for p in paths]}, corpus)
    examples = {}
    for path in paths:
        for example in load_dataset("hotpotqa", str(path)):
            examples.setdefault(example.id, example)
    questions = [e for e in examples.values() if e.supporting_titles]
    questions = questions[:args.limit] if args.limit else questions

    rows = []
    for spec in args.chunks.split(","):
        words, overlap = (int(v) for v in spec.split(":"))
        index = work / f"index-bm25-w{words}-o{overlap}"
        build = {"index": {"dense": False, "chunk_words": words, "chunk_overlap": overlap}}
        if not index.exists():
            build_index(corpus, index, Config().updated(build, "benchmark"))
        for limit in (0, 1, 2):
            config = Config().updated({**build, "retrieval": {"mode": "bm25",
                                                              "windows_per_doc": limit}}, "b")
            searcher = Searcher(index, config)
            recall, distinct, seconds = {k: 0.0 for k in CUTOFFS}, 0, []
            for example in questions:
                start = time.perf_counter()
                hits = searcher.search(example.question, max(CUTOFFS))
                seconds.append(time.perf_counter() - start)
                gold = set(example.supporting_titles)
                for k in CUTOFFS:
                    recall[k] += len(gold & {h.title for h in hits[:k]}) / len(gold)
                distinct += len({document_id(h.id) for h in hits[:5]})
            searcher.close()
            rows.append([f"{words}:{overlap}", limit or "all",
                         *(recall[k] / len(questions) for k in CUTOFFS),
                         distinct / len(questions), 1000 * statistics.median(seconds)])
    print(f"\n{len(questions)} questions, BM25 over windows of the pooled HotpotQA corpus")
    print(table(["words:overlap", "windows per doc", *(f"recall@{k}" for k in CUTOFFS),
                 "documents in top 5", "p50 ms"], rows))


if __name__ == "__main__":
    main()
