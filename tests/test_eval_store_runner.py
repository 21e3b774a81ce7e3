"""The DuckDB schema, resumable runs (one row per question and system), the arm log and
reports, driven by a real retrieval system over the shared small index."""

from __future__ import annotations

import json
import re
import threading

import duckdb
import pytest

from eval.arm_log import log_arms
from eval.examples import Example
from eval.metrics import exact_match
from eval.report import (common_questions, load_rows, markdown, oracle_rows, summaries,
                         write_report)
from eval.runner import evaluate
from eval.store import ARM_COLUMNS, RESULT_COLUMNS, RunStore
from searchagent.strategies.base import Answer
from tests.conftest import sample_questions

CONTRACT_ARM_COLUMNS = ["run", "dataset", "qid", "question", "arm", "prediction", "golds",
                        "em", "f1", "acc", "sup_recall", "retrieval_calls", "hops",
                        "prompt_tokens", "completion_tokens", "seconds", "confidence",
                        "created_at"]


class TopTitle:
    """A real, cheap system: retrieve with the index and answer with the top hit's title."""

    def __init__(self, searcher, name: str, k: int = 3, fail_on: str = ""):
        self.searcher, self.name, self.k, self.fail_on = searcher, name, k, fail_on
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def run(self, question, ctx=None):
        with self.lock:
            self.calls.append(ctx["qid"])
        if self.fail_on and ctx["qid"] == self.fail_on:
            raise RuntimeError("boom")
        hits = self.searcher.search(question, self.k, "bm25")
        return Answer(answer=hits[0].title, strategy=self.name, retrieval_calls=1, hops=1,
                      passages=[{"id": h.id, "title": h.title, "score": h.score} for h in hits],
                      confidence=-0.5)


@pytest.fixture(scope="module")
def searcher(small_corpus, tmp_path_factory):
    """A BM25-only index over the 400 sample passages (builds in about a second)."""
    from index.build import build_index
    from retrievers.searcher import Searcher
    from searchagent.config import Config

    config = Config()
    config.index.dense = False
    folder = tmp_path_factory.mktemp("eval-index") / "bm25"
    build_index(small_corpus, folder, config)
    opened = Searcher(folder, config)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return [Example(id=q["id"], question=q["question"], answers=q["answers"], dataset="sample",
                    supporting_titles=q["supporting_titles"]) for q in sample_questions()[:12]]


def test_schema_matches_the_contract(tmp_path):
    with RunStore(tmp_path / "r.duckdb") as store:
        cols = store.con.execute("SELECT column_name, data_type FROM information_schema.columns"
                                 " WHERE table_name = 'arm_outcomes' ORDER BY ordinal_position"
                                 ).fetchall()
        assert [c for c, _ in cols] == CONTRACT_ARM_COLUMNS == list(ARM_COLUMNS)
        assert dict(cols)["golds"] == "VARCHAR" and dict(cols)["retrieval_calls"] == "DOUBLE"
        names = [c for (c,) in store.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'results' "
            "ORDER BY ordinal_position").fetchall()]
        assert names == list(RESULT_COLUMNS)
        row = {"run": "r", "system": "s", "dataset": "d", "qid": "1", "em": 1.0,
               "trace": {"steps": []}}
        assert store.insert("results", row) is True
        assert store.insert("results", {**row, "em": 0.0}) is False    # key exists: ignored
        assert store.con.execute("SELECT em FROM results").fetchall() == [(1.0,)]


def test_store_without_hold_lets_other_processes_read(tmp_path):
    import subprocess
    import sys

    db = tmp_path / "shared.duckdb"
    read = [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1], "
            "read_only=True); print(c.execute('SELECT count(*) FROM results').fetchone()[0])",
            str(db)]
    with RunStore(db, hold=False) as store:
        store.insert("results", {"run": "r", "system": "s", "dataset": "d", "qid": "1"})
        seen = subprocess.run(read, capture_output=True, text=True, timeout=60)
        assert seen.returncode == 0 and seen.stdout.strip() == "1", seen.stderr
        assert store.insert("results", {"run": "r", "system": "s", "dataset": "d", "qid": "2"})
        assert store.count("results") == 2
    with RunStore(db) as store:                               # holding: others are locked out
        locked = subprocess.run(read, capture_output=True, text=True, timeout=60)
        assert locked.returncode != 0 and "lock" in locked.stderr.lower()


def test_run_writes_one_row_per_question_and_resumes(tmp_path, searcher, examples):
    db = tmp_path / "runs.duckdb"
    bm25, dense = TopTitle(searcher, "bm25"), TopTitle(searcher, "dense", k=5, fail_on=examples[3].id)
    with RunStore(db) as store:
        first = evaluate({"bm25": bm25}, examples[:5], store, "r1", workers=2)
        out = evaluate({"bm25": bm25, "dense": dense}, examples, store, "r1", workers=3)
    assert first.done == 5
    assert len(bm25.calls) == 12                              # only the 7 new ones ran again
    assert out.done == 7 + 11 and out.failed == 1
    assert "boom" in out.errors[0] and f"{examples[3].id}/dense" in out.errors[0]
    con = duckdb.connect(str(db), read_only=True)
    counts = dict(con.execute("SELECT system, count(*) FROM results GROUP BY 1").fetchall())
    assert counts == {"bm25": 12, "dense": 11}
    assert con.execute("SELECT count(*) FROM (SELECT DISTINCT run, system, dataset, qid "
                       "FROM results)").fetchone()[0] == 23
    pred, golds, em, trace, arm = con.execute(
        "SELECT prediction, golds, em, trace, arm FROM results WHERE system = 'bm25' "
        "AND qid = ?", [examples[0].id]).fetchone()
    con.close()
    assert em == exact_match(pred, json.loads(golds))
    assert arm == "bm25" and len(json.loads(trace)["passages"]) == 3
    assert len(json.loads(con2_trace(db, "dense", examples[0].id))["passages"]) == 5
    with RunStore(db) as store:                               # a rerun retries the failure
        again = evaluate({"dense": TopTitle(searcher, "dense", k=5)}, examples, store, "r1")
    assert again.done == 1


def con2_trace(db, system, qid):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT trace FROM results WHERE system = ? AND qid = ?",
                           [system, qid]).fetchone()[0]
    finally:
        con.close()


def test_arm_log_and_report(tmp_path, searcher, examples):
    db = tmp_path / "runs.duckdb"
    arms = {"parametric": TopTitle(searcher, "parametric", k=1), "single": TopTitle(searcher, "single", k=3),
            "multi": TopTitle(searcher, "multi", k=8)}
    with RunStore(db) as store:
        summary = log_arms(arms, examples, store, "arms", workers=2)
        assert log_arms(arms, examples, store, "arms").done == 0   # all logged already
    with RunStore(tmp_path / "eval.duckdb") as other:                # a second database
        evaluate({"hybrid": TopTitle(searcher, "hybrid")}, examples, other, "eval1")
    assert summary.done == 36
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT qid, arm, sup_recall, confidence, golds FROM arm_outcomes"
                       ).fetchall()
    con.close()
    assert len(rows) == 36 and {r[1] for r in rows} == set(arms)
    assert all(r[3] == -0.5 and json.loads(r[4]) for r in rows)
    assert all(0.0 <= r[2] <= 1.0 for r in rows)

    table = {(s.dataset, s.system): s for s in summaries(load_rows(db, ["arms"]))}
    assert set(table) == {("sample", f"arm:{a}") for a in arms} | {("sample", "oracle")}
    oracle, arm_em = table[("sample", "oracle")], [table[("sample", f"arm:{a}")].em.mean
                                                   for a in arms]
    assert oracle.em.mean >= max(arm_em) and oracle.n == len(examples)
    twice = summaries(load_rows([db, tmp_path / ".." / tmp_path.name / db.name], ["arms"]))
    assert {(s.dataset, s.system): s.n for s in twice} == {k: s.n for k, s in table.items()}

    out = tmp_path / "report"
    path = write_report([db, tmp_path / "eval.duckdb"], ["arms", "eval1"], out)
    text = path.read_text()
    assert "| eval1/hybrid | 12 |" in text and "| arms/oracle | 12 |" in text
    assert "all datasets" not in text                          # a single dataset here
    for png in ("quality_sample.png", "arms.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(Exception, match=rf"^{re.escape(str(db))}: no rows for run"):
        write_report(db, ["nope"], out)                   # the path, not a list's repr
    with pytest.raises(Exception, match="no rows for run"):
        write_report(db, ["nope"], tmp_path / "never")
    assert not (tmp_path / "never").exists()          # nothing made for a failed report


def test_oracle_picks_the_cheapest_correct_arm():
    def row(qid, arm, em, f1, calls):
        return {"run": "r", "dataset": "d", "qid": qid, "arm": arm, "em": em, "f1": f1,
                "acc": em, "retrieval_calls": calls, "hops": calls, "seconds": 1.0,
                "prompt_tokens": 10, "completion_tokens": 2, "sup_recall": None}
    rows = [row("1", "parametric", 0, 0.2, 0), row("1", "single", 1, 1, 1),
            row("1", "multi", 1, 1, 3),                       # cheapest correct: single
            row("2", "parametric", 1, 1, 0), row("2", "single", 1, 1, 1),
            row("2", "multi", 1, 1, 2),
            row("3", "parametric", 0, 0.1, 0), row("3", "single", 0, 0.5, 1),
            row("3", "multi", 0, 0.5, 4)]                     # none correct: best F1, cheaper
    chosen = {r["qid"]: r["arm"] for r in oracle_rows(rows)}
    assert chosen == {"1": "single", "2": "parametric", "3": "single"}
    (oracle,) = summaries(oracle_rows(rows))
    assert oracle.em.mean == pytest.approx(2 / 3) and oracle.steps == pytest.approx(2 / 3)
    other = [{**r, "dataset": "e", "qid": "x" + r["qid"]} for r in rows]
    pooled = {(s.dataset, s.system): s for s in summaries(oracle_rows(rows + other))}
    assert pooled[("all datasets", "oracle")].n == 6
    assert pooled[("all datasets", "oracle")].em.mean == pytest.approx(2 / 3)
    partial = [r for r in rows if not (r["qid"] == "2" and r["arm"] == "multi")]
    kept = common_questions([{**r, "system": r["arm"]} for r in partial])
    assert {r["qid"] for r in kept} == {"1", "3"}          # question 2 lacks 'multi'
    learned = [{**r, "system": "learned"} for r in rows if r["arm"] == "single"]
    kept = common_questions([{**r, "system": r["arm"]} for r in rows + other] + learned)
    assert {r["dataset"] for r in kept} == {"d"}   # 'learned' ran d only: e left out for all
    pooled = {(s.dataset, s.system): s for s in summaries(kept)}
    assert pooled[("d", "single")].n == pooled[("d", "learned")].n == 3
    text = markdown([oracle], ["r"], [])
    assert "## Arms chosen" in text and "| d | oracle | 33% (100.0) | 67% (50.0) | 0% |" in text


def test_rows_another_process_stored_first_are_not_counted_as_written(tmp_path, searcher,
                                                                     examples):
    """Two commands on one run name: a row the other one stored while this one answered is
    counted as ``existing``, and the stored row is left as it was."""
    db = tmp_path / "runs.duckdb"
    raced = examples[1]

    class Racing(TopTitle):
        def run(self, question, ctx=None):
            answer = super().run(question, ctx)
            if ctx["qid"] == raced.id:
                with RunStore(db, hold=False) as other:
                    other.insert("results", {"run": "r", "system": "bm25", "qid": raced.id,
                                             "dataset": raced.dataset, "prediction": "theirs"})
            return answer

    with RunStore(db, hold=False) as store:
        summary = evaluate({"bm25": Racing(searcher, "bm25")}, examples[:3], store, "r")
    assert (summary.done, summary.existing, summary.failed) == (2, 1, 0)
    con = duckdb.connect(str(db), read_only=True)
    kept = con.execute("SELECT prediction FROM results WHERE qid = ?", [raced.id]).fetchone()
    con.close()
    assert kept == ("theirs",)
