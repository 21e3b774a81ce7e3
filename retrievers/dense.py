"""Dense retrieval: encode the query, search a VectorIndex, attach passages."""

from __future__ import annotations


from typing import Collection

from retrievers.docstore import DocStore
from retrievers.encoder import Encoder
from searchagent.types import Hit, SearchStats, VectorIndex


class DenseRetriever:
    """Retriever protocol over an encoder, a vector index and the doc store.

    ``budget`` may carry ``deadline`` (a ``time.monotonic()`` instant), ``cancel`` (a
    ``threading.Event``) and ``params`` (index search parameters such as ``nprobe``); a
    search the index cut short shows as ``partial`` in ``search_with_stats``.
    """

    def __init__(self, encoder: Encoder, index: VectorIndex, docstore: DocStore,
                 params: dict | None = None):
        self.encoder, self.index, self.docstore = encoder, index, docstore
        self.params = params or {}
        self.last_stats = None

    def search(self, query: str, k: int, *, budget: dict | None = None) -> list[Hit]:
        vector = self.encoder.encode([query])
        return self.search_vector(vector, k, budget=budget)

    def search_with_stats(self, query: str, k: int, *, budget: dict | None = None,
                          exclude: Collection[int] = ()) -> tuple[list[Hit], dict]:
        """``search`` (``exclude`` rows left out) and whether the index cut it short."""
        hits, stats = self._search(self.encoder.encode([query]), k + len(exclude), budget)
        return [hit for hit in hits if hit.row not in exclude][:k], {"partial": stats.partial}

    def search_vector(self, vector, k: int, *, budget: dict | None = None) -> list[Hit]:
        return self._search(vector, k, budget)[0]

    def _search(self, vector, k: int, budget: dict | None) -> tuple[list[Hit], SearchStats]:
        budget = budget or {}
        params = {**self.params, **budget.get("params", {})}
        ids, scores, stats = self.index.search(vector, k, params=params,
                                               deadline=budget.get("deadline"),
                                               cancel=budget.get("cancel"))
        self.last_stats = stats
        keep = ids[0] >= 0
        return self.docstore.hits(ids[0][keep], scores[0][keep]), stats
