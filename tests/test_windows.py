"""``retrieval.windows_per_doc`` (``retrievers/windows.py``): a chunked index's hits keep at
most N windows of one document, searching deeper until k remain; real BM25 indexes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from index.build import build_index
from retrievers.searcher import Searcher
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
    assert len(ids(chunked, 1, k=9)) == 5                    # five documents in all


def test_whole_passages_are_never_collapsed(tmp_path):
    """Without --chunk-words an id like ``x#1`` is a passage of its own, not a window."""
    out = tmp_path / "idx"
    build_index(corpus(tmp_path / "c.jsonl", ["x#0", "x#1", "x#2"]), out, config(0, chunk=0))
    assert sorted(ids(out, 1)) == ["long", "x#0", "x#1", "x#2"]


def test_later_hops_count_the_windows_shown_before(chunked):
    searcher = Searcher(chunked, config(1))
    try:
        track = Tracker("multi", None, {})
        retriever = searcher.retriever("bm25")
        first = track.retrieve(retriever, "zephyrine", 2, windows_per_doc=1)
        second = track.retrieve(retriever, "zephyrine", 2, windows_per_doc=1,
                                exclude={hit.row for hit in first})
    finally:
        searcher.close()
    assert first[0].id.startswith("long#") and not first[1].id.startswith("long")
    assert not any(hit.id.startswith("long") for hit in second)
    assert track.trace[-1].detail["windows_dropped"] > 0


def test_search_cli_flag(chunked, capsys):
    assert main(["search", str(chunked), "zephyrine", "-k", "3", "--mode", "bm25",
                 "--windows-per-doc", "1", "--json"]) == 0
    found = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert sum(pid.startswith("long#") for pid in found) == 1 and len(found) == 3
    assert main(["search", str(chunked), "zephyrine", "--windows-per-doc", "-1"]) == 2
