"""FAISS indexes chosen by an ``index_factory`` string, behind the VectorIndex protocol.

Vectors are normalized, so the metric is inner product. On load the index moves to the
GPU when faiss reports one (faiss-gpu builds only); search parameters (``nprobe``,
``efSearch``) are applied per call.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from searchagent.errors import IndexFormatError, SearchAgentError
from searchagent.types import SearchStats


def import_faiss():
    try:
        import faiss
    except ImportError as exc:
        raise SearchAgentError("faiss is not installed: pip install 'searchagent[cpu]' "
                               "(or '[gpu]' on a CUDA machine)") from exc
    return faiss


def gpu_count() -> int:
    faiss = import_faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def build_faiss(vectors: np.ndarray, factory: str, chunk: int = 100_000,
                train_size: int = 200_000, seed: int = 0) -> "object":
    """Train (on a sample when needed) and fill an index from a (memmapped) array."""
    faiss = import_faiss()
    n, dim = vectors.shape
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise SearchAgentError(f"invalid faiss factory string {factory!r}: {exc}") from exc
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, train_size), replace=False))
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    for start in tqdm(range(0, n, chunk), desc=f"faiss {factory}: adding", unit="chunk"):
        index.add(np.ascontiguousarray(vectors[start:start + chunk], dtype=np.float32))
    return index


class FaissIndex:
    """A loaded FAISS index; thread-safe for concurrent searches."""

    def __init__(self, index, factory: str, use_gpu: bool | None = None):
        faiss = import_faiss()
        self.factory, self.dim, self.on_gpu = factory, index.d, False
        if (use_gpu is None and gpu_count() > 0) or use_gpu:
            try:
                index = faiss.index_cpu_to_all_gpus(index)
                self.on_gpu = True
            except (RuntimeError, AttributeError):
                pass  # e.g. HNSW has no GPU version: stay on the CPU
        self.index = index
        self._params = faiss.GpuParameterSpace() if self.on_gpu else faiss.ParameterSpace()

    @classmethod
    def load(cls, path: str | Path, factory: str, use_gpu: bool | None = None) -> "FaissIndex":
        faiss = import_faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexFormatError(f"FAISS index unreadable: {path}: {exc}") from exc
        return cls(index, factory, use_gpu)

    def save(self, path: str | Path) -> None:
        faiss = import_faiss()
        index = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        faiss.write_index(index, str(path))

    def search(self, queries: np.ndarray, k: int, *, params: dict | None = None,
               deadline: float | None = None) -> tuple[np.ndarray, np.ndarray, SearchStats]:
        start = time.perf_counter()
        for name, value in (params or {}).items():
            self._params.set_index_parameter(self.index, name, value)
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return ids, scores, SearchStats(seconds=time.perf_counter() - start)
