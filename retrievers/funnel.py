"""Coarse-to-fine retrieval funnel (FunnelRAG-style): many -> few, cheap -> strong.

1. coarse: BM25 and the vector index's approximate search (the SPANN index when built),
   each ``coarse_k`` wide, candidates unioned;
2. fine: exact inner products between the query vector and the stored passage embeddings
   (``Searcher.stored_vectors``: the build's and every update's) for every candidate,
   fused with the BM25 ranks by RRF, keeping a ``shortlist``;
3. optional: a cross-encoder re-ranks the shortlist (``retrievers.reranker``); best k kept.

``budget`` may hold ``deadline`` (a ``time.monotonic()`` instant; later stages are skipped
once it passes and the result is marked partial) and ``cancel`` (a ``threading.Event``).
"""

from __future__ import annotations

import time
from typing import Collection

import numpy as np

from retrievers.tokenize import tokenize
from searchagent.types import Hit, budget_spent


class FunnelRetriever:
    """Retriever protocol over an opened ``Searcher``; ``search_with_stats`` adds a
    per-stage account (seconds and candidate counts)."""

    def __init__(self, searcher, coarse_k: int = 100, shortlist: int = 20,
                 reranker=None, coarse: tuple[str, ...] = ("bm25", "ann"),
                 rrf_k: int | None = None):
        self.searcher, self.coarse_k, self.shortlist = searcher, coarse_k, shortlist
        self.reranker = reranker
        self.rrf_k = searcher.config.retrieval.rrf_k if rrf_k is None else rrf_k
        components = searcher.components
        self.use_bm25 = "bm25" in coarse and "bm25" in components
        self.use_dense = "dense" in components
        self.use_ann = "ann" in coarse and self.use_dense
        if not (self.use_bm25 or self.use_ann):
            raise ValueError("the funnel needs BM25 or a dense index for its coarse stage")

    def search(self, query: str, k: int, *, budget: dict | None = None) -> list[Hit]:
        return self.search_with_stats(query, k, budget=budget)[0]

    def search_with_stats(self, query: str, k: int, *, budget: dict | None = None,
                          exclude: Collection[int] = ()) -> tuple[list[Hit], dict]:
        """Best ``k`` passages for ``query``, never one whose row is in ``exclude``; every
        stage reads the generation current when the search starts (``using``: a server's
        index may commit an update meanwhile)."""
        with self.searcher.using() as searcher:
            return self._search(searcher, query, k, budget or {}, exclude)

    def _search(self, searcher, query: str, k: int, budget: dict,
                exclude: Collection[int]) -> tuple[list[Hit], dict]:
        stats: dict = {"partial": False, "stages": []}
        clock = time.perf_counter()
        if _stopped(budget):
            stats["partial"] = True
            return [], stats

        # 1. coarse: wide and cheap
        ranks: list[dict[int, int]] = []
        vector = None
        if self.use_bm25:
            rows, _ = searcher.bm25.index.top_k(tokenize(query), self.coarse_k + len(exclude))
            ranks.append(_rank_map(rows, exclude))
        if self.use_dense:
            vector = searcher.encoder.encode([query])[0]
        if self.use_ann:
            ids, _, ann = searcher.vector_index.search(
                vector[None, :], self.coarse_k + len(exclude), params=searcher.dense.params,
                deadline=budget.get("deadline"), cancel=budget.get("cancel"))
            stats["partial"] = bool(ann.partial)
            ranks.append(_rank_map([r for r in ids[0] if r >= 0], exclude))
        candidates = sorted(set().union(*ranks))
        clock = _stage(stats, "coarse", clock, len(candidates))
        if not candidates:
            return [], stats

        # 2. fine: exact dense scores on every candidate, fused with the coarse ranks
        stored = searcher.stored_vectors if vector is not None else None
        if stored is not None and not budget_spent(budget):
            exact = stored[np.asarray(candidates)] @ vector
            order = np.argsort(-exact, kind="stable")
            dense_rank = {candidates[i]: rank for rank, i in enumerate(order, start=1)}
            fine_ranks = ([ranks[0]] if self.use_bm25 else []) + [dense_rank]
            scored = _rrf(fine_ranks, self.rrf_k)
            top = _best(scored, max(k, self.shortlist))
            clock = _stage(stats, "exact_dense", clock, len(top))
        else:
            stats["partial"] = stats["partial"] or budget_spent(budget)
            scored = _rrf(ranks, self.rrf_k)
            top = _best(scored, max(k, self.shortlist))
        hits = searcher.docstore.hits(top, [scored[r] for r in top])

        # 3. optional cross-encoder on the shortlist
        if self.reranker is not None and hits and not budget_spent(budget):
            hits = self.reranker.rerank(query, hits)
            clock = _stage(stats, "cross_encoder", clock, len(hits))
        elif self.reranker is not None:
            stats["partial"] = True
        return hits[:k], stats


def _rank_map(rows, exclude: Collection[int]) -> dict[int, int]:
    kept = [int(r) for r in rows if int(r) not in exclude]
    return {row: rank for rank, row in enumerate(kept, start=1)}


def _rrf(rank_maps: list[dict[int, int]], rrf_k: int) -> dict[int, float]:
    fused: dict[int, float] = {}
    for ranks in rank_maps:
        for row, rank in ranks.items():
            fused[row] = fused.get(row, 0.0) + 1.0 / (rrf_k + rank)
    return fused


def _best(scored: dict[int, float], n: int) -> list[int]:
    return sorted(scored, key=lambda row: (-scored[row], row))[:n]


def _stage(stats: dict, name: str, since: float, kept: int) -> float:
    now = time.perf_counter()
    stats["stages"].append({"stage": name, "seconds": round(now - since, 6), "kept": kept})
    return now


def _stopped(budget: dict) -> bool:
    cancel = budget.get("cancel")
    return cancel is not None and cancel.is_set()
