"""SPANN on Ray for ``index.build_ray``: the three stages of ``build_spann`` as Ray tasks.
The clustering splits the root with k-means on a sample on the driver, finds every vector's
nearest root centroids in tasks over row ranges (whole ``clustering.BLOCK`` runs, so each
search call sees the rows it sees locally), runs the capacity assignment on the driver, and
clusters each of the root's children as a task (node seeds do not depend on order,
``clustering.node_seed``; the driver numbers the subtrees' heads in the local build's
depth-first order); boundary replication (each vector's nearest heads and
the RNG rule, most of a SPANN build's time at 1M vectors) runs over row ranges, and the
posting writes over head ranges.

Every replication task searches the same head index (built once on the driver, shipped as
faiss' own serialized bytes) over ranges aligned to the local ``BLOCK``, so each search call
sees the rows it sees locally; the driver joins the pairs and applies the cap as the local
build does. Each write task encodes its head range as the local writer does
(``builder.encoded_range``) and writes it at the layout's offsets of one preallocated
file; the driver then hashes the file. So the folder is the same as the local build's.
Workers read the vectors from the build's ``embeddings.npy`` memmap and write into the
build's folder, so they must see the driver's disk (this machine, or a shared filesystem).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import ray
from tqdm.auto import tqdm

from index.build_ray_session import RETRIES
from index.faiss_index import import_faiss
from index.spann import clustering
from index.spann.builder import encoded_range, file_sha256, head_ranges
from index.spann.clustering import children, cluster_subtree
from index.spann.postings import file_header
from index.spann.replication import BLOCK, capped_pairs, head_search_index, range_pairs

ROWS_PER_TASK = 16 * BLOCK
ROOT_BLOCKS_PER_TASK = 4        # clustering blocks per root-assignment task
ENTRIES_PER_WRITE = 1 << 16


@ray.remote
def _subtree_task(path: str, members: np.ndarray, target: int, cap: int, branch: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = import_faiss()
    faiss.omp_set_num_threads(1)
    return cluster_subtree(np.load(path, mmap_mode="r"), members, target, cap, branch, seed,
                           depth=1)


@ray.remote
def _candidates_task(path: str, members: np.ndarray, centroids: np.ndarray, block: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    import_faiss().omp_set_num_threads(1)
    return clustering.candidates(np.load(path, mmap_mode="r"), members, centroids, block)


@ray.remote
def _range_task(path: str, heads: np.ndarray, primary: np.ndarray, index_bytes: np.ndarray,
                start: int, stop: int, replicas: int, eps: float) -> tuple[np.ndarray, ...]:
    faiss = import_faiss()
    faiss.omp_set_num_threads(1)          # one core per task; Ray runs one task per core
    index = faiss.deserialize_index(index_bytes)
    vectors = np.load(path, mmap_mode="r")
    parts = [range_pairs(index, vectors, heads, primary, first, min(stop, first + BLOCK),
                         replicas, eps) for first in range(start, stop, BLOCK)]
    return tuple(np.concatenate(column) for column in zip(*parts))


@ray.remote
def _write_task(path: str, out: str, table: np.ndarray, ids: np.ndarray, dtype: str) -> int:
    """Write one head range's postings (``table``: its rows of the layout) in place."""
    blob = encoded_range(np.load(path, mmap_mode="r"), table, ids, dtype)
    fd = os.open(out, os.O_WRONLY)
    try:             # a retried task writes the same bytes again: idempotent
        os.pwrite(fd, blob, int(table[0, 0]))
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(ids)


class RayStages:
    """``build_spann``'s stages as Ray tasks over ``path`` (the ``.npy`` behind the
    driver's ``vectors`` memmap); a drop-in for ``index.spann.builder.LocalStages``."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    def cluster(self, vectors: np.ndarray, target: int, cap: int, branch: int, seed: int,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        n = vectors.shape[0]
        everything = np.arange(n, dtype=np.int64)
        if n <= cap:
            return cluster_subtree(vectors, everything, target, cap, branch, seed)
        below = children(vectors, everything, target, cap, branch, seed, 0,
                         lambda _, members, centroids: self._candidates(members, centroids,
                                                                         progress))
        task = _subtree_task.options(max_retries=RETRIES)
        pending = {task.remote(self.path, members, target, cap, branch, seed): k
                   for k, members in enumerate(below)}
        parts = dict(_gather(pending, n, "spann: balanced clustering (ray)", progress,
                             lambda k: len(below[k])))
        heads, primary, offset = [], np.empty(n, dtype=np.int32), 0
        for k, members in enumerate(below):               # depth-first: child 0's heads first
            sub_heads, sub_assign = parts[k]
            heads.append(sub_heads)
            primary[members] = sub_assign + offset
            offset += len(sub_heads)
        return np.concatenate(heads), primary

    def _candidates(self, members: np.ndarray, centroids: np.ndarray, progress: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
        """``clustering.candidates`` for the root, in tasks of ``ROOT_BLOCKS_PER_TASK``
        whole blocks."""
        shared, n, block = ray.put(centroids), len(members), clustering.BLOCK
        per_task = ROOT_BLOCKS_PER_TASK * block
        task = _candidates_task.options(max_retries=RETRIES)
        pending = {task.remote(self.path, members[start:start + per_task], shared, block): start
                   for start in range(0, n, per_task)}
        parts = dict(_gather(pending, n, "spann: root assignment (ray)", progress,
                             lambda start: min(n, start + per_task) - start))
        return tuple(np.concatenate(column) for column in zip(*(parts[s] for s in sorted(parts))))

    def replicate(self, vectors: np.ndarray, heads: np.ndarray, primary: np.ndarray,
                  replicas: int, eps: float, cap: int,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        faiss = import_faiss()
        index_bytes = faiss.serialize_index(head_search_index(heads))
        shared = [ray.put(array) for array in (heads, primary, index_bytes)]
        n = vectors.shape[0]
        task = _range_task.options(max_retries=RETRIES)
        pending = {task.remote(self.path, *shared, start, min(n, start + ROWS_PER_TASK),
                               replicas, eps): start
                   for start in range(0, n, ROWS_PER_TASK)}
        parts = {}
        for start, part in _gather(pending, n, "spann: boundary replication (ray)", progress,
                                   lambda start: min(n, start + ROWS_PER_TASK) - start):
            parts[start] = part
        return capped_pairs([parts[start] for start in sorted(parts)], cap)

    def write_postings(self, vectors: np.ndarray, path: Path, table: np.ndarray, size: int,
                       pair_row: np.ndarray, dtype: str, progress: bool = True) -> str:
        with open(path, "wb") as handle:          # header, then a sparse file of full size
            handle.write(file_header(table, size, vectors.shape[1], dtype))
            handle.truncate(size)
        bounds = np.concatenate([[0], np.cumsum(table[:, 1])])
        task = _write_task.options(max_retries=RETRIES)
        pending = {task.remote(self.path, str(path), table[first:last],
                               pair_row[bounds[first]:bounds[last]], dtype): first
                   for first, last in head_ranges(table, ENTRIES_PER_WRITE)
                   if bounds[last] > bounds[first]}
        for _ in _gather(pending, len(pair_row), "spann: writing postings (ray)", progress):
            pass
        return file_sha256(path)


def _gather(pending: dict, total: int, desc: str, progress: bool, size_of=None):
    """(key, result) of each finished task as it finishes, with a progress bar."""
    with tqdm(total=total, desc=desc, unit="vec", mininterval=1.0, disable=not progress) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(done[0])
            result = ray.get(done[0])
            bar.update(size_of(key) if size_of else result)
            yield key, result
