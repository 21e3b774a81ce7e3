"""Dense vectors under updates: appended vector segments and a deleted mask per generation.

The build's ``dense/embeddings.npy`` holds rows ``0..n-1``. Generation N appends the
vectors of its new rows as ``dense/add-N.npy`` (rows are allocated in order, so segments
are contiguous) and writes ``dense/deleted-N.npy`` (bits over all rows). A FAISS index
is opened as the build's index plus the segments added in row order (FAISS numbers added
vectors sequentially, so its ids stay the rows) and searched with deleted rows masked
out by over-fetching. SPANN keeps its own tombstones; the segments are kept for it too,
so an index can always be rebuilt without embedding again.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from index.faiss_index import FaissIndex
from index.files import durable_save, file_entry
from searchagent.errors import IndexFormatError
from searchagent.files import UNREADABLE
from searchagent.types import SearchStats

EMBEDDINGS = "dense/embeddings.npy"      # the build's vectors, rows 0..n-1


class DenseSegments:
    """Stages one generation's dense changes; ``info`` is the manifest's ``dense`` entry."""

    def __init__(self, folder: Path, info: dict, n_rows: int):
        self.folder, self.info = folder, info
        self.deleted = load_deleted(folder, info, n_rows)
        self.added: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        self.added.append((np.asarray(rows, np.int64), np.asarray(vectors, np.float32)))

    def delete(self, rows: np.ndarray) -> None:
        self.deleted[np.asarray(rows, np.int64)] = True

    def commit(self, generation: int, n_rows: int) -> tuple[dict, dict]:
        """Write this generation's files; return (new ``dense`` info, files table)."""
        info = {**self.info, "segments": list(self.info.get("segments", []))}
        files: dict[str, dict] = {}
        if self.added:
            rows = np.concatenate([r for r, _ in self.added])
            vectors = np.concatenate([v for _, v in self.added]).astype(info["dtype"])
            if not np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
                raise ValueError("dense segment rows must be contiguous")
            name = f"dense/add-{generation}.npy"
            durable_save(self.folder / name, vectors)
            files[name] = file_entry(self.folder / name)
            info["segments"].append({"file": name, "first_row": int(rows[0]),
                                     "count": int(len(rows))})
        deleted = np.zeros(n_rows, dtype=bool)
        deleted[:len(self.deleted)] = self.deleted
        name = f"dense/deleted-{generation}.npy"
        durable_save(self.folder / name, np.packbits(deleted))
        files[name] = file_entry(self.folder / name)
        info["deleted"] = {"file": name, "rows": n_rows, "count": int(deleted.sum())}
        return info, files


def load_deleted(folder: Path, info: dict, n_rows: int) -> np.ndarray:
    """The deleted mask (bool, ``n_rows`` long) of the generation ``info`` describes."""
    mask = np.zeros(n_rows, dtype=bool)
    entry = info.get("deleted")
    if entry:
        try:
            bits = np.load(folder / entry["file"], allow_pickle=False)
        except UNREADABLE as exc:
            raise IndexFormatError(f"unreadable deleted mask {folder / entry['file']}: {exc}"
                                   ) from exc
        stored = np.unpackbits(bits, count=entry["rows"]).astype(bool)
        mask[:min(n_rows, len(stored))] = stored[:n_rows]
    return mask


def segment_vectors(folder: Path, info: dict):
    """Yield (first_row, vectors) of every appended segment, in row order."""
    for segment in info.get("segments", []):
        path = folder / segment["file"]
        try:
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        except UNREADABLE as exc:
            raise IndexFormatError(f"unreadable dense segment {path}: {exc}") from exc
        if len(vectors) != segment["count"]:
            raise IndexFormatError(f"dense segment {path} holds {len(vectors)} vectors, the "
                                   f"manifest says {segment['count']}")
        yield segment["first_row"], vectors


class StoredVectors:
    """Every row's stored embedding: the build's ``dense/embeddings.npy`` and then the
    appended segments, memory-mapped; ``vectors[rows]`` gathers them as float32."""

    def __init__(self, folder: Path, info: dict):
        try:
            build = np.load(folder / EMBEDDINGS, mmap_mode="r", allow_pickle=False)
        except UNREADABLE as exc:
            raise IndexFormatError(f"unreadable vectors {folder / EMBEDDINGS}: {exc}") from exc
        self.parts = [(0, build), *segment_vectors(folder, info)]
        self.starts = np.array([first for first, _ in self.parts], dtype=np.int64)
        self.dim = int(self.parts[0][1].shape[1])

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        for part in np.unique(which):
            first, vectors = self.parts[part]
            mask = which == part
            local = rows[mask] - first
            if local.min() < 0 or local.max() >= len(vectors):
                raise IndexFormatError(f"no stored vector for row {int(rows[mask].max())}")
            out[mask] = vectors[local]
        return out


class LiveFaiss:
    """A FAISS index with appended segments and deleted rows masked (VectorIndex protocol)."""

    def __init__(self, base: FaissIndex, folder: Path, info: dict):
        self.base = base
        for first_row, vectors in segment_vectors(folder, info):
            if first_row != base.index.ntotal:
                raise IndexFormatError(f"dense segment starting at row {first_row} does not "
                                       f"follow the {base.index.ntotal} vectors before it")
            base.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.deleted = load_deleted(folder, info, int(base.index.ntotal))
        self.n_deleted = int(self.deleted.sum())

    def search(self, queries: np.ndarray, k: int, *, params: dict | None = None,
               deadline: float | None = None, cancel=None
               ) -> tuple[np.ndarray, np.ndarray, SearchStats]:
        start = time.perf_counter()
        total = int(self.base.index.ntotal)
        fetch = min(total, k + min(self.n_deleted, 4 * k + 16))
        while True:
            ids, scores, _ = self.base.search(queries, max(fetch, 1), params=params)
            keep = (ids >= 0) & ~self.deleted[np.maximum(ids, 0)]
            if keep.sum(axis=1).min() >= k or fetch >= total:
                break
            fetch = min(total, fetch * 4)
        out_ids = np.full((len(ids), k), -1, dtype=np.int64)
        out_scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
        for i in range(len(ids)):
            found = ids[i][keep[i]][:k]
            out_ids[i, :len(found)] = found
            out_scores[i, :len(found)] = scores[i][keep[i]][:k]
        return out_ids, out_scores, SearchStats(seconds=time.perf_counter() - start)
