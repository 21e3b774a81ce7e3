"""``SpannUpdater``: in-place updates of a SPANN folder by SPFresh's LIRE protocol.

SPFresh (Xu et al., SOSP 2023) keeps a SPANN index fresh without rebuilds: new vectors are
appended to the postings of their nearest heads; a posting that grows past ``cap`` is
*split* (balanced 2-means) into two new heads, and only the vectors the paper's two
necessary conditions select are *reassigned*; a posting that shrinks below ``merge_min``
is *merged* away; deletes are tombstones. Here:

* **Versions.** An entry's id is ``row | version << 48``; ``versions[row]`` holds the
  row's version (0..126, cycling) plus bit 0x80 once deleted (0xFF: a row never written).
  An entry counts iff ``versions[row] == entry version``. Moving a vector bumps its
  version, so its old entries go stale at once wherever they are, without rewriting their
  postings; a posting drops its stale entries the next time it is rewritten (relocation,
  split, compaction). A version that cycles back can revive an old entry: harmless, since
  it holds the same row's same vector (rows never change), so search only de-duplicates it.
* **Insert** (``placement.py``): per batch, the nearest live heads, the build's RNG replication
  rule (``replication.rng_select``, same ``replicas`` and ``eps``) and its cap rule (a
  replica goes only into a posting with room under ``cap``; a vector's nearest posting
  always takes it), then one append per touched posting (in place while it has room,
  else relocated; see ``store.py``). The build leaves most postings at ``cap`` with
  replicas; without the cap rule the first 1% of inserts split a third of them.
* **Split / reassign / merge** live in ``rebalance.py``; filling postings with
  neighbours' replicas (at split time, ``fill_split``; opt-in at commit, ``fill_room``) in
  ``refill.py``.
* **Commit** writes generation N (``generations.py``); an opened ``SpannIndex`` of an
  older generation keeps its own table, versions and memory map and never reads bytes
  written after its commit.
* **Space** (``reuse_space``): at load (``reclaim``), once no reader holds a generation
  older than the loaded one (``leases.py``), the older generations' files go and new
  blocks fill the gaps between the loaded generation's blocks (``store.py``), as SPFresh
  reuses freed blocks; otherwise they go to the end of the file.
* ``append_only=True`` (the benchmark's baseline): postings only grow (relocated bigger
  when full), never split, merged or reassigned.

The updater must start from the newest generation on disk (``rollback`` anything above
the committed one first); one updater at a time per folder (the caller's lock).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index.spann import generations
from index.spann.builder import FORMAT, FORMAT_VERSION
from index.spann.generations import cleanup, rollback  # noqa: F401  (the module API)
from index.spann.heads import HeadIndex
from index.spann.leases import held_below
from index.spann.opening import load_snapshot
from index.spann.placement import ABSENT, CYCLE, DELETED, Placement
from index.spann.postings import CAPACITY, COUNT, DEAD, ROW_MASK, widen
from index.spann.rebalance import Rebalancer, one_blas_thread
from index.spann.refill import Refill
from index.spann.store import PostingStore, valid_mask
from searchagent.errors import InputError

MAX_ROUNDS = 8           # reassignment rounds after one batch (cascading splits)
COUNTERS = ("inserts", "deletes", "splits", "trimmed", "merges", "reassigned", "merge_moved",
            "filled", "relocations", "compactions", "bytes_appended")

__all__ = ["SpannUpdater", "rollback", "cleanup"]


class SpannUpdater(Placement, Rebalancer, Refill):
    """Insert, delete, commit and compact one SPANN folder.

    ``reassign_neighbors``: postings near a split one whose vectors are checked for
    reassignment (the paper uses 64); ``merge_min``: valid entries below which a posting
    is merged (default ``target // 4``); ``batch``: vectors placed per step;
    ``ef_search``: the head graph's search breadth when placing vectors. It is most of
    an insert's CPU time, but 32 instead of 64 (nearest head found for 95.6% of inserts
    instead of 97.6%) cost 0.9 points of recall@10 after 20 churn rounds on 1M vectors
    for 30% more inserts/s (BENCHMARKS.md), so 64 stays. ``fill_room``: at commit, refill
    postings with at least this many free slots with neighbours' replicas (``refill.py``;
    0, the default, never: +0.3 points of recall@10 after 20 churn rounds for 4x the
    commit time). ``fill_split``: a split's new postings take replicas from the
    neighbouring postings reassignment reads (``refill.py``; on by default: +0.3 points of
    recall@10 after 20 churn rounds on 1M vectors, 26% fewer inserts/s).
    """

    def __init__(self, folder: str | Path, generation: int | None = None,
                 append_only: bool = False, *, reassign_neighbors: int = 64,
                 merge_min: int | None = None, batch: int = 8192, ef_search: int = 64,
                 verify: str = "size", reuse_space: bool = True, fill_room: int = 0,
                 fill_split: bool = True):
        self.folder = Path(folder)
        newest = generations.latest(self.folder)
        generation = newest if generation is None else int(generation)
        if generation != newest:
            raise InputError(f"{self.folder}: generation {generation} is not the newest "
                             f"({newest}); roll back to it first (lire.rollback)")
        self.append_only, self.reassign_neighbors = append_only, reassign_neighbors
        self.batch, self.ef, self._merge_min = batch, ef_search, merge_min
        self.reuse_space, self.fill_room, self.fill_split = reuse_space, fill_room, fill_split
        self.store: PostingStore | None = None
        self._split_log: list = []        # splits of the current round (for reassignment)
        self._load(generation, verify)

    def _load(self, generation: int, verify: str) -> None:
        snap = load_snapshot(self.folder, generation, verify)
        meta = snap.meta
        self.meta, self.generation, self.params = meta, generation, dict(meta["params"])
        self.dim, self.dtype, self.kind = int(meta["dim"]), self.params["dtype"], meta["head_index"]
        self.cap, self.target = int(self.params["cap"]), int(self.params["target"])
        self.replicas, self.eps = int(self.params["replicas"]), float(self.params["eps"])
        self.merge_min = self.target // 4 if self._merge_min is None else self._merge_min
        if snap.versions is None:
            self.versions = np.zeros(int(meta["n_vectors"]), dtype=np.uint8)
            self.base = {"size": snap.end, "sha256": meta["files"]["postings.bin"]["sha256"]}
        else:
            self.versions = snap.versions.copy()
            self.base = meta["postings"].get("base")
        self.postings_file = snap.postings.name
        if self.store is not None:
            self.store.close()
        self.store = PostingStore(snap.postings, widen(snap.table), self.dim, self.dtype,
                                  snap.end, snap.base_end)
        self.heads = HeadIndex(snap.heads, snap.dead, self.kind, snap.graph,
                               int(self.params.get("hnsw_m", 32)))
        self.counters = {key: int(meta.get("counters", {}).get(key, 0)) for key in COUNTERS}
        self.changes = dict.fromkeys(COUNTERS, 0)
        self.copies = self._valid_copies()
        self.reclaim()

    def reclaim(self) -> None:
        """Let new blocks reuse the free space of the generation loaded or last committed,
        unless a reader still holds an older generation (checked again after removing
        their files: a reader that leased one meanwhile may have read them; see
        ``leases.py``). Runs at load; after ``commit`` only when the caller says that
        generation is final (``LivingIndex`` commits later, in its manifest: until then a
        crash must find the previous generation whole)."""
        gen = self.generation
        if not self.reuse_space or gen == 0 or held_below(self.folder, gen):
            return
        generations.cleanup(self.folder, gen)
        if held_below(self.folder, gen):
            return                # (space handed over before stays free: no reader sees it)
        self.store.reuse()
        if self.store.base_end == 0:
            self.base = None

    def _valid_copies(self) -> np.ndarray:
        """Valid entries per row over the live postings (what lets a trim drop a replica
        without losing its vector)."""
        parts = [self.store.ids[p] for p in np.flatnonzero(self.store.live())]
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        ids = ids[valid_mask(ids, self.versions)]
        return np.bincount(ids & ROW_MASK, minlength=len(self.versions)).astype(np.int32)

    def _count(self, key: str, n: int) -> None:
        self.counters[key] += int(n)
        self.changes[key] += int(n)

    # -- the update API -------------------------------------------------------------------

    def insert(self, rows, vectors) -> None:
        """Add new rows (never written before) with their vectors (n, dim)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(rows), self.dim):
            raise InputError(f"expected vectors of shape ({len(rows)}, {self.dim}), got "
                             f"{vectors.shape}", field="vectors")
        if not len(rows):
            return
        if not np.isfinite(vectors).all():
            raise InputError("vectors hold NaN or infinite values", field="vectors")
        if rows.min() < 0 or rows.max() > ROW_MASK or len(np.unique(rows)) != len(rows):
            raise InputError("rows must be distinct, >= 0 and < 2**48", field="rows")
        old = rows[rows < len(self.versions)]
        if (self.versions[old] != ABSENT).any():
            raise InputError(f"{int((self.versions[old] != ABSENT).sum())} row(s) were "
                             f"already written (rows are never reused)", field="rows")
        if rows.max() >= len(self.versions):
            grown = np.full(int(rows.max()) + 1, ABSENT, dtype=np.uint8)
            grown[:len(self.versions)] = self.versions
            self.versions = grown
            self.copies = np.concatenate([self.copies, np.zeros(len(grown) - len(self.copies),
                                                                dtype=np.int32)])
        self.versions[rows] = 0
        with one_blas_thread():
            for start in range(0, len(rows), self.batch):
                self._settle(rows[start:start + self.batch], vectors[start:start + self.batch])
        self._count("inserts", len(rows))

    def delete(self, rows) -> None:
        """Tombstone live rows: their entries stop counting at once."""
        rows = np.unique(np.asarray(rows, dtype=np.int64).reshape(-1))
        if not len(rows):
            return
        if rows[0] < 0 or rows[-1] >= len(self.versions) or \
                (self.versions[rows] >= CYCLE).any():
            raise InputError("delete: some rows are not live (unknown or already deleted)",
                             field="rows")
        self.versions[rows] |= DELETED
        self._count("deletes", len(rows))

    # -- placement -------------------------------------------------------------------------

    def _settle(self, rows: np.ndarray, vectors: np.ndarray, found=None) -> None:
        """Place rows (their versions already set), then reassign what splits selected,
        round after round while splits keep happening (at most ``MAX_ROUNDS``: a vector
        left unmoved still sits, valid, in a posting near it)."""
        pending = self._place(rows, vectors, found)
        for _ in range(MAX_ROUNDS):
            if not pending:
                return
            rows, vectors, found = self._misplaced(np.concatenate([r for r, _ in pending]),
                                                   np.concatenate([v for _, v in pending]))
            if not len(rows):
                return
            self._bump(rows)
            self._count("reassigned", len(rows))
            pending = self._place(rows, vectors, found)

    # -- commit ----------------------------------------------------------------------------

    def commit(self, generation: int | None = None) -> dict:
        """Make the changes durable as ``generation`` (default: the next one); returns its
        summary, whose ``files`` lists every file the generation reads."""
        gen = self._next_generation(generation)
        if not self.append_only:
            with one_blas_thread():
                self._merge_pass()
                self._fill_pass()
        self._count("bytes_appended", self.store.written)
        self.store.written = 0
        self.store.sync()
        table = self.store.table
        live = table[:, CAPACITY] != DEAD
        valid = self.store.valid_counts(self.versions)[live]
        n_live = int((self.versions < CYCLE).sum())
        lengths = valid if len(valid) else np.zeros(1, np.int64)
        meta = {
            "kind": "spann", "format": FORMAT, "format_version": FORMAT_VERSION,
            "generation": gen, "base_generation": self.generation, "dim": self.dim,
            "head_index": self.kind, "params": self.params, "append_only": self.append_only,
            "n_rows": len(self.versions), "n_vectors": n_live,
            "n_deleted": int((((self.versions & DELETED) > 0)
                              & (self.versions != ABSENT)).sum()),
            "n_heads": len(table), "n_live_heads": int(live.sum()),
            "n_dead_heads": int((~live).sum()),
            "n_entries": int(table[live, COUNT].sum()), "n_valid_entries": int(valid.sum()),
            "postings": {"file": self.postings_file, "end": self.store.end,
                         "base": self.base if self.postings_file == "postings.bin" else None},
            "posting_length": {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 2),
                               "max": int(lengths.max()),
                               "p99": int(np.percentile(lengths, 99))},
            "replication_factor": round(float(valid.sum()) / max(n_live, 1), 3),
            "counters": dict(self.counters), "changes": dict(self.changes),
        }
        summary = generations.write_generation(self.folder, gen, meta, table,
                                               self.heads.heads.copy(), self.versions.copy(),
                                               self.heads.graph)
        self.meta, self.generation = summary, gen
        self.changes = dict.fromkeys(COUNTERS, 0)
        return summary

    def _next_generation(self, generation: int | None) -> int:
        gen = self.generation + 1 if generation is None else int(generation)
        if gen <= self.generation or generations.latest(self.folder) != self.generation:
            raise InputError(f"cannot commit generation {gen} on top of {self.generation} "
                             f"(newest on disk: {generations.latest(self.folder)})")
        return gen

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> "SpannUpdater":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
