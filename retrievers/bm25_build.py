"""A streaming BM25 build: the files ``BM25Index.save`` writes, without holding the postings.

``BM25Index.build`` keeps every (term, doc, tf) posting of the corpus in memory, several
times over while it sorts them. ``build_bm25_files`` writes the same folder (the same
``postings.npz`` arrays byte for byte, ``vocab.json`` and ``params.json``) in memory that
grows with the vocabulary, not with the corpus:

1. Pass 1 counts the documents chunk by chunk (``chunk_docs`` at a time), grows the vocabulary
   (term ids in first-seen order, as ``build``) and appends each chunk's postings, sorted by
   term (docs ascending within a term), to run files on disk; the document frequencies are
   summed chunk by chunk and the document lengths appended to a file. ``BM25Writer`` is
   this pass fed with counts made elsewhere (the Ray build's workers).
2. Pass 2 walks the terms in ranges of about ``range_postings`` postings: each chunk's run
   holds a range as one contiguous slice (found by binary search in the run's terms), so the
   slices are read, merged by term (chunk order keeps the docs ascending), scored exactly as
   ``BM25Index.from_counts`` scores them and appended to the output arrays. A term with more
   postings than a range is streamed chunk by chunk.
3. ``postings.npz`` is assembled as ``np.savez`` writes it (an uncompressed zip of ``.npy``
   members) by copying the output files into it.

Memory: the vocabulary and ``df`` (O(terms)), one chunk, one range, and the document lengths
as a memory-mapped file (4 bytes a document). The temporary files (about 12 + 10 bytes a
posting) live in a hidden folder inside the output folder and are removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from array import array
from contextlib import closing
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from retrievers.bm25 import count_tokens

CHUNK_DOCS = 50_000             # documents counted per pass-1 chunk
RANGE_POSTINGS = 1_000_000      # postings merged per pass-2 term range
COPY_BUFFER = 16 << 20


def build_bm25_files(docs: Iterable[list[str]], folder: str | Path, k1: float = 1.5,
                     b: float = 0.75, epsilon: float = 0.25, total: int | None = None,
                     chunk_docs: int = CHUNK_DOCS, range_postings: int = RANGE_POSTINGS
                     ) -> dict:
    """Write the BM25 index of the tokenized ``docs`` into ``folder`` (as ``BM25Index.save``
    would write ``BM25Index.build(docs, k1, b, epsilon)``); return the manifest entry:
    vocabulary size, number of postings and the parameters."""
    with closing(BM25Writer(folder, chunk_docs, range_postings)) as writer:
        for counts in count_tokens(docs, writer.vocab, total, chunk_docs):
            writer.add(*counts)
        return writer.finish(k1, b, epsilon)


class BM25Writer:
    """Pass 1 fed from outside: ``add`` counted documents in corpus order (term ids from
    ``vocab``, which the caller grows in first-seen order; ``add`` keeps up to
    ``chunk_docs`` documents before writing them as one sorted run), then ``finish``
    merges, writes the folder and removes the run files; ``close`` removes them without
    writing. Used by ``build_bm25_files`` and the Ray driver (``index.build_ray_read``)."""

    def __init__(self, folder: str | Path, chunk_docs: int = CHUNK_DOCS,
                 range_postings: int = RANGE_POSTINGS):
        if chunk_docs < 1 or range_postings < 1:
            raise ValueError("chunk_docs and range_postings must be positive")
        self.folder = Path(folder)
        self.chunk_docs, self.range_postings = chunk_docs, range_postings
        self.folder.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=".bm25-build-", dir=self.folder))
        self.runs = _Runs()
        self.vocab = self.runs.vocab
        self.pending: list[tuple[np.ndarray, ...]] = []
        self.pending_docs = 0
        self.files = {name: open(self.work / f"{name}.bin", "wb")
                      for name in ("run_terms", "run_docs", "run_tf", "doclen")}

    def add(self, term_ids, tfs, doc_len, doc_terms) -> None:
        """Documents' counts as int32 sequences, each document's terms back to back."""
        part = tuple(np.frombuffer(x, dtype=np.int32) if isinstance(x, array)
                     else np.ascontiguousarray(x, dtype=np.int32)
                     for x in (term_ids, tfs, doc_len, doc_terms))
        if len(part[2]):
            self.pending.append(part)
            self.pending_docs += len(part[2])
        if self.pending_docs >= self.chunk_docs:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            _flush(self.runs, self.files, *(np.concatenate(x) for x in zip(*self.pending)))
        self.pending, self.pending_docs = [], 0

    def finish(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> dict:
        """Merge the runs and write the folder; return the manifest entry. The run files
        are removed either way."""
        try:
            self._flush()
            for handle in self.files.values():
                handle.close()
            return self._write(k1, b, epsilon)
        finally:
            self.close()

    def _write(self, k1: float, b: float, epsilon: float) -> dict:
        runs, work, folder = self.runs, self.work, self.folder
        n_docs, n_terms = runs.n_docs, len(runs.vocab)
        df = runs.df[:n_terms].astype(np.float64)
        idf = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
        floor = epsilon * (idf.mean() if len(idf) else 0.0)
        idf[idf < 0] = floor
        avgdl = runs.total_len / n_docs if n_docs else 0.0   # = lengths.mean(), exactly
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(runs.df[:n_terms], out=indptr[1:])
        n_postings = int(indptr[-1])
        small = n_postings == 0 or runs.max_tf < 1 << 16        # as bm25.count_array
        tf_dtype = np.dtype(np.uint16 if small else np.int32)
        params = {"k1": k1, "b": b, "epsilon": epsilon, "avgdl": float(avgdl)}
        _merge(runs, work, indptr, idf, params, tf_dtype, self.range_postings)
        members = [("indptr", indptr),
                   ("indices", (work / "indices.bin", np.dtype(np.int32), n_postings)),
                   ("data", (work / "data.bin", np.dtype(np.float32), n_postings)),
                   ("tf", (work / "tf.bin", tf_dtype, n_postings)),
                   ("doclen", (work / "doclen.bin", np.dtype(np.int32), n_docs))]
        _write_npz(folder / "postings.npz", members)
        (folder / "vocab.json").write_text(json.dumps(list(runs.vocab)))  # in id order
        (folder / "params.json").write_text(json.dumps({**params, "n_docs": n_docs}))
        return {"vocab": n_terms, "postings": n_postings, **params}

    def close(self) -> None:
        """Drop the run files (``finish`` does it too)."""
        for handle in self.files.values():
            handle.close()
        shutil.rmtree(self.work, ignore_errors=True)


class _Runs:
    """What pass 1 leaves: the vocabulary, df, and where each chunk's run starts/ends."""

    def __init__(self):
        self.vocab: dict[str, int] = {}
        self.df = np.zeros(1024, dtype=np.int64)
        self.bounds = [0]               # run c holds postings bounds[c]:bounds[c + 1]
        self.n_docs = self.total_len = self.max_tf = 0


def _flush(runs: _Runs, files: dict, terms: np.ndarray, tf: np.ndarray, doc_len: np.ndarray,
           doc_terms: np.ndarray) -> None:
    """Append one chunk: its postings sorted by term (stable: docs stay ascending)."""
    first = runs.n_docs
    rows = np.repeat(np.arange(first, first + len(doc_len), dtype=np.int32), doc_terms)
    order = np.argsort(terms, kind="stable")
    files["run_terms"].write(terms[order])
    files["run_docs"].write(rows[order])
    files["run_tf"].write(tf[order])
    files["doclen"].write(doc_len)
    if len(runs.vocab) > len(runs.df):
        runs.df = np.concatenate([runs.df, np.zeros(max(len(runs.vocab), 2 * len(runs.df))
                                                    - len(runs.df), dtype=np.int64)])
    runs.df[:len(runs.vocab)] += np.bincount(terms, minlength=len(runs.vocab))
    runs.bounds.append(runs.bounds[-1] + len(terms))
    runs.n_docs += len(doc_len)
    runs.total_len += int(doc_len.sum(dtype=np.int64))
    runs.max_tf = max(runs.max_tf, int(tf.max()) if len(tf) else 0)


def _merge(runs: _Runs, work: Path, indptr: np.ndarray, idf: np.ndarray, params: dict,
           tf_dtype: np.dtype, range_postings: int) -> None:
    """Pass 2: the postings in term order, scored, appended to indices/data/tf.bin."""
    n_terms, chunks = len(indptr) - 1, len(runs.bounds) - 1
    cursor = runs.bounds[:-1]                   # where each run's next range starts
    doclen = (np.memmap(work / "doclen.bin", dtype=np.int32, mode="r")
              if runs.n_docs else np.zeros(0, np.int32))
    names = ("run_terms", "run_docs", "run_tf")
    sources = {name: os.open(work / f"{name}.bin", os.O_RDONLY) for name in names}
    targets = {name: open(work / f"{name}.bin", "wb") for name in ("indices", "data", "tf")}
    try:
        def read(name: str, start: int, end: int) -> np.ndarray:
            raw = os.pread(sources[name], 4 * (end - start), 4 * start)
            if len(raw) != 4 * (end - start):
                raise OSError(f"short read from {work / name}.bin")
            return np.frombuffer(raw, dtype=np.int32)

        def emit(terms: np.ndarray, rows: np.ndarray, tf: np.ndarray) -> None:
            targets["indices"].write(np.ascontiguousarray(rows))
            targets["data"].write(_impacts(idf[terms], tf, doclen[rows], params))
            targets["tf"].write(tf.astype(np.float32).astype(tf_dtype))
            bar.update(len(rows))

        with tqdm(total=int(indptr[-1]), desc="bm25: writing postings", unit="posting",
                  mininterval=1.0) as bar:
            start = 0
            while start < n_terms:
                base = indptr[start]
                stop = int(np.searchsorted(indptr, base + range_postings, side="right")) - 1
                stop = min(max(stop, start + 1), n_terms)   # at least one term
                ends = [_first_at_least(read, cursor[c], runs.bounds[c + 1], stop)
                        for c in range(chunks)]
                if indptr[stop] - base > range_postings:    # one big term: chunk by chunk
                    for c in range(chunks):
                        if ends[c] > cursor[c]:
                            emit(*(read(name, cursor[c], ends[c]) for name in names))
                elif indptr[stop] > base:
                    parts = [[read(name, cursor[c], ends[c]) for c in range(chunks)]
                             for name in names]
                    terms, rows, tf = (np.concatenate(part) for part in parts)
                    order = np.argsort(terms, kind="stable")   # chunks (docs) stay in order
                    emit(terms[order], rows[order], tf[order])
                cursor, start = ends, stop
    finally:
        for fd in sources.values():
            os.close(fd)
        for handle in targets.values():
            handle.close()
        del doclen


def _first_at_least(read, low: int, high: int, term: int) -> int:
    """Position of the first posting with a term id >= ``term`` in the sorted run slice
    ``low:high`` (binary search by single reads, nothing mapped)."""
    while low < high:
        middle = (low + high) // 2
        if read("run_terms", middle, middle + 1)[0] < term:
            low = middle + 1
        else:
            high = middle
    return low


def _impacts(idf: np.ndarray, counts: np.ndarray, lengths: np.ndarray, params: dict
             ) -> np.ndarray:
    """``BM25Index.from_counts``'s ``idf * tf * (k1 + 1) / (tf + norm)``, in place where it
    can be (IEEE + and * commute, so the results are bit-identical)."""
    k1, b, avgdl = params["k1"], params["b"], params["avgdl"]
    tf = counts.astype(np.float32).astype(np.float64)
    if avgdl:       # norm = k1 * (1 - b + b * lengths / avgdl)
        norm = lengths.astype(np.float64)
        norm *= b
        norm /= avgdl
        norm += 1 - b
        norm *= k1
        norm += tf
    else:
        norm = tf + k1
    impacts = idf * tf
    del tf
    impacts *= k1 + 1
    impacts /= norm
    return impacts.astype(np.float32)


def _write_npz(path: Path, members: list[tuple[str, object]]) -> None:
    """``np.savez(path, **members)``: each member is an array, or (raw file, dtype, length)
    whose bytes are copied behind the ``.npy`` header ``np.save`` would write."""
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for name, member in members:
            with archive.open(name + ".npy", "w", force_zip64=True) as out:
                if isinstance(member, np.ndarray):
                    np.lib.format.write_array(out, member, allow_pickle=False)
                    continue
                raw, dtype, length = member
                if os.path.getsize(raw) != length * dtype.itemsize:
                    raise OSError(f"{raw} holds {os.path.getsize(raw)} bytes, expected "
                                  f"{length} x {dtype.itemsize}")
                header = {"descr": np.lib.format.dtype_to_descr(dtype),
                          "fortran_order": False, "shape": (length,)}
                np.lib.format.write_array_header_1_0(out, header)
                with open(raw, "rb") as source:
                    shutil.copyfileobj(source, out, COPY_BUFFER)
