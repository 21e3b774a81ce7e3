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
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from index.corpus import file_sha256
from index.files import durable_save, durable_write, fsync_dir
from retrievers.bm25 import BM25Index, count_array
from searchagent.errors import IndexFormatError

FORMAT = 1
CHUNK = 1 << 22              # postings scanned at a time when counting deleted documents
BAR_POSTINGS = 1 << 24       # progress bars for passes over at least this many postings
BASE_FILES = ("postings.npz", "vocab.json", "params.json")
_GENERATION_FILE = re.compile(r"\.?(?:seg|deleted|df|gen)-(\d+)(?:\.npy|\.json)?(\.tmp-\d+)?")
_LOAD_ERRORS = (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile,
                zlib.error, json.JSONDecodeError, UnicodeDecodeError)


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
    doomed.sort(key=lambda path: (not path.name.startswith("gen-"), path.name))
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if doomed:
        fsync_dir(folder)
    return [path.name for path in doomed]
