"""Boundary replication: which postings each vector is written to.

A vector always goes to its primary head (from the clustering). It is also written to
further heads, nearest first, up to ``replicas`` postings in all, when its distance to
the head is within ``(1 + eps)`` of its distance to its nearest head and the RNG rule
allows it: head j is skipped if an already chosen head is closer to j than the vector
is (that head's posting already covers the direction of j). Finally no posting may hold
more than ``cap`` entries: the replicas farthest from an overfull head are dropped
(primaries are never dropped).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from index.faiss_index import import_faiss
from index.spann.clustering import rows

BLOCK = 4_096


def rng_select(dist: np.ndarray, cand: np.ndarray, heads: np.ndarray, replicas: int,
               eps: float) -> np.ndarray:
    """Mask (b, m) of chosen candidates; column 0 (the primary) is always chosen.

    ``dist`` holds L2 distances vector->candidate sorted ascending, ``cand`` head ids.
    """
    b, m = cand.shape
    chosen = np.zeros((b, m), dtype=bool)
    chosen[:, 0] = True
    if m == 1 or replicas <= 1:
        return chosen
    centers = heads[cand]                                        # (b, m, d)
    sq = np.einsum("bmd,bmd->bm", centers, centers)
    between = sq[:, :, None] + sq[:, None, :] - 2 * centers @ centers.transpose(0, 2, 1)
    between = np.sqrt(np.maximum(between, 0))                    # head<->head distances
    limit = (1 + eps) * dist[:, :1]
    count = np.ones(b, dtype=np.int64)
    for j in range(1, m):
        covered = (chosen[:, :j] & (between[:, :j, j] < dist[:, j:j + 1])).any(axis=1)
        take = (dist[:, j] <= limit[:, 0]) & ~covered & (count < replicas) & (cand[:, j] >= 0)
        chosen[:, j] = take
        count += take
    return chosen


def head_search_index(heads: np.ndarray):
    """The index that finds each vector's candidate heads (the same one on every worker)."""
    faiss = import_faiss()
    if len(heads) > 4096:  # approximate candidates: exact search would cost n x heads x d
        index = faiss.IndexHNSWFlat(heads.shape[1], 32)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    else:
        index = faiss.IndexFlatL2(heads.shape[1])
    index.add(heads)
    return index


def range_pairs(index, vectors: np.ndarray, heads: np.ndarray, primary: np.ndarray,
                start: int, stop: int, replicas: int, eps: float) -> tuple[np.ndarray, ...]:
    """Candidate (head, row, distance, is_primary) pairs of rows ``start:stop``.

    The primary head of each row is forced to column 0 even when k-means' capacity
    assignment placed the row somewhere other than its nearest head."""
    m = min(len(heads), max(2 * replicas, replicas + 2))
    ids = np.arange(start, stop)
    data = rows(vectors, ids)
    sqd, cand = index.search(data, m)
    prim = primary[ids].astype(np.int64)
    pdist = ((data - heads[prim]) ** 2).sum(axis=1)
    # put the primary in column 0; drop it from the other columns
    cand = np.where(cand == prim[:, None], -1, cand)
    cand = np.concatenate([prim[:, None], cand], axis=1)
    sqd = np.concatenate([pdist[:, None], np.where(cand[:, 1:] < 0, np.inf, sqd)], axis=1)
    order = np.argsort(sqd[:, 1:], axis=1, kind="stable") + 1
    cand[:, 1:] = np.take_along_axis(cand, order, axis=1)
    sqd[:, 1:] = np.take_along_axis(sqd, order, axis=1)
    dist = np.sqrt(np.maximum(sqd, 0))
    # eps is measured against the nearest head (candidate 1 may be nearer than the primary)
    nearest = np.minimum(dist[:, 0], np.where(cand[:, 1] >= 0, dist[:, 1], np.inf))
    chosen = rng_select(np.concatenate([nearest[:, None], dist[:, 1:]], axis=1),
                        np.maximum(cand, 0), heads, replicas, eps) & (cand >= 0)
    r, c = np.nonzero(chosen)
    return (cand[r, c].astype(np.int32), ids[r].astype(np.int64),
            dist[r, c].astype(np.float32), c == 0)


def capped_pairs(parts: list[tuple[np.ndarray, ...]], cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(head, row) pairs of every range, sorted by head (primaries first, then replicas
    nearest first), with the replicas past ``cap`` in a head dropped."""
    head, row, dist, is_primary = (np.concatenate(column) for column in zip(*parts))
    order = np.lexsort((dist, ~is_primary, head))
    head, row, is_primary = head[order], row[order], is_primary[order]
    first = np.searchsorted(head, head, side="left")
    keep = (np.arange(len(head)) - first < cap) | is_primary
    return head[keep], row[keep]


def replicate(vectors: np.ndarray, heads: np.ndarray, primary: np.ndarray, replicas: int,
              eps: float, cap: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Return (head, row) pairs sorted by head then distance, primaries included."""
    index = head_search_index(heads)
    n = vectors.shape[0]
    parts = [range_pairs(index, vectors, heads, primary, start, min(n, start + BLOCK),
                         replicas, eps)
             for start in tqdm(range(0, n, BLOCK), desc="spann: boundary replication",
                               unit="block", mininterval=1.0, disable=not progress)]
    return capped_pairs(parts, cap)
