"""BM25 that updates in place: immutable segments + deletion bitmaps, exact statistics.

``LiveBM25.open(folder, generation)`` is a read-only view of one committed generation of the
``bm25/`` folder (layout in ``retrievers.bm25_files``); ``add`` / ``delete`` stage changes
and ``commit(generation)`` writes them as the next generation and moves the object to it.
Scores at any generation equal a fresh ``rank_bm25.BM25Okapi`` over the live passages: idf
from the live N and live df (with the epsilon floor at the mean idf of the live terms),
avgdl over live passages. Impacts are computed at query time from raw term frequencies,
only for the postings a query touches; with no segments and no deletes the precomputed
impacts of the base are used as they are (``BM25Index.top_k``).

One object has one writer; any number of other objects may read earlier generations while
it commits, since no committed file is ever modified. ``rollback(folder, committed)``
removes what an uncommitted generation left behind.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from index.files import durable_save, file_entry
from retrievers.bm25 import BM25Index, best_k
from retrievers.bm25_files import (BASE_FILES, FORMAT, Part, check_files, merged_part,
                                   read_bits, read_build_base, read_df, read_generation,
                                   read_part, rollback, segment_part, term_counts,
                                   write_json, write_part)
from searchagent.errors import IndexFormatError

__all__ = ["LiveBM25", "rollback"]

BAR_MIN = 20_000          # progress bars for work on at least this many documents


@dataclass(frozen=True)
class _View:
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

    @property
    def n_live(self) -> int:
        return int(np.count_nonzero(self.live))


def _view(generation: int, params: dict, terms: list[str], parts: list[Part], base: str,
          segments: list[str], n_rows: int, deleted: np.ndarray, df: np.ndarray,
          files: dict | None) -> _View:
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
    return _View(generation, params, terms, vocab, parts, base, segments, n_rows, deleted,
                 live, df, idf, norm, files, static)


def _legacy_view(index: BM25Index) -> _View:
    terms = sorted(index.vocab, key=index.vocab.__getitem__)
    n = index.n_docs
    everyone = np.ones(n, dtype=bool)
    return _View(0, _params(index.params), terms, index.vocab, None, "", [], n,
                 ~everyone, everyone, np.diff(index.indptr), np.zeros(0), np.zeros(0), None,
                 index)


def _params(params: dict) -> dict:
    return {"k1": params["k1"], "b": params["b"], "epsilon": params["epsilon"]}


class LiveBM25:
    """A BM25 index at one generation that can stage adds/deletes and commit the next one."""

    def __init__(self, folder: Path, view: _View):
        self.folder, self._view = folder, view
        self._reset()

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, folder: str | Path, generation: int = 0,
             verify: str | None = "size") -> "LiveBM25":
        """Open ``generation`` of the bm25 folder; ``verify`` checks the sizes ("size") or
        sizes and sha256 ("full") of the files a generation > 0 lists, or nothing (None)."""
        folder = Path(folder)
        if generation == 0:
            index, base = read_build_base(folder)
            if base is None:
                return cls(folder, _legacy_view(index))
            terms = sorted(index.vocab, key=index.vocab.__getitem__)
            n = index.n_docs
            return cls(folder, _view(0, _params(index.params), terms, [base], "", [], n,
                                     np.zeros(n, dtype=bool), np.diff(index.indptr), None))
        info = read_generation(folder, generation)
        check_files(folder, info["files"], verify)
        n_rows = info["n_rows"]
        if info["base"]:
            base, terms = read_part(folder, info["base"], n_rows)
        else:
            index, base = read_build_base(folder)
            if base is None:
                raise IndexFormatError(_LEGACY.format(folder=folder))
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
        return cls(folder, _view(generation, info["params"], terms, parts, info["base"],
                                 info["segments"], n_rows, deleted, df, info["files"]))

    @property
    def generation(self) -> int:
        return self._view.generation

    @property
    def n_docs(self) -> int:
        """Rows ever written (the length of ``scores``); ``n_live`` counts the live ones."""
        return self._view.n_rows

    @property
    def n_live(self) -> int:
        return self._view.n_live

    @property
    def vocab(self) -> dict[str, int]:
        return self._view.vocab

    @property
    def fast_path(self) -> bool:
        """Whether queries use precomputed impacts (no segments, no deletes since the base)."""
        return self._view.static is not None

    # ---------------------------------------------------------------- queries

    def _weights(self, view: _View, tokens: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(rows, score contributions) of each query term with live postings."""
        k1 = view.params["k1"]
        found = []
        for term, count in Counter(tokens).items():
            tid = view.vocab.get(term)
            if tid is None or view.df[tid] == 0:
                continue
            spans = [(part, *part.span(tid)) for part in view.parts]
            rows = np.concatenate([part.rows[lo:hi] for part, lo, hi in spans])
            tf = np.concatenate([part.tf[lo:hi] for part, lo, hi in spans]).astype(np.float64)
            found.append((rows, count * view.idf[tid] * tf * (k1 + 1) / (tf + view.norm[rows])))
        return found

    def scores(self, tokens: list[str]) -> np.ndarray:
        """BM25 score of every row for a tokenized query (0 for deleted rows)."""
        view = self._view
        if view.static is not None:
            return view.static.scores(tokens)
        scores = np.zeros(view.n_rows, dtype=np.float64)
        for rows, weights in self._weights(view, tokens):
            scores[rows] += weights           # a row appears once per term
        return scores.astype(np.float32)

    def top_k(self, tokens: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the best k live rows with a positive score, best first, ties
        by row (as ``BM25Index.top_k``)."""
        view = self._view
        if view.static is not None:
            return view.static.top_k(tokens, k)
        found = self._weights(view, tokens)
        touched = sum(len(rows) for rows, _ in found)
        if k <= 0 or touched == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if touched * 8 < view.n_rows:
            candidates, inverse = np.unique(np.concatenate([r for r, _ in found]),
                                            return_inverse=True)
            scores = np.bincount(inverse, weights=np.concatenate([w for _, w in found]))
        else:
            scores = np.zeros(view.n_rows, dtype=np.float64)
            for rows, weights in found:
                scores[rows] += weights
            candidates = np.arange(view.n_rows)
        return best_k(candidates, scores.astype(np.float32), k)

    # ---------------------------------------------------------------- staging

    def _reset(self) -> None:
        self._new_terms: dict[str, int] = {}
        self._chunks: list[tuple[np.ndarray, ...]] = []
        self._doomed = np.zeros(0, dtype=np.int64)

    def _next_row(self) -> int:
        return int(self._chunks[-1][0][-1]) + 1 if self._chunks else self._view.n_rows

    def _require_counts(self) -> _View:
        view = self._view
        if view.parts is None:
            raise IndexFormatError(_LEGACY.format(folder=self.folder))
        return view

    def add(self, rows: np.ndarray, token_lists: Iterable[list[str]]) -> None:
        """Stage new rows (ascending, above every row so far) with their token lists."""
        view = self._require_counts()
        rows = np.asarray(rows, dtype=np.int64)
        token_lists = list(token_lists)
        if rows.ndim != 1 or len(rows) != len(token_lists):
            raise ValueError(f"add: {rows.shape} rows for {len(token_lists)} token lists")
        if not len(rows):
            return
        if rows[0] < self._next_row() or np.any(np.diff(rows) <= 0):
            raise ValueError(f"add: rows must be ascending and new (from {self._next_row()})")
        base_terms = len(view.terms)

        def term_id(term: str) -> int:
            tid = view.vocab.get(term)
            return tid if tid is not None else self._new_terms.setdefault(
                term, base_terms + len(self._new_terms))

        term_ids, tfs, n_terms, lengths = array("i"), array("i"), array("i"), array("i")
        for tokens in tqdm(token_lists, desc="bm25: counting segment", unit="doc",
                           mininterval=1.0, disable=len(token_lists) < BAR_MIN):
            counts = Counter(tokens)
            term_ids.extend(map(term_id, counts))
            tfs.extend(counts.values())
            n_terms.append(len(counts))
            lengths.append(len(tokens))
        self._chunks.append((rows, *(np.frombuffer(a, dtype=np.int32)
                                     for a in (term_ids, tfs, n_terms, lengths))))

    def delete(self, rows: np.ndarray) -> None:
        """Stage tombstones for live rows (committed, or staged by ``add``)."""
        view = self._require_counts()
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if len(np.unique(rows)) != len(rows):
            raise ValueError("delete: rows repeat")
        old, new = rows[rows < view.n_rows], rows[rows >= view.n_rows]
        staged = np.concatenate([c[0] for c in self._chunks]) if self._chunks else rows[:0]
        if ((len(old) and (old.min() < 0 or not view.live[old].all()))
                or not np.isin(new, staged).all() or np.isin(rows, self._doomed).any()):
            raise ValueError("delete: every row must be live (not deleted, not unknown)")
        self._doomed = np.union1d(self._doomed, rows)

    # ---------------------------------------------------------------- commits

    def _check_generation(self, generation: int) -> None:
        if generation <= self._view.generation:
            raise ValueError(f"commit: generation {generation} is not above the open "
                             f"generation {self._view.generation}")
        if (self.folder / f"gen-{generation}.json").exists():
            raise ValueError(f"generation {generation} already exists in {self.folder}")

    def commit(self, generation: int) -> dict:
        """Write the staged changes as ``generation``; this object then reads it."""
        view = self._require_counts()
        self._check_generation(generation)
        n_rows, added = self._next_row(), sum(len(c[0]) for c in self._chunks)
        terms = view.terms + list(self._new_terms)
        parts, segments, written = list(view.parts), list(view.segments), []
        df = np.zeros(len(terms), dtype=np.int64)
        df[:len(view.df)] = view.df
        if self._chunks:
            part = segment_part(f"seg-{generation}", self._chunks, n_rows)
            written += write_part(self.folder, part, list(self._new_terms))
            parts.append(part)
            segments.append(part.name)
            df[part.terms] += np.diff(part.indptr)
        deleted = np.zeros(n_rows, dtype=bool)
        deleted[:view.n_rows] = view.deleted
        if len(self._doomed):
            doomed = np.zeros(n_rows, dtype=bool)
            doomed[self._doomed] = True
            df -= term_counts(parts, doomed, len(terms))
            deleted |= doomed
        carried = (view.files if view.files is not None
                   else {name: file_entry(self.folder / name) for name in BASE_FILES})
        keep = [f"{name}/" for name in [view.base, *segments] if name]
        carried = {rel: entry for rel, entry in carried.items()
                   if (rel in BASE_FILES and not view.base) or rel.startswith(tuple(keep))}
        return self._finish(generation, view.params, terms, parts, view.base, segments,
                            n_rows, deleted, df, carried, written,
                            {"rows_added": added, "rows_deleted": len(self._doomed)})

    def compact(self, generation: int) -> dict:
        """Merge every part into one base without deleted rows (rows keep their numbers,
        terms no live row uses are dropped) as ``generation``, with precomputed impacts."""
        view = self._require_counts()
        self._check_generation(generation)
        if self._chunks or len(self._doomed):
            raise ValueError("compact: commit the staged changes first")
        kept_terms = view.df > 0
        part = merged_part(f"seg-{generation}", view.parts, view.live, kept_terms,
                           view.idf[kept_terms], view.norm, view.params["k1"])
        df = view.df[kept_terms]
        terms_kept = [t for t, k in zip(view.terms, kept_terms) if k]
        written = write_part(self.folder, part, terms_kept)
        return self._finish(generation, view.params, terms_kept, [part], part.name, [],
                            view.n_rows, view.deleted, df, {}, written,
                            {"parts_merged": len(view.parts)})

    def _finish(self, generation: int, params: dict, terms: list[str], parts: list[Part],
                base: str, segments: list[str], n_rows: int, deleted: np.ndarray,
                df: np.ndarray, carried: dict, written: list[str], extra: dict) -> dict:
        """Write the bitmap, df and gen-N.json; switch this object to the new view."""
        names = {"deleted": f"deleted-{generation}.npy", "df": f"df-{generation}.npy"}
        durable_save(self.folder / names["deleted"], np.packbits(deleted, bitorder="little"))
        durable_save(self.folder / names["df"], df.astype(np.int32))
        written = written + list(names.values())
        files = {**carried, **{rel: file_entry(self.folder / rel) for rel in written}}
        new = _view(generation, params, terms, parts, base, segments, n_rows, deleted, df,
                    files)
        info = {"format": FORMAT, "generation": generation, "base": base,
                "segments": segments, "n_rows": n_rows, "n_terms": len(terms),
                "n_live": new.n_live, "params": params, **names, "files": files}
        gen_file = self.folder / f"gen-{generation}.json"
        write_json(gen_file, info)
        written.append(gen_file.name)
        self._view = new
        self._reset()
        return {**{k: v for k, v in info.items() if k != "files"}, **extra,
                "written": written, "files": {**files, gen_file.name: file_entry(gen_file)}}


_LEGACY = ("the BM25 index in {folder} was built before in-place updates (its postings.npz "
           "has no tf/doclen): it still answers queries at generation 0, but rebuild the "
           "index to add or delete passages")
