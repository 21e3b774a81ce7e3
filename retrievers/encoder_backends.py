"""Embedding runtimes beside PyTorch: ONNX Runtime and OpenVINO, each in fp32 and int8.

sentence-transformers' own ``backend="onnx"``/``"openvino"`` needs Optimum (optimum-onnx,
optimum-intel), whose releases pin transformers below the 5.x used here, so the runtimes are
called directly: sentence-transformers still tokenizes, length-sorts, batches, pools and
normalizes; only the transformer's forward pass is swapped for the compiled graph. An export
is made once from the local model (never downloaded) into ``<cache root>/<model>-<backend>/``
with an ``export.json`` naming the source weights' SHA-256 (other weights: exported again).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from searchagent.errors import BackendError, IndexFormatError

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


def ensure_export(st, source: str, backend: str, root: Path, make: bool = True,
                  copy_from: Path | None = None) -> Path:
    """The exported model file for ``backend``, made now if absent or made from other
    weights (``make=False``: an error instead, for an index's own cache when searched;
    ``copy_from``: another cache whose export of the same weights is copied, not redone)."""
    folder = root / f"{model_name(source)}-{backend}"
    source_sha = source_sha256(source)
    info = read_json(folder / "export.json")
    target = folder / FILES[backend]
    if info.get("source_sha256") == source_sha and target.is_file():
        return target
    if not make:
        raise IndexFormatError(f"{folder}: the index's {backend} export of its embedder is "
                               "missing or was made from other weights; rebuild the index")
    made = copy_from / folder.name if copy_from is not None else None
    if made is not None and made != folder and \
            read_json(made / "export.json").get("source_sha256") == source_sha:
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=_made(root)))
        try:
            shutil.copytree(made, work / "export")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(work / "export", folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target
    base = ensure_export(st, source, "onnx", root) if backend != "onnx" else None
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        started, out = time.perf_counter(), work / FILES[backend]
        settings = (_export_onnx(st, out) if backend == "onnx" else
                    _quantize_onnx(base, out) if backend == "onnx-int8" else
                    _export_openvino(base, out) if backend == "openvino" else
                    _quantize_openvino(st, base, out))
        meta = {"backend": backend, "source": source, "source_sha256": source_sha,
                "file": FILES[backend], "file_sha256": sha256(out),
                "settings": settings, "versions": _versions(backend),
                "seconds": round(time.perf_counter() - started, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (work / "export.json").write_text(json.dumps(meta, indent=2))
        if folder.exists():             # stale export (other weights): replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(work, folder)
        except OSError:                 # another process finished the same export first
            if not (folder / FILES[backend]).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _made(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return root


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _versions(backend: str) -> dict:
    from importlib.metadata import distributions

    wanted = {"torch", "transformers", "sentence-transformers", *NEEDS.get(backend, ())}
    return {d.metadata["Name"].lower(): d.version for d in distributions()
            if (d.metadata["Name"] or "").lower() in wanted}


def _transformer(st):
    module = st[0]
    default = {"method": "forward", "method_output_name": "last_hidden_state"}
    text = getattr(module, "modality_config", {}).get("text", default)
    if text.get("method") != "forward" or text.get("method_output_name") != "last_hidden_state":
        raise BackendError("only encoders whose transformer returns last_hidden_state can be "
                           f"exported; this one has {text}")
    return module


def _input_names(st) -> list[str]:
    features = st.preprocess(["an example passage", "and another"])
    return [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features]


def _export_onnx(st, out: Path) -> dict:
    """TorchScript export of the transformer (eager attention traces to plain ONNX ops)."""
    import torch

    model = _transformer(st).model
    if not isinstance(model, torch.nn.Module) or not any(True for _ in model.parameters()):
        raise BackendError("exporting needs the torch model, not an already compiled backend")
    names = _input_names(st)

    class Forward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(**dict(zip(names, tensors)), return_dict=True).last_hidden_state

    features = st.preprocess(["a short example passage for tracing", "tracing"])
    example = tuple(features[name].to("cpu") for name in names)
    attention = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Forward().eval(), example, str(out), dynamo=False, opset_version=17,
                              input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes={n: {0: "batch", 1: "sequence"}
                                            for n in [*names, "last_hidden_state"]})
    finally:
        model.config._attn_implementation = attention
    return {"exporter": "torch.onnx (TorchScript)", "opset": 17, "inputs": names}


def _quantize_onnx(source: Path, out: Path) -> dict:
    """Dynamic quantization of the linear layers: int8 weights per channel, activations
    quantized per batch. The feed-forward down-projections (weight rows > columns) stay fp32:
    their post-GELU inputs have outliers, and quantizing them drops min cosine below 0.99."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source)).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    keep = [node.name for node in graph.node if node.op_type == "MatMul"
            and any(len(shapes.get(i, ())) == 2 and shapes[i][0] > shapes[i][1] for i in node.input)]
    root_logger = logging.getLogger()      # it warns on the root logger to pre-process first
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=keep)
    finally:
        root_logger.setLevel(level)
    return {"method": "onnxruntime quantize_dynamic", "weights": "QInt8 per channel",
            "fp32_matmuls": len(keep)}


def _export_openvino(source: Path, out: Path) -> dict:
    import openvino as ov

    ov.save_model(ov.convert_model(str(source)), str(out), compress_to_fp16=False)
    return {"method": "openvino.convert_model from ONNX", "weights": "fp32"}


def _quantize_openvino(st, source: Path, out: Path) -> dict:
    """Static int8 (NNCF post-training quantization) calibrated on bundled sample passages."""
    import nncf
    import openvino as ov

    names = _input_names(st)
    texts = sample_texts(CALIBRATION_PASSAGES, from_end=True)
    batches = []
    for start in range(0, len(texts), 8):
        features = st.preprocess(texts[start:start + 8])
        batches.append({n: features[n].numpy() for n in names})
    quantized = nncf.quantize(ov.convert_model(str(source)), nncf.Dataset(batches),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return {"method": "nncf.quantize (static, TRANSFORMER preset)",
            "calibration": f"last {len(texts)} passages of searchagent/sample/corpus.jsonl.gz"}


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
    config = _transformer(st).model.config
    names = _input_names(st)
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
