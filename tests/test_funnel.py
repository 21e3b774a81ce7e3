"""The coarse-to-fine funnel on the real 400-passage index (BM25 + dense Flat)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from retrievers.funnel import FunnelRetriever
from retrievers.tokenize import tokenize
from searchagent.errors import BackendError

QUERY = "Tinted Windows band first performance city"


def test_stages_counts_and_order(searcher):
    funnel = FunnelRetriever(searcher, coarse_k=50, shortlist=10)
    hits, stats = funnel.search_with_stats(QUERY, 5)
    assert len(hits) == 5 and not stats["partial"]
    assert [s["stage"] for s in stats["stages"]] == ["coarse", "exact_dense"]
    assert stats["stages"][0]["kept"] >= 50 and stats["stages"][1]["kept"] == 10
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert "Tinted Windows" in hits[0].title and hits[0].text
    narrow = FunnelRetriever(searcher, coarse_k=50, shortlist=2)     # k above the shortlist:
    hits, stats = narrow.search_with_stats(QUERY, 10)               # 10 kept, 2 reported
    assert len(hits) == 10 and stats["stages"][1]["kept"] == 10


def test_fine_stage_fuses_bm25_with_exact_dense_scores(searcher):
    """Recompute stage 2 independently: RRF of the BM25 ranks and exact inner products."""
    funnel = FunnelRetriever(searcher, coarse_k=30, shortlist=10, coarse=("bm25",))
    got = [h.row for h in funnel.search(QUERY, 5)]
    rows, _ = searcher.bm25.index.top_k(tokenize(QUERY), 30)
    vectors = np.load(searcher.folder / "dense" / "embeddings.npy")[rows].astype(np.float32)
    dense_order = rows[np.argsort(-(vectors @ searcher.encoder.encode([QUERY])[0]),
                                  kind="stable")]
    fused = {int(r): 1 / (61 + i) for i, r in enumerate(rows)}
    for i, r in enumerate(dense_order):
        fused[int(r)] += 1 / (61 + i)
    assert got == sorted(fused, key=lambda r: (-fused[r], r))[:5]
    assert funnel.rrf_k == searcher.config.retrieval.rrf_k    # a constant 60 ignored it


def test_exclude_moves_each_hop_forward(searcher):
    funnel = FunnelRetriever(searcher, coarse_k=40, shortlist=10)
    first, _ = funnel.search_with_stats(QUERY, 4)
    second, _ = funnel.search_with_stats(QUERY, 4, exclude={h.row for h in first})
    assert len(second) == 4
    assert not {h.id for h in first} & {h.id for h in second}


def test_deadline_returns_coarse_best_so_far_and_cancel_returns_nothing(searcher):
    funnel = FunnelRetriever(searcher, coarse_k=40, shortlist=10)
    hits, stats = funnel.search_with_stats(QUERY, 3, budget={"deadline": time.monotonic() - 1})
    assert len(hits) == 3 and stats["partial"]
    assert [s["stage"] for s in stats["stages"]] == ["coarse"]
    cancel = threading.Event()
    cancel.set()
    hits, stats = funnel.search_with_stats(QUERY, 3, budget={"cancel": cancel})
    assert hits == [] and stats["partial"]


def test_optional_cross_encoder_stage(searcher):
    """A real CrossEncoder over a local BERT folder (the embedder's; its scoring head is
    untrained, so only the mechanics are checked: scores, order, stage account)."""
    from retrievers.reranker import CrossEncoderReranker
    from searchagent.models import embedder_path

    with pytest.raises(BackendError, match="not found"):
        CrossEncoderReranker("/nonexistent/cross-encoder")
    reranker = CrossEncoderReranker(embedder_path())
    funnel = FunnelRetriever(searcher, coarse_k=30, shortlist=8, reranker=reranker)
    hits, stats = funnel.search_with_stats(QUERY, 3)
    assert [s["stage"] for s in stats["stages"]] == ["coarse", "exact_dense", "cross_encoder"]
    assert len(hits) == 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    direct = reranker.rerank(QUERY, hits)
    assert [h.id for h in direct] == [h.id for h in hits]
