"""One committed generation of a living BM25 index, as queries see it.

A ``View`` holds the parts (``retrievers.bm25_parts``) of one generation with its exact
statistics over the live passages: live N and df, idf with ``rank_bm25``'s epsilon floor at
the mean idf of the live terms, and each row's length normalisation at the live avgdl.
``build_view`` computes them, ``load_view`` reads a generation from the ``bm25/`` folder
(``retrievers.bm25_files``) and ``legacy_view`` wraps a build without raw counts. The index
that queries, stages and commits views is ``retrievers.bm25_live.LiveBM25``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrievers.bm25 import BM25Index
from retrievers.bm25_files import (check_files, read_bits, read_build_base, read_df,
                                   read_generation, read_part)
from retrievers.bm25_parts import Part
from searchagent.errors import IndexFormatError

LEGACY = ("the BM25 index in {folder} was built before in-place updates (its postings.npz "
          "has no tf/doclen): it still answers queries at generation 0, but rebuild the "
          "index to add or delete passages")


@dataclass(frozen=True)
class View:
    """Everything a query needs at one committed generation (replaced whole on commit)."""

    generation: int
    params: dict
    terms: list[str]              # global term id -> term
    vocab: dict[str, int]
    parts: list[Part] | None      # None: a build without raw counts (queries only)
    base: str                     # "" (the build's files) or "seg-N" (a compaction)
    segments: list[str]
    n_rows: int
    deleted: np.ndarray           # bool per row: tombstones
    live: np.ndarray              # bool per row: held by a part and not deleted
    df: np.ndarray                # live document frequency per term
    idf: np.ndarray               # float64 per term, epsilon floor applied
    norm: np.ndarray              # k1 * (1 - b + b * len / avgdl) per row; inf if not live
    files: dict | None            # size + sha256 of the files read (None: the build, unhashed)
    static: BM25Index | None      # precomputed impacts still exact
    avgdl: float = 0.0            # mean length of the live passages

    @property
    def n_live(self) -> int:
        return int(np.count_nonzero(self.live))


def build_view(generation: int, params: dict, terms: list[str], parts: list[Part], base: str,
               segments: list[str], n_rows: int, deleted: np.ndarray, df: np.ndarray,
               files: dict | None) -> View:
    k1, b, epsilon = params["k1"], params["b"], params["epsilon"]
    doclen = np.zeros(n_rows, dtype=np.float64)
    present = np.zeros(n_rows, dtype=bool)
    for part in parts:
        doclen[part.docrows] = part.doclen
        present[part.docrows] = True
    live = present & ~deleted
    n_live = int(np.count_nonzero(live))
    avgdl = doclen[live].sum() / n_live if n_live else 0.0
    dff = df.astype(np.float64)
    idf = np.log(n_live - dff + 0.5) - np.log(dff + 0.5)
    used = df > 0
    floor = epsilon * idf[used].mean() if used.any() else 0.0
    idf[used & (idf < 0)] = floor
    norm = k1 * (1 - b + b * doclen / avgdl) if avgdl else np.full(n_rows, float(k1))
    norm[~live] = np.inf                      # tf / (tf + inf) == 0: dead rows add nothing
    vocab = {term: i for i, term in enumerate(terms)}
    base_part = parts[0]
    static = None
    if len(parts) == 1 and base_part.data is not None and n_live == len(base_part.docrows):
        static = BM25Index(vocab, base_part.indptr, base_part.rows, base_part.data, n_rows,
                           {**params, "avgdl": float(avgdl)})
    return View(generation, params, terms, vocab, parts, base, segments, n_rows, deleted,
                live, df, idf, norm, files, static, float(avgdl))


def legacy_view(index: BM25Index) -> View:
    terms = sorted(index.vocab, key=index.vocab.__getitem__)
    n = index.n_docs
    everyone = np.ones(n, dtype=bool)
    return View(0, bm25_params(index.params), terms, index.vocab, None, "", [], n,
                ~everyone, everyone, np.diff(index.indptr), np.zeros(0), np.zeros(0), None,
                index, float(index.params.get("avgdl", 0.0)))


def bm25_params(params: dict) -> dict:
    return {"k1": params["k1"], "b": params["b"], "epsilon": params["epsilon"]}


def load_view(folder: Path, generation: int, verify: str | None) -> View:
    """``generation`` of the bm25 ``folder``, its files checked as ``LiveBM25.open`` says."""
    if generation == 0:
        index, base = read_build_base(folder)
        if base is None:
            return legacy_view(index)
        terms = sorted(index.vocab, key=index.vocab.__getitem__)
        n = index.n_docs
        return build_view(0, bm25_params(index.params), terms, [base], "", [], n,
                          np.zeros(n, dtype=bool), np.diff(index.indptr), None)
    info = read_generation(folder, generation)
    check_files(folder, info["files"], verify)
    n_rows = info["n_rows"]
    if info["base"]:
        base, terms = read_part(folder, info["base"], n_rows)
    else:
        index, base = read_build_base(folder)
        if base is None:
            raise IndexFormatError(LEGACY.format(folder=folder))
        terms = sorted(index.vocab, key=index.vocab.__getitem__)
    parts = [base]
    for name in info["segments"]:
        part, new_terms = read_part(folder, name, n_rows)
        terms = terms + new_terms
        if len(part.terms) and part.terms[-1] >= len(terms):
            raise IndexFormatError(f"BM25 segment {folder / name} uses term ids beyond "
                                   "the vocabulary")
        parts.append(part)
    if len(terms) != info["n_terms"] or len(base.indptr) - 1 > len(terms):
        raise IndexFormatError(f"BM25 generation {generation} in {folder}: vocabulary "
                               f"has {len(terms)} terms, gen-{generation}.json says "
                               f"{info['n_terms']}")
    deleted = read_bits(folder, info["deleted"], n_rows)
    df = read_df(folder, info["df"], len(terms))
    return build_view(generation, info["params"], terms, parts, info["base"],
                      info["segments"], n_rows, deleted, df, info["files"])
