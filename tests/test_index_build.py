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
    for mode in ("dense", "hybrid"):       # a huge k asked faiss for 10^20 rows (a crash)
        assert len(searcher.search("Tinted Windows", 10 ** 20, mode)) == 400


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
    damaged = tmp_path / "damaged"                   # one byte of an .npy header inside
    shutil.copytree(small_index, damaged)            # the .npz: a tokenize traceback
    postings = damaged / "bm25" / "postings.npz"
    data = postings.read_bytes()
    brace = data.index(b"}", data.index(b"{'descr'"))
    postings.write_bytes(data[:brace] + b" " + data[brace + 1:])
    with pytest.raises(IndexFormatError, match=r"bm25/postings\.npz"):
        Searcher(damaged, verify="size").search("film director", 3, "bm25")


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


def dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_rerun_cleans_temp_folders_of_dead_builds(tmp_path, small_corpus):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "idx"
    # a real build killed with -9 while it is embedding
    code = ("import sys; from index.build import build_index; "
            "build_index(sys.argv[1], sys.argv[2])")
    process = subprocess.Popen([sys.executable, "-c", code, str(small_corpus), str(out)],
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".idx.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed = list(tmp_path.glob(".idx.tmp-*"))
    assert len(killed) == 1 and not out.exists()
    old_style = tmp_path / f".idx.tmp-{dead_pid()}-1700000000"      # before pid + host names
    old_style.mkdir()
    alive = tmp_path / f".idx.tmp-{os.getpid()}-1700000000"          # a build still running
    alive.mkdir()
    other = tmp_path / ".idx.tmp-1-1700000000-some-other-host"       # another machine's
    other.mkdir()
    build_index(small_corpus, out, load_config(env={}, cli={"index": {"dense": False}}))
    assert not killed[0].exists() and not old_style.exists()
    assert alive.exists() and other.exists() and (out / "manifest.json").is_file()


@pytest.mark.parametrize("name", ["docs.duckdb", "bm25/postings.npz"])
def test_flipped_byte_with_size_check_is_a_clear_error(tmp_path, small_corpus, name):
    out = tmp_path / "idx"
    build_index(small_corpus, out, load_config(env={}, cli={"index": {"dense": False}}))
    target = out / name
    original = target.read_bytes()
    failures = 0
    for position in (0.02, 0.3, 0.5, 0.7, 0.9):
        data = bytearray(original)
        data[int(len(data) * position)] ^= 0xFF
        target.write_bytes(bytes(data))
        try:
            searcher = Searcher(out, verify="size")       # sizes match: corruption unseen
            for query in ("film director", "band first performance", "river city"):
                searcher.search(query, 5, "bm25")
            searcher.close()
        except IndexFormatError as exc:
            assert name in str(exc) and "corrupt" in str(exc).lower(), exc
            failures += 1
    assert failures                                     # the damage was found, clearly


def test_a_manifest_of_the_wrong_shape_is_a_clear_error(tmp_path, small_index):
    """Valid JSON of the wrong shape gave AttributeError / KeyError tracebacks, or an
    index that silently skipped its checks and found nothing."""
    import json
    import shutil

    good = json.loads((small_index / "manifest.json").read_text())
    for name, manifest in (("list", []), ("files", {**good, "files": []}),
                           ("no-size", {**good, "files": {"docs.duckdb": {}}}),
                           ("no-components", {k: v for k, v in good.items()
                                              if k != "components"})):
        folder = tmp_path / name
        shutil.copytree(small_index, folder)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(IndexFormatError, match="corrupt .*manifest.json"):
            Searcher(folder)
