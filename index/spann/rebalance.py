"""LIRE's rebalancing steps for ``SpannUpdater``: split, reassign, merge, and compaction.

**Split** (a posting past ``cap`` valid entries, counting the ones being added): its valid
entries are divided by balanced 2-means (``clustering.split``: faiss k-means, then a
capacity-limited assignment so both halves come out near ``cap / 2``; a batch that
brought far more than ``cap`` is divided into ``ceil(n / target)`` parts, and any part
still over ``cap`` again). Each part gets a new head (its normalized mean, like the
build's heads) and a new block; the old head dies.

**Reassign** checks only the vectors SPFresh's two necessary conditions select, with
``A_o`` the old centroid and ``A_1, A_2`` the new ones:

1. a vector of the split posting, now in ``A_i``'s posting, with ``D(v, A_o) <= D(v, A_i)``
   (splitting moved its head away from it, so another head may now be nearer);
2. a vector of one of the ``reassign_neighbors`` postings nearest to ``A_o``, sitting in
   head ``B``'s posting, with ``min_i D(v, A_i) < D(v, B)`` (a new head is nearer to it
   than its own).

A selected vector moves (version + 1, placed afresh by the RNG rule) only if its nearest
live head holds none of its valid entries (``SpannUpdater._misplaced``): a vector
replicated into the split posting usually still sits in its nearest posting elsewhere,
and moving it would only churn. The condition-2 vectors that stay may instead become
replicas in the new postings (``fill_split``, ``refill.py``).

**Merge** (at commit; a live posting under ``merge_min`` valid entries): the head dies and
its vectors whose nearest live head does not already hold them are re-inserted with
version + 1. Postings are merged smallest first; re-inserting may split others.

**Compaction** copies every live posting's valid entries, with fresh spare room, into a
new file ``postings-N.bin`` and drops the dead heads (heads are renumbered, the head
graph rebuilt), then commits generation N. Older generations keep their files until
``cleanup``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from index.faiss_index import import_faiss
from index.spann.clustering import split as balanced_split
from index.spann.heads import HeadIndex
from index.spann.postings import DTYPES, HEADER, MAGIC, ROW_MASK, VERSION
from index.spann.store import PostingStore


class Seen(NamedTuple):
    """A posting read for condition 2: its head, valid entries and their vectors, squared
    distances to its head and to the new centroids of the splits it neighbours, whose
    heads are ``new``."""
    head: int
    ids: np.ndarray
    x: np.ndarray
    d_own: np.ndarray
    d_new: np.ndarray
    new: np.ndarray


@contextmanager
def one_blas_thread():
    """numpy's BLAS on one thread: the updater's products are small (a posting against a few
    centroids), where OpenBLAS' threads cost far more than they save (100x on a busy
    2-core machine). faiss keeps its OpenMP threads: its own OpenBLAS follows OpenMP, so the
    BLAS limit alone also put the head-graph searches that place inserts on one core
    (2.4x slower on the 1M churn set). threadpoolctl comes with scikit-learn; without it,
    nothing changes."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                                    # pragma: no cover
        yield
        return
    threads = import_faiss().omp_get_max_threads()
    with threadpool_limits(1, user_api="blas"), threadpool_limits(threads, user_api="openmp"):
        yield


TRIM_TO = 0.75           # a trimmed posting keeps at most this share of cap (and its own vectors)
TRIM_ROOM = 0.875        # trim only when that leaves room under cap for cap / 8 more appends
SPLIT_OWN = 1.2          # ... and while its own vectors are at most this many times target
TRIM_NEAR_HEADS = 32     # a replica's home is looked for among this many heads nearest its posting's
MERGE_ROUNDS = 4         # merge passes per commit


class Rebalancer:
    """Mixin: needs the ``SpannUpdater`` state (store, heads, versions, params, ...)."""

    def _split(self, p: int, ids: np.ndarray, vectors: np.ndarray):
        old_ids, old_vectors = self.store.read(p, self.versions)
        ids = np.concatenate([old_ids, ids])
        data = np.concatenate([old_vectors, vectors.astype(self.dtype, copy=False)])
        x = data.astype(np.float32)
        groups = self._partition(x)
        old_centre = self.heads.heads[p].copy()
        self.store.kill(p)
        self.heads.kill(p)
        centres = np.stack([x[g].mean(axis=0) for g in groups])
        centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
        new = self.heads.add(centres)
        for group, head in zip(groups, new):
            if self.store.add(ids[group], data[group], self.cap) != head:
                raise RuntimeError("spann: posting and head numbering diverged")
        self._count("splits", 1)
        label = np.empty(len(x), dtype=np.int64)
        for i, group in enumerate(groups):
            label[group] = i
        return self._candidates(old_centre, new, centres, ids, x, label)

    def _trim(self, p: int, ids: np.ndarray, vectors: np.ndarray, primary: np.ndarray) -> bool:
        """The build's cap rule on a posting that would pass ``cap``: drop its redundant
        replicas (entries of rows with another valid entry elsewhere, ``copies`` > 1, whose
        nearest live head is another one: a vector's home entry stays), farthest from its
        head first, down to ``TRIM_TO`` of ``cap`` so the next appends
        go in place. False when its own vectors pass ``SPLIT_OWN`` x ``target`` (the build
        aims for ``target``; where the data grows, new heads belong, as a rebuild would
        place them: on the 1M churn run splitting there instead of shedding replicas
        raised recall@10 after 20 rounds from 0.953 to 0.964) or fill ``TRIM_ROOM`` of
        ``cap`` (a trim would free too little): then it splits. The build fills most
        postings to ``cap`` with replicas, so without trimming nearly every early insert
        would split a posting whose own vectors fit."""
        old_ids, old_vectors = self.store.read(p, self.versions)
        ids = np.concatenate([old_ids, ids])
        data = np.concatenate([old_vectors, vectors.astype(self.dtype, copy=False)])
        x = data.astype(np.float32)
        redundant = self.copies[ids & ROW_MASK] > 1
        redundant[len(old_ids):] &= ~primary
        limit = min(SPLIT_OWN * self.target, TRIM_ROOM * self.cap)
        if len(ids) - int(redundant.sum()) > limit:
            return False                 # mostly its own vectors: split
        # of those, keep the entries whose nearest head is this one (their vector's home),
        # looking among the heads nearest this one (one search, not one per entry)
        maybe = np.flatnonzero(redundant)
        near = self.heads.search(self.heads.heads[p][None], TRIM_NEAR_HEADS, self.ef)[1][0]
        near = np.union1d(near[near >= 0], [p])
        centres = self.heads.heads[near]
        sqd = (centres * centres).sum(axis=1)[None, :] - 2 * x[maybe] @ centres.T
        redundant[maybe[near[sqd.argmin(axis=1)] == p]] = False
        own = len(ids) - int(redundant.sum())
        if own > limit:
            return False
        excess = len(ids) - max(own, int(TRIM_TO * self.cap))
        far = np.flatnonzero(redundant)
        far = far[np.argsort(-((x[far] - self.heads.heads[p]) ** 2).sum(axis=1))][:excess]
        keep = np.ones(len(ids), dtype=bool)
        keep[far] = False
        self.copies[ids[far] & ROW_MASK] -= 1
        self.store.rewrite(p, ids[keep], data[keep], self.cap)
        self._count("trimmed", len(far))
        return True

    def _partition(self, x: np.ndarray) -> list[np.ndarray]:
        """Index groups of ``x``, each at most ``cap`` (``x`` itself has more)."""
        out, stack = [], [np.arange(len(x))]
        while stack:
            members = stack.pop()
            if len(members) <= self.cap:
                out.append(members)
                continue
            branch = 2 if len(members) <= 2 * self.cap else int(self.params["branch"])
            labels = balanced_split(x, members, self.target, self.cap, branch,
                                    int(self.params["seed"]) + self.counters["splits"])
            stack.extend(members[labels == k] for k in np.unique(labels))
        return out

    def _candidates(self, old_centre, new_heads, centres, ids, x, label):
        """Condition 1 now: (rows, vectors); condition 2 is queued for ``_neighbours``."""
        d_old = ((x - old_centre) ** 2).sum(axis=1)
        d_new = ((x - centres[label]) ** 2).sum(axis=1)
        near_old = d_old <= d_new
        if self.reassign_neighbors > 0:
            self._split_log.append((old_centre, new_heads, centres))
        return ids[near_old] & ROW_MASK, x[near_old]

    def _neighbours(self):
        """Condition 2 for every split of one placement round, at once: the
        ``reassign_neighbors`` live heads nearest each old centroid (not its own new heads)
        are gathered, each such posting is read once, and its vectors are compared with
        the new centroids of every split it neighbours. Returns (rows, vectors) pairs."""
        log, self._split_log = self._split_log, []
        if not log:
            return []
        k = self.reassign_neighbors
        olds = np.stack([old for old, _, _ in log])
        near = self.heads.search(olds, k + 2, self.ef)[1]
        split_of, posting = [], []
        for s, (_, new, _) in enumerate(log):
            keep = near[s][(near[s] >= 0) & ~np.isin(near[s], new)][:k]
            split_of.append(np.full(len(keep), s))
            posting.append(keep)
        split_of, posting = np.concatenate(split_of), np.concatenate(posting)
        if not len(posting):                    # no other live heads near any split
            return []
        order = np.argsort(posting, kind="stable")
        split_of, posting = split_of[order], posting[order]
        cuts = np.flatnonzero(np.diff(posting)) + 1
        heads, seen = self.heads.heads, []
        for group in np.split(np.arange(len(posting)), cuts):
            q = int(posting[group[0]])
            if self.heads.dead[q]:             # died in this round after the search above
                continue
            q_ids, q_vectors = self.store.read(q, self.versions)
            if not len(q_ids):
                continue
            centres = np.concatenate([log[s][2] for s in split_of[group]])
            xq = np.asarray(q_vectors, dtype=np.float32)
            sq = (xq * xq).sum(axis=1)
            d_own = sq + float(heads[q] @ heads[q]) - 2 * xq @ heads[q]
            d_new = sq[:, None] + (centres * centres).sum(axis=1)[None, :] - 2 * xq @ centres.T
            seen.append(Seen(q, q_ids, xq, d_own, d_new,
                             np.concatenate([log[s][1] for s in split_of[group]])))
        if not seen:
            return []
        # a row replicated into several of these postings moves only if a new centroid
        # beats the nearest of its heads seen here (its own posting's head is not enough)
        rows = np.concatenate([g.ids & ROW_MASK for g in seen])
        order = np.argsort(rows, kind="stable")
        starts = np.flatnonzero(np.diff(rows[order], prepend=-1))    # each row's first entry
        own = np.minimum.reduceat(np.concatenate([g.d_own for g in seen])[order], starts)
        best = np.minimum.reduceat(np.concatenate([g.d_new.min(axis=1) for g in seen])[order],
                                   starts)
        moved = best < own
        at = order[starts[moved]]                  # where each moving row was first seen
        if self.fill_split:
            nearest = np.empty(len(rows))
            nearest[order] = np.repeat(own, np.diff(np.append(starts, len(rows))))
            self._fill_split(seen, nearest, rows[at])
        if not len(at):
            return []
        bounds = np.cumsum([0] + [len(g.ids) for g in seen])
        group = np.searchsorted(bounds, at, side="right") - 1
        vectors = np.empty((len(at), self.dim), dtype=np.float32)
        for g in np.unique(group):
            pick = group == g
            vectors[pick] = seen[g].x[at[pick] - bounds[g]]
        return [(rows[at], vectors)]

    def _merge_pass(self) -> None:
        """Merge every live posting under ``merge_min`` valid entries (smallest first), again
        while merging leaves some under it (a moved vector's replicas elsewhere go stale)."""
        if self.append_only or self.merge_min <= 0:
            return
        for _ in range(MERGE_ROUNDS):
            valid = self.store.valid_counts(self.versions)
            small = np.flatnonzero(self.store.live() & (valid < self.merge_min))
            if not len(small) or self.heads.n_live <= 1:
                return
            self._merge(small[np.argsort(valid[small], kind="stable")])

    def _merge(self, small: np.ndarray) -> None:
        for p in small:
            if self.heads.n_live <= 1:
                break
            if self.heads.dead[p]:
                continue
            ids, vectors = self.store.read(int(p), self.versions)
            if len(ids) >= self.merge_min:                # grew since the count above
                continue
            self.store.kill(int(p))
            self.heads.kill(int(p))
            self.copies[ids & ROW_MASK] -= 1
            self._count("merges", 1)
            if not len(ids):
                continue
            rows, x, found = self._misplaced(ids & ROW_MASK, vectors.astype(np.float32))
            if len(rows):
                self._bump(rows)
                self._count("merge_moved", len(rows))
                self._settle(rows, x, found)

    def compact(self, generation: int | None = None) -> dict:
        """Rewrite the live, valid entries into ``postings-N.bin``, drop dead heads, and
        commit generation N (default: the next). Returns the commit's summary."""
        gen = self._next_generation(generation)
        if not self.append_only:
            with one_blas_thread():
                self._merge_pass()
        path = self.folder / f"postings-{gen}.bin"
        fresh = PostingStore.create(path, self.dim, self.dtype)
        live = np.flatnonzero(self.store.live())
        entries = 0
        for p in live:
            ids, vectors = self.store.read(int(p), self.versions)
            fresh.add(ids, vectors, self.cap)
            entries += len(ids)
        head = HEADER.pack(MAGIC, VERSION, self.dim, DTYPES[self.dtype], len(live), entries,
                           fresh.end)
        os.pwrite(fresh.fd, head, 0)
        self._count("bytes_appended", self.store.written)
        self.store.close()
        self.store, self.postings_file, self.base = fresh, path.name, None
        self.heads = HeadIndex(self.heads.heads[live], None, self.kind, None,
                               int(self.params.get("hnsw_m", 32)))
        self._count("compactions", 1)
        return self.commit(gen)
