"""Stage 2 of the build on Ray Data (``index.build_ray``): embed.

``map_batches`` over a fixed actor pool (``_Embedder``: one ``Encoder`` per actor; one actor
per GPU, or CPU actors sharing the cores) embeds the numbered passages that stage 1 put into
the object store; the driver writes each result at its rows of the embeddings memmap. A
non-torch backend is loaded once first (``_probe``), where the actors run.

Ray is imported unguarded: import this through ``index.build_ray``, which names the extra to
install when Ray Data is missing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import ray

from index.build import EMBEDDINGS
from index.build_ray_session import RETRIES, remote_args
from retrievers.encoder import Encoder, cache_folder, passage_text
from retrievers.encoder_backends import cache_root

MAX_THREADS_PER_ACTOR = 4   # CPU actors: cores // 4 actors of 4 threads (one for <= 4 cores)


class _Embedder:
    """One actor of the pool: loads the encoder once, embeds batches of numbered passages.
    The first row of each result carries the encoder's manifest entry (JSON)."""

    def __init__(self, model: str, backend: str, cache_dir: str, dtype: str, batch_size: int,
                 threads: int, measure_dir: str | None = None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.encoder = Encoder(model, backend=backend, cache_dir=cache_dir,
                               measure_dir=measure_dir)
        self.dtype, self.batch_size = dtype, batch_size
        self.manifest = json.dumps(self.encoder.manifest())

    def __call__(self, batch: dict) -> dict:
        texts = [passage_text(title, text) for title, text in zip(batch["title"], batch["text"])]
        vectors = self.encoder.encode(texts, self.batch_size).astype(self.dtype)
        notes = np.full(len(texts), None, dtype=object)
        notes[:1] = self.manifest
        return {"row": batch["row"], "vector": vectors, "encoder": notes}


def _probe(model: str, backend: str, cache_dir: str, threads: int) -> dict:
    """Load a non-torch encoder once where the actors run: its export is made here and an
    "auto" choice settled here (measured in the user's cache, as ``build_encoder``), not
    raced or chosen differently in every actor."""
    measure = str(cache_root()) if backend == "auto" else None
    return json.loads(_Embedder(model, backend, cache_dir, "float32", 1, threads,
                                measure).manifest)


def embed(refs: list, count: int, folder: Path, cfg, block: int, num_gpus: int
           ) -> tuple[dict, dict]:
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if num_gpus:
        actors, threads, resources = num_gpus, 0, {"num_cpus": 1, "num_gpus": 1}
    else:
        threads = max(1, min(MAX_THREADS_PER_ACTOR, cpus))
        actors, resources = max(1, cpus // threads), {"num_cpus": threads}
    cache, backend, recorded = str(cache_folder(folder)), cfg.embed_backend, None
    started = time.perf_counter()
    if backend != "torch":
        probe = ray.remote(max_calls=1, max_retries=RETRIES, **resources)(_probe)
        recorded = ray.get(probe.remote(cfg.dense_model, backend, cache, threads))
        backend = recorded["backend"]
    embedded = remote_args(
        ray.data.from_arrow_refs(refs).map_batches, _Embedder, batch_size=block,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"model": cfg.dense_model, "backend": backend, "cache_dir": cache,
                               "dtype": cfg.dtype, "batch_size": cfg.batch_size,
                               "threads": threads},
        max_restarts=RETRIES, max_task_retries=RETRIES, **resources)
    path = folder / EMBEDDINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    out, written = None, 0
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        if out is None:
            out = np.lib.format.open_memmap(path, mode="w+", dtype=cfg.dtype,
                                            shape=(count, batch["vector"].shape[1]))
        recorded = recorded or next((json.loads(e) for e in batch["encoder"] if e), None)
        out[batch["row"]] = batch["vector"]
        written += len(batch["row"])
    if written != count:
        raise RuntimeError(f"Ray returned {written} vectors for {count} passages")
    out.flush()
    del out
    seconds = time.perf_counter() - started
    if Path(recorded["model_file"]).is_relative_to(folder):     # an export inside the index
        recorded["model_file"] = Path(recorded["model_file"]).relative_to(folder).as_posix()
    dense = {"model": cfg.dense_model, "model_path": recorded["model_path"],
             "dim": recorded["dim"], "dtype": cfg.dtype,
             "passages_per_second": round(count / seconds, 1), "encoder": recorded}
    return dense, {"actors": actors, "threads_per_actor": threads,
                   "gpus_per_actor": resources.get("num_gpus", 0)}
