"""At most N windows of one document among a chunked index's hits
(``retrieval.windows_per_doc``).

A build with ``index.chunk_words`` splits long passages into overlapping windows ``ID#0``,
``ID#1``, ...; a query that matches a document well often matches several of its windows,
which then fill the top k with one document's overlapping text. ``CollapsingRetriever``
keeps each document's best ``limit`` windows in rank order and searches deeper until k
hits remain (at most ``ROUNDS`` searches, each ``GROWTH`` times deeper; none once the
search was cut or its time is up), like a search engine's field collapsing, or Pyserini's
MaxP over a segmented corpus. A search that cannot go deeper (IVF's ``nprobe``, SPANN's
postings, the funnel's candidates) is topped up, after the documents it found, with the
best windows it left out (``top_up``): never fewer hits than without collapsing. It sits
under the scheduler, so one search is one retrieval however deep it went; a served hybrid
search fuses its parts' windows in the scheduler and collapses them there. Each search collapses
on its own: a later multi-hop hop may bring another window of a document an earlier hop
found (never the same one: those rows are excluded).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Collection

from searchagent.types import Hit, budget_spent, search_with_stats

WINDOW = re.compile(r"(.*)#[0-9]+", re.DOTALL)     # an id may hold a newline
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
        depth, partial = k * FIRST_FETCH, False
        best: tuple[list[Hit], dict, list[Hit]] | None = None
        for _ in range(ROUNDS):
            hits, stats = search_with_stats(self.inner, query, depth, budget=budget,
                                            exclude=exclude)
            partial = partial or bool(stats.get("partial"))
            kept = collapse(hits, self.limit)
            if best is None or len(kept) > len(best[2]):    # a cut round never undoes one
                best = hits, stats, kept
            if len(kept) >= k or len(hits) < depth or partial or budget_spent(budget):
                break                                       # enough, the end, or no time
            depth *= GROWTH
        hits, stats, kept = best
        kept, dropped = top_up(hits, kept, k)
        stats = {**stats, "windows_dropped": dropped}
        if partial:
            stats["partial"] = True
        return kept, stats


def top_up(hits: list[Hit], kept: list[Hit], k: int) -> tuple[list[Hit], int]:
    """The first ``k`` of ``kept`` (``collapse(hits, ...)``), topped up when fewer with the
    best windows it left out (a bounded search: IVF's nprobe, SPANN's postings, the
    funnel's candidates, a cut: never fewer hits than without collapsing); and how many
    windows ranked above the last hit returned were left out."""
    rank = {id(hit): n for n, hit in enumerate(hits)}
    kept = kept[:k]
    if len(kept) < k:
        shown = {id(hit) for hit in kept}
        kept += [hit for hit in hits if id(hit) not in shown][:k - len(kept)]
    last = max((rank[id(hit)] for hit in kept), default=-1)
    return kept, last + 1 - len(kept)
