"""At most N windows of one document among a chunked index's hits
(``retrieval.windows_per_doc``).

A build with ``index.chunk_words`` splits long passages into overlapping windows ``ID#0``,
``ID#1``, ...; a query that matches a document well often matches several of its windows,
which then fill the top k with one document's overlapping text. Collapsing keeps each
document's best ``limit`` windows in rank order and fetches deeper until k hits remain (at
most ``ROUNDS`` searches, each ``GROWTH`` times deeper), like a search engine's
field collapsing, or Pyserini's MaxP over a segmented corpus.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Iterable

from searchagent.types import Hit

WINDOW = re.compile(r"(.*)#[0-9]+")
FIRST_FETCH, GROWTH, ROUNDS = 3, 4, 3


def document_id(passage_id: str) -> str:
    """The corpus id a window came from (``ID#n`` -> ``ID``; a whole passage: its id)."""
    match = WINDOW.fullmatch(passage_id)
    return match.group(1) if match else passage_id


def collapse(hits: list[Hit], limit: int, shown: Iterable[str] = ()) -> list[Hit]:
    """``hits`` in order, with at most ``limit`` of each document, counting the passages
    ``shown`` already (an earlier hop's)."""
    seen = Counter(document_id(pid) for pid in shown)
    kept = []
    for hit in hits:
        doc = document_id(hit.id)
        if seen[doc] < limit:
            seen[doc] += 1
            kept.append(hit)
    return kept


def search_collapsed(search: Callable[[int], tuple[list[Hit], dict]], k: int,
                     limit: int, shown: Iterable[str] = ()) -> tuple[list[Hit], dict]:
    """``search(depth) -> (hits, stats)``, collapsed to ``limit`` windows per document
    (``collapse``) and cut to ``k``; ``limit`` 0 is one plain search of ``k``. The stats
    gain ``windows_dropped``: hits left out as further windows of a document."""
    if limit <= 0:
        return search(k)
    depth, shown = k * FIRST_FETCH, list(shown)
    for _ in range(ROUNDS):
        hits, stats = search(depth)
        kept = collapse(hits, limit, shown)
        if len(kept) >= k or len(hits) < depth:     # enough, or nothing deeper to find
            break
        depth *= GROWTH
    return kept[:k], {**stats, "windows_dropped": len(hits) - len(kept)}
