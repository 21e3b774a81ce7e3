"""The pieces of a living BM25 index's postings in memory, and the arithmetic over them.

A ``Part`` is one immutable term-major CSR (the build's base, a compacted base or a segment
written by one commit); ``segment_part`` makes one from staged counts, ``merged_part``
merges every part into a compacted base and ``term_counts`` finds the document frequencies
that deletions take away. Their files are ``retrievers.bm25_files``; the index that uses
them is ``retrievers.bm25_live``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from retrievers.bm25 import count_array

CHUNK = 1 << 22              # postings scanned at a time when counting deleted documents
BAR_POSTINGS = 1 << 24       # progress bars for passes over at least this many postings


@dataclass(frozen=True)
class Part:
    """One immutable piece of the postings: the build's base, a compacted base or a segment."""

    name: str                    # "" for the build's base, else "seg-N"
    terms: np.ndarray | None     # global term id of each CSR row; None: row i is term i
    indptr: np.ndarray
    rows: np.ndarray
    tf: np.ndarray
    docrows: np.ndarray          # the rows this part holds, ascending
    doclen: np.ndarray           # their token counts
    data: np.ndarray | None = None   # impacts at the stats of the part's own generation

    def span(self, tid: int) -> tuple[int, int]:
        """Posting range of global term ``tid`` (empty when the part lacks it)."""
        if self.terms is None:
            if tid >= len(self.indptr) - 1:
                return 0, 0
            return int(self.indptr[tid]), int(self.indptr[tid + 1])
        i = int(np.searchsorted(self.terms, tid))
        if i == len(self.terms) or self.terms[i] != tid:
            return 0, 0
        return int(self.indptr[i]), int(self.indptr[i + 1])

    def posting_terms(self, positions: np.ndarray) -> np.ndarray:
        """Global term id of the postings at ``positions``."""
        local = np.searchsorted(self.indptr, positions, side="right") - 1
        return local if self.terms is None else self.terms[local]


def rows_dtype(n_rows: int) -> type:
    return np.int32 if n_rows < 2 ** 31 else np.int64


def segment_part(name: str, chunks: list[tuple[np.ndarray, ...]], n_rows: int) -> Part:
    """A segment from staged counts: chunks of (doc rows, term id per posting, tf per
    posting, distinct terms per doc, doc length), doc rows ascending across chunks."""
    docrows, terms, tf, n_terms, lengths = (np.concatenate(c) for c in zip(*chunks))
    posting_rows = np.repeat(docrows, n_terms)
    order = np.argsort(terms, kind="stable")          # rows stay ascending within a term
    terms, posting_rows, tf = terms[order], posting_rows[order], tf[order]
    uniq, counts = np.unique(terms, return_counts=True)
    indptr = np.zeros(len(uniq) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    dtype = rows_dtype(n_rows)
    return Part(name, uniq.astype(np.int32), indptr, posting_rows.astype(dtype),
                count_array(tf), docrows.astype(dtype), lengths.astype(np.int32))


def merged_part(name: str, parts: list[Part], live: np.ndarray, kept_terms: np.ndarray,
                idf: np.ndarray, norm: np.ndarray, k1: float) -> Part:
    """Every part merged into one dense base holding only ``live`` rows and the
    ``kept_terms`` (renumbered in order), with impacts from ``idf`` (per kept term) and
    ``norm`` (per row). Parts are in row order, so a stable sort by term keeps rows
    ascending within each term."""
    new_id = (np.cumsum(kept_terms) - 1).astype(np.int32)
    pieces = []
    for part in tqdm(parts, desc="bm25: compacting", unit="part",
                     disable=sum(len(p.rows) for p in parts) < BAR_POSTINGS):
        keep = np.flatnonzero(live[part.rows])
        pieces.append((new_id[part.posting_terms(keep)], part.rows[keep], part.tf[keep]))
    terms, rows, tf = (np.concatenate(piece) for piece in zip(*pieces))
    order = np.argsort(terms, kind="stable")
    terms, rows, tf = terms[order], rows[order], tf[order].astype(np.float64)
    indptr = np.zeros(int(kept_terms.sum()) + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=len(indptr) - 1), out=indptr[1:])
    data = idf[terms] * tf * (k1 + 1) / (tf + norm[rows])
    docrows = np.concatenate([p.docrows[live[p.docrows]] for p in parts])
    doclen = np.concatenate([p.doclen[live[p.docrows]] for p in parts])
    dtype = rows_dtype(len(live))
    return Part(name, None, indptr, rows.astype(dtype), count_array(tf), docrows.astype(dtype),
                doclen.astype(np.int32), data.astype(np.float32))


def term_counts(parts: list[Part], rows: np.ndarray, n_terms: int) -> np.ndarray:
    """How many of the rows set in the boolean mask ``rows`` hold each term."""
    counts = np.zeros(n_terms, dtype=np.int64)
    for part in parts:
        if not rows[part.docrows].any():
            continue
        for start in tqdm(range(0, len(part.rows), CHUNK), desc="bm25: counting deletes",
                          unit="chunk", disable=len(part.rows) < BAR_POSTINGS):
            hits = np.flatnonzero(rows[part.rows[start:start + CHUNK]]) + start
            counts += np.bincount(part.posting_terms(hits), minlength=n_terms)
    return counts
