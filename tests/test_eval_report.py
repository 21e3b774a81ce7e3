"""``eval report`` numbers, from real DuckDB files (and a real import); no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.arm_import import import_arms
from eval.report import load_rows, write_report
from eval.store import RunStore
from searchagent.errors import InputError
from tests.test_arm_import import make_tree


def arm_row(run: str, qid: str, arm: str, em: float, calls: int) -> dict:
    return {"run": run, "dataset": "d", "qid": qid, "question": f"q {qid}", "arm": arm,
            "prediction": "x", "golds": json.dumps(["x"]), "em": em, "f1": em, "acc": em,
            "retrieval_calls": calls, "hops": calls, "prompt_tokens": 10,
            "completion_tokens": 2, "seconds": 1.5}


def table_line(report: Path, system: str) -> list[str]:
    line = next(l for l in report.read_text().splitlines() if l.startswith(f"| {system} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_run_in_two_databases_is_refused_not_counted_twice(tmp_path):
    """The same run found in two --db files was concatenated: n doubled, CIs narrowed."""
    first = tmp_path / "a.duckdb"
    with RunStore(first) as store:
        for qid in ("1", "2"):
            store.insert("arm_outcomes", arm_row("r", qid, "parametric", 1.0, 0))
    second = tmp_path / "b.duckdb"
    second.write_bytes(first.read_bytes())
    with pytest.raises(InputError, match=r"run 'r' is in two databases"):
        load_rows([first, second], ["r"])
    assert len(load_rows([first, first], ["r"])) == 2 + 2     # one file named twice: once


def test_costs_an_imported_log_does_not_record_are_dashes(tmp_path):
    """Imported rows have no hops, tokens or seconds; the report showed 0.00 / 0 for them."""
    tree, questions = make_tree(tmp_path)
    db = tmp_path / "arms.duckdb"
    import_arms(tree, questions, db, "imp")
    report = write_report(db, ["imp"], tmp_path / "report")
    cells = table_line(report, "arm:multi")          # n EM F1 Acc steps hops s tokens recall
    assert cells[5] == "3.50" and cells[6:] == ["-", "-", "-", "-"]
    assert table_line(report, "oracle")[6:9] == ["-", "-", "-"]


def test_the_oracle_only_covers_questions_every_arm_answered(tmp_path):
    """A log killed between a question's arms got an oracle row from the arms it had."""
    db = tmp_path / "arms.duckdb"
    with RunStore(db) as store:
        for qid in ("1", "2"):
            store.insert("arm_outcomes", arm_row("r", qid, "parametric", 0.0, 0))
            store.insert("arm_outcomes", arm_row("r", qid, "single", 1.0, 1))
        store.insert("arm_outcomes", arm_row("r", "3", "parametric", 0.0, 0))   # cut here
    oracle = [r for r in load_rows(db, ["r"]) if r["system"] == "oracle"]
    assert sorted(r["qid"] for r in oracle) == ["1", "2"]
    assert all(r["arm"] == "single" for r in oracle)
    report = write_report(db, ["r"], tmp_path / "report")
    assert table_line(report, "oracle")[:2] == ["oracle", "2"]
    assert table_line(report, "arm:parametric")[:2] == ["arm:parametric", "3"]


def test_arms_chosen_lists_arms_outside_the_three(tmp_path):
    """A system that served an arm besides parametric / single / multi: its share was left
    out of the arms-chosen table, so the row's shares did not add up to 100%."""
    db = tmp_path / "runs.duckdb"
    with RunStore(db) as store:
        for qid, arm in (("1", "single"), ("2", "single"), ("3", "rerank"), ("4", "rerank")):
            store.insert("results", {**arm_row("r", qid, arm, 1.0, 1), "system": "auto"})
    report = write_report(db, ["r"], tmp_path / "report")
    header = next(l for l in report.read_text().splitlines() if l.startswith("| dataset |"))
    assert header.endswith("| rerank share (EM) |")
    assert table_line(report, "d")[1:] == ["auto", "0%", "50% (100.0)", "0%", "50% (100.0)"]


def test_an_imported_arm_log_and_a_local_run_never_share_a_run_name(tmp_path):
    """import-arms wrote into a run name eval run had used, and eval run / log-arms wrote
    into an imported run: the report then showed another model's published outcomes as
    arms and oracle of the local run (and log-arms skipped the imported questions as done)."""
    from argparse import Namespace

    from searchagent.cli.eval_cmd import _record_run

    tree, questions = make_tree(tmp_path)
    db = tmp_path / "runs.duckdb"
    with RunStore(db) as store:
        store.insert("results", {**arm_row("mine", "1", "single", 1.0, 1), "system": "single"})
    with pytest.raises(InputError, match=r"run 'mine' is a run of eval run / eval log-arms"):
        import_arms(tree, questions, db, "mine")
    import_arms(tree, questions, db, "pub")
    args = Namespace(run="pub", runs_dir=str(tmp_path / "runs"), force=False, db=str(db))
    with RunStore(db, hold=False) as store:
        with pytest.raises(InputError, match=r"run 'pub' holds arm outcomes imported"):
            _record_run(args, {"datasets": [], "systems": ["single"]}, store)
    assert not (tmp_path / "runs").exists()
    with RunStore(db) as store:                  # a database mixed before these checks
        store.insert("results", {**arm_row("pub", "1", "single", 1.0, 1), "system": "single"})
    with pytest.raises(InputError, match=r"run 'pub' mixes outcomes imported"):
        load_rows(db, ["pub"])


def test_paired_differences_against_a_baseline(tmp_path):
    """Two systems' own CIs overlap while the paired CI of their difference is clear of 0:
    single is right wherever closed book is, and on 10 more of the 40 questions."""
    db = tmp_path / "arms.duckdb"
    with RunStore(db) as store:
        for i in range(40):
            closed = 1.0 if i % 2 == 0 else 0.0
            store.insert("arm_outcomes", arm_row("r", str(i), "parametric", closed, 0))
            store.insert("arm_outcomes", arm_row("r", str(i), "single",
                                                 1.0 if i % 4 == 1 else closed, 1))
        store.insert("arm_outcomes", arm_row("r", "40", "parametric", 1.0, 0))  # no pair
    with pytest.raises(InputError, match=r"no system 'single' .*arm:parametric, arm:single"):
        write_report(db, ["r"], tmp_path / "bad", baseline="single")
    assert not (tmp_path / "bad").exists()
    report = write_report(db, ["r"], tmp_path / "report", baseline="arm:parametric")
    own = {system: table_line(report, system)[2] for system in ("arm:parametric", "arm:single")}
    low_single = float(own["arm:single"].split("[")[1].split(",")[0])
    high_closed = float(own["arm:parametric"].rstrip("]").split(", ")[1])
    assert low_single < high_closed                    # the systems' own CIs overlap
    text = report.read_text()
    assert "## Paired differences against arm:parametric" in text
    row = next(l for l in text.splitlines() if l.startswith("| d | arm:single | 40 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    mean, low, high = (float(v) for v in cells[3].replace("[", "").replace("]", "")
                       .replace(",", "").split())
    assert mean == pytest.approx(25.0) and 0 < low < mean < high and cells[6] == "+1.00"


def test_common_with_no_shared_question_and_look_alike_dataset_names(tmp_path):
    """``--common`` over runs sharing no question wrote an empty report and exit 0; datasets
    named 'x.y' and 'x_y' wrote one plot file, the second overwriting the first."""
    db = tmp_path / "arms.duckdb"
    with RunStore(db) as store:
        store.insert("arm_outcomes", arm_row("a", "1", "parametric", 1.0, 0))
        store.insert("arm_outcomes", arm_row("b", "2", "parametric", 0.0, 0))
        for dataset in ("x.y", "x_y"):
            store.insert("arm_outcomes", {**arm_row("c", "1", "single", 1.0, 1),
                                          "dataset": dataset})
    with pytest.raises(InputError, match="no question was answered by every system"):
        write_report(db, ["a", "b"], tmp_path / "none", common=True)
    assert not (tmp_path / "none").exists()
    report = write_report(db, ["c"], tmp_path / "report")
    plots = sorted(p.name for p in (tmp_path / "report").glob("quality_x*.png"))
    assert plots == ["quality_x_y-2.png", "quality_x_y.png"]
    assert all(name in report.read_text() for name in plots)
