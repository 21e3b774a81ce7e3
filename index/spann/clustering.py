"""Hierarchical balanced clustering: split vectors into heads of about ``target`` members.

Each node of the hierarchy runs faiss k-means (on a sample when large), then assigns its
members to the centroids under a capacity limit (members go, nearest-first, to the
closest centroid that still has room), so children come out near-equal in size. A child
larger than ``cap`` is split again; every leaf becomes one head, numbered depth-first. Each
node's k-means seed depends only on the node (``node_seed``), so subtrees can be clustered
apart (``index.build_ray_spann`` runs the root's children as Ray tasks) to the same heads.
Vectors are read in blocks from the (memmapped) input, never all at once as Python objects.
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


def candidates(vectors: np.ndarray, members: np.ndarray, centroids: np.ndarray,
               block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``CHOICES`` nearest centroids of each of ``vectors[members]``, in blocks of
    ``block`` (``BLOCK``) members: (squared distances, ids). Runs of whole blocks give the
    same rows (``index.build_ray_spann`` computes the root's in Ray tasks)."""
    block = block or BLOCK
    n, m = len(members), min(CHOICES, len(centroids))
    dist, ids = np.empty((n, m), dtype=np.float32), np.empty((n, m), dtype=np.int64)
    for start in range(0, n, block):
        part = rows(vectors, members[start:start + block])
        dist[start:start + block], ids[start:start + block] = nearest(part, centroids, CHOICES)
    return dist, ids


def split(vectors: np.ndarray, members: np.ndarray, target: int, cap: int, branch: int,
          seed: int, nearest_of=candidates) -> np.ndarray:
    """Labels 0..k-1 splitting ``vectors[members]`` into near-equal groups (one level);
    ``nearest_of`` computes ``candidates``."""
    n = len(members)
    k = max(2, min(branch, math.ceil(n / target)))
    rng = np.random.default_rng(seed)
    sample = members if n <= k * 128 else np.sort(rng.choice(members, k * 128, replace=False))
    centroids = kmeans(rows(vectors, sample), k, seed)
    k = len(centroids)
    dist, ids = nearest_of(vectors, members, centroids)
    even = math.ceil(n / k)
    capacity = even if even > cap else min(cap, max(even, math.ceil(even * 1.1)))
    labels = capacity_assign(dist, ids, k, capacity)
    if labels.min() == labels.max():  # degenerate (e.g. duplicate vectors): split by position
        labels = np.arange(n) * k // n
    return labels


def node_seed(seed: int, depth: int, first: int) -> int:
    """The k-means seed of one node of the hierarchy, from its depth and first member (not
    from how many heads came before it), so subtrees cluster independently, in any order or
    in parallel, to the same heads."""
    return (seed * 1_000_003 + depth * 7_919 + first) % (2 ** 31 - 1)


def children(vectors: np.ndarray, members: np.ndarray, target: int, cap: int, branch: int,
             seed: int, depth: int, nearest_of=candidates) -> list[np.ndarray]:
    """``members`` (sorted) split one level: each child's members, sorted, in label order."""
    labels = split(vectors, members, target, cap, branch, node_seed(seed, depth, int(members[0])),
                   nearest_of)
    groups = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[groups], np.arange(labels.max() + 2))
    return [np.sort(members[groups[a:b]]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def cluster_subtree(vectors: np.ndarray, members: np.ndarray, target: int, cap: int,
                    branch: int, seed: int, depth: int = 0,
                    bar=None) -> tuple[np.ndarray, np.ndarray]:
    """The heads under ``members`` (sorted) in depth-first order, float32 (h, d), and each
    member's head among them, int32 aligned with ``members``."""
    heads: list[np.ndarray] = []
    assign = np.empty(len(members), dtype=np.int32)
    stack = [(members, depth)]
    while stack:
        part, level = stack.pop()
        if len(part) <= cap:
            assign[np.searchsorted(members, part)] = len(heads)
            centre = rows(vectors, part).mean(axis=0)
            heads.append(centre / max(float(np.linalg.norm(centre)), 1e-12))
            if bar is not None:
                bar.update(len(part))
            continue
        below = children(vectors, part, target, cap, branch, seed, level)
        stack.extend((child, level + 1) for child in reversed(below))  # child 0 first
    return np.stack(heads).astype(np.float32), assign


def balanced_clusters(vectors: np.ndarray, target: int = 64, cap: int = 128,
                      branch: int = 64, seed: int = 0,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Cluster every row; return (heads float32 (h, d), primary head of each row int32 (n,)).

    A head is the normalized mean of its members (vectors are unit length, so heads lie on
    the same sphere and head-to-head distances compare with vector-to-head ones, which the
    RNG rule of the replication relies on). Leaves hold at most ``cap`` rows; the capacity
    assignment keeps them near ``target``.
    """
    if not 0 < target <= cap:
        raise ValueError(f"need 0 < target ({target}) <= cap ({cap})")
    n = vectors.shape[0]
    with tqdm(total=n, desc="spann: balanced clustering", unit="vec", mininterval=1.0,
              disable=not progress) as bar:
        return cluster_subtree(vectors, np.arange(n, dtype=np.int64), target, cap, branch,
                               seed, bar=bar)
