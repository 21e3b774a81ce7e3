"""``retrieval.windows_per_doc`` (``retrievers/windows.py``): a chunked index's hits keep at
most N windows of one document, searching deeper until k remain; real BM25 indexes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from index.build import build_index
from retrievers.searcher import Searcher
from retrievers.windows import document_id
from searchagent.cli import main
from searchagent.config import Config
from searchagent.strategies.tracking import Tracker

FILLER = "the river runs past the old mill and under the stone bridge to the sea"


def corpus(path: Path, ids: list[str]) -> Path:
    """``long``: 306 words that name the zephyrine twice every 17 (seven 50-word windows);
    each of ``ids``: a short passage that names it once; 30 passages that do not."""
    long_text = " ".join(f"zephyrine zephyrine {FILLER}" for _ in range(18))
    rows = [{"id": "long", "title": "Long", "text": long_text}]
    rows += [{"id": pid, "title": pid, "text": f"a zephyrine in {FILLER} {FILLER}"}
             for pid in ids]
    rows += [{"id": f"other{n}", "title": "Other", "text": f"{FILLER} number {n}"}
             for n in range(30)]                     # so that the zephyrine is a rare word
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(windows: int, chunk: int = 50) -> Config:
    return Config().updated({"index": {"dense": False, "chunk_words": chunk},
                             "retrieval": {"mode": "bm25", "windows_per_doc": windows}}, "test")


@pytest.fixture(scope="module")
def chunked(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("windows")
    build_index(corpus(folder / "c.jsonl", ["b", "c", "d", "e"]), folder / "idx", config(0))
    return folder / "idx"


def ids(index: Path, windows: int, k: int = 4) -> list[str]:
    searcher = Searcher(index, config(windows))
    try:
        return [hit.id for hit in searcher.search("zephyrine", k)]
    finally:
        searcher.close()


def test_at_most_n_windows_of_a_document(chunked):
    every = ids(chunked, 0)
    assert len(every) == 4 and all(pid.startswith("long#") for pid in every)
    one = ids(chunked, 1)
    assert len(one) == 4 and one[0] == every[0] and sorted(one[1:]) == ["b", "c", "d"]
    two = ids(chunked, 2)
    assert two[:2] == every[:2] and sorted(two[2:]) == ["b", "c"]
    assert document_id("a\nb#3") == "a\nb"                   # an id may hold a newline
    nine = ids(chunked, 1, k=9)   # five documents match: then long's next windows
    assert [pid.split("#")[0] for pid in nine[:5]] == ["long", *sorted(one[1:]), "e"]
    assert len(nine) == 9 and all(pid.startswith("long#") for pid in nine[5:])


class Counting:
    """The real retriever, counting the searches the collapse runs on it."""

    def __init__(self, inner):
        self.inner, self.depths = inner, []

    def search(self, query, k, *, budget=None):
        self.depths.append(k)
        return self.inner.search(query, k, budget=budget)


def test_no_deeper_round_once_the_search_is_cut_and_never_fewer_hits(chunked):
    """A deeper round that a cancel or deadline cut threw away the round before it (a hop
    came back empty); a round that could not go deeper returned fewer than k hits."""
    import threading

    from retrievers.windows import CollapsingRetriever

    searcher = Searcher(chunked, config(0))
    try:
        base = searcher.retriever("bm25")
        counting = Counting(base)
        cancel = threading.Event()
        cancel.set()                                       # cut before the second round
        hits = CollapsingRetriever(counting, 1).search("zephyrine", 2,
                                                       budget={"cancel": cancel})
        assert counting.depths == [6] and len(hits) == 2   # topped up from the first round
        counting.depths.clear()
        hits = CollapsingRetriever(counting, 1).search("zephyrine", 2)
        assert counting.depths == [6, 24] and [h.id.split("#")[0] for h in hits] == ["long", "b"]
    finally:
        searcher.close()


def test_whole_passages_are_never_collapsed(tmp_path):
    """Without --chunk-words an id like ``x#1`` is a passage of its own, not a window."""
    out = tmp_path / "idx"
    build_index(corpus(tmp_path / "c.jsonl", ["x#0", "x#1", "x#2"]), out, config(0, chunk=0))
    assert sorted(ids(out, 1)) == ["long", "x#0", "x#1", "x#2"]


def test_each_search_collapses_alone_and_counts_what_it_left_out(chunked):
    """A multi-hop hop excludes the rows earlier hops showed, so it may bring another
    window of a document they found (a fact later in a long document stays reachable)."""
    searcher = Searcher(chunked, config(1))
    try:
        track = Tracker("multi", None, {})
        retriever = searcher.retriever("bm25")
        first = track.retrieve(retriever, "zephyrine", 2)
        dropped = track.trace[-1].detail["windows_dropped"]
        second = track.retrieve(retriever, "zephyrine", 2, exclude={hit.row for hit in first})
    finally:
        searcher.close()
    every = ids(chunked, 0, k=9)
    assert first[0].id == every[0] and not first[1].id.startswith("long")
    assert dropped == every.index(first[1].id) - 1        # the windows ranked between them
    assert second[0].id.startswith("long#") and second[0].id != first[0].id
    assert track.retrieval_calls == 2


def test_search_cli_flag(chunked, capsys):
    assert main(["search", str(chunked), "zephyrine", "-k", "3", "--mode", "bm25",
                 "--windows-per-doc", "1", "--json"]) == 0
    found = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert sum(pid.startswith("long#") for pid in found) == 1 and len(found) == 3
    assert main(["search", str(chunked), "zephyrine", "--windows-per-doc", "-1"]) == 2
    capsys.readouterr()
    assert main(["index", "info", str(chunked)]) == 0
    assert "windows:    50 words, overlap 0 (ids ID#0" in capsys.readouterr().out


@pytest.mark.parametrize("live", [False, True], ids=["searcher", "updatable"])
def test_served_a_collapsed_search_is_one_retrieval_of_k(chunked, tmp_path, live):
    """Served, the deeper searches run under the scheduler as one retrieval: the trace and
    the counters show the k asked for and the collapsed hits, once per search (per hop);
    a server that takes updates (``LiveSearcher``) traces what the collapse left out too."""
    import shutil

    from retrievers.live_searcher import LiveSearcher
    from searchagent.server.app import create_app
    from tests.test_server import LiveServer, server_config

    cfg = server_config().updated({"retrieval": {"mode": "bm25", "windows_per_doc": 1},
                                   "generator": {"max_new_tokens": 4}}, "test")
    if live:
        searcher = LiveSearcher(shutil.copytree(chunked, tmp_path / "idx"), cfg)
    else:
        searcher = Searcher(chunked, cfg)
    server = LiveServer(create_app(searcher, cfg, warm_up=False))
    try:
        found = server.client.post("/v1/search", json={"query": "zephyrine", "k": 3}).json()
        docs = [hit["id"].split("#")[0] for hit in found["hits"]]
        assert len(docs) == 3 and len(set(docs)) == 3
        for strategy, hops in (("single", 1), ("multi", 2)):
            body = server.client.post("/v1/answer", json={
                "question": "What is a zephyrine?", "strategy": strategy, "k": 2,
                "max_hops": 2}).json()          # k 2: the top 6 are all long's, so deeper
            retrieved = [s for s in body["trace"] if s["kind"] == "retrieve"]
            assert body["timings"]["retrievals"] == len(retrieved) == body["hops"] <= hops
            for step in retrieved:
                windows = [pid.split("#")[0] for pid in step["ids"]]
                assert len(windows) == len(set(windows)) and step["k"] <= 2
                assert step["windows_dropped"] >= 0
    finally:
        server.close()
        searcher.close()


def test_a_bounded_ann_search_is_topped_up_not_cut_short(tmp_path):
    """IVF with nprobe 1 returns only its nearest list's vectors: collapsing those to one
    window per document gave 1 hit where the index had 10 to give."""
    words = [f"{FILLER} zephyrine" for _ in range(20)]
    rows = [{"id": "long", "title": "Long", "text": " ".join(words)}]
    rows += [{"id": f"d{n}", "title": f"Topic {n}", "text": f"note {n} on {topic}"}
             for n, topic in enumerate(["rivers", "mills", "bridges", "the sea", "stone"] * 12)]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build = {"index": {"bm25": False, "faiss": "IVF4,Flat", "chunk_words": 12}}
    build_index(corpus, tmp_path / "idx", Config().updated(build, "test"))
    found = {}
    for windows in (0, 1):
        cfg = Config().updated({**build, "retrieval": {"mode": "dense", "ivf_nprobe": 1,
                                                       "windows_per_doc": windows}}, "test")
        searcher = Searcher(tmp_path / "idx", cfg)
        found[windows] = [hit.id for hit in searcher.search("the old mill by the river", 10)]
        searcher.close()
    assert len(found[1]) == len(found[0]) == 10
    first = [pid.split("#")[0] for pid in found[1]]
    distinct = list(dict.fromkeys(first))
    assert first[:len(distinct)] == distinct        # every document once, then the rest


def test_served_hybrid_fuses_windows_then_collapses_as_the_cli_does(tmp_path):
    """Under the scheduler each part collapsed its own windows before the fusion, so a
    document whose best BM25 and best dense windows differ was never rewarded for both
    (59 of 60 questions ranked otherwise than ``search``), and k could come back short."""
    from searchagent.generators.llama_cpp import LlamaCppGenerator
    from searchagent.scheduler import ScheduledSearcher, Scheduler, SchedulerOptions
    from searchagent.scheduler.session import Session

    cfg = Config().updated({"index": {"chunk_words": 50},
                            "retrieval": {"mode": "hybrid", "windows_per_doc": 1}}, "test")
    build_index(corpus(tmp_path / "c.jsonl", ["b", "c", "d", "e"]), tmp_path / "idx", cfg)
    searcher = Searcher(tmp_path / "idx", cfg)
    scheduler = Scheduler(LlamaCppGenerator(threads=1, context_tokens=512),
                          SchedulerOptions(non_stall=False))
    scheduled = ScheduledSearcher(searcher, scheduler)
    try:
        for n, (query, k) in enumerate([(q, k) for q in ("zephyrine", "old mill bridge",
                                                         "river number 7") for k in (3, 8, 40)]):
            expected = [hit.id for hit in searcher.search(query, k, "hybrid")]
            served = scheduler.submit(Session(id=f"s{n}"), lambda session: [
                hit.id for hit in scheduled.search(query, k, "hybrid")]).result(timeout=60)
            assert served == expected and len(served) == k, (query, k)
    finally:
        scheduler.stop()
        searcher.close()
