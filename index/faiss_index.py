"""FAISS indexes chosen by an ``index_factory`` string, behind the VectorIndex protocol.

Vectors are normalized, so the metric is inner product. On load the index moves to the
GPU when faiss reports one (faiss-gpu builds only); search parameters (``nprobe``,
``efSearch``) are applied per call.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from searchagent.errors import IndexFormatError, InputError, SearchAgentError
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


TRAIN_SIZE = 200_000     # vectors build_faiss trains on at most (a seeded sample)


def training_needs(factory: str) -> list[tuple[str, int]]:
    """``(part, minimum training vectors)`` for the parts of ``factory`` faiss refuses to
    train on fewer vectors: IVF's nlist centroids, a PQ's (or OPQ's) 2**nbits centroids per
    codebook, PCA's output dimensions."""
    needs = []
    for part in factory.split(","):
        if ivf := re.match(r"IVF(\d+)", part):
            needs.append((f"IVF nlist {ivf[1]}", int(ivf[1])))
        elif pq := re.match(r"O?PQ(\d+)(?:x(\d+))?", part):
            bits = int(pq[2] or 8)
            needs.append((f"{pq[0]} ({2 ** bits} centroids per codebook)", 2 ** bits))
        elif pca := re.match(r"PCAW?R?(\d+)", part):
            needs.append((f"{pca[0]} ({pca[1]} output dimensions)", int(pca[1])))
    return needs


def check_trainable(factory: str, passages: int, train_size: int = TRAIN_SIZE) -> None:
    """Refuse, before anything is embedded, a factory faiss cannot train on ``passages``."""
    available = min(passages, train_size)
    for part, needed in training_needs(factory):
        if available < needed:
            have = (f"the corpus has {passages} passages" if passages <= train_size else
                    f"training uses a sample of {train_size}")
            raise InputError(f"--faiss {factory}: {part} needs at least {needed} passages to "
                             f"train on, {have} (lower it, or use Flat or HNSW32)")


def check_factory(factory: str, dim: int) -> None:
    """Refuse, before anything is embedded, a factory string faiss cannot make for ``dim``-d
    vectors (a typo, a PQ whose sub-quantizers do not divide ``dim``)."""
    try:
        import_faiss().index_factory(dim, factory)
    except RuntimeError as exc:
        raise InputError(f"--faiss {factory}: faiss cannot make this index for {dim}-d "
                         f"vectors ({_faiss_reason(exc)})") from exc


def _faiss_reason(exc: RuntimeError) -> str:
    """The reason in a faiss error ("Error in <function> at <file>: Error: <reason>")."""
    return str(exc).strip().splitlines()[-1].rsplit("Error: ", 1)[-1]


def build_faiss(vectors: np.ndarray, factory: str, chunk: int = 100_000,
                train_size: int = TRAIN_SIZE, seed: int = 0) -> "object":
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
        try:
            index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        except RuntimeError as exc:     # a need training_needs does not know
            raise SearchAgentError(f"faiss could not train {factory!r} on {len(sample)} "
                                   f"vectors: {_faiss_reason(exc)}") from exc
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
               deadline: float | None = None, cancel=None
               ) -> tuple[np.ndarray, np.ndarray, SearchStats]:
        start = time.perf_counter()
        for name, value in (params or {}).items():
            self._params.set_index_parameter(self.index, name, value)
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return ids, scores, SearchStats(seconds=time.perf_counter() - start)
