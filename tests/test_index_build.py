"""Building an index: contents, manifest checks, atomicity, and searching it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from index.build import build_index
from index.manifest import read_manifest, verify_index
from retrievers.docstore import DocStore
from retrievers.searcher import Searcher
from searchagent.config import load_config
from searchagent.errors import IndexFormatError, InputError


def test_manifest_records_everything(small_index):
    manifest = read_manifest(small_index)
    assert manifest["counts"]["passages"] == 400
    assert len(manifest["corpus"]["sha256"]) == 64
    dense = manifest["components"]["dense"]
    assert dense["dim"] == 384 and dense["dtype"] == "float16"
    assert dense["index"] == {"kind": "faiss", "factory": "Flat", "ntotal": 400}
    assert manifest["components"]["bm25"]["vocab"] > 1000
    assert {"docs.duckdb", "bm25/postings.npz", "dense/embeddings.npy", "dense/faiss.index",
            "config.json"} <= set(manifest["files"])
    assert json.loads((small_index / "config.json").read_text())["index"]["faiss"] == "Flat"
    vectors = np.load(small_index / "dense/embeddings.npy")
    assert vectors.shape == (400, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1, atol=1e-2)


def test_each_mode_finds_the_passage_by_its_own_words(searcher):
    passage = DocStore(searcher.folder / "docs.duckdb").fetch([123])[123]
    query = f"{passage.title} {' '.join(passage.text.split()[:12])}"
    for mode in ("bm25", "dense", "hybrid"):
        hits = searcher.search(query, 5, mode)
        assert hits[0].id == passage.id, mode
        assert len(hits) == 5 and hits[0].score >= hits[-1].score


def test_search_input_errors(searcher, tmp_path):
    with pytest.raises(InputError, match="empty query"):
        searcher.search("   ", 5)
    with pytest.raises(InputError, match="k must be positive"):
        searcher.search("x", 0)
    with pytest.raises(InputError, match="unknown retrieval mode"):
        searcher.search("x", 3, "fuzzy")
    with pytest.raises(IndexFormatError, match="not found"):
        Searcher(tmp_path / "nowhere")


def test_bad_corpus_leaves_nothing_behind(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "fine"}\n{"id": "a", "text": "dup"}\n')
    out = tmp_path / "idx"
    with pytest.raises(InputError, match="line 2.*duplicate"):
        build_index(corpus, out, load_config(env={}, cli={"index": {"dense": False}}))
    assert list(tmp_path.iterdir()) == [corpus]


def test_existing_output_needs_overwrite(tmp_path, small_corpus):
    out = tmp_path / "idx"
    config = load_config(env={}, cli={"index": {"dense": False}})
    build_index(small_corpus, out, config)
    with pytest.raises(InputError, match="already exists"):
        build_index(small_corpus, out, config)
    build_index(small_corpus, out, config, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_truncated_or_corrupted_files_are_refused(tmp_path, small_index):
    copy = tmp_path / "copy"
    shutil.copytree(small_index, copy)
    target = copy / "bm25" / "vocab.json"
    data = target.read_bytes()
    target.write_bytes(data[:-10])
    with pytest.raises(IndexFormatError, match="truncated"):
        verify_index(copy)
    target.write_bytes(data[:-1] + b"]" if data[-1:] != b"]" else data[:-2] + b"x]")
    with pytest.raises(IndexFormatError, match="sha256"):
        Searcher(copy)
    verify_index(copy, "size")  # a size-only check cannot see same-size corruption
    (copy / "manifest.json").write_text("{broken")
    with pytest.raises(IndexFormatError, match="corrupt"):
        Searcher(copy)


def test_bm25_only_index_refuses_dense_search(tmp_path, small_corpus):
    out = tmp_path / "bm25only"
    build_index(small_corpus, out, load_config(env={}, cli={"index": {"dense": False}}))
    searcher = Searcher(out)
    assert searcher.search("film director", 3, "bm25")
    assert searcher.search("film director", 3, "hybrid")  # hybrid degrades to what exists
    with pytest.raises(Exception, match="built without dense"):
        searcher.search("film director", 3, "dense")


def test_dense_only_hnsw_float32_with_chunking(tmp_path):
    from tests.conftest import sample_passages

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in sample_passages(60)))
    out = tmp_path / "idx"
    config = load_config(env={}, cli={"index": {"bm25": False, "faiss": "HNSW16",
                                                "dtype": "float32", "chunk_words": 40,
                                                "chunk_overlap": 10}})
    manifest = build_index(corpus, out, config)
    assert set(manifest["components"]) == {"dense"}
    assert manifest["components"]["dense"]["index"]["factory"] == "HNSW16"
    assert manifest["counts"]["passages"] > 60           # long passages were split
    assert np.load(out / "dense/embeddings.npy").dtype == np.float32
    searcher = Searcher(out, config)
    hits = searcher.search("a singer-songwriter group from Birmingham, Alabama", 3, "dense")
    assert hits[0].title == "Act of Congress (music group)" and hits[0].id.endswith("#0")
