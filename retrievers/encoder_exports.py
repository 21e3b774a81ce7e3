"""Making the ONNX and OpenVINO exports the embedding backends run
(``encoder_backends``): once per model and backend, from the local model (never
downloaded), into ``<cache root>/<model>-<backend>/`` with an ``export.json`` naming the
source weights' SHA-256 (other weights: exported again), or copied from another cache that
holds them (``auto``'s measurements).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from retrievers import encoder_backends as eb
from searchagent.errors import BackendError, IndexFormatError


def ensure_export(st, source: str, backend: str, root: Path, make: bool = True,
                  copy_from: Path | None = None) -> Path:
    """The exported model file for ``backend``, made now if absent or made from other
    weights (``make=False``: an error instead, for an index's own cache when searched;
    ``copy_from``: another cache whose export of the same weights is copied, not redone)."""
    folder = root / f"{eb.model_name(source)}-{backend}"
    source_sha = eb.source_sha256(source)
    info = eb.read_json(folder / "export.json")
    target = folder / eb.FILES[backend]
    if info.get("source_sha256") == source_sha and target.is_file():
        return target
    if not make:
        raise IndexFormatError(f"{folder}: the index's {backend} export of its embedder is "
                               "missing or was made from other weights; rebuild the index")
    made = copy_from / folder.name if copy_from is not None else None
    if made is not None and made != folder and \
            eb.read_json(made / "export.json").get("source_sha256") == source_sha:
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
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
        started, out = time.perf_counter(), work / eb.FILES[backend]
        settings = (_export_onnx(st, out) if backend == "onnx" else
                    _quantize_onnx(base, out) if backend == "onnx-int8" else
                    _export_openvino(base, out) if backend == "openvino" else
                    _quantize_openvino(st, base, out))
        meta = {"backend": backend, "source": source, "source_sha256": source_sha,
                "file": eb.FILES[backend], "file_sha256": eb.sha256(out),
                "settings": settings, "versions": _versions(backend),
                "seconds": round(time.perf_counter() - started, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (work / "export.json").write_text(json.dumps(meta, indent=2))
        if folder.exists():             # stale export (other weights): replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(work, folder)
        except OSError:                 # another process finished the same export first
            if not (folder / eb.FILES[backend]).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _versions(backend: str) -> dict:
    from importlib.metadata import distributions

    wanted = {"torch", "transformers", "sentence-transformers", *eb.NEEDS.get(backend, ())}
    return {d.metadata["Name"].lower(): d.version for d in distributions()
            if (d.metadata["Name"] or "").lower() in wanted}


def _export_onnx(st, out: Path) -> dict:
    """TorchScript export of the transformer (eager attention traces to plain ONNX ops)."""
    import torch

    model = eb.transformer_of(st).model
    if not isinstance(model, torch.nn.Module) or not any(True for _ in model.parameters()):
        raise BackendError("exporting needs the torch model, not an already compiled backend")
    names = eb.input_names(st)

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

    names = eb.input_names(st)
    texts = eb.sample_texts(eb.CALIBRATION_PASSAGES, from_end=True)
    batches = []
    for start in range(0, len(texts), 8):
        features = st.preprocess(texts[start:start + 8])
        batches.append({n: features[n].numpy() for n in names})
    quantized = nncf.quantize(ov.convert_model(str(source)), nncf.Dataset(batches),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return {"method": "nncf.quantize (static, TRANSFORMER preset)",
            "calibration": f"last {len(texts)} passages of searchagent/sample/corpus.jsonl.gz"}
