"""At most N windows of one document among a chunked index's hits
(``retrieval.windows_per_doc``).

A build with ``index.chunk_words`` splits long passages into overlapping windows ``ID#0``,
``ID#1``, ...; a query that matches a document well often matches several of its windows,
which then fill the top k with one document's overlapping text. ``CollapsingRetriever``
keeps each document's best ``limit`` windows in rank order and searches deeper until k
hits remain (at most ``ROUNDS`` searches, each ``GROWTH`` times deeper), like a search
engine's field collapsing, or Pyserini's MaxP over a segmented corpus. It sits under the
scheduler, so one search is one retrieval however deep it went. Each search collapses
on its own: a later multi-hop hop may bring another window of a document an earlier hop
found (never the same one: those rows are excluded).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Collection

from searchagent.types import Hit

WINDOW = re.compile(r"(.*)#[0-9]+")
FIRST_FETCH, GROWTH, ROUNDS = 3, 4, 3


def document_id(passage_id: str) -> str:
    """The corpus id a window came from (``ID#n`` -> ``ID``; a whole passage: its id)."""
    match = WINDOW.fullmatch(passage_id)
    return match.group(1) if match else passage_id


def collapse(hits: list[Hit], limit: int) -> list[Hit]:
    """``hits`` in order, with at most ``limit`` of each document."""
    seen: Counter = Counter()
    kept = []
    for hit in hits:
        doc = document_id(hit.id)
        if seen[doc] < limit:
            seen[doc] += 1
            kept.append(hit)
    return kept


class CollapsingRetriever:
    """Retriever protocol (with ``search_with_stats`` and ``exclude``) over another, with
    at most ``limit`` windows of one document; the stats gain ``windows_dropped``: the
    windows ranked above the last hit returned that were left out."""

    def __init__(self, inner, limit: int):
        self.inner, self.limit = inner, int(limit)

    def search(self, query: str, k: int, *, budget: dict | None = None) -> list[Hit]:
        return self.search_with_stats(query, k, budget=budget)[0]

    def search_with_stats(self, query: str, k: int, *, budget: dict | None = None,
                          exclude: Collection[int] = ()) -> tuple[list[Hit], dict]:
        depth = k * FIRST_FETCH
        for _ in range(ROUNDS):
            hits, stats = self._search(query, depth, budget, exclude)
            kept = collapse(hits, self.limit)
            if len(kept) >= k or len(hits) < depth:     # enough, or nothing deeper to find
                break
            depth *= GROWTH
        kept = kept[:k]
        shown = {id(hit) for hit in kept}
        last = max((n for n, hit in enumerate(hits) if id(hit) in shown), default=-1)
        return kept, {**stats, "windows_dropped": last + 1 - len(kept)}

    def _search(self, query, depth, budget, exclude) -> tuple[list[Hit], dict]:
        if hasattr(self.inner, "search_with_stats"):
            return self.inner.search_with_stats(query, depth, budget=budget, exclude=exclude)
        hits = self.inner.search(query, depth + len(exclude), budget=budget)
        return [h for h in hits if h.row not in exclude][:depth], {}
