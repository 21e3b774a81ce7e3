"""Placing vectors for ``SpannUpdater``: the build's RNG replication and cap rules applied to
each insert batch, one append per touched posting (in place, relocated, trimmed or split),
and the test that finds vectors left away from their nearest head (``_misplaced``).

Version bytes of ``versions[row]``: 0..126 cycling (``CYCLE``), bit ``DELETED`` once deleted,
``ABSENT`` for a row never written (see ``lire.py``).
"""

from __future__ import annotations

import numpy as np

from index.spann.postings import VERSION_SHIFT
from index.spann.replication import rng_select
from index.spann.store import valid_mask

ABSENT, DELETED, CYCLE = 0xFF, 0x80, 127
RNG_BLOCK = 1024         # vectors per rng_select call (it builds (b, m, m) distances)


class Placement:
    """Mixin: needs the ``SpannUpdater`` state (store, heads, versions, copies, params ...)."""

    def _candidate_heads(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The nearest live heads a vector may be written to (as many as the build tries)."""
        m = min(self.heads.n_live, max(2 * self.replicas, self.replicas + 2))
        return self.heads.search(vectors, m, self.ef)

    def _place(self, rows: np.ndarray, vectors: np.ndarray, found=None) -> list:
        """Append each vector to its RNG-selected postings; returns the reassignment
        candidates of the splits this caused, as (rows, float32 vectors) pairs.
        ``found``: the vectors' ``_candidate_heads`` when already searched."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        sqd, cand = self._candidate_heads(vectors) if found is None else found
        dist = np.sqrt(np.maximum(sqd, 0))
        chosen = np.zeros(cand.shape, dtype=bool)
        heads = self.heads.heads
        for s in range(0, len(rows), RNG_BLOCK):
            part = cand[s:s + RNG_BLOCK]
            chosen[s:s + RNG_BLOCK] = rng_select(dist[s:s + RNG_BLOCK], np.maximum(part, 0),
                                                 heads, self.replicas, self.eps) & (part >= 0)
        src, col = np.nonzero(chosen)
        target = cand[src, col]
        order = np.argsort(target, kind="stable")
        target, src, primary = target[order], src[order], col[order] == 0
        entry = rows[src] | (self.versions[rows[src]].astype(np.int64) << VERSION_SHIFT)
        stored = vectors.astype(self.dtype, copy=False)
        cuts = np.flatnonzero(np.diff(target)) + 1
        pending = []
        for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(target)]])):
            keep = self._room_for_replicas(int(target[a]), primary[a:b])
            self.copies[rows[src[a:b][keep]]] += 1
            moved = self._append(int(target[a]), entry[a:b][keep], stored[src[a:b][keep]],
                                 primary[a:b][keep])
            if moved is not None and len(moved[0]):
                pending.append(moved)
        return pending + self._neighbours()

    def _room_for_replicas(self, p: int, primary: np.ndarray) -> np.ndarray:
        """The build's cap rule: a replica goes only into a posting with room under ``cap``
        (a posting's own vectors, its primaries, always go in; only they can split it)."""
        room = max(0, self.cap - self.store.count(p) - int(primary.sum()))
        return primary | (np.cumsum(~primary) <= room)

    def _append(self, p: int, ids: np.ndarray, vectors: np.ndarray, primary: np.ndarray):
        """Add entries to posting ``p``: in place, relocated, or split (LIRE)."""
        store = self.store
        if not self.append_only and store.count(p) + len(ids) > self.cap:
            if int(valid_mask(store.ids[p], self.versions).sum()) + len(ids) > self.cap:
                if self._trim(p, ids, vectors, primary):
                    return None
                return self._split(p, ids, vectors)
        if store.append(p, ids, vectors):
            return None
        old_ids, old_vectors = store.read(p, self.versions)      # stale entries dropped
        store.rewrite(p, np.concatenate([old_ids, ids]),
                      np.concatenate([old_vectors, vectors]), self.cap)
        self._count("relocations", 1)
        return None

    def _bump(self, rows: np.ndarray) -> None:
        self.versions[rows] = (self.versions[rows].astype(np.int64) + 1) % CYCLE
        self.copies[rows] = 0                     # every entry of theirs went stale

    def _misplaced(self, rows: np.ndarray, vectors: np.ndarray):
        """The live rows among ``rows`` whose nearest live head holds no valid entry of
        theirs (the others are where a search looks for them first), one per row, with
        their vectors and ``_candidate_heads`` (searched once, reused to place them)."""
        rows, first = np.unique(rows, return_index=True)
        vectors = np.ascontiguousarray(vectors[first], dtype=np.float32)
        live = self.versions[rows] < CYCLE
        rows, vectors = rows[live], vectors[live]
        if not len(rows):
            return rows, vectors, None
        sqd, cand = self._candidate_heads(vectors)
        near = cand[:, 0]
        entry = rows | (self.versions[rows].astype(np.int64) << VERSION_SHIFT)
        holds = np.zeros(len(rows), dtype=bool)
        order = np.argsort(near, kind="stable")
        cuts = np.flatnonzero(np.diff(near[order])) + 1
        for group in np.split(order, cuts):
            head = int(near[group[0]])
            if head >= 0:
                holds[group] = np.isin(entry[group], self.store.ids[head])
        move = ~holds
        return rows[move], vectors[move], (sqd[move], cand[move])
