"""Okapi BM25 with precomputed impact scores in a term-major CSR matrix.

Scoring matches ``rank_bm25.BM25Okapi`` (same idf with the epsilon floor for negative
idf, same k1/b defaults): each posting stores ``idf * tf*(k1+1) / (tf + k1*norm(doc))``,
so a query is a sum of a few rows and a partial sort.

``postings.npz`` also keeps the raw term frequencies (``tf``, aligned with ``indices``) and
document lengths (``doclen``) so that ``retrievers.bm25_live.LiveBM25`` can rescore after
adds and deletes. Both are optional on load: an index written before they existed still
serves queries, but cannot be updated in place (rebuild it to enable updates).
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from retrievers.docstore import DocStore
from retrievers.tokenize import tokenize
from searchagent.errors import IndexFormatError
from searchagent.files import UNREADABLE
from searchagent.types import Hit


class BM25Index:
    """Build from token lists, save/load as npz + JSON, score queries."""

    def __init__(self, vocab: dict[str, int], indptr: np.ndarray, indices: np.ndarray,
                 data: np.ndarray, n_docs: int, params: dict, tf: np.ndarray | None = None,
                 doclen: np.ndarray | None = None):
        self.vocab, self.indptr, self.indices, self.data = vocab, indptr, indices, data
        self.n_docs, self.params = n_docs, params
        self.tf, self.doclen = tf, doclen      # raw counts; None for a pre-update index

    @classmethod
    def build(cls, docs: Iterable[list[str]], k1: float = 1.5, b: float = 0.75,
              epsilon: float = 0.25, total: int | None = None) -> "BM25Index":
        vocab: dict[str, int] = {}
        [(term_ids, tfs, doc_len, doc_terms)] = count_tokens(docs, vocab, total)
        return cls.from_counts(vocab, np.frombuffer(term_ids, np.int32),
                               np.frombuffer(tfs, np.int32).astype(np.float32),
                               np.frombuffer(doc_len, np.int32),
                               np.frombuffer(doc_terms, np.int32), k1, b, epsilon)

    @classmethod
    def from_counts(cls, vocab: dict[str, int], terms: np.ndarray, tf: np.ndarray,
                    doc_len: np.ndarray, doc_terms: np.ndarray, k1: float = 1.5,
                    b: float = 0.75, epsilon: float = 0.25) -> "BM25Index":
        """The index from counted documents, in document order: ``terms`` / ``tf`` hold
        each document's distinct term ids and counts back to back, ``doc_terms`` how many
        of them belong to each document and ``doc_len`` its token count. ``build`` counts
        on one core; ``index.build_ray`` counts in parallel and lands here too."""
        n_docs = len(doc_len)
        terms = np.asarray(terms, dtype=np.int32)
        tf = np.asarray(tf).astype(np.float64)
        docs_ = np.repeat(np.arange(n_docs, dtype=np.int32), np.asarray(doc_terms, np.int32))
        lengths = np.asarray(doc_len, dtype=np.int32).astype(np.float64)
        avgdl = lengths.mean() if n_docs else 0.0

        df = np.bincount(terms, minlength=len(vocab)).astype(np.float64)
        idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        floor = epsilon * (idf.mean() if len(idf) else 0.0)
        idf[idf < 0] = floor

        order = np.argsort(terms, kind="stable")
        terms, docs_, tf = terms[order], docs_[order], tf[order]
        norm = k1 * (1 - b + b * lengths[docs_] / avgdl) if avgdl else k1
        data = (idf[terms] * tf * (k1 + 1) / (tf + norm)).astype(np.float32)
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(df.astype(np.int64), out=indptr[1:])
        params = {"k1": k1, "b": b, "epsilon": epsilon, "avgdl": float(avgdl)}
        return cls(vocab, indptr, docs_, data, n_docs, params, tf=count_array(tf),
                   doclen=np.array(doc_len, dtype=np.int32))

    def _postings(self, tokens: list[str]) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """(doc rows, impacts, query count) for each known query term."""
        found = []
        for term, count in Counter(tokens).items():
            tid = self.vocab.get(term)
            if tid is not None:
                start, end = self.indptr[tid], self.indptr[tid + 1]
                found.append((self.indices[start:end], self.data[start:end], count))
        return found

    def _dense_scores(self, postings) -> np.ndarray:
        scores = np.zeros(self.n_docs, dtype=np.float32)
        for rows, impacts, count in postings:
            scores[rows] += count * impacts        # rows are unique within one term
        return scores

    def scores(self, tokens: list[str]) -> np.ndarray:
        """BM25 score of every document for a tokenized query."""
        return self._dense_scores(self._postings(tokens))

    def top_k(self, tokens: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the best k documents with a positive score, best first.

        Few postings are scored sparsely (only the touched documents); many, densely.
        """
        postings = self._postings(tokens)
        touched = sum(len(rows) for rows, _, _ in postings)
        if k <= 0 or touched == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if touched * 8 < self.n_docs:
            rows = np.concatenate([r for r, _, _ in postings])
            weights = np.concatenate([c * d for _, d, c in postings])
            candidates, inverse = np.unique(rows, return_inverse=True)
            scores = np.bincount(inverse, weights=weights).astype(np.float32)
        else:
            scores = self._dense_scores(postings)
            candidates = np.arange(self.n_docs)
        return best_k(candidates, scores, k)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        raw = {} if self.tf is None else {"tf": self.tf, "doclen": self.doclen}
        np.savez(folder / "postings.npz", indptr=self.indptr, indices=self.indices,
                 data=self.data, **raw)
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        (folder / "vocab.json").write_text(json.dumps(terms))
        (folder / "params.json").write_text(json.dumps({**self.params, "n_docs": self.n_docs}))

    @classmethod
    def load(cls, folder: str | Path) -> "BM25Index":
        folder = Path(folder)
        path = folder / "postings.npz"
        try:
            with np.load(path, allow_pickle=False) as arrays:
                indptr, indices, data = arrays["indptr"], arrays["indices"], arrays["data"]
                tf = arrays["tf"] if "tf" in arrays.files else None
                doclen = arrays["doclen"] if "doclen" in arrays.files else None
            path = folder / "vocab.json"
            terms = json.loads(path.read_text())
            path = folder / "params.json"
            params = json.loads(path.read_text())
        except UNREADABLE as exc:
            raise IndexFormatError(f"BM25 index file corrupt or unreadable: {path}: {exc} "
                                   "(rebuild the index)") from exc
        if len(indptr) != len(terms) + 1 or indptr[-1] != len(indices) or len(indices) != len(data):
            raise IndexFormatError(f"BM25 index in {folder} is inconsistent")
        n_docs = params.pop("n_docs")
        if (tf is None) != (doclen is None) or (tf is not None and (
                len(tf) != len(indices) or len(doclen) != n_docs)):
            raise IndexFormatError(f"BM25 index in {folder}: tf/doclen in postings.npz do not "
                                   "match the postings (rebuild the index)")
        return cls({t: i for i, t in enumerate(terms)}, indptr, indices, data, n_docs, params,
                   tf=tf, doclen=doclen)


def count_tokens(docs: Iterable[list[str]], vocab: dict[str, int], total: int | None = None,
                 chunk_docs: int = 0) -> Iterator[tuple[array, array, array, array]]:
    """Count tokenized documents, adding unseen terms to ``vocab`` (ids in first-seen order).
    Yields (term ids, term frequencies, document lengths, distinct terms per document) as
    int32 ``array``s, each document's terms back to back, every ``chunk_docs`` documents and
    once more for the rest (possibly empty); ``chunk_docs=0``: all at once."""
    term_ids, tfs, doc_len, doc_terms = array("i"), array("i"), array("i"), array("i")
    for tokens in tqdm(docs, total=total, desc="bm25: counting", unit="doc", mininterval=1.0):
        counts = Counter(tokens)
        term_ids.extend([vocab.setdefault(t, len(vocab)) for t in counts])
        tfs.extend(counts.values())
        doc_len.append(len(tokens))
        doc_terms.append(len(counts))
        if len(doc_len) == chunk_docs:
            yield term_ids, tfs, doc_len, doc_terms
            term_ids, tfs, doc_len, doc_terms = array("i"), array("i"), array("i"), array("i")
    yield term_ids, tfs, doc_len, doc_terms


def best_k(candidates: np.ndarray, scores: np.ndarray, k: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """The k best positive ``scores`` by (score desc, row asc), as (rows, scores);
    ``candidates`` (the rows of ``scores``) ascending. Ties at the k-th score keep the
    lowest rows, so a top-k is always a prefix of a longer one."""
    k = min(k, len(scores))
    kth = -np.partition(-scores, k - 1)[k - 1]
    best = np.flatnonzero(scores > max(kth, 0))
    if kth > 0:
        best = np.concatenate([best, np.flatnonzero(scores == kth)[:k - len(best)]])
    best = best[np.lexsort((candidates[best], -scores[best]))]
    return candidates[best].astype(np.int64), scores[best]


def count_array(counts: np.ndarray) -> np.ndarray:
    """Term frequencies in the smallest of uint16 / int32 that holds them."""
    small = len(counts) == 0 or counts.max() < 1 << 16
    return np.asarray(counts).astype(np.uint16 if small else np.int32)


class BM25Retriever:
    """Retriever protocol over a BM25Index and the doc store."""

    def __init__(self, index: BM25Index, docstore: DocStore):
        self.index, self.docstore = index, docstore

    def search(self, query: str, k: int, *, budget: dict | None = None) -> list[Hit]:
        rows, scores = self.index.top_k(tokenize(query), k)
        return self.docstore.hits(rows, scores)
