"""Filling LIRE's postings with replicas, as the build fills them (``SpannUpdater`` mixin).

The build writes each vector to up to ``replicas`` postings (the RNG rule) and fills most
postings to ``cap``. Under updates postings lose entries: deletes leave tombstones, a split
leaves two half-full postings, a trim sheds replicas, and an insert's replica is refused by
a full posting. On the 1M churn run without filling, LIRE's round-20 postings held 2.12
entries per vector; the same heads with the build's replication held 2.54 and gave
recall@10 0.986 against LIRE's 0.970 (and the full rebuild's 0.983): LIRE's heads were
right, its postings too thin. Two ways to fill them, both with the build's rules: a
vector is copied into a posting when that head is within ``1 + eps`` of the nearest head
seen holding it (closure) and no head holding it is nearer to that head than the vector
is (RNG), never past ``cap`` or ``replicas`` valid entries.

**At split time** (``fill_split``, the default): condition 2 of reassignment reads the
postings nearest a split one and measures their vectors against the new heads; the
vectors that stay where they are and qualify get one new entry each, in the nearest new
posting, nearest first. No posting is read that reassignment did not read. 1M churn run,
20 rounds: recall@10 at round 20 0.970 -> 0.973 (the rebuild 0.983), mean over the
rounds 0.961 -> 0.964, inserts 2,822 -> 2,086/s median (append-only, the machine's
speed, ran at 6,877 and 7,093/s). Filling only to 3/4 of ``cap`` (fewer trims
later) kept 2,294/s but gained only 0.16 points.

**At commit** (``SpannUpdater(fill_room=N)``, N > 0; off by default), every live posting
with at least N free slots takes vectors from the postings of its ``FILL_NEAR`` nearest
heads: first those nearer to it than to every head seen holding them (their home was
missed), then those the rules allow. Measured without split-time filling (N = 16, every
round): round 20 0.970 -> 0.973, but each commit reads 16 neighbours for every posting it
refills: 10-19 s a round, inserts with commit 2,409 -> 593/s (measured before homes too
were held to ``replicas``). docs/churn-history.md.
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
        self._add_replicas(p, ids[take], x[take])

    def _add_replicas(self, p: int, ids: np.ndarray, x: np.ndarray) -> None:
        """Append vectors ``x`` (entries ``ids``) to posting ``p`` as replicas: each row
        gains a copy, counted as ``filled``."""
        if not len(ids):
            return
        self.copies[ids & ROW_MASK] += 1
        self._append(p, ids, x.astype(self.dtype), np.zeros(len(ids), bool))
        self._count("filled", len(ids))

    def _fill_split(self, seen: list, nearest: np.ndarray, moving: np.ndarray) -> None:
        """Split-time filling (module docstring). ``seen``: the postings condition 2 read
        (``rebalance.Seen``); ``nearest``: per entry of theirs, in order, the squared
        distance of its vector to the nearest head seen holding it; ``moving``: the rows
        reassignment moves (they get no replica here)."""
        limit = (1 + self.eps) ** 2
        heads, parts, start = self.heads.heads, [], 0
        free = self.copies < self.replicas
        free[moving] = False
        for g in seen:
            near = nearest[start:start + len(g.ids)]
            start += len(g.ids)
            rows = g.ids & ROW_MASK
            gap = np.sqrt(((heads[g.new] - heads[g.head]) ** 2).sum(axis=1))
            ok = (g.d_new <= limit * near[:, None]) & free[rows][:, None] \
                & (gap[None, :] >= np.sqrt(np.maximum(g.d_new, 0))) \
                & ~self.heads.dead[g.new][None, :]
            e, c = np.nonzero(ok)
            if len(e):
                parts.append((g.ids[e], g.x[e], g.new[c], g.d_new[e, c]))
        if not parts:
            return
        ids, x, target, dist = (np.concatenate(column) for column in zip(*parts))
        rows = ids & ROW_MASK
        order = np.lexsort((dist, rows))                  # per row, its nearest new head
        first = order[np.flatnonzero(np.diff(rows[order], prepend=-1))]
        first = first[np.lexsort((dist[first], target[first]))]
        cuts = np.flatnonzero(np.diff(target[first])) + 1
        for group in np.split(first, cuts):
            p = int(target[group[0]])
            group = group[~np.isin(ids[group], self.store.ids[p])]
            group = group[self._room_for_replicas(p, np.zeros(len(group), bool))]
            self._add_replicas(p, ids[group], x[group])
