"""Pooling gathers every context paragraph once, with provenance; the index build takes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.pooling import passage_id, pool_corpus
from searchagent.cli import main
from searchagent.errors import InputError

FIX = Path(__file__).parent / "fixtures" / "eval"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pool_dedupes_by_title_and_text_and_keeps_sources(tmp_path):
    out = tmp_path / "corpus.jsonl"
    stats = pool_corpus({"hotpotqa": [FIX / "hotpot_official.json", FIX / "ircot.jsonl"],
                         "2wiki": FIX / "2wiki_flashrag.jsonl"}, out)
    rows = read_jsonl(out)
    # hotpot: 6 distinct paragraphs; ircot repeats 3 of them and adds nothing new except
    # Scott Derrickson (already there); 2wiki adds 3 new and repeats 2 from hotpot.
    assert stats["paragraphs"] == 6 + 4 + 5
    assert stats["passages"] == len(rows) == 9
    assert len({(r["title"], r["text"]) for r in rows}) == len(rows)
    assert len({r["id"] for r in rows}) == len(rows)
    by_title = {r["title"]: r for r in rows}
    assert by_title["Shirley Temple"]["sources"] == ["hotpotqa/hp1"]  # same qid in two files
    assert by_title["Ed Wood"]["sources"] == ["hotpotqa/hp2", "2wiki/dev_1"]
    assert by_title["Scott Derrickson"]["sources"] == ["hotpotqa/hp2", "hotpotqa/date1"]
    assert by_title["Ed Wood"]["id"] == passage_id("Ed Wood", by_title["Ed Wood"]["text"])


def test_pool_cli_then_index_build_and_search(tmp_path, capsys):
    out = tmp_path / "pool.jsonl"
    assert main(["eval", "pool", f"musique:{FIX / 'musique.json'}",
                 f"musique:flashrag:{FIX / 'musique_flashrag.jsonl'}", "--out", str(out)]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 3                      # Port Blair, Green, Miquette Giraudy
    green = [r for r in rows if r["title"].startswith("Green")][0]
    assert green["sources"] == ["musique/2hop__460946_294723", "musique/dev_0"]
    index = tmp_path / "index"
    assert main(["index", "build", str(out), "--out", str(index), "--bm25"]) == 0
    capsys.readouterr()
    assert main(["search", str(index), "keyboard player vocalist", "-k", "1", "--mode",
                 "bm25", "--json"]) == 0
    printed = capsys.readouterr().out
    assert "Miquette Giraudy" in printed


def test_pool_refuses_question_only_files(tmp_path):
    with pytest.raises(InputError, match="no context paragraphs"):
        pool_corpus(["nq:" + str(FIX / "nq_open.jsonl")], tmp_path / "c.jsonl")
    assert not (tmp_path / "c.jsonl").exists()
