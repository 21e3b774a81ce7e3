"""The streaming BM25 build writes what BM25Index.build + save write, chunk by chunk; a build
refuses duplicate corpus ids (found in DuckDB, not in a set) naming the file and both lines."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from index.build import build_index
from retrievers.bm25 import BM25Index
from retrievers.bm25 import count_tokens
from retrievers.bm25_build import BM25Writer, build_bm25_files
from retrievers.bm25_live import LiveBM25
from retrievers.tokenize import tokenize
from searchagent.config import load_config
from searchagent.errors import InputError
from tests.conftest import sample_passages, sample_questions


def _docs() -> list[list[str]]:
    docs = [tokenize(f"{p['title']} {p['text']}") for p in sample_passages(400)]
    for row in (0, 57, 58, 399):            # empty documents, also at chunk edges
        docs[row] = []
    docs[200] = docs[200] + ["the"] * 40    # a big tf inside a big term
    return docs


def _assert_same_files(old, new) -> None:
    with zipfile.ZipFile(old / "postings.npz") as a, zipfile.ZipFile(new / "postings.npz") as b:
        assert a.namelist() == b.namelist() == ["indptr.npy", "indices.npy", "data.npy",
                                                "tf.npy", "doclen.npy"]
        for name in a.namelist():
            assert a.read(name) == b.read(name), name       # same header, same bytes
            assert b.getinfo(name).compress_type == zipfile.ZIP_STORED
    for name in ("vocab.json", "params.json"):
        assert (old / name).read_text() == (new / name).read_text(), name
    assert sorted(p.name for p in new.iterdir()) == ["params.json", "postings.npz",
                                                     "vocab.json"]    # no temporary files


# runs of 1 document and ranges of 1 posting apart (both at once took 20 s, these 6 s)
@pytest.mark.parametrize("chunk_docs, range_postings",
                         [(29, 300), (1000, 10**9), (1, 20), (29, 1)])
def test_streaming_build_equals_in_memory_build(tmp_path, chunk_docs, range_postings):
    docs = _docs()
    reference = BM25Index.build(docs)
    reference.save(tmp_path / "old")
    info = build_bm25_files(iter(docs), tmp_path / "new", chunk_docs=chunk_docs,
                            range_postings=range_postings)
    assert info == {"vocab": len(reference.vocab), "postings": len(reference.indices),
                    **reference.params}
    _assert_same_files(tmp_path / "old", tmp_path / "new")
    loaded = BM25Index.load(tmp_path / "new")
    live = LiveBM25.open(tmp_path / "new")
    assert live.fast_path and live.n_docs == len(docs)
    queries = [tokenize(q["question"]) for q in sample_questions()] + [["the"], ["zzz"], []]
    for query in queries:
        expected = reference.scores(query)
        np.testing.assert_array_equal(loaded.scores(query), expected)
        np.testing.assert_allclose(live.scores(query), expected, rtol=1e-6)
        rows, scores = reference.top_k(query, 10)
        for index in (loaded, live):
            got_rows, got_scores = index.top_k(query, 10)
            assert list(got_rows) == list(rows)
            np.testing.assert_allclose(got_scores, scores, rtol=1e-6)


def test_writer_fed_uneven_parts_writes_the_same_files(tmp_path):
    """The distributed build's path: counts arrive as numpy parts of any size (here 1 to 37
    documents, empty parts too) and the writer regroups them into runs of chunk_docs."""
    docs = _docs()
    BM25Index.build(docs).save(tmp_path / "old")
    writer = BM25Writer(tmp_path / "new", chunk_docs=50, range_postings=500)
    sizes, start = np.random.default_rng(0).integers(0, 38, size=len(docs)), 0
    for size in sizes:
        part = docs[start:start + size]
        for counts in count_tokens(part, writer.vocab):
            writer.add(*(np.asarray(c, dtype=np.int64) for c in counts))   # cast back
        start += size
    assert start >= len(docs)
    assert writer.finish() == build_bm25_files(docs, tmp_path / "ref")
    _assert_same_files(tmp_path / "old", tmp_path / "new")
    assert len(docs) // 87 <= len(writer.runs.bounds) - 1 <= len(docs) // 50 + 1  # regrouped


def test_large_counts_and_degenerate_corpora(tmp_path):
    cases = {"wide_tf": [["a"] * 70_000 + ["b"], ["b", "c"], []],   # tf needs int32
             "all_empty": [[], [], []],
             "one": [["x", "y", "x"]]}
    for name, docs in cases.items():
        BM25Index.build(docs).save(tmp_path / name / "old")
        build_bm25_files(docs, tmp_path / name / "new", chunk_docs=2, range_postings=1)
        _assert_same_files(tmp_path / name / "old", tmp_path / name / "new")
    with np.load(tmp_path / "wide_tf" / "new" / "postings.npz") as arrays:
        assert arrays["tf"].dtype == np.int32 and arrays["tf"].max() == 70_000


def test_build_index_uses_the_streaming_build(tmp_path, small_corpus):
    out = tmp_path / "idx"
    manifest = build_index(small_corpus, out, load_config(env={}, cli={"index": {
        "dense": False}}))
    docs = [tokenize(f"{p['title']} {p['text']}") for p in map(
        json.loads, small_corpus.read_text().splitlines())]
    reference = BM25Index.build(docs)
    reference.save(tmp_path / "old")
    _assert_same_files(tmp_path / "old", out / "bm25")
    assert manifest["components"]["bm25"]["postings"] == len(reference.indices)
    assert sorted(p.name for p in out.iterdir()) == ["bm25", "config.json", "docs.duckdb",
                                                     "manifest.json"]   # no sources file


@pytest.mark.parametrize("chunk_words", [0, 3])
def test_duplicate_id_in_a_build_names_file_and_both_lines(tmp_path, chunk_words):
    corpus = tmp_path / "c.jsonl"
    records = [{"id": f"p{i}", "text": f"passage number {i} with some words"} for i in range(9)]
    records[6]["id"] = "p2"              # line 7 repeats line 3's id
    records[4]["id"], records[8]["id"] = "4", 4     # line 9 repeats line 5's, as a number
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = load_config(env={}, cli={"index": {"dense": False, "chunk_words": chunk_words,
                                                "chunk_overlap": 0}})
    with pytest.raises(InputError) as err:
        build_index(corpus, tmp_path / "idx", config)
    assert (err.value.path, err.value.line, err.value.field) == (str(corpus), 7, "id")
    assert "duplicate id 'p2'" in str(err.value) and "first on line 3" in str(err.value)
    assert str(err.value).startswith(f"{corpus}, line 7, field 'id'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]
