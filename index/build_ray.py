"""The distributed build on Ray Data, ``build_index(..., engine="ray")``: the same index folder
as the local build (``index.build``).

1. One read task streams the corpus as (line number, line) blocks; ``map_batches`` tasks parse
   them (``index.corpus.parse_record``), chunk them and count BM25 terms; bad lines travel as
   data. In corpus order (``preserve_order``) the driver raises the first error as the local
   reader would, numbers the rows, writes the doc store (duplicate ids found as the local
   ``load_corpus`` finds them) and maps block term ids to global ones in first-seen order:
   ``BM25Index.from_counts`` gives the local index.
2. ``map_batches`` over a fixed actor pool embeds (one ``Encoder`` per actor; one actor per GPU,
   or CPU actors sharing the cores); the driver writes results at their rows of the memmap.
3. The vector index and manifest as locally (plus ``engine`` and Ray's version), all inside
   ``atomic_folder``; dead tasks are retried and dead actors restarted (``RETRIES``).

Left to do: SPANN is built on the driver by the local ``build_spann`` (distributed: cluster a
sample, then assign vectors and write postings in parallel by head range); one task reads the
corpus, on the driver's node (a plain file could be split into byte ranges), so the driver must
join the cluster (``auto`` or HOST:PORT, not ``ray://``); every node needs the model; the
driver joins the BM25 counts in memory as ``BM25Index.build`` does (``retrievers.bm25_build``'s
streaming merge could take the per-block counts instead).
"""

from __future__ import annotations

import gzip
import inspect
import json
import logging
import os
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from index.build import EMBEDDINGS, _build_vector_index, finish_build
from index.corpus import chunk_passage, open_text, parse_record
from index.manifest import atomic_folder
from retrievers.bm25 import BM25Index
from retrievers.docstore import pop_duplicate_source, write_docstore
from retrievers.encoder import Encoder, cache_folder, passage_text
from retrievers.tokenize import tokenize
from searchagent.config import Config
from searchagent.errors import InputError
from searchagent.types import Passage

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as exc:       # the optional extra is missing
    raise InputError(f"--engine ray needs Ray Data ({exc.name} is not installed): "
                     "pip install 'searchagent[ray]'", field="engine") from exc

LINES_PER_BLOCK = 1000      # corpus lines per parse task
RETRIES = 3                 # task retries, actor restarts
MAX_THREADS_PER_ACTOR = 4   # CPU actors: cores // 4 actors of 4 threads (one for <= 4 cores)
PARSED = pa.schema([("line", pa.int64()), ("source", pa.string()), ("id", pa.string()),
                    ("title", pa.string()), ("text", pa.string()), ("error", pa.string()),
                    ("field", pa.string()), ("term_ids", pa.list_(pa.int32())),
                    ("tfs", pa.list_(pa.int32())), ("doclen", pa.int32()),
                    ("new_terms", pa.list_(pa.string()))])


def build_index_ray(corpus: str | Path, out: str | Path, config: Config, overwrite: bool = False,
                    address: str | None = None, num_gpus: int = 0,
                    num_cpus: int | None = None) -> dict:
    """``index.build.build_index`` on Ray (it validated ``config``); return the manifest."""
    cfg, corpus, timings, components, pool = config.index, Path(corpus), {}, {}, {}
    if cfg.chunk_overlap < 0 or (cfg.chunk_words and cfg.chunk_overlap >= cfg.chunk_words):
        raise InputError("chunk overlap must be >= 0 and smaller than chunk words",
                         field="chunk_overlap")
    if num_gpus < 0 or (num_cpus is not None and num_cpus < 1):
        raise InputError("--num-gpus must be >= 0 and --num-cpus >= 1", field="engine")
    with atomic_folder(out, overwrite=overwrite) as tmp:
        open_text(corpus).close()           # cannot open: the local reader's error, early
        with _ray_session(address, num_cpus, num_gpus, timings):
            block = max(cfg.batch_size * 4, 256)       # the local build's encode block
            collected = _Collected(block if cfg.dense else 0)
            with _timed(timings, "docstore"):       # duplicates found as in load_corpus
                batches = _parsed(corpus, cfg.chunk_words, cfg.chunk_overlap, cfg.bm25)
                sources = tmp / "docs.duckdb.sources"
                count = write_docstore(tmp / "docs.duckdb",
                                       collected.passages(batches, str(corpus)), sources=sources)
                if not count:
                    raise InputError("empty corpus: no passages found", path=str(corpus))
                duplicate = pop_duplicate_source(sources)
                if duplicate is not None:
                    raise InputError(f"duplicate id {duplicate[0]!r} (first on line "
                                     f"{duplicate[1]})", path=str(corpus), line=duplicate[2],
                                     field="id")
            if cfg.bm25:
                with _timed(timings, "bm25"):
                    index = collected.bm25(cfg.bm25_k1, cfg.bm25_b)
                    index.save(tmp / "bm25")
                components["bm25"] = {"vocab": len(index.vocab),
                                      "postings": int(len(index.indices)), **index.params}
            if cfg.dense:
                with _timed(timings, "embed"):
                    components["dense"], pool = _embed(collected.refs, count, tmp, cfg, block,
                                                       num_gpus)
        if cfg.dense:
            with _timed(timings, "vector_index"):
                components["dense"]["index"] = _build_vector_index(tmp, cfg)
        manifest = finish_build(tmp, config, corpus, count, components, timings,
                                engine="ray", ray={"version": ray.__version__,
                                                   "address": address or "local", **pool})
    return manifest


@contextmanager
def _timed(timings: dict, stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


@contextmanager
def _ray_session(address: str | None, num_cpus: int | None, num_gpus: int, timings: dict):
    """Use this process's Ray, else join ``address`` or start Ray on this machine's cores;
    shut down only what was started here. Workers' logs stay off the console."""
    started = not ray.is_initialized()
    with _timed(timings, "ray_start"):
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        if started and address:
            ray.init(address=address, **quiet)
        elif started:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **quiet)
    try:
        have = ray.cluster_resources().get("GPU", 0)
        if num_gpus > have:
            raise InputError(f"--num-gpus {num_gpus}, but the Ray cluster has {have:g} GPU(s)",
                             field="num_gpus")
        yield
    finally:
        if started:
            ray.shutdown()


def _remote_args(call, *args, **kwargs):
    """``call`` with Ray options that Ray 2.60 has no named parameter for (retries, restarts,
    a scheduling strategy) and so warns about as deprecated ``ray_remote_args``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return call(*args, **kwargs)


# --- 1. read, parse, count ---------------------------------------------------------------

class _CorpusLines(Datasource):
    """The corpus as blocks of (line, raw) in file order; blank lines are skipped but counted.
    An unreadable file ends the stream with a row of line -1 whose ``raw`` is the error."""

    def __init__(self, path: Path, name: str):
        super().__init__()
        self.path, self.name = str(path.resolve()), name

    def estimate_inmemory_data_size(self) -> int:
        return os.path.getsize(self.path)

    def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
        path, name, fields = self.path, self.name, inspect.signature(BlockMetadata).parameters
        meta = {"num_rows": None, "size_bytes": self.estimate_inmemory_data_size(),
                "schema": None, "input_files": [path], "exec_stats": None}
        meta = BlockMetadata(**{k: v for k, v in meta.items() if k in fields})
        return [ReadTask(lambda: _read_lines(path, name), meta)]


def _read_lines(path: str, name: str):
    lines, raws = [], []
    try:
        with open_text(path) as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    lines.append(number)
                    raws.append(raw)
                    if len(raws) == LINES_PER_BLOCK:
                        yield pa.table({"line": pa.array(lines, pa.int64()), "raw": raws})
                        lines, raws = [], []
    except (InputError, UnicodeDecodeError, EOFError, gzip.BadGzipFile, OSError) as exc:
        lines.append(-1)
        raws.append(str(exc if isinstance(exc, InputError) else
                        InputError(f"unreadable file: {exc}", path=name)))
    if raws:
        yield pa.table({"line": pa.array(lines, pa.int64()), "raw": raws})


def _parse_block(block: pa.Table, name: str, chunk_words: int, chunk_overlap: int,
                 count_terms: bool) -> pa.Table:
    """Validate, chunk and (for BM25) count one block into ``PARSED`` rows: ``source`` is the
    corpus id on a line's first chunk (for the duplicate check), ``error`` a bad line's
    message; ``term_ids`` index the block's own vocabulary, whose terms are listed in the
    ``new_terms`` of the row that first uses them."""
    rows, vocab = [], {}
    for line, raw in zip(block["line"].to_pylist(), block["raw"].to_pylist()):
        try:
            if line < 0:
                raise InputError(raw)            # the reader's file error, already worded
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON ({exc.msg} at column {exc.colno})",
                                 path=name, line=line) from None
            passage = parse_record(record, name, line)
        except InputError as exc:
            rows.append((line, None, "", "", "", str(exc), exc.field, [], [], 0, []))
            continue
        for n, chunk in enumerate(chunk_passage(passage, chunk_words, chunk_overlap)):
            counts = Counter(tokenize(f"{chunk.title} {chunk.text}")) if count_terms else {}
            new = [t for t in counts if t not in vocab]
            vocab.update(zip(new, range(len(vocab), len(vocab) + len(new))))
            rows.append((line, None if n else passage.id, chunk.id, chunk.title, chunk.text,
                         None, None, [vocab[t] for t in counts], list(counts.values()),
                         sum(counts.values()), new))
    columns = list(zip(*rows)) or [[]] * len(PARSED)
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, PARSED)], schema=PARSED)


def _parsed(corpus: Path, chunk_words: int, chunk_overlap: int, count_terms: bool):
    """Parsed blocks, in corpus order. The read runs on this node (it has the file)."""
    node = ray.get_runtime_context().get_node_id()
    if "label_selector" in inspect.signature(ray.data.read_datasource).parameters:
        pin = {"label_selector": {"ray.io/node-id": node}, "ray_remote_args": {}}
    else:                                                       # older Ray
        pin = {"ray_remote_args": {"scheduling_strategy":
                                   NodeAffinitySchedulingStrategy(node, soft=False)}}
    pin["ray_remote_args"]["max_retries"] = RETRIES
    lines = _remote_args(ray.data.read_datasource, _CorpusLines(corpus, str(corpus)), **pin)
    parsed = _remote_args(
        lines.map_batches, _parse_block, batch_size=None, batch_format="pyarrow",
        fn_kwargs={"name": str(corpus), "chunk_words": chunk_words,
                   "chunk_overlap": chunk_overlap, "count_terms": count_terms},
        scheduling_strategy="DEFAULT", max_retries=RETRIES)   # not fused into the read
    parsed.context.execution_options.preserve_order = True   # this dataset's own copy
    return parsed.iter_batches(batch_size=None, batch_format="pyarrow")


class _Collected:
    """What the driver keeps of the parsed blocks: BM25 counts with global term ids and
    (``block`` > 0) the numbered passages, put into the object store."""

    def __init__(self, block: int):
        self.block, self.vocab, self.refs, self.pending = block, {}, [], []
        self.parts: dict[str, list[np.ndarray]] = {"terms": [], "tf": [], "len": [], "n": []}
        self.rows = self.last_line = 0

    def passages(self, batches, name: str):
        """(line, corpus id on a record's first chunk, passage) in corpus order, as
        ``write_docstore(..., sources=)`` takes them; a bad line raises the local error."""
        for batch in batches:
            lines = batch["line"].to_pylist()
            if lines and 0 < lines[0] <= self.last_line:        # -1: a file error row
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
            self._count(batch)
            if self.block:
                rows = pa.array(np.arange(self.rows, self.rows + len(batch)), pa.int64())
                self.pending.append(batch.select(["title", "text"]).append_column("row", rows))
                self._put(final=False)
            self.rows += len(batch)
        self._put(final=True)

    def _count(self, batch: pa.Table) -> None:
        new = pc.list_flatten(batch["new_terms"]).to_pylist()
        to_global = np.fromiter((self.vocab.setdefault(t, len(self.vocab)) for t in new),
                                np.int32, len(new))
        self.parts["terms"].append(to_global[pc.list_flatten(batch["term_ids"]).to_numpy()])
        self.parts["tf"].append(pc.list_flatten(batch["tfs"]).to_numpy())
        self.parts["len"].append(batch["doclen"].to_numpy())
        self.parts["n"].append(pc.list_value_length(batch["term_ids"]).to_numpy())

    def _put(self, final: bool) -> None:
        """Put pending rows into the object store in tables of ``block`` rows."""
        if not self.pending:
            return
        table, start = pa.concat_tables(self.pending), 0
        while len(table) - start >= self.block or (final and start < len(table)):
            self.refs.append(ray.put(table.slice(start, self.block).combine_chunks()))
            start += self.block
        self.pending = [table.slice(start)] if start < len(table) else []

    def bm25(self, k1: float, b: float) -> BM25Index:
        joined = {k: np.concatenate(v) for k, v in self.parts.items()}
        return BM25Index.from_counts(self.vocab, joined["terms"], joined["tf"], joined["len"],
                                     joined["n"], k1=k1, b=b)


# --- 2. embed --------------------------------------------------------------------------------

class _Embedder:
    """One actor of the pool: loads the encoder once, embeds batches of numbered passages.
    The first row of each result carries the encoder's manifest entry (JSON)."""

    def __init__(self, model: str, backend: str, cache_dir: str, dtype: str, batch_size: int,
                 threads: int):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.encoder = Encoder(model, backend=backend, cache_dir=cache_dir)
        self.dtype, self.batch_size = dtype, batch_size
        self.manifest = json.dumps(self.encoder.manifest())

    def __call__(self, batch: dict) -> dict:
        texts = [passage_text(title, text) for title, text in zip(batch["title"], batch["text"])]
        vectors = self.encoder.encode(texts, self.batch_size).astype(self.dtype)
        notes = np.full(len(texts), None, dtype=object)
        notes[:1] = self.manifest
        return {"row": batch["row"], "vector": vectors, "encoder": notes}


def _probe(model: str, backend: str, cache_dir: str, threads: int) -> dict:
    """Load a non-torch encoder once where the actors run: its export is made here and an
    "auto" choice settled here, not raced or chosen differently in every actor."""
    return json.loads(_Embedder(model, backend, cache_dir, "float32", 1, threads).manifest)


def _embed(refs: list, count: int, folder: Path, cfg, block: int, num_gpus: int
           ) -> tuple[dict, dict]:
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if num_gpus:
        actors, threads, resources = num_gpus, 0, {"num_cpus": 1, "num_gpus": 1}
    else:
        threads = max(1, min(MAX_THREADS_PER_ACTOR, cpus))
        actors, resources = max(1, cpus // threads), {"num_cpus": threads}
    cache, backend, recorded = str(cache_folder(folder)), cfg.embed_backend, None
    started = time.perf_counter()
    if backend != "torch":
        probe = ray.remote(max_calls=1, max_retries=RETRIES, **resources)(_probe)
        recorded = ray.get(probe.remote(cfg.dense_model, backend, cache, threads))
        backend = recorded["backend"]
    embedded = _remote_args(
        ray.data.from_arrow_refs(refs).map_batches, _Embedder, batch_size=block,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"model": cfg.dense_model, "backend": backend, "cache_dir": cache,
                               "dtype": cfg.dtype, "batch_size": cfg.batch_size,
                               "threads": threads},
        max_restarts=RETRIES, max_task_retries=RETRIES, **resources)
    path = folder / EMBEDDINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    out, written = None, 0
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        if out is None:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=cfg.dtype,
                                            shape=(count, batch["vector"].shape[1]))
        recorded = recorded or next((json.loads(e) for e in batch["encoder"] if e), None)
        out[batch["row"]] = batch["vector"]
        written += len(batch["row"])
    if written != count:
        raise RuntimeError(f"Ray returned {written} vectors for {count} passages")
    out.flush()
    del out
    seconds = time.perf_counter() - started
    if Path(recorded["model_file"]).is_relative_to(folder):     # an export inside the index
        recorded["model_file"] = Path(recorded["model_file"]).relative_to(folder).as_posix()
    dense = {"model": cfg.dense_model, "model_path": recorded["model_path"],
             "dim": recorded["dim"], "dtype": cfg.dtype,
             "passages_per_second": round(count / seconds, 1), "encoder": recorded}
    return dense, {"actors": actors, "threads_per_actor": threads,
                   "gpus_per_actor": resources.get("num_gpus", 0)}
