"""Sentence-transformers text encoder producing normalized float32 vectors.

``backend`` picks the runtime of the transformer's forward pass: ``torch`` (fp32 on CPU, fp16
with large length-sorted batches on CUDA), ``onnx`` / ``onnx-int8`` (ONNX Runtime) or
``openvino`` / ``openvino-int8`` (OpenVINO, CPU), or ``auto``: the fastest of those that keeps
cosine >= 0.999 to torch fp32 on sample passages, measured once per device and model and cached.
An index records ``encoder.manifest()`` and must encode its queries with the same backend.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from retrievers import encoder_backends as eb
from retrievers.encoder_exports import ensure_export
from searchagent.errors import BackendError, IndexFormatError
from searchagent.models import embedder_path

AUTO_MIN_COSINE = 0.999   # int8 (min ~0.992) keeps only ~93% of the top-10 neighbours
AUTO_PASSAGES = 32
CUDA_BATCH_SIZE = 512


def passage_text(title: str, text: str) -> str:
    """How a passage is shown to the embedder."""
    return f"{title}\n{text}" if title else text


class Encoder:
    """Loads a local sentence-transformers model once; CUDA when torch sees a GPU (torch backend).

    ``backend``: torch, onnx, onnx-int8, openvino, openvino-int8 or auto. ``cache_dir``: the
    folder for exported models and auto decisions (default ~/.cache/searchagent/encoders).
    After loading, ``backend`` is the backend in use (never "auto"), ``model_file`` the weights
    file it runs and ``auto_decision`` the measurement behind an auto choice (else None).
    """

    def __init__(self, model: str = "default", device: str | None = None,
                 backend: str = "torch", cache_dir: str | os.PathLike | None = None,
                 weights_sha256: str | None = None,
                 measure_dir: str | os.PathLike | None = None):
        """``weights_sha256``: the weights an index was built with (``open_encoder``): other
        weights are refused, and an export missing from ``cache_dir`` is an error instead of
        being made (an index is read, never written, when it is searched). ``measure_dir``:
        where ``auto`` keeps its decision and the exports it measured (default
        ``cache_dir``; a build passes the user's cache, so only the chosen export goes
        into the index and later builds on this device reuse the decision)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        requested = (backend or "torch").lower()
        if requested not in ("torch", "auto"):
            eb.require(requested)       # fail before loading anything
        self.path = embedder_path(model)
        self._source_sha, self.frozen = None, weights_sha256 is not None
        if self.frozen and self.source_sha256 != weights_sha256:
            raise IndexFormatError(
                f"the embedder at {self.path} is not the one the index was built with (its "
                f"weights' sha256 is {self.source_sha256[:12]}..., the index recorded "
                f"{weights_sha256[:12]}...; was the model package upgraded?): rebuild the "
                "index, or give it the model it was built with")
        cuda = torch.cuda.is_available()
        if device is None:
            device = "cuda" if cuda and requested in ("torch", "auto") else "cpu"
        if requested not in ("torch", "auto") and device != "cpu":
            raise BackendError(f"embedding backend {requested!r} runs on the CPU; use device='cpu' "
                               "or backend='torch' for CUDA")
        self.device = device
        self.requested_backend = requested
        self.cache_dir = eb.cache_root(cache_dir)
        self.measure_dir = self.cache_dir if measure_dir is None else Path(measure_dir)
        self.threads = torch.get_num_threads()
        self.model = SentenceTransformer(self.path, device=self.device)
        dimension = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.fp16 = False
        self.auto_decision = None
        self.backend = "torch"
        self.model_file = str(eb.weights_file(self.path))
        chosen = self._choose() if requested == "auto" else requested
        if chosen != "torch":
            self._use(chosen)
        elif self.device.startswith("cuda"):
            self.model.half()
            self.fp16 = True

    # --- encoding ---------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        if self.fp16:       # one call sorts all texts by length; big batches keep the GPU busy
            return encode_overlapped(self.model, list(texts), max(batch_size, CUDA_BATCH_SIZE),
                                     self.dim, progress)
        vectors = self.model.encode(list(texts), batch_size=batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def manifest(self) -> dict:
        """What an index records so that its queries are encoded the same way."""
        info = eb.read_json(Path(self.model_file).parent / "export.json") \
            if self.backend != "torch" else {}
        precision = "int8" if self.backend.endswith("int8") else "fp16" if self.fp16 else "fp32"
        entry = {"backend": self.backend, "requested_backend": self.requested_backend,
                 "model": eb.model_name(self.path), "model_path": self.path,
                 "model_file": self.model_file, "precision": precision, "dim": self.dim,
                 "device": self.device, "source_sha256": self.source_sha256}
        if info:
            entry["model_file_sha256"] = info.get("file_sha256")
            entry["export"] = {k: info.get(k) for k in ("settings", "versions", "created")}
        if self.auto_decision:
            entry["auto"] = self.auto_decision
        return entry

    @property
    def source_sha256(self) -> str:
        if self._source_sha is None:
            self._source_sha = eb.source_sha256(self.path)
        return self._source_sha

    # --- backends ---------------------------------------------------------------------------

    def _use(self, backend: str, root: Path | None = None) -> None:
        """Swap the transformer's forward pass for ``backend``'s compiled export (in
        ``root``, default ``cache_dir``: copied from ``measure_dir`` when made there)."""
        model_file = ensure_export(self.model, self.path, backend, root or self.cache_dir,
                                      make=not self.frozen, copy_from=self.measure_dir)
        self.model[0].model = eb.load_runtime(self.model, backend, model_file, self.threads)
        self.backend, self.model_file = backend, str(model_file)

    def _choose(self) -> str:
        """The auto choice: cached per device and model, else measured now (a few seconds once
        the exports exist; the first run also exports every installed backend)."""
        key = _device_key(self.device, self.threads)
        path = _decision_path(self.measure_dir, self.path, key)
        decision = _read_decision(path, self.source_sha256)
        if decision is None:
            decision = self._measure_backends(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(decision, indent=2))
            os.replace(temporary, path)
        decision = {**decision, "decision_file": str(path)}
        self.auto_decision = decision
        return decision["backend"]

    def _measure_backends(self, key: str) -> dict:
        texts = eb.sample_texts(AUTO_PASSAGES)
        batch = 16
        torch_model = self.model[0].model
        reference = None                        # torch fp32's vectors, measured first
        candidates = ["torch"]
        skipped = {}
        if self.device == "cpu":
            for name in eb.BACKENDS[1:]:
                missing = eb.missing_packages(name)
                if missing:
                    skipped[name] = f"missing {', '.join(missing)} (extra [{eb.EXTRA[name]}])"
                else:
                    candidates.append(name)
        else:
            skipped = {name: "CPU-only backend" for name in eb.BACKENDS[1:]}
        measured = {}
        for name in candidates:
            try:
                if name != "torch":
                    self._use(name, self.measure_dir)
                measured[name], vectors = _measure(self.encode, texts, batch)
                reference = vectors if reference is None else reference
                cosines = np.sum(vectors * reference, axis=1)
                measured[name].update(min_cosine=round(float(cosines.min()), 5),
                                      mean_cosine=round(float(cosines.mean()), 5))
            except Exception as exc:            # an export or runtime failing rules it out
                skipped[name] = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                self.model[0].model = torch_model
                self.backend, self.model_file = "torch", str(eb.weights_file(self.path))
        good = {n: m for n, m in measured.items() if m["min_cosine"] >= AUTO_MIN_COSINE}
        good.setdefault("torch", measured.get("torch", {"passages_per_s": 0.0}))
        best = max(good, key=lambda n: good[n]["passages_per_s"])
        return {"backend": best, "device": key, "source_sha256": self.source_sha256,
                "rule": f"fastest with min cosine >= {AUTO_MIN_COSINE} to torch fp32 on "
                        f"{len(texts)} sample passages (batch {batch})",
                "measured": measured, "skipped": skipped,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def cache_folder(index_dir: str | os.PathLike) -> Path:
    """The encoder cache inside an index folder (exports travel with the index)."""
    return Path(index_dir) / "encoder-cache"


def open_encoder(index_dir: str | os.PathLike, dense: dict) -> "Encoder":
    """The encoder an index was built with (its manifest's ``dense`` entry): same model,
    same backend, exports from the index's cache (indexes without the record: torch)."""
    recorded = dense.get("encoder", {})
    return Encoder(dense["model"], backend=recorded.get("backend", "torch"),
                   cache_dir=cache_folder(index_dir),
                   weights_sha256=recorded.get("source_sha256"))


def _device_key(device: str, threads: int) -> str:
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(torch.device(device))
    slug = "".join(c if c.isalnum() else "-" for c in f"{device.split(':')[0]}-{name}-{threads}t")
    return "-".join(part for part in slug.split("-") if part).lower()


def encode_overlapped(model, texts: list[str], batch_size: int, dim: int,
                      progress: bool = False) -> np.ndarray:
    """``model.encode`` with tokenization off the device's critical path: batches sorted by
    length (longest first, as sentence-transformers does), a worker thread tokenizes the
    next batch (pinned memory on CUDA) while the device runs the current one. Returns
    unit float32 vectors in input order, renormalized in float32 (fp16 models)."""
    import torch
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    device = model.device
    cuda = device.type == "cuda"
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    order = np.argsort([-len(text) for text in texts], kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    vectors = np.empty((len(texts), dim), np.float32)

    def tokenized(rows: np.ndarray) -> dict:
        features = preprocess([texts[i] for i in rows])
        return {k: v.pin_memory() if cuda and torch.is_tensor(v) else v
                for k, v in features.items()}

    model.eval()
    with ThreadPoolExecutor(1) as worker, torch.inference_mode():
        pending = worker.submit(tokenized, batches[0]) if batches else None
        for k, rows in enumerate(tqdm(batches, desc="Batches", disable=not progress)):
            features = pending.result()
            if k + 1 < len(batches):
                pending = worker.submit(tokenized, batches[k + 1])
            features = {key: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                        for key, v in features.items()}
            vectors[rows] = model(features)["sentence_embedding"].float().cpu().numpy()
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def _decision_path(root: Path, source: str, key: str) -> Path:
    return root / "auto" / f"{eb.model_name(source)}--{key}.json"


def _read_decision(path: Path, source_sha: str) -> dict | None:
    decision = eb.read_json(path)
    if decision.get("source_sha256") != source_sha or decision.get("backend") not in eb.BACKENDS:
        return None
    return decision if not eb.missing_packages(decision["backend"]) else None


def _measure(encode, texts: list[str], batch_size: int, runs: int = 2) -> tuple[dict, np.ndarray]:
    """Throughput (best of ``runs`` after a short warm-up) and the vectors."""
    encode(texts[:batch_size // 2], batch_size)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        vectors = encode(texts, batch_size)
        seconds.append(time.perf_counter() - started)
    return {"passages_per_s": round(len(texts) / min(seconds), 1)}, vectors
