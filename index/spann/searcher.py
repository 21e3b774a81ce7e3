"""``SpannIndex``: heads in memory, postings read from disk per query.

Search per query: find the nearest heads, keep those within ``(1 + eps_search)`` of the
nearest head's distance (at most ``max_postings``), read their postings with positional
reads on a thread pool (reads release the GIL, so scoring overlaps them), score the
vectors exactly, drop replicated ids and return the top k. A deadline or cancel event
stops further reads; the best results so far come back with ``stats.partial = True``.

Search ``params``: ``max_postings`` (M, 32), ``eps_search`` (0.5), ``read`` ("auto":
score postings in place through a memory map when warm, ``pread`` when cold; "mmap";
"pread"), ``io_threads`` (``pread`` only; -1: inline when warm, 8 when cold; 0 reads
inline), ``cold`` (False: drop the file from the page cache and read with ``O_DIRECT``
where possible), ``min_postings`` (1: read even past a deadline), ``ef_search`` (HNSW
head index, 64).

Updated generations (``lire.py``): heads that died in a split or merge are never probed
(``HeadIndex`` filters them), and a posting entry counts only while its version matches
its row's (``versions``): stale and deleted entries are dropped with one vectorized
comparison per query before the top k, and the version bits are stripped from the ids.
Generation 0 has no versions array and skips that step.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from index.spann import generations
from index.spann.heads import HeadIndex
from index.spann.leases import Lease
from index.spann.opening import load_snapshot
from index.spann.postings import ROW_MASK, VERSION_SHIFT, PostingReader, aligned_empty
from searchagent.errors import IndexFormatError, InputError
from searchagent.types import SearchStats

DEFAULTS = {"max_postings": 32, "eps_search": 0.5, "read": "auto", "io_threads": -1,
            "cold": False, "min_postings": 1, "ef_search": 64}
READS = ("auto", "mmap", "pread")


class SpannIndex:
    """An opened SPANN folder; thread-safe for concurrent searches."""

    def __init__(self, folder: Path, meta: dict, heads: HeadIndex, reader: PostingReader,
                 versions: np.ndarray | None = None, generation: int = 0):
        self.folder, self.meta, self.generation = folder, meta, generation
        self.heads, self.n_heads = heads, heads.n_live      # live heads: all probe-able
        self.versions = versions
        self.reader = reader
        self.dim = int(meta["dim"])
        self.replicas = int(meta["params"]["replicas"])
        self._pool: ThreadPoolExecutor | None = None
        self._pool_threads = 0
        self._local = threading.local()           # per-thread reusable read buffer
        self._pool_lock = threading.Lock()
        self.lease: Lease | None = None          # set by ``open``: see leases.py

    @classmethod
    def open(cls, folder: str | Path, generation: int | None = None,
             verify: str = "full") -> "SpannIndex":
        """Open and verify one generation (None: the newest complete one; 0: the build).

        ``verify``: ``full`` (sizes + sha256, and every updated posting's crc32) or
        ``size`` (sizes and structure only).
        """
        snap, lease = _open_leased(Path(folder), generation, verify)
        meta = snap.meta
        heads = HeadIndex(snap.heads, snap.dead, meta["head_index"], snap.graph,
                          int(meta["params"].get("hnsw_m", 32)))
        if snap.generation == 0:
            reader = PostingReader(snap.postings, snap.table, int(meta["dim"]),
                                   meta["params"]["dtype"], int(meta["n_entries"]),
                                   file_size=snap.end)
        else:
            reader = PostingReader(snap.postings, snap.table, int(meta["dim"]),
                                   meta["params"]["dtype"], None)
        index = cls(snap.folder, meta, heads, reader, snap.versions, snap.generation)
        index.lease = lease
        return index

    @property
    def head_index(self):
        """The faiss index the heads are searched with (the HNSW graph when there is one)."""
        return self.heads.graph if self.heads.graph is not None else self.heads._flat

    def memory_bytes(self) -> int:
        """Bytes this index keeps in memory (heads, head graph, offset table, versions)."""
        versions = 0 if self.versions is None else self.versions.nbytes
        return int(self.heads.memory_bytes() + self.reader.table.nbytes + versions)

    def _executor(self, threads: int) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_threads != threads:
                self._pool = ThreadPoolExecutor(threads, thread_name_prefix="spann-io")
                self._pool_threads = threads
            return self._pool

    def search(self, queries: np.ndarray, k: int, *, params: dict | None = None,
               deadline: float | None = None, cancel: threading.Event | None = None
               ) -> tuple[np.ndarray, np.ndarray, SearchStats]:
        started = time.perf_counter()
        opts = {**DEFAULTS, **(params or {})}
        unknown = set(opts) - set(DEFAULTS)
        if unknown:
            raise InputError(f"unknown spann search parameter(s) {sorted(unknown)}; known: "
                             f"{sorted(DEFAULTS)}", field="params")
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise InputError(f"queries have dimension {queries.shape[1]}, index has {self.dim}",
                             field="queries")
        if k <= 0:
            raise InputError(f"k must be positive, got {k}", field="k")
        if opts["read"] not in READS:
            raise InputError(f"read must be one of {READS}, got {opts['read']!r}",
                             field="params.read")
        mapped = opts["read"] == "mmap" or (opts["read"] == "auto" and not opts["cold"])
        stats = {"postings_read": 0, "postings_planned": 0, "bytes_read": 0,
                 "io_seconds": 0.0, "io_busy_seconds": 0.0, "compute_seconds": 0.0,
                 "head_seconds": 0.0, "cold_method": "", "queries_cut": 0}
        fd = None
        if opts["cold"]:
            self.reader.drop_cache()
            fd = self.reader.direct_fd()
            stats["cold_method"] = ("O_DIRECT+fadvise(DONTNEED)" if fd is not None else
                                    f"fadvise(DONTNEED) ({self.reader.direct_error})")
        tick = time.perf_counter()
        sqd, probe = self._heads(queries, int(opts["max_postings"]), int(opts["ef_search"]))
        stats["head_seconds"] = time.perf_counter() - tick
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        threads = int(opts["io_threads"])
        threads = (8 if opts["cold"] else 0) if threads < 0 else threads
        pool = self._executor(threads) if threads > 0 and not mapped else None
        for i, query in enumerate(queries):
            dist = np.sqrt(np.maximum(sqd[i], 0))
            keep = (probe[i] >= 0) & (dist <= (1 + opts["eps_search"]) * dist[0])
            chosen = probe[i][keep]
            stats["postings_planned"] += len(chosen)
            ids, scores, cut = self._scan(query, chosen, mapped, pool, fd, opts, deadline,
                                          cancel, stats)
            stats["queries_cut"] += cut
            tick = time.perf_counter()
            top_ids, top_scores = self._top(ids, scores, k)
            out_ids[i, :len(top_ids)], out_scores[i, :len(top_ids)] = top_ids, top_scores
            stats["compute_seconds"] += time.perf_counter() - tick
        return out_ids, out_scores, SearchStats(seconds=time.perf_counter() - started,
                                                partial=stats["queries_cut"] > 0, extra=stats)

    def _heads(self, queries: np.ndarray, m: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        return self.heads.search(queries, max(1, min(m, self.n_heads)), ef)

    def _scan(self, query, chosen, mapped, pool, fd, opts, deadline, cancel, stats):
        """Read and score postings nearest-first until done, past the deadline, or cancelled.

        ``mapped``: score each posting in place through the memory map (no read step).
        """
        table, reader = self.reader.table, self.reader
        sizes = table[chosen, 2]
        if mapped:
            slots = [reader.mapped(int(posting)) for posting in chosen]
        else:
            starts = np.concatenate([[0], np.cumsum(sizes)])
            buffer = self._buffer(int(starts[-1]))
            slots = [buffer[starts[j]:starts[j + 1]] for j in range(len(chosen))]

        def read(j: int) -> float:
            if mapped:
                return 0.0
            tick = time.perf_counter()
            reader.read(int(chosen[j]), slots[j], fd)
            return time.perf_counter() - tick

        futures = [pool.submit(read, j) for j in range(len(chosen))] if pool else None
        ids_parts, score_parts, cut = [], [], False
        for j in range(len(chosen)):
            if j >= opts["min_postings"] and (
                    (cancel is not None and cancel.is_set())
                    or (deadline is not None and time.monotonic() >= deadline)):
                cut = True
                break
            if futures is not None:
                waited = time.perf_counter()
                stats["io_busy_seconds"] += futures[j].result()
                stats["io_seconds"] += time.perf_counter() - waited
            else:
                busy = read(j)
                stats["io_seconds"] += busy
                stats["io_busy_seconds"] += busy
            tick = time.perf_counter()
            ids, vectors = reader.parse(int(chosen[j]), slots[j])
            if vectors.dtype != np.float32:
                vectors = vectors.astype(np.float32)
            ids_parts.append(ids)
            score_parts.append(vectors @ query)
            stats["compute_seconds"] += time.perf_counter() - tick
            stats["postings_read"] += 1
            stats["bytes_read"] += int(sizes[j])
        if futures is not None and cut:   # the buffer is reused: let running reads finish
            for future in futures:
                future.cancel()
            wait([f for f in futures if not f.cancelled()])
        if not ids_parts:
            return np.empty(0, np.int64), np.empty(0, np.float32), cut
        ids, scores = np.concatenate(ids_parts), np.concatenate(score_parts)
        if self.versions is not None:           # drop stale and deleted entries
            rows = ids & ROW_MASK
            valid = self.versions[rows] == (ids >> VERSION_SHIFT)
            ids, scores = rows[valid], scores[valid]
        return ids, scores, cut

    def _buffer(self, nbytes: int) -> np.ndarray:
        """This thread's page-aligned read buffer, grown on demand (no per-query faults)."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < nbytes:
            buffer = aligned_empty(max(nbytes, 1 << 20))
            self._local.buffer = buffer
        return buffer[:nbytes]

    def _top(self, ids: np.ndarray, scores: np.ndarray, k: int):
        """Top k distinct ids (a vector appears at most ``replicas`` times)."""
        if len(ids) == 0:
            return ids, scores
        pool = min(len(ids), k * self.replicas)
        best = np.argpartition(-scores, pool - 1)[:pool] if pool < len(ids) else np.arange(len(ids))
        best = best[np.argsort(-scores[best], kind="stable")]
        _, first = np.unique(ids[best], return_index=True)
        best = best[np.sort(first)[:k]]
        return ids[best], scores[best]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.reader.close()
        if self.lease is not None:
            self.lease.release()

    def __enter__(self) -> "SpannIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_leased(folder: Path, generation: int | None, verify: str, tries: int = 5):
    """(snapshot, lease) of ``generation`` (None: the newest), the lease taken before any
    file is read. An updater may remove older generations meanwhile (``leases.py``): then
    the newest is opened instead, unless ``generation`` was asked for."""
    for attempt in range(tries):
        gen = generations.latest(folder) if generation is None else int(generation)
        lease = Lease(folder, gen)
        try:
            return load_snapshot(folder, gen, verify), lease
        except (IndexFormatError, FileNotFoundError):
            lease.release()
            if generation is not None or attempt == tries - 1 \
                    or generations.latest(folder) == gen:
                raise
