"""Dense vectors under updates: appended vector segments and a deleted mask per generation.

The build's ``dense/embeddings.npy`` holds rows ``0..n-1``. Generation N appends the
vectors of its new rows as ``dense/add-N.npy`` (rows are allocated in order, so segments
are contiguous) and writes ``dense/deleted-N.npy`` (bits over all rows). A FAISS index
is opened as the build's index plus the segments added in row order (FAISS numbers added
vectors sequentially, so its ids stay the rows) and searched with deleted rows masked
out by over-fetching. ``index compact`` folds the segments into ``dense/faiss-N.index``
(``fold_segments``), so an open adds only the segments written since, and merges them
into one segment file (``merge_segments``); a server's next generation copies its
previous FAISS index and adds only the new segment (``LiveFaiss.following``). SPANN keeps
its own tombstones; the segments are kept for it too, so an index can always be rebuilt
without embedding again.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from index.faiss_index import FaissIndex, import_faiss
from index.files import durable_save, durable_write, file_entry, write_durably
from searchagent.errors import IndexFormatError
from searchagent.files import UNREADABLE
from searchagent.types import SearchStats

EMBEDDINGS = "dense/embeddings.npy"      # the build's vectors, rows 0..n-1
FAISS_FILE = "dense/faiss.index"         # the build's FAISS index (rows 0..n-1)
MERGED = "segments"                      # dense/segments-N.npy: a compaction's merged segments


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


def faiss_file(info: dict) -> str:
    """The FAISS file a generation reads (``info``: the manifest's ``dense`` entry): the
    build's, or the one the last compaction folded the segments into."""
    return info["index"].get("file", FAISS_FILE)


def add_segments(base: FaissIndex, folder: Path, info: dict) -> None:
    """Add to ``base`` the segments after the rows it holds, in row order."""
    for first_row, vectors in segment_vectors(folder, info):
        held = int(base.index.ntotal)
        if first_row + len(vectors) <= held:
            continue                        # folded in already (or copied from before)
        if first_row != held:
            raise IndexFormatError(f"dense segment starting at row {first_row} does not "
                                   f"follow the {held} vectors before it")
        base.index.add(np.ascontiguousarray(vectors, dtype=np.float32))


def rows_after_segments(info: dict) -> int | None:
    """The row count with every segment of ``info`` added (None: there is no segment)."""
    segments = info.get("segments", [])
    return segments[-1]["first_row"] + segments[-1]["count"] if segments else None


def fold_segments(folder: Path, info: dict, generation: int) -> tuple[dict, dict]:
    """Write ``dense/faiss-<generation>.index``: the FAISS index ``info`` reads with every
    segment added. Returns (new ``dense`` info, its files entry); ``info`` unchanged when
    there is nothing to fold."""
    rows, index = rows_after_segments(info), info["index"]
    if rows is None or index.get("rows", -1) >= rows:
        return info, {}
    base = FaissIndex.load(folder / faiss_file(info), index["factory"], use_gpu=False)
    add_segments(base, folder, info)
    name = f"dense/faiss-{generation}.index"
    durable_write(folder / name, import_faiss().serialize_index(base.index).tobytes())
    return ({**info, "index": {**index, "file": name, "rows": int(base.index.ntotal)}},
            {name: file_entry(folder / name)})


def merge_segments(folder: Path, info: dict, generation: int) -> tuple[dict, dict]:
    """Write every appended segment into one ``dense/segments-<generation>.npy``
    (streamed; a compaction adds no rows), so the folder keeps one segment file, not one
    per update. Returns (new ``dense`` info, the new file's entry); ``info`` unchanged for
    fewer than two segments."""
    segments = info.get("segments", [])
    if len(segments) < 2 or any(b["first_row"] != a["first_row"] + a["count"]
                                for a, b in zip(segments, segments[1:])):
        return info, {}
    parts = [vectors for _, vectors in segment_vectors(folder, info)]
    header = {"descr": np.lib.format.dtype_to_descr(parts[0].dtype), "fortran_order": False,
              "shape": (sum(len(v) for v in parts), parts[0].shape[1])}

    def save(handle) -> None:
        np.lib.format.write_array_header_2_0(handle, header)
        for vectors in parts:
            for start in range(0, len(vectors), 65536):
                handle.write(np.ascontiguousarray(vectors[start:start + 65536]).tobytes())

    name = f"dense/{MERGED}-{generation}.npy"
    write_durably(folder / name, save)
    merged = {"file": name, "first_row": segments[0]["first_row"], "count": header["shape"][0]}
    return {**info, "segments": [merged]}, {name: file_entry(folder / name)}


class LiveFaiss:
    """A FAISS index with appended segments and deleted rows masked (VectorIndex protocol)."""

    def __init__(self, base: FaissIndex, folder: Path, info: dict):
        self.base = base
        add_segments(base, folder, info)
        self.deleted = load_deleted(folder, info, int(base.index.ntotal))
        self.n_deleted = int(self.deleted.sum())

    @classmethod
    def following(cls, previous, folder: Path, info: dict) -> "LiveFaiss | None":
        """The next generation's index from ``previous`` (a ``FaissIndex`` or ``LiveFaiss``
        of an earlier generation of the same folder): a copy of its FAISS index plus the
        segments written since, instead of re-adding every update's vectors from disk.
        None where that cannot be done (a GPU index, a segment that does not follow)."""
        base = previous.base if isinstance(previous, LiveFaiss) else previous
        if not isinstance(base, FaissIndex) or base.on_gpu or \
                int(base.index.ntotal) > (rows_after_segments(info) or 0):
            return None
        copy = FaissIndex(import_faiss().clone_index(base.index), base.factory, use_gpu=False)
        try:
            return cls(copy, folder, info)
        except IndexFormatError:            # a segment that does not follow its rows
            return None

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


def dense_files(folder: Path) -> dict[Path, tuple[str, int]]:
    """The files of ``folder/dense`` a generation wrote, as (kind, generation): ``add``,
    ``deleted`` and ``segments`` (.npy), ``faiss`` (.index; the build's is generation 0)."""
    found = {}
    for path in (folder / "dense").glob("*"):
        kind, _, made = path.stem.rpartition("-")
        if path.name == Path(FAISS_FILE).name:
            found[path] = ("faiss", 0)
        elif made.isdigit() and (kind, path.suffix) in {
                ("add", ".npy"), ("deleted", ".npy"), (MERGED, ".npy"), ("faiss", ".index")}:
            found[path] = (kind, int(made))
    return found


def unread_dense_files(folder: Path, oldest: int) -> list[Path]:
    """Files of ``folder/dense`` no generation from ``oldest`` on reads: the deleted masks
    of earlier generations, and the FAISS files and vector segments from before the newest
    fold or merge made at or before ``oldest`` (a generation reads that one, and the
    segments appended after it)."""
    files = dense_files(folder)
    newest = {kind: max((made for k, made in files.values() if k == kind and made <= oldest),
                        default=0) for kind in ("faiss", MERGED)}
    before = {"deleted": oldest, "faiss": newest["faiss"], "add": newest[MERGED],
              MERGED: newest[MERGED]}
    return sorted(path for path, (kind, made) in files.items() if made < before[kind])
