"""BM25 that updates in place: immutable segments + deletion bitmaps, exact statistics.

``LiveBM25.open(folder, generation)`` is a read-only view of one committed generation of the
``bm25/`` folder (layout in ``retrievers.bm25_files``); ``add`` / ``delete`` stage changes
and ``commit(generation)`` writes them as the next generation and moves the object to it.
Scores at any generation equal a fresh ``rank_bm25.BM25Okapi`` over the live passages: idf
from the live N and live df (with the epsilon floor at the mean idf of the live terms),
avgdl over live passages (``retrievers.bm25_view``). Impacts are computed at query time
from raw term frequencies, only for the postings a query touches; with no segments and no
deletes the precomputed impacts of the base are used as they are (``BM25Index.top_k``).

One object has one writer; any number of other objects may read earlier generations while
it commits, since no committed file is ever modified. ``rollback(folder, committed)``
removes what an uncommitted generation left behind.
"""

from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from index.files import durable_save, file_entry
from retrievers.bm25 import best_k
from retrievers.bm25_files import BASE_FILES, FORMAT, rollback, write_json, write_part
from retrievers.bm25_parts import Part, merged_part, segment_part, term_counts
from retrievers.bm25_view import LEGACY, View, build_view, load_view
from searchagent.errors import IndexFormatError

__all__ = ["LiveBM25", "rollback"]

BAR_MIN = 20_000          # progress bars for work on at least this many documents


class LiveBM25:
    """A BM25 index at one generation that can stage adds/deletes and commit the next one."""

    def __init__(self, folder: Path, view: View):
        self.folder, self._view = folder, view
        self._reset()

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, folder: str | Path, generation: int = 0,
             verify: str | None = "size") -> "LiveBM25":
        """Open ``generation`` of the bm25 folder; ``verify`` checks the sizes ("size") or
        sizes and sha256 ("full") of the files a generation > 0 lists, or nothing (None)."""
        folder = Path(folder)
        return cls(folder, load_view(folder, generation, verify))

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

    def _weights(self, view: View, tokens: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
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

    def _require_counts(self) -> View:
        view = self._view
        if view.parts is None:
            raise IndexFormatError(LEGACY.format(folder=self.folder))
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
        new = build_view(generation, params, terms, parts, base, segments, n_rows, deleted,
                         df, files)
        info = {"format": FORMAT, "generation": generation, "base": base,
                "segments": segments, "n_rows": n_rows, "n_terms": len(terms),
                "n_live": new.n_live, "params": params, **names, "files": files}
        gen_file = self.folder / f"gen-{generation}.json"
        write_json(gen_file, info)
        written.append(gen_file.name)
        self._view = new
        self._reset()
        stats = {"vocab": int(np.count_nonzero(df)), "postings": int(df.sum()),
                 "avgdl": new.avgdl}           # the build's figures, over the live passages
        return {**{k: v for k, v in info.items() if k != "files"}, **stats, **extra,
                "written": written, "files": {**files, gen_file.name: file_entry(gen_file)}}

