"""``build_spann``: (memmapped) normalized vectors -> a self-verifying SPANN folder.

Folder contents::

    spann.json     metadata: format version, sizes, parameters, size + sha256 per file
    heads.npy      head centroids, float32 (h, d) -- kept in memory when searching
    heads.faiss    the head HNSW graph (only when head_index = "hnsw")
    table.npy      int64 (h, 3): posting offset, count, padded bytes
    postings.bin   page-aligned posting lists (see postings.py)

The folder is written under a temporary sibling and renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from index.faiss_index import import_faiss
from index.manifest import clean_stale_temps, temp_name
from index.spann.clustering import balanced_clusters, rows
from index.spann.postings import DTYPES, PostingWriter, layout, posting_body
from index.spann.replication import replicate

FORMAT = "searchagent-spann"
FORMAT_VERSION = 1
META = "spann.json"


@dataclass
class SpannParams:
    """Build parameters (defaults suit 10^5..10^7 MiniLM-sized vectors)."""

    target: int = 64          # primary vectors per posting the clustering aims for
    cap: int = 128            # hard limit on a posting's length, replicas included
    replicas: int = 8         # R: most postings one vector is written to
    eps: float = 0.3          # replicate to heads within (1 + eps) x nearest-head distance
    branch: int = 64          # k-means fan-out per hierarchy level
    dtype: str = "float32"    # float32 | float16 vectors inside postings
    head_index: str = "auto"  # flat | hnsw | auto (hnsw above 4096 heads)
    hnsw_m: int = 32
    seed: int = 0

    def check(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"spann dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.head_index not in ("flat", "hnsw", "auto"):
            raise ValueError(f"spann head_index must be flat|hnsw|auto, got {self.head_index!r}")
        if self.replicas < 1 or self.eps < 0 or not 0 < self.target <= self.cap:
            raise ValueError(f"invalid spann parameters: {self}")


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class LocalStages:
    """Where a build's data-parallel stages run: here, in this process. ``index.build_ray_spann.
    RayStages`` runs them as Ray tasks and must give the same bytes."""

    def cluster(self, vectors, target: int, cap: int, branch: int, seed: int,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Hierarchical balanced clustering: (heads, each row's primary head)."""
        return balanced_clusters(vectors, target, cap, branch, seed, progress)

    def replicate(self, vectors, heads, primary, replicas: int, eps: float, cap: int,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Boundary replication: (posting head, row) pairs sorted by head, capped."""
        return replicate(vectors, heads, primary, replicas, eps, cap, progress)

    def write_postings(self, vectors, path: Path, table: np.ndarray, size: int,
                       pair_row: np.ndarray, dtype: str, progress: bool = True) -> str:
        """Write ``postings.bin`` in the layout of ``table``; return its sha256."""
        return _write_postings(vectors, path, table, size, pair_row, dtype, progress)


def build_spann(vectors: np.ndarray, folder: str | Path, params: SpannParams | dict | None = None,
                progress: bool = True, stages=None) -> dict:
    """Build the index from ``vectors`` (n, d) into ``folder``; return its summary.
    ``stages``: where clustering, replication and posting writes run (default
    ``LocalStages``)."""
    if isinstance(params, dict):
        params = SpannParams(**params)
    params = params or SpannParams()
    params.check()
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"spann needs a non-empty (n, d) array, got shape {vectors.shape}")
    folder = Path(folder)
    clean_stale_temps(folder)
    tmp = temp_name(folder)
    tmp.mkdir(parents=True)
    try:
        summary = _build(vectors, tmp, params, progress, stages or LocalStages())
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _build(vectors: np.ndarray, tmp: Path, params: SpannParams, progress: bool,
           stages: LocalStages) -> dict:
    n, dim = vectors.shape
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    heads, primary = stages.cluster(vectors, params.target, params.cap, params.branch,
                                    params.seed, progress)
    seconds["clustering"] = time.perf_counter() - start

    start = time.perf_counter()
    pair_head, pair_row = stages.replicate(vectors, heads, primary, params.replicas,
                                           params.eps, params.cap, progress)
    seconds["replication"] = time.perf_counter() - start

    start = time.perf_counter()
    counts = np.bincount(pair_head, minlength=len(heads))
    table, size = layout(counts, dim, params.dtype)
    sha_postings = stages.write_postings(vectors, tmp / "postings.bin", table, size, pair_row,
                                         params.dtype, progress)
    np.save(tmp / "table.npy", table)
    np.save(tmp / "heads.npy", heads)
    seconds["postings"] = time.perf_counter() - start

    start = time.perf_counter()
    head_kind = params.head_index
    if head_kind == "auto":
        head_kind = "hnsw" if len(heads) > 4096 else "flat"
    if head_kind == "hnsw":
        faiss = import_faiss()
        graph = faiss.IndexHNSWFlat(dim, params.hnsw_m)
        graph.hnsw.efConstruction = 80
        graph.add(heads)
        faiss.write_index(graph, str(tmp / "heads.faiss"))
    seconds["head_index"] = time.perf_counter() - start

    files = {}
    for path in sorted(tmp.iterdir()):
        sha = sha_postings if path.name == "postings.bin" else file_sha256(path)
        files[path.name] = {"size": path.stat().st_size, "sha256": sha}
    summary = {
        "kind": "spann", "format": FORMAT, "format_version": FORMAT_VERSION,
        "dim": dim, "n_vectors": n, "n_heads": len(heads), "n_entries": int(counts.sum()),
        "head_index": head_kind, "params": asdict(params),
        "posting_length": {"min": int(counts.min()), "mean": round(float(counts.mean()), 2),
                           "max": int(counts.max()),
                           "p99": int(np.percentile(counts, 99))},
        "replication_factor": round(float(counts.sum()) / n, 3),
        "bytes_on_disk": sum(f["size"] for f in files.values()),
        "build_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "files": files,
    }
    meta = tmp / META
    meta.write_text(json.dumps(summary, indent=2) + "\n")
    return {key: value for key, value in summary.items() if key != "files"}


def head_ranges(table: np.ndarray, block_rows: int = 1 << 16):
    """Consecutive (first, last) head ranges of about ``block_rows`` entries each."""
    bounds = np.concatenate([[0], np.cumsum(table[:, 1])])
    first = 0
    while first < len(table):
        last = int(np.searchsorted(bounds, bounds[first] + block_rows, side="right")) - 1
        last = max(last, first + 1)
        yield first, last
        first = last


def encoded_range(vectors, table: np.ndarray, ids: np.ndarray, dtype: str) -> bytes:
    """The postings of one head range (``table``: its rows of the layout; ``ids``: their
    entries' rows, in order), gathered from ``vectors`` and encoded as the file holds them."""
    unique, inverse = np.unique(ids, return_inverse=True)
    data = rows(vectors, unique)[inverse]
    bounds = np.concatenate([[0], np.cumsum(table[:, 1])])
    return b"".join(posting_body(ids[a:b], data[a:b], int(nbytes), dtype)
                    for a, b, nbytes in zip(bounds[:-1], bounds[1:], table[:, 2]))


def _write_postings(vectors, path, table, size, pair_row, dtype, progress) -> str:
    """Stream postings to disk in head order, one head range at a time."""
    writer = PostingWriter(path, table, size, vectors.shape[1], dtype)
    bounds = np.concatenate([[0], np.cumsum(table[:, 1])])
    bar = tqdm(total=len(pair_row), desc="spann: writing postings", unit="entry",
               mininterval=1.0, disable=not progress)
    try:
        for first, last in head_ranges(table):
            lo, hi = bounds[first], bounds[last]
            writer.add(first, last, encoded_range(vectors, table[first:last], pair_row[lo:hi],
                                                  dtype))
            bar.update(int(hi - lo))
        return writer.close()
    finally:
        bar.close()
        writer.handle.close()
