"""Open a SPANN folder and prove it whole: metadata, file sizes, checksums, structure.

Any mismatch raises ``IndexFormatError`` naming the file and what differs; an index that
fails these checks is never searched. ``load_snapshot`` opens one generation: the build
(0) here, updated ones through ``generations.load``. Updates append to ``postings.bin``
(committed or not yet: a reader opens its generation before any crash recovery), so
generation 0 checks the build's size as a lower bound and its sha256 over that prefix
(the bytes the build wrote are never written again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.faiss_index import import_faiss
from index.manifest import check_files as check_file_table, read_json_in
from index.spann import generations
from index.spann.builder import FORMAT, FORMAT_VERSION, META
from index.spann.postings import CAPACITY, DEAD, PAGE, posting_bytes
from searchagent.errors import IndexFormatError
from searchagent.files import UNREADABLE

REQUIRED = ("postings.bin", "table.npy", "heads.npy")


def read_meta(folder: Path) -> dict:
    path = folder / META
    meta = read_json_in(folder, META, "spann index")
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(f"{path}: format {meta.get('format')!r} version "
                               f"{meta.get('format_version')!r}; this searchagent reads "
                               f"{FORMAT!r} version {FORMAT_VERSION}; rebuild the index")
    return meta


def check_files(folder: Path, meta: dict, verify: str) -> None:
    files = meta.get("files", {})
    for name in REQUIRED + (("heads.faiss",) if meta.get("head_index") == "hnsw" else ()):
        if name not in files:
            raise IndexFormatError(f"{folder / META} does not list {name}")
    others = {name: entry for name, entry in files.items() if name != "postings.bin"}
    check_file_table(folder, others, verify, what="spann index", source=META)
    path, expected = folder / "postings.bin", files["postings.bin"]
    if not path.is_file():
        raise IndexFormatError(f"spann index file missing: {path}")
    size = path.stat().st_size
    if size < expected["size"]:          # larger: appended by (maybe uncommitted) updates
        raise IndexFormatError(f"spann index file {path} has {size} bytes, {META} says "
                               f"{expected['size']} (truncated or replaced)")
    if verify == "full" and generations.prefix_sha256(path, expected["size"]) \
            != expected["sha256"]:
        raise IndexFormatError(f"spann index file {path} fails its sha256 check (corrupted)")


def check_table(folder: Path, meta: dict, table: np.ndarray, heads: np.ndarray) -> None:
    """The offset table must tile the posting file exactly, page by page."""
    h, dim = int(meta["n_heads"]), int(meta["dim"])
    where = folder / "table.npy"
    if table.shape != (h, 3) or heads.shape != (h, dim):
        raise IndexFormatError(f"{folder}: table {table.shape} / heads {heads.shape} do not "
                               f"match {h} heads of dimension {dim}")
    itemsize = np.dtype(meta["params"]["dtype"]).itemsize
    offsets, counts, sizes = table[:, 0], table[:, 1], table[:, 2]
    expected_offsets = PAGE + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    if (counts < 0).any() or not np.array_equal(sizes, posting_bytes(counts, dim, itemsize)) \
            or not np.array_equal(offsets, expected_offsets):
        raise IndexFormatError(f"{where}: offsets/sizes are inconsistent (corrupted)")
    if int(counts.sum()) != int(meta["n_entries"]):
        raise IndexFormatError(f"{where}: {int(counts.sum())} entries, {META} says "
                               f"{meta['n_entries']}")
    end = PAGE + int(sizes.sum())
    if end != meta["files"]["postings.bin"]["size"]:
        raise IndexFormatError(f"{where}: postings end at byte {end}, posting file has "
                               f"{meta['files']['postings.bin']['size']}")


@dataclass
class Snapshot:
    """One generation's arrays, verified. ``table`` has 3 columns at generation 0, else 5;
    ``versions`` is None at generation 0 (every entry valid)."""

    folder: Path
    generation: int
    meta: dict
    heads: np.ndarray
    table: np.ndarray
    versions: np.ndarray | None
    graph: object | None           # the HNSW head graph, None for a flat head index
    postings: Path
    end: int                       # committed end of the posting file
    base_end: int                  # bytes of the build region the build's sha256 covers

    @property
    def dead(self) -> np.ndarray:
        if self.table.shape[1] < 5:
            return np.zeros(len(self.table), dtype=bool)
        return self.table[:, CAPACITY] == DEAD


def load_snapshot(folder: str | Path, generation: int | None = None,
                  verify: str = "full") -> Snapshot:
    """Generation ``generation`` of ``folder`` (None: the newest complete one)."""
    folder = Path(folder)
    if generation is None:
        generation = generations.latest(folder)
    if generation > 0:
        s = generations.load(folder, generation, verify)
        return Snapshot(folder, generation, s["meta"], s["heads"], s["table"], s["versions"],
                        s["graph"], s["postings"], s["end"], s["base_end"])
    meta = read_meta(folder)
    check_files(folder, meta, verify)
    try:
        table = np.load(folder / "table.npy", allow_pickle=False)
        heads = np.load(folder / "heads.npy", allow_pickle=False)
    except UNREADABLE as exc:
        raise IndexFormatError(f"{folder}: unreadable table/heads array: {exc}") from exc
    check_table(folder, meta, table, heads)
    graph = None
    if meta["head_index"] == "hnsw":
        try:
            graph = import_faiss().read_index(str(folder / "heads.faiss"))
        except RuntimeError as exc:
            raise IndexFormatError(f"{folder / 'heads.faiss'} unreadable: {exc}") from exc
        if graph.ntotal != len(heads) or graph.d != heads.shape[1]:
            raise IndexFormatError(f"{folder / 'heads.faiss'} holds {graph.ntotal} "
                                   f"vectors of dimension {graph.d}, expected {len(heads)}")
    size = int(meta["files"]["postings.bin"]["size"])
    return Snapshot(folder, 0, meta, heads, table, None, graph, folder / "postings.bin",
                    size, size)
