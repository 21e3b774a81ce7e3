"""Refilling LIRE's postings with replicas, as the build fills them (``SpannUpdater`` mixin).

The build writes each vector to up to ``replicas`` postings (the RNG rule) and fills most
postings to ``cap``. Under updates postings lose entries: deletes leave tombstones, a split
leaves two half-full postings, a trim sheds replicas, and an insert's replica is refused by
a full posting. Neighbouring vectors are never copied into the room this frees. On the 1M
churn run LIRE's round-20 postings held 2.12 entries per vector; the same heads with the
build's replication held 2.54 and gave recall@10 0.986 against LIRE's 0.970 (and the full
rebuild's 0.983, whose fewer heads leave room for only 2.16): LIRE's heads were right, its
postings too thin.

At commit (``SpannUpdater(fill_room=N)``, N > 0), every live posting with at least N free
slots under ``cap`` takes vectors from the postings of its ``FILL_NEAR`` nearest heads,
nearest first, up to ``cap``: those nearer to it than to every head seen holding them
(their home was missed), then those within ``1 + eps`` of their nearest head seen (the
build's closure rule) and not covered by a head already holding them that is nearer to
this head than the vector is (the RNG rule); never a vector with ``replicas`` valid
entries already.

Measured (1M churn run, N = 16, every round): copies per true neighbour 2.03 -> 2.27,
recall@10 at round 20 0.970 -> 0.973 (mean over the rounds 0.961 -> 0.963), but each
commit reads the postings of 16 neighbours for every posting it refills: 10-19 s a round,
inserts with commit 2,409 -> 593/s (measured before homes too were held to ``replicas``).
Off by default; docs/churn-history.md.
"""

from __future__ import annotations

import numpy as np

from index.spann.postings import ROW_MASK
from index.spann.store import valid_mask

FILL_NEAR = 16           # neighbouring postings whose vectors may become a posting's replicas


class Refill:
    """Mixin: needs the ``SpannUpdater`` state (store, heads, versions, copies, params ...)."""

    def _fill_pass(self) -> None:
        """Fill every live posting with at least ``fill_room`` free slots."""
        if self.append_only or self.fill_room <= 0 or self.heads.n_live < 2:
            return
        valid = self.store.valid_counts(self.versions)
        todo = np.flatnonzero(self.store.live() & (self.cap - valid >= self.fill_room))
        if not len(todo):
            return
        near = self.heads.search(self.heads.heads[todo], FILL_NEAR + 1, self.ef)[1]
        for p, others in zip(todo.tolist(), near):
            if not self.heads.dead[p]:
                self._fill(p, others[(others >= 0) & (others != p)])

    def _fill(self, p: int, others: np.ndarray) -> None:
        own = self.store.ids[p]
        own = own[valid_mask(own, self.versions)] & ROW_MASK
        room = self.cap - len(own)
        if room <= 0 or not len(others):
            return
        parts = [self.store.read(int(q), self.versions) for q in others]
        holder = np.concatenate([np.full(len(ids), i) for i, (ids, _) in enumerate(parts)])
        if not len(holder):
            return
        ids = np.concatenate([ids for ids, _ in parts])
        x = np.concatenate([v for _, v in parts]).astype(np.float32)
        heads = self.heads.heads
        centre, around = heads[p], heads[others]
        d_here = np.sqrt(np.maximum(((x - centre) ** 2).sum(axis=1), 0))
        d_holder = np.sqrt(np.maximum(((x - around[holder]) ** 2).sum(axis=1), 0))
        covered = np.sqrt(((around - centre) ** 2).sum(axis=1))[holder] < d_here
        rows = ids & ROW_MASK
        order = np.argsort(rows, kind="stable")
        starts = np.flatnonzero(np.diff(rows[order], prepend=-1))
        first = order[starts]                                  # one entry per row
        nearest = np.minimum.reduceat(d_holder[order], starts)
        home = d_here[first] < nearest            # its nearest head seen: always taken
        blocked = np.maximum.reduceat(covered[order], starts)
        ok = (home | (~blocked & (d_here[first] <= (1 + self.eps) * nearest))) \
            & (self.copies[rows[first]] < self.replicas) & ~np.isin(rows[first], own)
        take = first[ok]
        take = take[np.lexsort((d_here[take], ~home[ok]))][:room]
        if not len(take):
            return
        self.copies[rows[take]] += 1
        self._append(p, ids[take], x[take].astype(self.dtype), np.zeros(len(take), bool))
        self._count("filled", len(take))
