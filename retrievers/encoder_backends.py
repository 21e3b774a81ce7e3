"""Embedding runtimes beside PyTorch: ONNX Runtime and OpenVINO, each in fp32 and int8.

sentence-transformers' own ``backend="onnx"``/``"openvino"`` needs Optimum (optimum-onnx,
optimum-intel), whose releases pin transformers below the 5.x used here, so the runtimes are
called directly: sentence-transformers still tokenizes, length-sorts, batches, pools and
normalizes; only the transformer's forward pass is swapped for the compiled graph, an
export ``encoder_exports`` makes once from the local model.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import threading
from pathlib import Path

import numpy as np

from searchagent.errors import BackendError

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
NEEDS = {"onnx": ("onnxruntime", "onnx"), "onnx-int8": ("onnxruntime", "onnx"),
         "openvino": ("openvino", "onnx"), "openvino-int8": ("openvino", "nncf", "onnx")}
EXTRA = {"onnx": "onnx", "onnx-int8": "onnx", "openvino": "openvino", "openvino-int8": "openvino"}
FILES = {"onnx": "model.onnx", "onnx-int8": "model_int8.onnx",
         "openvino": "openvino_model.xml", "openvino-int8": "openvino_model_int8.xml"}
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
SAMPLE_CORPUS = Path(__file__).resolve().parents[1] / "searchagent" / "sample" / "corpus.jsonl.gz"
CALIBRATION_PASSAGES = 96   # openvino-int8: static ranges from the sample corpus's last passages
_SHA256: dict[tuple, str] = {}


def missing_packages(backend: str) -> list[str]:
    return [name for name in NEEDS.get(backend, ()) if importlib.util.find_spec(name) is None]


def require(backend: str) -> None:
    """Raise a BackendError naming the extra to install when a backend's packages are absent."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown embedding backend {backend!r}; choose one of "
                           f"{', '.join(BACKENDS)} or auto")
    missing = missing_packages(backend)
    if missing:
        raise BackendError(f"embedding backend {backend!r} needs {', '.join(missing)}: "
                           f"pip install 'searchagent[{EXTRA[backend]}]'")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where exports and auto decisions live: the caller's folder, $SEARCHAGENT_CACHE_DIR/encoders
    or ~/.cache/searchagent/encoders."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("SEARCHAGENT_CACHE_DIR")
    return Path(base) / "encoders" if base else Path.home() / ".cache" / "searchagent" / "encoders"


def model_name(path: str) -> str:
    """The folder name, or the package's for a bundled ``.../<package>/model`` folder."""
    folder = Path(path)
    return folder.parent.name if folder.name in ("model", "models", "") else folder.name


def weights_file(path: str) -> Path:
    """The model's weights file (the folder itself when they are sharded or absent)."""
    found = [Path(path) / name for name in WEIGHTS if (Path(path) / name).is_file()]
    return found[0] if found else Path(path)


def source_sha256(path: str) -> str:
    """SHA-256 of the weights file; for sharded weights, of the shards' digests in order."""
    single = weights_file(path)
    if single.is_file():
        return sha256(single)
    shards = sorted(Path(path).glob("*.safetensors")) or sorted(Path(path).glob("*.bin"))
    if not shards:
        raise BackendError(f"no weights (*.safetensors, *.bin) in {path}")
    return hashlib.sha256("".join(sha256(f) for f in shards).encode()).hexdigest()


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, remembered per (path, size, mtime) for this process."""
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def sample_texts(count: int, from_end: bool = False) -> list[str]:
    """Passages of the bundled HotpotQA sample (title + text, as an index shows them)."""
    with gzip.open(SAMPLE_CORPUS, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    rows = rows[-count:] if from_end else rows[::max(1, len(rows) // count)][:count]
    return [f"{r['title']}\n{r['text']}" if r.get("title") else r["text"] for r in rows]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def transformer_of(st):
    module = st[0]
    default = {"method": "forward", "method_output_name": "last_hidden_state"}
    text = getattr(module, "modality_config", {}).get("text", default)
    if text.get("method") != "forward" or text.get("method_output_name") != "last_hidden_state":
        raise BackendError("only encoders whose transformer returns last_hidden_state can be "
                           f"exported; this one has {text}")
    return module


def input_names(st) -> list[str]:
    features = st.preprocess(["an example passage", "and another"])
    return [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features]


def _runtime_module(config, names: list[str], run):
    """A stand-in for the transformers model inside sentence-transformers' Transformer module."""
    import torch

    class CompiledEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = config
            self.device = torch.device("cpu")

        def forward(self, **features):
            feeds = {n: np.ascontiguousarray(features[n].cpu().numpy(), dtype=np.int64) for n in names}
            return {"last_hidden_state": torch.from_numpy(np.asarray(run(feeds)))}

    return CompiledEncoder()


def load_runtime(st, backend: str, model_file: Path, threads: int):
    """Build the compiled stand-in for ``backend`` from its exported file."""
    config = transformer_of(st).model.config
    names = input_names(st)
    if backend.startswith("onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        return _runtime_module(config, names, lambda feeds: session.run(None, feeds)[0])
    import openvino as ov

    compiled = ov.Core().compile_model(str(model_file), "CPU", {   # f32: the CPU default may be bf16
        "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads})
    request, lock = compiled.create_infer_request(), threading.Lock()

    def run(feeds):
        with lock:                  # one infer request: callers from several threads take turns
            request.infer(feeds)
            return request.get_output_tensor(0).data.copy()

    return _runtime_module(config, names, run)
