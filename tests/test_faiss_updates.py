"""A FAISS index under updates (``index/dense_live.py``): compaction folds the appended
vector segments into ``dense/faiss-N.index`` (an open used to re-add every update's
vectors, which HNSW pays for at insertion speed), and a server's next generation copies
the previous FAISS index instead of reopening it from disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from index.build import build_index
from index.dense_live import LiveFaiss
from index.faiss_index import FaissIndex
from index.journal import FAULT_ENV
from index.living import LivingIndex
from retrievers.live_searcher import LiveSearcher
from retrievers.searcher import Searcher
from searchagent.config import Config
from searchagent.types import Passage
from tests.conftest import sample_passages

ROOT = Path(__file__).resolve().parents[1]
BASE, EXTRA = 40, 30


@pytest.fixture(scope="module")
def pool() -> list[Passage]:
    return [Passage(id=p["id"], title=p["title"], text=p["text"])
            for p in sample_passages(BASE + EXTRA)]


@pytest.fixture(scope="module", params=["Flat", "HNSW32"])
def built(request, pool, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(f"faiss-{request.param}")
    corpus = folder / "base.jsonl"
    corpus.write_text("".join(json.dumps(p.__dict__) + "\n" for p in pool[:BASE]))
    config = Config().updated({"index": {"faiss": request.param, "dtype": "float32"}}, "test")
    build_index(corpus, folder / "index", config)
    return folder / "index"


@pytest.fixture
def index_dir(built, tmp_path) -> Path:
    shutil.copytree(built, tmp_path / "index")
    return tmp_path / "index"


def dense_hits(searcher, queries: list[str]) -> list[list[tuple[str, float]]]:
    return [[(h.id, round(h.score, 4)) for h in searcher.search(q, 5, "dense")]
            for q in queries]


def test_compaction_folds_the_segments_and_drops_what_no_reader_reads(index_dir, pool):
    queries = [pool[BASE + 3].title, pool[BASE + 20].text, pool[7].title]
    with LivingIndex(index_dir) as living:
        living.add(pool[BASE:BASE + 20])                                  # generation 1
        living.add(pool[BASE + 20:])                                      # generation 2
        living.delete([pool[7].id])                                       # generation 3
        held = Searcher(index_dir, docstore=living.docstore)              # reads generation 3
        before = dense_hits(held, queries)
        vectors = held.stored_vectors[list(range(BASE + EXTRA))]
        compacted = living.compact(drop_old=True)                         # generation 4
        assert "dense/faiss.index" not in compacted["removed"]            # held reads it
        assert (index_dir / "dense" / "faiss.index").is_file()
        manifest = json.loads((index_dir / "manifest.json").read_text())
        index = manifest["components"]["dense"]["index"]
        assert (index["file"], index["rows"]) == ("dense/faiss-4.index", BASE + EXTRA)
        assert "dense/faiss-4.index" in manifest["files"]
        assert "dense/faiss.index" not in manifest["files"]
        assert faiss.read_index(str(index_dir / "dense/faiss-4.index")).ntotal == BASE + EXTRA
        fresh = Searcher(index_dir, docstore=living.docstore)
        assert dense_hits(fresh, queries) == before == dense_hits(held, queries)
        assert pool[7].id not in [i for hits in before for i, _ in hits]
        held.close()
        fresh.close()
        living.add(pool[:1])                          # a replacement: one more segment
        again = living.compact(drop_old=True)                             # generation 6
        assert "dense/faiss.index" in again["removed"]
        assert "dense/faiss-4.index" in again["removed"]
    assert sorted(p.name for p in (index_dir / "dense").glob("faiss*")) == ["faiss-6.index"]
    # the segments merge into one file too (one file per update stayed there for good)
    assert sorted(p.name for p in (index_dir / "dense").glob("*-*.npy")) == \
        ["deleted-6.npy", "segments-6.npy"]
    assert {"dense/segments-4.npy", "dense/add-1.npy", "dense/add-5.npy"} <= \
        set(again["removed"])
    searcher = Searcher(index_dir, verify="full")
    try:
        assert searcher.vector_index.base.index.ntotal == BASE + EXTRA + 1
        assert dense_hits(searcher, [pool[0].title])[0][0][0] == pool[0].id
        np.testing.assert_array_equal(searcher.stored_vectors[list(range(BASE + EXTRA))],
                                      vectors)           # what the funnel reads, unchanged
    finally:
        searcher.close()


def test_a_compaction_killed_before_its_commit_leaves_no_folded_file(index_dir, pool):
    with LivingIndex(index_dir) as living:
        living.add(pool[BASE:])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", FAULT_ENV: "before-commit"}
    proc = subprocess.run([sys.executable, "-m", "searchagent", "index", "compact",
                           str(index_dir)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == -9, proc.stderr
    assert (index_dir / "dense" / "faiss-2.index").is_file()           # written, uncommitted
    with LivingIndex(index_dir) as living:                             # rolls it back
        assert living.generation == 1
    assert not (index_dir / "dense" / "faiss-2.index").exists()


def test_a_servers_next_generation_copies_the_previous_faiss_index(index_dir, pool,
                                                                   monkeypatch):
    live = LiveSearcher(index_dir)
    try:
        live.search(pool[2].title, 5, "dense")
        first = live.current.vector_index
        loads = []
        real_load = FaissIndex.load.__func__
        monkeypatch.setattr(FaissIndex, "load", classmethod(
            lambda cls, *a, **kw: loads.append(a[0]) or real_load(cls, *a, **kw)))
        live.add(pool[BASE:BASE + 10])
        live.delete([pool[2].id])
        assert loads == []                  # neither generation read the file again
        following = live.current.vector_index
        assert isinstance(following, LiveFaiss) and following.base is not first
        assert following.base.index.ntotal == BASE + 10
        assert first.index.ntotal == BASE              # the old generation's is untouched
        queries = [pool[BASE + 4].title, pool[2].title, pool[BASE + 9].text]
        opened = Searcher(index_dir, docstore=live.docstore)       # the same, from disk
        try:
            assert dense_hits(live, queries) == dense_hits(opened, queries)
        finally:
            opened.close()
        assert dense_hits(live, queries)[0][0][0] == pool[BASE + 4].id
        assert pool[2].id not in [i for i, _ in dense_hits(live, queries)[1]]
        live.compact()
        assert live.current.vector_index.base.index.ntotal == BASE + 10
    finally:
        live.close()


def test_following_refuses_an_index_that_is_not_an_earlier_generation(index_dir, pool):
    with LivingIndex(index_dir) as living:
        living.add(pool[BASE:BASE + 5])
    searcher = Searcher(index_dir)
    try:
        info = searcher.components["dense"]
        bigger = faiss.clone_index(searcher.vector_index.base.index)
        bigger.add(searcher.stored_vectors[list(range(10))])
        ahead = FaissIndex(bigger, info["index"]["factory"], use_gpu=False)
        assert LiveFaiss.following(ahead, index_dir, info) is None
    finally:
        searcher.close()
