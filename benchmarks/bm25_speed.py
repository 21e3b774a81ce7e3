"""BM25 speed: our CSR implementation side by side with rank-bm25, and ours at 1M+.

    python benchmarks/bm25_speed.py [--sizes 10000,100000,1000000] [--reference-max 100000]

Corpora are synthetic (Zipf-distributed vocabulary of 200k words, 30-90 words per
passage) so any size can be made; queries are 4-8 words drawn the same way. rank-bm25
runs only up to --reference-max passages (its scoring loops over every document in
Python per query term).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import percentiles_ms, table  # noqa: E402
from retrievers.bm25 import BM25Index  # noqa: E402


def synthetic_corpus(n: int, vocab: int = 200_000, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(30, 90, size=n)
    words = np.minimum(rng.zipf(1.1, size=int(lengths.sum())), vocab) - 1
    names = [f"w{i}" for i in range(vocab)]
    docs, start = [], 0
    for length in lengths:
        docs.append([names[w] for w in words[start:start + length]])
        start += length
    return docs


def queries(n: int, seed: int = 1) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    # skip the ~50 most frequent ("stopword-like") ranks, as a real tokenizer would
    return [[f"w{w}" for w in 50 + np.minimum(rng.zipf(1.3, size=rng.integers(4, 9)), 50_000)]
            for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--reference-max", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rows = []
    qs = queries(args.queries)
    for size in [int(s) for s in args.sizes.split(",")]:
        docs = synthetic_corpus(size)
        systems = [("searchagent CSR", lambda d: BM25Index.build(d),
                    lambda ix, q: ix.top_k(q, 10))]
        if size <= args.reference_max:
            systems.append(("rank-bm25", BM25Okapi,
                            lambda ix, q: np.argsort(ix.get_scores(q))[::-1][:10]))
        for name, build, search in systems:
            start = time.perf_counter()
            index = build(docs)
            built = time.perf_counter() - start
            n_q = len(qs) if name != "rank-bm25" else min(len(qs), 50)
            latencies = []
            for q in qs[:n_q]:
                start = time.perf_counter()
                search(index, q)
                latencies.append(time.perf_counter() - start)
            lat = percentiles_ms(latencies)
            rows.append([f"{size:,}", name, built, lat["p50"], lat["p95"], n_q])
            print(rows[-1], flush=True)
            del index
    print()
    print(table(["passages", "system", "index s", "query p50 ms", "query p95 ms",
                 "queries"], rows))


if __name__ == "__main__":
    main()
