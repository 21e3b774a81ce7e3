"""SPANN on Ray for ``index.build_ray``: the clustering stays on the driver (as in
``build_spann``), and boundary replication, each vector's nearest heads and the RNG rule
(most of a SPANN build's time at 1M vectors), runs as Ray tasks over row ranges.

Every task searches the same head index (built once on the driver, shipped as faiss' own
serialized bytes) over ranges aligned to the local ``BLOCK``, so each search call sees the
rows it sees locally; the driver joins the pairs and applies the cap as the local build
does, so the folder is the same as the local build's. Workers read the vectors from the
build's ``embeddings.npy`` memmap, so they must see the driver's disk (this machine, or a
shared filesystem).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import ray
from tqdm.auto import tqdm

from index.build_ray_session import RETRIES
from index.faiss_index import import_faiss
from index.spann.replication import BLOCK, capped_pairs, head_search_index, range_pairs

ROWS_PER_TASK = 16 * BLOCK


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


def ray_replicate(path: str | Path):
    """A drop-in for ``replication.replicate`` that reads the vectors from ``path`` (the
    ``.npy`` the driver's ``vectors`` memmap) inside Ray tasks."""
    path = str(path)

    def replicate(vectors: np.ndarray, heads: np.ndarray, primary: np.ndarray, replicas: int,
                  eps: float, cap: int, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        faiss = import_faiss()
        index_bytes = faiss.serialize_index(head_search_index(heads))
        shared = [ray.put(array) for array in (heads, primary, index_bytes)]
        n = vectors.shape[0]
        task = _range_task.options(max_retries=RETRIES)
        pending = {task.remote(path, *shared, start, min(n, start + ROWS_PER_TASK),
                               replicas, eps): start
                   for start in range(0, n, ROWS_PER_TASK)}
        parts = {}
        with tqdm(total=n, desc="spann: boundary replication (ray)", unit="vec",
                  mininterval=1.0, disable=not progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                start = pending.pop(done[0])
                parts[start] = ray.get(done[0])
                bar.update(min(n, start + ROWS_PER_TASK) - start)
        return capped_pairs([parts[start] for start in sorted(parts)], cap)

    return replicate
