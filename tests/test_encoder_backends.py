"""Embedding backends: same vectors and neighbours as torch fp32, auto choice, clear errors.

A backend whose packages are absent is skipped with the extra to install as the reason.
Exports go to one temporary cache for the whole module (made once, a few seconds each).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrievers import encoder as encoder_module
from retrievers import encoder_backends as eb
from retrievers.encoder import Encoder
from retrievers.encoder_exports import ensure_export
from searchagent.errors import BackendError, IndexFormatError
from tests.conftest import sample_passages, sample_questions

FP32_MIN_COSINE = 0.999
INT8_MIN_COSINE = 0.98      # int8 is held to mean >= 0.99; its minimum is printed
PASSAGES, QUERIES = 120, 8


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("encoder-cache")


@pytest.fixture(scope="module")
def texts():
    passages = [f"{p['title']}\n{p['text']}" for p in sample_passages(PASSAGES)]
    return passages, [q["question"] for q in sample_questions()[:QUERIES]]


@pytest.fixture(scope="module")
def reference(texts, cache):
    encoder = Encoder(backend="torch", device="cpu", cache_dir=cache)
    passages, queries = texts
    return encoder.encode(passages, 32), encoder.encode(queries, 32)


def skip_if_missing(backend: str) -> None:
    missing = eb.missing_packages(backend)
    if missing:
        pytest.skip(f"{backend}: {', '.join(missing)} not installed "
                    f"(pip install 'searchagent[{eb.EXTRA[backend]}]')")


def top10(queries: np.ndarray, passages: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ passages.T), axis=1)[:, :10]


@pytest.mark.parametrize("backend", eb.BACKENDS[1:])
def test_backend_matches_torch(backend, texts, reference, cache):
    skip_if_missing(backend)
    encoder = Encoder(backend=backend, cache_dir=cache)
    passages, queries = texts
    vectors, query_vectors = encoder.encode(passages, 32), encoder.encode(queries, 32)
    ref_passages, ref_queries = reference

    assert vectors.dtype == np.float32 and vectors.shape == ref_passages.shape
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cosines = np.concatenate([np.sum(vectors * ref_passages, axis=1),
                              np.sum(query_vectors * ref_queries, axis=1)])
    ours, theirs = top10(query_vectors, vectors), top10(ref_queries, ref_passages)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ours, theirs)])
    print(f"\n{backend}: cosine to torch fp32 min {cosines.min():.4f} mean {cosines.mean():.4f};"
          f" overlap@10 {overlap:.3f}")
    if backend.endswith("int8"):
        assert cosines.min() >= INT8_MIN_COSINE and cosines.mean() >= 0.99
        assert overlap >= 0.8
    else:
        assert cosines.min() >= FP32_MIN_COSINE
        assert overlap >= 0.95

    assert encoder.backend == backend and encoder.model_file.startswith(str(cache))
    manifest = encoder.manifest()
    assert manifest["backend"] == backend and manifest["model_file"] == encoder.model_file
    assert manifest["model_file_sha256"] == eb.sha256(Path(encoder.model_file))
    assert manifest["precision"] == ("int8" if backend.endswith("int8") else "fp32")


def test_export_is_reused_then_redone_for_other_weights(cache):
    skip_if_missing("onnx")
    first = Encoder(backend="onnx", cache_dir=cache)
    info_path = Path(first.model_file).parent / "export.json"
    created = json.loads(info_path.read_text())["created"]
    assert Encoder(backend="onnx", cache_dir=cache).model_file == first.model_file
    assert json.loads(info_path.read_text())["created"] == created      # not exported again

    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "source_sha256": "0" * 64}))
    with pytest.raises(BackendError, match="needs the torch model"):
        ensure_export(first.model, first.path, "onnx", cache)   # its forward is compiled
    torch_encoder = Encoder(backend="torch", device="cpu", cache_dir=cache)
    ensure_export(torch_encoder.model, torch_encoder.path, "onnx", cache)
    assert json.loads(info_path.read_text())["source_sha256"] == first.source_sha256


def test_auto_picks_a_backend_and_caches_the_decision(cache, monkeypatch, tmp_path):
    monkeypatch.setattr(encoder_module, "AUTO_PASSAGES", 16)     # keep the test short
    encoder = Encoder(backend="auto", device="cpu", cache_dir=cache)
    decision = encoder.auto_decision
    assert encoder.backend == decision["backend"]
    assert not eb.missing_packages(encoder.backend)
    assert encoder.requested_backend == "auto" and encoder.manifest()["auto"]["backend"] == encoder.backend
    assert "torch" in decision["measured"]
    chosen = decision["measured"][encoder.backend]
    bar = encoder_module.AUTO_MIN_COSINE
    assert chosen["min_cosine"] >= bar
    assert all(chosen["passages_per_s"] >= m["passages_per_s"]
               for m in decision["measured"].values() if m["min_cosine"] >= bar)
    saved = json.loads(Path(decision["decision_file"]).read_text())
    assert saved["backend"] == encoder.backend
    print(f"\nauto chose {encoder.backend}: {json.dumps(decision['measured'])}")

    def no_measuring(self, key):
        raise AssertionError("the cached decision should have been used")

    monkeypatch.setattr(Encoder, "_measure_backends", no_measuring)
    again = Encoder(backend="auto", device="cpu", cache_dir=cache)
    assert again.backend == encoder.backend
    # a build measures in the user's cache and ships only the chosen export: every auto
    # build measured again in its own index and shipped every backend (~264 MB)
    index_cache = tmp_path / "index" / "encoder-cache"
    built = Encoder(backend="auto", device="cpu", cache_dir=index_cache, measure_dir=cache)
    assert built.backend == encoder.backend
    shipped = sorted(p.name for p in index_cache.iterdir()) if index_cache.exists() else []
    assert shipped == ([] if built.backend == "torch" else
                       [Path(encoder.model_file).parent.name])
    if shipped:                                         # copied, not exported again
        assert (index_cache / shipped[0] / "export.json").read_text() == \
            (Path(encoder.model_file).parent / "export.json").read_text()


def test_missing_package_names_the_extra(monkeypatch, tmp_path):
    real = eb.importlib.util.find_spec
    monkeypatch.setattr(eb.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnxruntime", "openvino") else real(name, *a))
    with pytest.raises(BackendError, match=r"needs onnxruntime.*searchagent\[onnx\]"):
        Encoder(backend="onnx-int8", cache_dir=tmp_path)
    with pytest.raises(BackendError, match=r"needs openvino.*searchagent\[openvino\]"):
        Encoder(backend="openvino", cache_dir=tmp_path)
    with pytest.raises(BackendError, match="unknown embedding backend"):
        Encoder(backend="tensorrt", cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())        # failed before loading or exporting anything


def test_overlapped_encoding_matches_sentence_transformers(texts, reference, cache):
    """The CUDA path's pipeline (tokenize the next batch while the model runs this one), run
    on the CPU: the same vectors in input order, for batches that do not divide the texts."""
    encoder = Encoder(backend="torch", device="cpu", cache_dir=cache)
    passages, queries = texts
    mixed = [queries[0], *passages[:50], *queries[1:]]
    vectors = encoder_module.encode_overlapped(encoder.model, mixed, 16, encoder.dim)
    assert vectors.dtype == np.float32 and vectors.shape == (len(mixed), encoder.dim)
    np.testing.assert_allclose(vectors[1:51], reference[0][:50], atol=1e-5)
    np.testing.assert_allclose(vectors[[0, *range(51, len(mixed))]], reference[1], atol=1e-5)
    assert encoder_module.encode_overlapped(encoder.model, [], 16, encoder.dim).shape == (0, 384)


def test_cpu_backends_refuse_cuda(tmp_path):
    skip_if_missing("onnx")
    with pytest.raises(BackendError, match="runs on the CPU"):
        Encoder(backend="onnx", device="cuda", cache_dir=tmp_path)


def test_index_built_with_a_backend_encodes_its_queries_with_it(small_corpus, searcher,
                                                                 tmp_path):
    """``index build --embed-backend openvino``: the manifest records it, the export lives in
    the index, queries use it, and dense results equal the torch-built index's."""
    skip_if_missing("openvino")
    from searchagent.cli import main
    from retrievers.searcher import Searcher

    out = tmp_path / "ov-index"
    assert main(["index", "build", str(small_corpus), "--out", str(out), "--dense",
                 "--embed-backend", "openvino"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    recorded = manifest["components"]["dense"]["encoder"]
    assert recorded["backend"] == "openvino" and recorded["model_file"].startswith(
        "encoder-cache/")
    assert any(name.startswith("encoder-cache/") for name in manifest["files"])
    opened = Searcher(out)
    try:
        assert opened.encoder.backend == "openvino"
        for question in [q["question"] for q in sample_questions()[:5]]:
            assert [h.id for h in opened.search(question, 5, "dense")] == \
                [h.id for h in searcher.search(question, 5, "dense")]
    finally:
        opened.close()
    # other weights than the build's (an upgraded model package): queries were encoded
    # silently with them, and ONNX / OpenVINO re-exported into the index while searching
    manifest["components"]["dense"]["encoder"]["source_sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(str(p) for p in out.rglob("*"))
    with pytest.raises(IndexFormatError, match="not the one the index was built with"):
        Searcher(out).search("who directed Insomnia", 3, "dense")
    assert sorted(str(p) for p in out.rglob("*")) == before
