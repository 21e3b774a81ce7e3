"""Open a SPANN folder and prove it whole: metadata, file sizes, checksums, structure.

Any mismatch raises ``IndexFormatError`` naming the file and what differs; an index that
fails these checks is never searched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index.faiss_index import import_faiss
from index.manifest import check_files as check_file_table, read_json_in
from index.spann.builder import FORMAT, FORMAT_VERSION, META
from index.spann.postings import PAGE, PostingReader, posting_bytes
from searchagent.errors import IndexFormatError

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
    check_file_table(folder, files, verify, what="spann index", source=META)


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


def load_folder(folder: Path, verify: str = "full"):
    """Return (meta, heads, head_index, reader) of a verified folder."""
    meta = read_meta(folder)
    check_files(folder, meta, verify)
    try:
        table = np.load(folder / "table.npy", allow_pickle=False)
        heads = np.load(folder / "heads.npy", allow_pickle=False)
    except ValueError as exc:
        raise IndexFormatError(f"{folder}: unreadable table/heads array: {exc}") from exc
    check_table(folder, meta, table, heads)
    faiss = import_faiss()
    if meta["head_index"] == "hnsw":
        try:
            head_index = faiss.read_index(str(folder / "heads.faiss"))
        except RuntimeError as exc:
            raise IndexFormatError(f"{folder / 'heads.faiss'} unreadable: {exc}") from exc
        if head_index.ntotal != len(heads) or head_index.d != heads.shape[1]:
            raise IndexFormatError(f"{folder / 'heads.faiss'} holds {head_index.ntotal} "
                                   f"vectors of dimension {head_index.d}, expected {len(heads)}")
    else:
        head_index = faiss.IndexFlatL2(heads.shape[1])
        head_index.add(np.ascontiguousarray(heads, dtype=np.float32))
    reader = PostingReader(folder / "postings.bin", table, int(meta["dim"]),
                           meta["params"]["dtype"], int(meta["n_entries"]))
    return meta, heads, head_index, reader
