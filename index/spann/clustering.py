"""Hierarchical balanced clustering: split vectors into heads of about ``target`` members.

Each node of the hierarchy runs faiss k-means (on a sample when large), then assigns its
members to the centroids under a capacity limit (members go, nearest-first, to the
closest centroid that still has room), so children come out near-equal in size. A child
larger than ``cap`` is split again; every leaf becomes one head. Vectors are read in
blocks from the (memmapped) input, never all at once as Python objects.
"""

from __future__ import annotations

import math

import numpy as np
from tqdm.auto import tqdm

from index.faiss_index import import_faiss

BLOCK = 65_536          # rows per block when streaming the input
CHOICES = 8             # nearest centroids tried per vector by the capacity assignment


def rows(vectors: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """float32 copy of ``vectors[ids]`` (ids sorted ascending for sequential memmap reads)."""
    out = np.empty((len(ids), vectors.shape[1]), dtype=np.float32)
    for start in range(0, len(ids), BLOCK):
        out[start:start + BLOCK] = vectors[ids[start:start + BLOCK]]
    return out


def kmeans(data: np.ndarray, k: int, seed: int, iters: int = 12,
           max_points_per_centroid: int = 128) -> np.ndarray:
    """Centroids of ``data`` (float32, rows) by faiss k-means on a bounded sample.

    Small problems run on one thread: OpenMP start-up costs more than it saves there.
    """
    faiss = import_faiss()
    km = faiss.Kmeans(data.shape[1], k, niter=iters, seed=seed, verbose=False,
                      max_points_per_centroid=max_points_per_centroid, min_points_per_centroid=1)
    threads = faiss.omp_get_max_threads()
    if len(data) * k < 2_000_000:
        faiss.omp_set_num_threads(1)
    try:
        km.train(data)
    finally:
        faiss.omp_set_num_threads(threads)
    return km.centroids


def nearest(data: np.ndarray, centroids: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` nearest centroids of every row: (squared L2 distances, ids)."""
    m = min(m, len(centroids))
    if len(data) * len(centroids) < 2_000_000:  # small: numpy beats faiss' threading overhead
        sq = ((data ** 2).sum(1)[:, None] + (centroids ** 2).sum(1)[None, :]
              - 2 * data @ centroids.T)
        ids = np.argsort(sq, axis=1)[:, :m]
        return np.take_along_axis(sq, ids, axis=1).astype(np.float32), ids
    faiss = import_faiss()
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    return index.search(data, m)


def capacity_assign(dist: np.ndarray, ids: np.ndarray, k: int, capacity: int) -> np.ndarray:
    """Assign each row to one of its candidate centroids with at most ``capacity`` per centroid.

    Round r offers every unassigned row its r-th choice; each centroid accepts the closest
    offers that fit. Rows still unplaced after all rounds go to their nearest centroid.
    """
    n = len(ids)
    label = np.full(n, -1, dtype=np.int64)
    room = np.full(k, capacity, dtype=np.int64)
    for r in range(ids.shape[1]):
        todo = np.flatnonzero(label < 0)
        if len(todo) == 0:
            break
        want, d = ids[todo, r], dist[todo, r]
        order = np.lexsort((d, want))
        want_sorted = want[order]
        first = np.searchsorted(want_sorted, want_sorted, side="left")
        rank = np.arange(len(order)) - first
        accept = rank < room[want_sorted]
        chosen = todo[order[accept]]
        label[chosen] = want_sorted[accept]
        np.subtract.at(room, want_sorted[accept], 1)
    left = label < 0
    label[left] = ids[left, 0]
    return label


def split(vectors: np.ndarray, members: np.ndarray, target: int, cap: int, branch: int,
          seed: int) -> np.ndarray:
    """Labels 0..k-1 splitting ``vectors[members]`` into near-equal groups (one level)."""
    n = len(members)
    k = max(2, min(branch, math.ceil(n / target)))
    rng = np.random.default_rng(seed)
    sample = members if n <= k * 128 else np.sort(rng.choice(members, k * 128, replace=False))
    centroids = kmeans(rows(vectors, sample), k, seed)
    k = len(centroids)
    dist = np.empty((n, min(CHOICES, k)), dtype=np.float32)
    ids = np.empty((n, min(CHOICES, k)), dtype=np.int64)
    for start in range(0, n, BLOCK):
        part = rows(vectors, members[start:start + BLOCK])
        dist[start:start + BLOCK], ids[start:start + BLOCK] = nearest(part, centroids, CHOICES)
    even = math.ceil(n / k)
    capacity = even if even > cap else min(cap, max(even, math.ceil(even * 1.1)))
    labels = capacity_assign(dist, ids, k, capacity)
    if labels.min() == labels.max():  # degenerate (e.g. duplicate vectors): split by position
        labels = np.arange(n) * k // n
    return labels


def balanced_clusters(vectors: np.ndarray, target: int = 64, cap: int = 128,
                      branch: int = 64, seed: int = 0,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Cluster every row; return (heads float32 (h, d), primary head of each row int32 (n,)).

    A head is the normalized mean of its members (vectors are unit length, so heads lie on
    the same sphere and head-to-head distances compare with vector-to-head ones, which the
    RNG rule of the replication relies on). Leaves hold at most ``cap`` rows; the capacity
    assignment keeps them near ``target``.
    """
    n = vectors.shape[0]
    if not 0 < target <= cap:
        raise ValueError(f"need 0 < target ({target}) <= cap ({cap})")
    assign = np.full(n, -1, dtype=np.int32)
    heads: list[np.ndarray] = []
    stack = [np.arange(n, dtype=np.int64)]
    bar = tqdm(total=n, desc="spann: balanced clustering", unit="vec", mininterval=1.0,
               disable=not progress)
    while stack:
        members = stack.pop()
        if len(members) <= cap:
            assign[members] = len(heads)
            centre = rows(vectors, members).mean(axis=0)
            heads.append(centre / max(float(np.linalg.norm(centre)), 1e-12))
            bar.update(len(members))
            continue
        labels = split(vectors, members, target, cap, branch, seed + len(heads))
        groups = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[groups], np.arange(labels.max() + 2))
        for g in range(len(bounds) - 2, -1, -1):  # reversed: heads come out in label order
            part = members[groups[bounds[g]:bounds[g + 1]]]
            if len(part):
                stack.append(np.sort(part))
    bar.close()
    return np.stack(heads).astype(np.float32), assign
