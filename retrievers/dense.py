"""Dense retrieval: encode the query, search a VectorIndex, attach passages."""

from __future__ import annotations


from retrievers.docstore import DocStore
from retrievers.encoder import Encoder
from searchagent.types import Hit, VectorIndex


class DenseRetriever:
    """Retriever protocol over an encoder, a vector index and the doc store.

    ``budget`` may carry ``deadline`` (a ``time.monotonic()`` instant) and ``params``
    (index search parameters such as ``nprobe``); a deadline cut shows as ``partial``.
    """

    def __init__(self, encoder: Encoder, index: VectorIndex, docstore: DocStore,
                 params: dict | None = None):
        self.encoder, self.index, self.docstore = encoder, index, docstore
        self.params = params or {}
        self.last_stats = None

    def search(self, query: str, k: int, *, budget: dict | None = None) -> list[Hit]:
        vector = self.encoder.encode([query])
        return self.search_vector(vector, k, budget=budget)

    def search_vector(self, vector, k: int, *, budget: dict | None = None) -> list[Hit]:
        budget = budget or {}
        params = {**self.params, **budget.get("params", {})}
        ids, scores, stats = self.index.search(vector, k, params=params,
                                               deadline=budget.get("deadline"))
        self.last_stats = stats
        keep = ids[0] >= 0
        return self.docstore.hits(ids[0][keep], scores[0][keep])
