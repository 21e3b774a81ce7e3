"""The systems compared by ``benchmarks/ann.py``: build each once, load it, search one query.

``spann`` (this project's disk index), ``ivf_ondisk`` (FAISS IVF-Flat whose inverted lists
live in an ``OnDiskInvertedLists`` file), ``hnsw`` (FAISS HNSW in RAM), ``flat`` (exact).
Every system has a list of settings (its pruning knob) swept from cheap to thorough.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

SYSTEMS = ("spann", "ivf_ondisk", "hnsw", "flat")
SETTINGS = {
    "spann": [{"max_postings": m, "eps_search": e} for m, e in
              ((4, 0.5), (8, 0.5), (12, 0.5), (16, 0.5), (24, 0.5), (32, 0.5), (48, 0.5),
               (64, 1.0), (80, 1.0), (96, 1.0), (112, 1.0), (128, 1.0), (192, 1.0),
               (256, 1.0), (384, 1.0))]
    # the same warm settings read with pread copies instead of in place (the old path)
    + [{"max_postings": m, "eps_search": 1.0, "read": "pread"} for m in (32, 64, 128)],
    "ivf_ondisk": [{"nprobe": p} for p in (2, 4, 8, 16, 32, 64, 128)],
    "hnsw": [{"efSearch": e} for e in (16, 32, 64, 128, 256)],
    "flat": [{}],
}
COLD_SETTINGS = {"spann": [{"max_postings": m, "eps_search": e} for m, e in
                           ((8, 0.5), (16, 0.5), (32, 0.5), (64, 1.0), (128, 1.0))],
                 "ivf_ondisk": SETTINGS["ivf_ondisk"][2:6]}


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(system: str, base_path: Path, folder: Path) -> dict:
    """Build ``system`` over the .npy at ``base_path`` into ``folder`` (cached)."""
    info_path = folder / "build.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    import faiss

    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.load(base_path, mmap_mode="r")
    n, dim = vectors.shape
    start = time.perf_counter()
    params: dict = {}
    if system == "spann":
        from index.spann import build_spann

        params = build_spann(vectors, folder / "index")
    elif system == "ivf_ondisk":
        params = _build_ivf_ondisk(faiss, vectors, folder)
    elif system == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        for lo in tqdm(range(0, n, 50_000), desc="hnsw: adding", unit="chunk"):
            index.add(np.ascontiguousarray(vectors[lo:lo + 50_000], dtype=np.float32))
        faiss.write_index(index, str(folder / "hnsw.index"))
        params = {"M": 16, "efConstruction": 40}
    elif system == "flat":
        params = {"note": "exact; stored as the embeddings .npy itself"}
    seconds = time.perf_counter() - start
    on_disk = disk_bytes(base_path) if system == "flat" else disk_bytes(folder)
    info = {"system": system, "build_seconds": round(seconds, 2), "bytes_on_disk": on_disk,
            "params": params}
    info_path.write_text(json.dumps(info, indent=2))
    return info


def _build_ivf_ondisk(faiss, vectors, folder: Path) -> dict:
    from faiss.contrib.ondisk import merge_ondisk

    n, dim = vectors.shape
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, min(n, 32 * nlist), replace=False))
    index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    shards = []
    for lo in tqdm(range(0, n, 200_000), desc="ivf: adding (shards)", unit="shard"):
        shard = faiss.clone_index(index)
        shard.add_with_ids(np.ascontiguousarray(vectors[lo:lo + 200_000], dtype=np.float32),
                           np.arange(lo, min(n, lo + 200_000), dtype=np.int64))
        shards.append(str(folder / f"shard-{lo}.index"))
        faiss.write_index(shard, shards[-1])
        del shard
    merge_ondisk(index, shards, str(folder / "lists.ivfdata"))
    faiss.write_index(index, str(folder / "ivf.index"))
    for shard in shards:
        os.remove(shard)
    return {"nlist": nlist, "train_points": len(sample)}


class Loaded:
    """One loaded system; ``search`` answers one query batch under one setting."""

    def __init__(self, system: str, folder: Path, base_path: Path):
        import faiss

        self.system, self.folder, self.faiss = system, folder, faiss
        if system == "spann":
            from index.spann import SpannIndex

            self.index = SpannIndex.open(folder / "index", verify="size")
        elif system == "ivf_ondisk":
            self.index = self._read_ivf()
        elif system == "hnsw":
            self.index = faiss.read_index(str(folder / "hnsw.index"))
        else:
            vectors = np.load(base_path, mmap_mode="r")
            self.index = faiss.IndexFlatIP(vectors.shape[1])
            for lo in range(0, len(vectors), 100_000):
                self.index.add(np.ascontiguousarray(vectors[lo:lo + 100_000], dtype=np.float32))

    def _read_ivf(self):
        return self.faiss.read_index(str(self.folder / "ivf.index"))

    def search(self, queries: np.ndarray, k: int, setting: dict, cold: bool = False):
        if self.system == "spann":
            ids, _, stats = self.index.search(queries, k, params={**setting, "cold": cold})
            return ids, stats.extra
        if self.system == "ivf_ondisk":
            return self.index.search(queries, k, params=self.faiss.SearchParametersIVF(
                nprobe=setting["nprobe"]))[1], {}
        if self.system == "hnsw":
            return self.index.search(queries, k, params=self.faiss.SearchParametersHNSW(
                efSearch=setting["efSearch"]))[1], {}
        return self.index.search(queries, k)[1], {}

    def make_cold(self) -> str:
        """Evict the on-disk part from the page cache before the next query (untimed)."""
        if self.system == "ivf_ondisk":
            # mapped pages survive fadvise: unmap by dropping the index, evict, map again
            self.index = None
            fd = os.open(self.folder / "lists.ivfdata", os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            self.index = self._read_ivf()
            return "reopen + fadvise(DONTNEED) (mmap)"
        return "in search (cold=True)"

    def memory_bytes(self) -> int | None:
        return self.index.memory_bytes() if self.system == "spann" else None
