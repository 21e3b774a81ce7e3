"""The head index of a SPANN folder that may have dead heads: search returns live heads only.

Heads are numbered in the order they were created and never renumbered (until a
compaction): a split appends its new heads and kills the old one, a merge kills one. A
dead head keeps its vector (an HNSW graph cannot drop a node; its node still routes
searches) but is never returned.

* ``flat``: an exact index over a subset of the heads plus a map position -> head id. New
  heads are appended; killed ones stay in the index until more than a quarter of it is
  dead, then it is rebuilt from the live heads on the next search (a copy of the heads,
  cheap next to the searches in between).
* ``hnsw``: the graph holds every head ever made (ids = head ids); new heads are added
  incrementally.

Searching skips dead heads. ``hnsw`` passes a bitmap of the live heads to the graph search
(faiss ``IDSelectorBitmap``: dead nodes still route but are never returned) with
``efSearch`` scaled by total / live heads; ``flat`` over-fetches by its dead share and
compacts the live ones to the front. Both widen the search while some query got fewer than
``m`` live heads. Results come back sorted by distance, padded with id -1 and distance +inf
when fewer than ``m`` heads are live. (Over-fetching from the graph instead sent 45% of
the drifted churn queries to a second, doubled search, where splits had left dead heads
clustered: head search p99 2.1 ms against 0.5 ms with the bitmap.)
"""

from __future__ import annotations

import math

import numpy as np

from index.faiss_index import import_faiss


class HeadIndex:
    def __init__(self, heads: np.ndarray, dead: np.ndarray | None, kind: str, graph=None,
                 hnsw_m: int = 32):
        self.kind, self.hnsw_m = kind, hnsw_m
        self.dim = heads.shape[1]
        self.h = len(heads)
        self._heads = np.ascontiguousarray(heads, dtype=np.float32).copy()
        self._dead = np.zeros(self.h, dtype=bool) if dead is None else np.array(dead, bool)
        self.n_dead = int(self._dead.sum())
        self._selector = None
        self.faiss = import_faiss()
        if kind == "hnsw":
            if graph is None:
                graph = self.faiss.IndexHNSWFlat(self.dim, hnsw_m)
                graph.hnsw.efConstruction = 80
                graph.add(self._heads)
            self.graph = graph
            self._dead_in_index = self.n_dead
        else:
            self.graph = None
            self._rebuild()

    @property
    def heads(self) -> np.ndarray:
        return self._heads[:self.h]

    @property
    def dead(self) -> np.ndarray:
        return self._dead[:self.h]

    @property
    def n_live(self) -> int:
        return self.h - self.n_dead

    def _rebuild(self) -> None:
        self._members = np.flatnonzero(~self.dead).astype(np.int64)
        self._flat = self.faiss.IndexFlatL2(self.dim)
        if len(self._members):
            self._flat.add(self._heads[self._members])
        self._dead_in_index = 0

    def add(self, new: np.ndarray) -> np.ndarray:
        """Append heads; return their ids."""
        new = np.ascontiguousarray(new, dtype=np.float32).reshape(-1, self.dim)
        ids = np.arange(self.h, self.h + len(new), dtype=np.int64)
        if self.h + len(new) > len(self._heads):
            size = max(self.h + len(new), 2 * len(self._heads), 16)
            grown = np.zeros((size, self.dim), dtype=np.float32)
            grown[:self.h] = self.heads
            dead = np.zeros(size, dtype=bool)
            dead[:self.h] = self.dead
            self._heads, self._dead = grown, dead
        self._heads[ids] = new
        self._dead[ids] = False
        self.h += len(new)
        if self.kind == "hnsw":
            self.graph.add(new)
        else:
            self._flat.add(new)
            self._members = np.concatenate([self._members, ids])
        return ids

    def kill(self, ids) -> None:
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        ids = ids[~self._dead[ids]]
        self._dead[ids] = True
        self._selector = None
        self.n_dead += len(ids)
        self._dead_in_index += len(ids)

    def _live_selector(self) -> tuple:
        """(heads, bitmap, faiss selector over the bitmap) of the live heads, rebuilt after
        kills and adds. Callers hold the tuple while searching: the selector points into
        the bitmap, which another thread's rebuild must not free under them."""
        cached = self._selector
        if cached is None or cached[0] != self.h:
            bits = np.packbits(~self.dead, bitorder="little")
            cached = (self.h, bits, self.faiss.IDSelectorBitmap(self.h, self.faiss.swig_ptr(bits)))
            self._selector = cached
        return cached

    def _total(self) -> int:
        return int(self.graph.ntotal) if self.kind == "hnsw" else len(self._members)

    def _raw(self, queries: np.ndarray, k: int, ef: int, live_only: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "hnsw":
            live = self._live_selector() if live_only else None
            params = self.faiss.SearchParametersHNSW(efSearch=max(ef, k),
                                                     sel=live[2] if live else None)
            sqd, ids = self.graph.search(queries, k, params=params)
        else:
            sqd, pos = self._flat.search(queries, k)
            ids = np.where(pos >= 0, self._members[np.maximum(pos, 0)], -1)
        return np.where(ids >= 0, sqd, np.inf).astype(np.float32), ids

    def search(self, queries: np.ndarray, m: int, ef: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` nearest live heads of each query: (squared L2 distances, head ids)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.kind != "hnsw" and self._dead_in_index * 4 > len(self._members):
            self._rebuild()
        m = max(1, m)
        total = self._total()
        live = total - self._dead_in_index
        if live <= 0:
            return (np.full((len(queries), m), np.inf, np.float32),
                    np.full((len(queries), m), -1, np.int64))
        if not self._dead_in_index:
            return self._raw(queries, m, ef)
        graph = self.kind == "hnsw"             # the graph returns live heads only
        k = m if graph else min(total, math.ceil(m * total / live) + 8)
        if graph:
            ef = math.ceil(max(ef, m) * total / live)
        sqd, ids = self._live_first(*self._raw(queries, k, ef, live_only=graph), m)
        short = np.flatnonzero((ids >= 0).sum(axis=1) < min(m, live))
        while len(short) and (ef if graph else k) < total:       # look further
            ef, k = (2 * ef, k) if graph else (ef, min(total, 2 * k))
            found = self._raw(queries[short], k, ef, live_only=graph)
            sqd[short], ids[short] = self._live_first(*found, m)
            short = short[(ids[short] >= 0).sum(axis=1) < min(m, live)]
        return sqd, ids

    def _live_first(self, sqd: np.ndarray, ids: np.ndarray, m: int):
        """The first ``m`` live results of each row, padded with (inf, -1)."""
        ok = (ids >= 0) & ~self._dead[np.maximum(ids, 0)]
        order = np.argsort(~ok, axis=1, kind="stable")[:, :m]
        sqd = np.take_along_axis(sqd, order, axis=1)
        ids = np.take_along_axis(ids, order, axis=1)
        ok = np.take_along_axis(ok, order, axis=1)
        if ids.shape[1] < m:
            pad = m - ids.shape[1]
            sqd = np.pad(sqd, ((0, 0), (0, pad)), constant_values=np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            ok = np.pad(ok, ((0, 0), (0, pad)))
        return np.where(ok, sqd, np.inf).astype(np.float32), np.where(ok, ids, -1)

    def memory_bytes(self) -> int:
        graph = int(self.graph.hnsw.neighbors.size()) * 4 if self.kind == "hnsw" else 0
        return int(self.h * self.dim * 4 + graph + self.h)
