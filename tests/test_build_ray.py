"""``build_index(..., engine="ray")`` writes the same index as the local build."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index.build import build_index
from retrievers.bm25 import BM25Index
from retrievers.docstore import DocStore
from retrievers.searcher import Searcher
from retrievers.tokenize import tokenize
from searchagent.config import load_config
from searchagent.errors import InputError
from tests.conftest import sample_passages

QUERIES = ["film director born", "band first album", "river flows through the city",
           "football club league", "a singer-songwriter group from Birmingham, Alabama"]


@pytest.fixture(scope="module")
def ray_session():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        print(f"skipping: Ray Data is not installed ({exc}); pip install 'searchagent[ray]'")
        pytest.skip(f"Ray Data is not installed: {exc}")
    started = not ray.is_initialized()
    if started:      # one small Ray for the module; build_index leaves a running one up
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def both(ray_session, tmp_path_factory):
    import index.build_ray_read as ray_read

    folder = tmp_path_factory.mktemp("ray-build")
    corpus = folder / "corpus.jsonl"
    passages = sample_passages(64)
    passages[5] = {"id": passages[5]["id"], "contents": f"{passages[5]['title']}\n"
                   f"{passages[5]['text']}"}                       # the other line shape
    corpus.write_text("\n".join(json.dumps(p) for p in passages) + "\n\n")  # a blank line
    config = load_config(env={}, cli={"index": {"dtype": "float32", "batch_size": 16}})
    local = build_index(corpus, folder / "local", config)
    with pytest.MonkeyPatch.context() as patch:          # several read tasks
        patch.setattr(ray_read, "RANGE_BYTES", corpus.stat().st_size // 5)
        ray_manifest = build_index(corpus, folder / "ray", config, engine="ray")
    return folder / "local", folder / "ray", local, ray_manifest, config


def test_same_doc_store_bm25_and_vectors(both):
    local, remote, local_manifest, manifest = both[:4]
    assert manifest["engine"] == "ray" and manifest["ray"]["version"]
    assert manifest["counts"] == local_manifest["counts"] == {"passages": 64}
    assert manifest["components"]["bm25"] == local_manifest["components"]["bm25"]
    for key in ("model", "dim", "dtype", "index"):
        assert manifest["components"]["dense"][key] == local_manifest["components"]["dense"][key]
    assert set(manifest["files"]) == set(local_manifest["files"])
    for name in ("config.json", "bm25/vocab.json", "bm25/params.json"):     # byte for byte
        assert manifest["files"][name] == local_manifest["files"][name], name
    with np.load(local / "bm25/postings.npz") as x, np.load(remote / "bm25/postings.npz") as y:
        assert x.files == y.files
        for name in x.files:            # indptr, indices, data (impacts), tf, doclen
            np.testing.assert_array_equal(x[name], y[name])
            assert x[name].dtype == y[name].dtype
    a, b = DocStore(local / "docs.duckdb"), DocStore(remote / "docs.duckdb")
    rows = list(range(a.size))
    assert a.size == b.size and a.fetch(rows) == b.fetch(rows)
    assert list(a.iter_texts()) == list(b.iter_texts())
    a.close(), b.close()
    x, y = BM25Index.load(local / "bm25"), BM25Index.load(remote / "bm25")
    for query in QUERIES:
        np.testing.assert_array_equal(x.scores(tokenize(query)), y.scores(tokenize(query)))
    u, v = np.load(local / "dense/embeddings.npy"), np.load(remote / "dense/embeddings.npy")
    assert u.shape == v.shape == (64, 384) and v.dtype == np.float32
    np.testing.assert_allclose(u, v, atol=1e-5)


def test_same_search_results(both):
    local, remote, _, _, config = both
    one, two = Searcher(local, config), Searcher(remote, config)
    for query in QUERIES:
        for mode in ("bm25", "dense", "hybrid"):
            assert [h.id for h in one.search(query, 5, mode)] == \
                [h.id for h in two.search(query, 5, mode)], (query, mode)
    one.close(), two.close()


def test_spann_stages_on_ray_write_the_same_folder(ray_session, tmp_path, monkeypatch):
    import index.build_ray_spann as ray_spann
    from index.spann import build_spann
    from index.spann.replication import BLOCK

    monkeypatch.setattr(ray_spann, "ROWS_PER_TASK", 2 * BLOCK)      # several tasks each
    monkeypatch.setattr(ray_spann, "ENTRIES_PER_WRITE", 5000)
    # the root's assignment in 4 tasks of whole blocks (the root's children, ~400 vectors,
    # stay one block in the workers, whose BLOCK is not patched)
    monkeypatch.setattr(ray_spann.clustering, "BLOCK", 2048)
    monkeypatch.setattr(ray_spann, "ROOT_BLOCKS_PER_TASK", 3)
    vectors = np.random.default_rng(3).standard_normal((5 * BLOCK + 123, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.save(tmp_path / "vectors.npy", vectors)
    mapped = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    local = build_spann(mapped, tmp_path / "local", progress=False)
    remote = build_spann(mapped, tmp_path / "ray", progress=False,
                         stages=ray_spann.RayStages(tmp_path / "vectors.npy"))
    assert remote["n_entries"] == local["n_entries"] > len(vectors)        # replicas too
    files = [json.loads((tmp_path / side / "spann.json").read_text())["files"]
             for side in ("local", "ray")]
    assert files[0] == files[1]                      # every file, size and sha256


def test_spann_index_built_on_ray_searches_like_the_local_one(ray_session, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(p) for p in sample_passages(48)) + "\n")
    config = load_config(env={}, cli={"index": {"faiss": "spann", "bm25": False,
                                                "batch_size": 16}})
    local = build_index(corpus, tmp_path / "local", config)
    remote = build_index(corpus, tmp_path / "ray", config, engine="ray")
    spann = [m["components"]["dense"]["index"] for m in (local, remote)]
    assert spann[0]["kind"] == "spann" and spann[0]["n_entries"] == spann[1]["n_entries"]
    one, two = Searcher(tmp_path / "local", config), Searcher(tmp_path / "ray", config)
    for query in QUERIES:
        assert [h.id for h in one.search(query, 5, "dense")] == \
            [h.id for h in two.search(query, 5, "dense")], query
    one.close(), two.close()


def test_plain_text_corpus_is_read_in_ranges_of_whole_lines(tmp_path):
    from index.build_ray_read import _read_lines, line_ranges

    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"b": 22}\r\n{"c": 3}\r{"d": 4444}\n\n\n{"e": 5}')
    with open(path, encoding="utf-8") as handle:                 # text mode's numbering
        expected = [(n, line) for n, line in enumerate(handle, 1) if line.strip()]
    for range_bytes in (1, 5, 9, 12, 30, 1000):
        ranges = line_ranges(str(path), range_bytes)
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert len(ranges) > 1 or range_bytes == 1000
        got = [(n, raw.decode()) for start, end, first in ranges
               for block in _read_lines(str(path), "c", start, end, first)
               for n, raw in zip(block["line"].to_pylist(), block["raw"].to_pylist())]
        assert got == expected, range_bytes


def test_read_options_reach_ray_as_named_parameters(ray_session, tmp_path, monkeypatch):
    """Pinning and retries are Ray options, not swallowed as arguments of the read."""
    import functools
    import inspect

    import index.build_ray_read as ray_read
    from index.build_ray_session import RETRIES

    real, calls = ray_session.data.read_datasource, []

    @functools.wraps(real)
    def recording(source, **options):
        calls.append(options)
        return real(source, **options)

    monkeypatch.setattr(ray_session.data, "read_datasource", recording)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps(p) for p in sample_passages(12)) + "\n")
    blocks = list(ray_read.parsed_blocks(corpus, 0, 0, True))
    assert sum(len(block) for block in blocks) == 12
    named = {name for name, p in inspect.signature(real).parameters.items()
             if p.kind is p.KEYWORD_ONLY}
    assert len(calls) == 1 and set(calls[0]) <= named, set(calls[0]) - named
    assert calls[0]["ray_remote_args"]["max_retries"] == RETRIES


def test_bad_lines_fail_as_locally_and_leave_nothing(ray_session, tmp_path, monkeypatch):
    import index.build_ray_read as ray_read

    monkeypatch.setattr(ray_read, "RANGE_BYTES", 2000)   # the bad lines in later read tasks
    corpus = tmp_path / "c.jsonl"
    lines = [json.dumps(p) for p in sample_passages(30)]
    plain = load_config(env={}, cli={"index": {"dense": False}})
    chunked = load_config(env={}, cli={"index": {"dense": False, "chunk_words": 50}})
    for changes, expected, config in (
            ({17: '{"id": "x", "text": 3}'}, r"line 18, field 'text': must", plain),
            ({17: lines[3]}, r"line 18, field 'id': duplicate id", plain),
            ({17: '{"id": "x", "te'}, r"line 18: malformed JSON", plain),
            ({9: lines[2], 20: "[1]"}, r"line (10|21)", plain),      # the first of two
            ({17: '{"id": "x#2", "text": "t"}'}, r"line 18, field 'id': 'x#2' ends in", chunked),
            ({17: '{"id": "x", "text": "caf\udce9"}'},              # a raw Latin-1 byte: a
             r"line 18, field 'text': not valid UTF-8", plain),    # traceback from Arrow
            # after a backslash Ray read it as an escaped one: built 'caf\\udce9', not refused
            ({17: '{"id": "x", "text": "caf\\\udce9 au lait"}'},
             r"line 18: malformed JSON \(Invalid \\escape", plain),
            ({17: '{"id": "x\udce9", "text": "t"}'},       # DuckDB's error on a staging file
             r"line 18, field 'id': not valid UTF-8", plain)):
        text = "\n".join(changes.get(i, line) for i, line in enumerate(lines)) + "\n"
        corpus.write_bytes(text.encode("utf-8", "surrogateescape"))
        with pytest.raises(InputError, match=r"c\.jsonl, " + expected) as local:
            build_index(corpus, tmp_path / "idx", config)
        with pytest.raises(InputError) as remote:
            build_index(corpus, tmp_path / "idx", config, engine="ray")
        assert str(remote.value) == str(local.value)
        assert (remote.value.line, remote.value.field) == (local.value.line, local.value.field)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_without_ray_the_error_says_what_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)           # as if not installed
    monkeypatch.delitem(sys.modules, "index.build_ray", raising=False)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "fine"}\n')
    with pytest.raises(InputError, match=r"pip install 'searchagent\[ray\]'"):
        build_index(corpus, tmp_path / "idx", engine="ray")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_a_factory_faiss_cannot_make_is_refused_before_ray_starts(tmp_path, monkeypatch):
    """The Ray build learned the vectors' size from its embedding actors, so `--faiss PQ7`
    (7 does not divide 384) failed only after the whole corpus was embedded."""
    from searchagent.models import embedder_dim

    assert embedder_dim() == 384                   # read from the model's files, not loaded
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in sample_passages(5)))
    config = load_config(env={}, cli={"index": {"faiss": "PQ7"}})
    pytest.importorskip("ray.data", reason="Ray Data is not installed")
    import index.build_ray as build_ray

    def no_session(*args, **kwargs):
        raise AssertionError("a Ray session was opened for a build that must be refused")

    monkeypatch.setattr(build_ray, "ray_session", no_session)
    with pytest.raises(InputError, match=r"--faiss PQ7: faiss cannot make this index for "
                                         r"384-d vectors"):
        build_index(corpus, tmp_path / "idx", config, engine="ray")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_a_parsed_block_ray_splits_and_a_linked_gzip_build_as_locally(ray_session, tmp_path):
    """Ray Data splits a map_batches output over its block size target: the driver took
    each piece for a whole block (its term ids index the block's vocabulary, begun in the
    earlier pieces) and failed, or could have counted the wrong terms. A corpus.jsonl.gz
    that is a link to a hash-named blob (a Hugging Face cache) was read as plain text."""
    import gzip
    import os
    import random

    from ray.data import DataContext

    rng = random.Random(5)
    rows = [{"id": f"d{i}", "title": "", "text": " ".join(
        [f"t{i}x{j}" for j in range(200)] + rng.choices(["alpha", "beta", "gamma"], k=20))}
        for i in range(300)]
    (tmp_path / "blobs").mkdir()
    blob = tmp_path / "blobs" / "3f2a9c"
    blob.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    corpus = tmp_path / "corpus.jsonl.gz"
    os.symlink(blob, corpus)
    config = load_config(env={}, cli={"index": {"dense": False}})
    build_index(corpus, tmp_path / "local", config)
    context = DataContext.get_current()
    target = context.target_max_block_size
    context.target_max_block_size = 64 << 10         # parse outputs of ~1 MB: split
    try:
        build_index(corpus, tmp_path / "ray", config, engine="ray")
    finally:
        context.target_max_block_size = target
    with np.load(tmp_path / "local/bm25/postings.npz") as x, \
            np.load(tmp_path / "ray/bm25/postings.npz") as y:
        for name in x.files:
            np.testing.assert_array_equal(x[name], y[name])
    assert (tmp_path / "local/bm25/vocab.json").read_bytes() == \
        (tmp_path / "ray/bm25/vocab.json").read_bytes()
    x, y = BM25Index.load(tmp_path / "local/bm25"), BM25Index.load(tmp_path / "ray/bm25")
    for query in ("t5x3 alpha", "t250x7", "t299x199 beta"):
        np.testing.assert_array_equal(x.scores(tokenize(query)), y.scores(tokenize(query)))


def test_an_address_nothing_answers_and_gpus_for_a_bm25_build_are_refused(tmp_path, capsys):
    """--ray-address 127.0.0.1:1 made ray.init retry for about 14 minutes; --num-gpus on a
    build that embeds nothing was accepted (or refused only after Ray had started)."""
    from searchagent.cli import main

    pytest.importorskip("ray.data", reason="Ray Data is not installed")
    from index.build_ray_session import check_reachable

    with pytest.raises(InputError, match=r"--ray-address 127.0.0.1:1: no Ray cluster answers"):
        check_reachable("127.0.0.1:1")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "fine"}\n')
    assert main(["index", "build", str(corpus), "--out", str(tmp_path / "idx"), "--bm25",
                 "--engine", "ray", "--num-gpus", "1"]) == 2
    assert "--num-gpus applies to the dense index" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]
