"""On-disk layout of a living BM25 index (``retrievers.bm25_live``), inside the ``bm25/`` folder.

Generation 0 is the build (``postings.npz``, ``vocab.json``, ``params.json``). An update
that commits generation N writes, never touching a file an earlier generation reads:

- ``seg-N/`` (only when rows were added, or by a compaction): a term-major CSR over global
  term ids, restricted to the terms that occur in it: ``terms.npy`` (their ids, ascending;
  absent in a compacted base, whose ``indptr`` covers every term), ``indptr.npy``,
  ``rows.npy`` (global rows, ascending within a term), ``tf.npy``; ``docrows.npy`` and
  ``doclen.npy`` (its rows and their token counts); ``vocab.json`` (the terms it appends to
  the global vocabulary, or the whole vocabulary for a compacted base); a compacted base also
  has ``data.npy`` (precomputed impacts).
- ``deleted-N.npy``: tombstones, ``np.packbits(bitorder="little")`` over all rows.
- ``df-N.npy``: live document frequency of every global term (int32).
- ``gen-N.json``: base, segment list, counts, parameters and a ``files`` table
  (size + sha256) of every file generation N reads except itself.

Each file is written under a temporary name, fsynced and renamed; ``seg-N`` as a folder.
A segment or base read back is a ``retrievers.bm25_parts.Part``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from index.corpus import file_sha256
from index.files import durable_save, durable_write
from retrievers.bm25 import BM25Index
from retrievers.bm25_parts import Part, rows_dtype
from searchagent.errors import IndexFormatError
from searchagent.files import UNREADABLE
from searchagent.files import fsync_dir, remove_durably

FORMAT = 1
BASE_FILES = ("postings.npz", "vocab.json", "params.json")
_GENERATION_FILE = re.compile(r"\.?(?:seg|deleted|df|gen)-(\d+)(?:\.npy|\.json)?(\.tmp-\d+)?")
_LOAD_ERRORS = UNREADABLE


def write_json(path: Path, obj) -> None:
    durable_write(path, json.dumps(obj, indent=1).encode())


def write_part(folder: Path, part: Part, vocab: list[str]) -> list[str]:
    """Write ``part`` as ``folder/part.name/`` (built in a temporary folder, then renamed);
    return the paths written, relative to ``folder``."""
    final = folder / part.name
    if final.exists():
        raise FileExistsError(f"{final} already exists: a later generation was left by a "
                              "crash; call rollback(folder, committed) first")
    tmp = folder / f".{part.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    arrays = {"indptr": part.indptr, "rows": part.rows, "tf": part.tf,
              "docrows": part.docrows, "doclen": part.doclen}
    if part.terms is not None:
        arrays["terms"] = part.terms
    if part.data is not None:
        arrays["data"] = part.data
    for name, array in arrays.items():
        durable_save(tmp / f"{name}.npy", array)
    write_json(tmp / "vocab.json", vocab)          # each write fsyncs ``tmp`` itself
    os.rename(tmp, final)
    fsync_dir(folder)
    return sorted(f"{part.name}/{path.name}" for path in final.iterdir())


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except _LOAD_ERRORS as exc:
        raise IndexFormatError(f"BM25 segment file corrupt or unreadable: {path}: {exc} "
                               "(roll back to an earlier generation or rebuild)") from exc


def read_part(folder: Path, name: str, n_rows: int) -> tuple[Part, list[str]]:
    """A segment (or compacted base) and its vocabulary list, checked for consistency."""
    seg = folder / name
    if not seg.is_dir():
        raise IndexFormatError(f"BM25 segment folder missing: {seg}")
    arrays = {key: _load_npy(seg / f"{key}.npy")
              for key in ("indptr", "rows", "tf", "docrows", "doclen")}
    for key in ("terms", "data"):
        arrays[key] = _load_npy(seg / f"{key}.npy") if (seg / f"{key}.npy").exists() else None
    path = seg / "vocab.json"
    try:
        vocab = json.loads(path.read_text())
    except _LOAD_ERRORS as exc:
        raise IndexFormatError(f"BM25 segment file corrupt or unreadable: {path}: {exc}") from exc
    part = Part(name=name, **arrays)
    problem = _inconsistency(part, n_rows)
    if problem or not isinstance(vocab, list):
        raise IndexFormatError(f"BM25 segment {seg} is inconsistent: {problem or 'vocab.json'} "
                               "(roll back to an earlier generation or rebuild)")
    return part, vocab


def _inconsistency(part: Part, n_rows: int) -> str:
    indptr, rows = part.indptr, part.rows
    if indptr.ndim != 1 or len(indptr) == 0 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        return "indptr.npy"
    if indptr[-1] != len(rows) or len(part.tf) != len(rows):
        return "indptr.npy / rows.npy / tf.npy lengths"
    if part.terms is not None and (len(part.terms) != len(indptr) - 1
                                   or np.any(np.diff(part.terms) <= 0)):
        return "terms.npy"
    if part.data is not None and len(part.data) != len(rows):
        return "data.npy length"
    if len(part.docrows) != len(part.doclen) or np.any(np.diff(part.docrows) <= 0):
        return "docrows.npy / doclen.npy"
    if len(part.docrows) and (part.docrows[0] < 0 or part.docrows[-1] >= n_rows):
        return "docrows.npy out of range"
    if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
        return "rows.npy out of range"
    return ""


def read_build_base(folder: Path) -> tuple[BM25Index, Part | None]:
    """The build's index and, if it kept raw counts, the same postings as a ``Part``."""
    index = BM25Index.load(folder)
    if index.tf is None:
        return index, None
    n = index.n_docs
    return index, Part(name="", terms=None, indptr=index.indptr, rows=index.indices,
                       tf=index.tf, docrows=np.arange(n, dtype=rows_dtype(n)),
                       doclen=index.doclen, data=index.data)


def read_generation(folder: Path, generation: int) -> dict:
    path = folder / f"gen-{generation}.json"
    if not path.is_file():
        raise IndexFormatError(f"BM25 generation {generation} not found: no {path}")
    try:
        info = json.loads(path.read_text())
        if info["format"] != FORMAT or info["generation"] != generation:
            raise ValueError(f"format {info['format']!r}, generation {info['generation']!r}")
    except _LOAD_ERRORS as exc:
        raise IndexFormatError(f"BM25 generation file corrupt: {path}: {exc}") from exc
    return info


def read_bits(folder: Path, name: str, n_rows: int) -> np.ndarray:
    packed = _load_npy(folder / name)
    if packed.dtype != np.uint8 or len(packed) != (n_rows + 7) // 8:
        raise IndexFormatError(f"BM25 deletion bitmap {folder / name} does not cover "
                               f"{n_rows} rows")
    return np.unpackbits(packed, count=n_rows, bitorder="little").astype(bool)


def read_df(folder: Path, name: str, n_terms: int) -> np.ndarray:
    df = _load_npy(folder / name)
    if df.ndim != 1 or len(df) != n_terms or (len(df) and df.min() < 0):
        raise IndexFormatError(f"BM25 document frequencies {folder / name} do not match "
                               f"the {n_terms}-term vocabulary")
    return df


def check_files(folder: Path, files: dict[str, dict], mode: str | None) -> None:
    """Each listed file has its size (``mode='size'``) and also its sha256 (``'full'``)."""
    if mode is None:
        return
    if mode not in ("size", "full"):
        raise ValueError(f"verify must be 'size', 'full' or None, got {mode!r}")
    for rel, expected in files.items():
        path = folder / rel
        if not path.is_file():
            raise IndexFormatError(f"BM25 file missing: {path}")
        if path.stat().st_size != expected["size"]:
            raise IndexFormatError(f"BM25 file {path} has {path.stat().st_size} bytes, its "
                                   f"generation says {expected['size']} (truncated or replaced)")
        if mode == "full" and file_sha256(path) != expected["sha256"]:
            raise IndexFormatError(f"BM25 file {path} fails its sha256 check (corrupted)")


def rollback(folder: str | Path, committed: int) -> list[str]:
    """Remove every trace of generations above ``committed`` (and any temporary file left by
    a writer that died) from the bm25 folder; return the names removed. Generation files go
    first, so a rollback that is itself interrupted leaves nothing that looks committed."""
    folder = Path(folder)
    doomed = []
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _GENERATION_FILE.fullmatch(path.name)
        if match and (int(match.group(1)) > committed or match.group(2)):
            doomed.append(path)
    return _remove(folder, doomed)


def prune(folder: str | Path, generation: int, oldest: int | None = None) -> list[str]:
    """Delete what only generations below ``oldest`` (default: ``generation``) read: every
    file and segment folder of the bm25 folder that no generation from ``oldest`` to
    ``generation`` lists (the build's arrays too, once a compaction replaced them). The
    generations below ``oldest`` stop opening: only for when no reader uses them
    (``index/leases.py``).
    Returns the names removed."""
    folder, oldest = Path(folder), generation if oldest is None else oldest
    read_generation(folder, generation)                 # a clear error if not committed
    needed = set(BASE_FILES) if oldest == 0 else set()  # the build (generation 0) reads
    for n in range(max(oldest, 1), generation + 1):
        if (folder / f"gen-{n}.json").is_file():
            info = read_generation(folder, n)
            needed |= {rel.split("/")[0] for rel in info["files"]} | {f"gen-{n}.json"}
    return _remove(folder, [path for path in folder.iterdir() if path.name not in needed])


def _remove(folder: Path, doomed: list[Path]) -> list[str]:
    """Delete ``doomed`` (files or segment folders), generation files first, so a removal
    that is itself interrupted leaves nothing that looks committed; return their names."""
    doomed = sorted(doomed, key=lambda path: (not path.name.startswith("gen-"), path.name))
    remove_durably(folder, doomed)
    return [path.name for path in doomed]
