"""Hybrid retrieval by reciprocal-rank fusion (RRF) of any number of retrievers."""

from __future__ import annotations

from searchagent.types import Hit, Retriever


def rrf_fuse(rankings: list[list[Hit]], k: int, rrf_k: int = 60) -> list[Hit]:
    """Fuse ranked lists: score(d) = sum over lists of 1 / (rrf_k + rank(d))."""
    fused: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for hits in rankings:
        for rank, hit in enumerate(hits, start=1):
            fused[hit.id] = fused.get(hit.id, 0.0) + 1.0 / (rrf_k + rank)
            first.setdefault(hit.id, hit)
    order = sorted(fused, key=lambda pid: (-fused[pid], pid))[:k]
    return [Hit(id=pid, score=fused[pid], title=first[pid].title, text=first[pid].text,
                row=first[pid].row) for pid in order]


class HybridRetriever:
    """Retrieve ``depth`` candidates from each retriever and fuse them with RRF."""

    def __init__(self, retrievers: list[Retriever], rrf_k: int = 60, depth: int = 50):
        self.retrievers, self.rrf_k, self.depth = retrievers, rrf_k, depth

    def search(self, query: str, k: int, *, budget: dict | None = None) -> list[Hit]:
        depth = max(k, self.depth)
        return rrf_fuse([r.search(query, depth, budget=budget) for r in self.retrievers], k,
                        self.rrf_k)
