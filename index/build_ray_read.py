"""Stage 1 of the build on Ray Data (``index.build_ray``): read, parse, count.

Read tasks stream the corpus as (line number, line) blocks (``_CorpusLines``): a plain-text
file in byte ranges of about ``RANGE_BYTES`` whole lines each, read in parallel (one scan on
the driver finds the cuts and each range's first line number), a gzipped one in one task
(a gzip stream decompresses serially from its start; the parsing after it is parallel);
``map_batches`` tasks parse them (``index.corpus.parse_record``), chunk them and count BM25
terms into ``PARSED`` rows; bad lines travel as data. In corpus order the driver's
``Collected`` raises the first error as the local reader would, numbers the rows for the doc
store and maps block term ids to global ones in first-seen order, feeding them to the
streaming ``BM25Writer`` (run files on disk, as the local build's), so that it writes the
local index and the driver's memory does not grow with the corpus.

Ray is imported unguarded: import this through ``index.build_ray``, which names the extra to
install when Ray Data is missing.
"""

from __future__ import annotations

import gzip
import inspect
import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from index.build_ray_session import RETRIES, remote_args
from index.corpus import chunk_passage, open_text, parse_record, refuse_window_id
from retrievers.bm25_build import BM25Writer
from retrievers.tokenize import tokenize
from searchagent.errors import InputError, malformed_json
from searchagent.types import Passage

LINES_PER_BLOCK = 1000      # corpus lines per parse task
RANGE_BYTES = 32 << 20      # bytes per read task of a plain-text corpus
READ_BUDGET = 256 << 20     # object store bytes parsed blocks may queue ahead of the driver
PARSED = pa.schema([("line", pa.int64()), ("source", pa.string()), ("id", pa.string()),
                    ("title", pa.string()), ("text", pa.string()), ("error", pa.string()),
                    ("field", pa.string()), ("term_ids", pa.list_(pa.int32())),
                    ("tfs", pa.list_(pa.int32())), ("doclen", pa.int32()),
                    ("new_terms", pa.list_(pa.string())), ("block", pa.int64())])


class _CorpusLines(Datasource):
    """The corpus as blocks of (line, raw) in file order; blank lines are skipped but counted.
    An unreadable file ends its range with a row of line -1 whose ``raw`` is the error."""

    def __init__(self, path: Path, name: str, range_bytes: int):
        super().__init__()
        # absolute, links kept: whether it is gzipped goes by the name given, as locally
        self.path, self.name, self.range_bytes = os.path.abspath(path), name, range_bytes

    def estimate_inmemory_data_size(self) -> int:
        return os.path.getsize(self.path)

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        path, name, fields = self.path, self.name, inspect.signature(BlockMetadata).parameters
        try:
            ranges = None if path.endswith(".gz") else line_ranges(path, self.range_bytes)
        except OSError:
            ranges = None                            # the read task reports it, as one row
        tasks = []
        for start, end, first in ranges or [(0, None, 1)]:
            size = self.estimate_inmemory_data_size() if end is None else end - start
            meta = {"num_rows": None, "size_bytes": size, "schema": None,
                    "input_files": [path], "exec_stats": None}
            meta = BlockMetadata(**{k: v for k, v in meta.items() if k in fields})
            tasks.append(ReadTask(lambda s=start, e=end, f=first: _read_lines(path, name, s, e, f),
                                  meta))
        return tasks


def line_ranges(path: str, range_bytes: int) -> list[tuple[int, int, int]]:
    r"""(start byte, end byte, number of its first line) of consecutive ranges of whole lines
    covering the file, each cut at the first line end after ``range_bytes``. Lines are
    counted as text mode splits them (``\n``, ``\r\n``, a lone ``\r``): a cut always
    follows a ``\n``, so no ``\r\n`` straddles one."""
    ranges, start, line = [], 0, 1
    with open(path, "rb") as handle:
        while True:
            handle.seek(start)
            data = handle.read(range_bytes)
            if not data:
                return ranges
            if len(data) == range_bytes:           # extend to the end of the line
                data += handle.readline()
            lines = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
            ranges.append((start, start + len(data), line))
            start, line = start + len(data), line + lines


def _read_lines(path: str, name: str, start: int = 0, end: int | None = None, first: int = 1):
    lines, raws = [], []
    try:
        if end is None:
            handle = open_text(path)
        else:
            with open(path, "rb") as raw_file:
                raw_file.seek(start)
                data = raw_file.read(end - start)
            handle = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8",
                                      errors="surrogateescape")     # see corpus.open_text
        with handle:
            for number, raw in enumerate(handle, start=first):
                if raw.strip():
                    lines.append(number)
                    raws.append(raw)
                    if len(raws) == LINES_PER_BLOCK:
                        yield _lines_block(lines, raws)
                        lines, raws = [], []
    except (InputError, UnicodeDecodeError, EOFError, gzip.BadGzipFile, OSError) as exc:
        lines.append(-1)
        raws.append(str(exc if isinstance(exc, InputError) else
                        InputError(f"unreadable file: {exc}", path=name)))
    if raws:
        yield _lines_block(lines, raws)


def _lines_block(lines: list[int], raws: list[str]) -> pa.Table:
    """A block of (line, raw): the raw lines as bytes, undecodable ones as read (lone
    surrogates, ``corpus.open_text``), which Arrow strings cannot hold; ``_parse_block``
    decodes them back, so a line fails or passes exactly as it does locally."""
    return pa.table({"line": pa.array(lines, pa.int64()),
                     "raw": pa.array([raw.encode("utf-8", "surrogateescape") for raw in raws],
                                     pa.binary())})


def _parse_block(block: pa.Table, name: str, chunk_words: int, chunk_overlap: int,
                 count_terms: bool) -> pa.Table:
    """Validate, chunk and (for BM25) count one block into ``PARSED`` rows: ``source`` is the
    corpus id on a line's first chunk (for the duplicate check), ``error`` a bad line's
    message; ``term_ids`` index the block's own vocabulary, whose terms are listed in the
    ``new_terms`` of the row that first uses them; ``block`` (its first line number) says
    which block a row is from, as Ray may split a large output into several batches."""
    rows, vocab = [], {}
    key = block["line"][0].as_py() if len(block) else 0
    for line, raw in zip(block["line"].to_pylist(), block["raw"].to_pylist()):
        raw = raw.decode("utf-8", "surrogateescape")      # the line exactly as read
        try:
            if line < 0:
                raise InputError(raw)            # the reader's file error, already worded
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(malformed_json(exc), path=name, line=line) from None
            passage = parse_record(record, name, line)
            if chunk_words:
                refuse_window_id(passage.id, name, line)
        except InputError as exc:
            rows.append((line, None, "", "", "", str(exc), exc.field, [], [], 0, [], key))
            continue
        for n, chunk in enumerate(chunk_passage(passage, chunk_words, chunk_overlap)):
            counts = Counter(tokenize(f"{chunk.title} {chunk.text}")) if count_terms else {}
            new = [t for t in counts if t not in vocab]
            vocab.update(zip(new, range(len(vocab), len(vocab) + len(new))))
            rows.append((line, None if n else passage.id, chunk.id, chunk.title, chunk.text,
                         None, None, [vocab[t] for t in counts], list(counts.values()),
                         sum(counts.values()), new, key))
    columns = list(zip(*rows)) or [[]] * len(PARSED)
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, PARSED)], schema=PARSED)


def parsed_blocks(corpus: Path, chunk_words: int, chunk_overlap: int, count_terms: bool):
    """Parsed blocks, in corpus order. The reads run on this node (it has the file)."""
    node = ray.get_runtime_context().get_node_id()
    if "label_selector" in inspect.signature(ray.data.read_datasource).parameters:
        pin = {"label_selector": {"ray.io/node-id": node}, "ray_remote_args": {}}
    else:                                                       # older Ray
        pin = {"ray_remote_args": {"scheduling_strategy":
                                   NodeAffinitySchedulingStrategy(node, soft=False)}}
    pin["ray_remote_args"]["max_retries"] = RETRIES
    source = _CorpusLines(corpus, str(corpus), RANGE_BYTES)
    lines = remote_args(ray.data.read_datasource, source, **pin)
    parsed = remote_args(
        lines.map_batches, _parse_block, batch_size=None, batch_format="pyarrow",
        fn_kwargs={"name": str(corpus), "chunk_words": chunk_words,
                   "chunk_overlap": chunk_overlap, "count_terms": count_terms},
        scheduling_strategy="DEFAULT", max_retries=RETRIES)   # not fused into the read
    options = parsed.context.execution_options              # this dataset's own copy
    options.preserve_order = True
    options.resource_limits = options.resource_limits.copy(object_store_memory=READ_BUDGET)
    return parsed.iter_batches(batch_size=None, batch_format="pyarrow")


class Collected:
    """What the driver does with the parsed blocks: their BM25 counts, with global term
    ids, go to ``bm25`` (a ``BM25Writer``; None: no BM25), and with ``block`` > 0 the
    numbered passages are put into the object store for embedding."""

    def __init__(self, block: int, bm25: BM25Writer | None = None):
        self.block, self.bm25, self.refs, self.pending = block, bm25, [], []
        self.rows = self.last_line = 0
        self.vocab_block, self.to_global = None, np.empty(0, np.int32)   # the block's terms

    def passages(self, batches, name: str):
        """(line, corpus id on a record's first chunk, passage) in corpus order, as
        ``write_docstore(..., sources=)`` takes them; a bad line raises the local error."""
        for batch in batches:
            lines = batch["line"].to_pylist()
            # -1: a file error row; a block split by Ray goes on at the line it stopped at
            if lines and 0 < lines[0] < self.last_line:
                raise RuntimeError("Ray returned corpus blocks out of order")
            ids, titles, texts, sources, errors, fields = (batch[k].to_pylist() for k in (
                "id", "title", "text", "source", "error", "field"))
            for i, line in enumerate(lines):
                if errors[i] is not None:
                    failure = InputError(errors[i])             # the local message, as is
                    failure.path, failure.line, failure.field = name, max(line, 0) or None, \
                        fields[i]
                    raise failure
                yield line, sources[i], Passage(ids[i], titles[i], texts[i])
            self.last_line = max(lines, default=self.last_line)
            if self.bm25 is not None:
                self._count(batch)
            if self.block:
                rows = pa.array(np.arange(self.rows, self.rows + len(batch)), pa.int64())
                self.pending.append(batch.select(["title", "text"]).append_column("row", rows))
                self._put(final=False)
            self.rows += len(batch)
        self._put(final=True)

    def _count(self, batch: pa.Table) -> None:
        """Add a batch's counts; its term ids index the vocabulary of its block, which
        earlier batches of the same block (a block Ray split) began."""
        if not len(batch):
            return
        if batch["block"][0].as_py() != self.vocab_block:
            self.vocab_block, self.to_global = batch["block"][0].as_py(), np.empty(0, np.int32)
        new, vocab = pc.list_flatten(batch["new_terms"]).to_pylist(), self.bm25.vocab
        self.to_global = np.concatenate([self.to_global, np.fromiter(
            (vocab.setdefault(t, len(vocab)) for t in new), np.int32, len(new))])
        self.bm25.add(self.to_global[pc.list_flatten(batch["term_ids"]).to_numpy()],
                      pc.list_flatten(batch["tfs"]).to_numpy(), batch["doclen"].to_numpy(),
                      pc.list_value_length(batch["term_ids"]).to_numpy())

    def _put(self, final: bool) -> None:
        """Put pending rows into the object store in tables of ``block`` rows."""
        if not self.pending:
            return
        table, start = pa.concat_tables(self.pending), 0
        while len(table) - start >= self.block or (final and start < len(table)):
            self.refs.append(ray.put(table.slice(start, self.block).combine_chunks()))
            start += self.block
        self.pending = [table.slice(start)] if start < len(table) else []
