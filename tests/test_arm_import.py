"""``searchagent eval import-arms``: an Adaptive-RAG predictions tree (built here, tiny) is
scored into ``arm_outcomes``; imputed multi-step calls are recorded; re-imports are
idempotent; every bad input fails with a named InputError and leaves the database as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from eval.arm_import import (ImportResult, build_import, import_arms, parse_multi_steps,
                             write_import)
from eval.store import ARM_COLUMNS
from searchagent.cli import main
from searchagent.errors import InputError

MODEL = "llama_8b_it"   # has underscores, like the real tree
SETTINGS = {"nor": "prompt_set_1",
            "oner": "prompt_set_1___bm25_retrieval_count__15___distractor_count__1",
            "ircot": "prompt_set_1___bm25_retrieval_count__6___distractor_count__1"}
# dataset -> qid -> (question, golds, {prefix: prediction}, ircot steps)
DATA = {
    "hotpotqa": {
        "5a1": ("Who wrote The Picture of Dorian Gray?", ["Oscar Wilde"],
                {"nor": "Oscar Wilde", "oner": "the writer Oscar Wilde", "ircot": "Wilde"}, 3),
        "5a2": ("Where is the Salzburg Festival held?", ["Salzburg", "Salzburg, Austria"],
                {"nor": "Vienna", "oner": "Salzburg", "ircot": "Akbarab\\u0101d"}, 4),
    },
    "nq": {
        "single_nq_dev_1": ("capital of france", ["Paris"],
                            {"nor": "Paris.", "oner": "Lyon", "ircot": "paris"}, 1),
        "single_nq_dev_2": ("who sang yes", ["Yes"], {"nor": "no", "oner": "yes",
                                                      "ircot": "The band Yes"}, 2),
    },
}


def folder_name(prefix: str, dataset: str) -> str:
    return f"{prefix}_qa_{MODEL}_{dataset}____{SETTINGS[prefix]}"


def json_name(kind: str, dataset: str) -> str:
    return f"{kind}__{dataset}_to_{dataset}__test_subsampled.json"


def make_tree(root: Path) -> tuple[Path, Path]:
    tree = root / "test"
    for dataset, items in DATA.items():
        for prefix in SETTINGS:
            folder = tree / folder_name(prefix, dataset)
            folder.mkdir(parents=True)
            write = lambda name, value: (folder / name).write_text(json.dumps(value, indent=1))
            write(json_name("prediction", dataset), {q: v[2][prefix] for q, v in items.items()})
            write(json_name("ground_truth", dataset), {q: v[1] for q, v in items.items()})
            write(json_name("zero_single_multi_classification", dataset),
                  {q: ["multi", "6"] for q in items})
            if prefix == "ircot":
                write("stepNum.json", {q: v[3] for q, v in items.items()})
    (tree / "adaptive_qa_other_hotpotqa____x").mkdir()     # unknown prefix: skipped
    questions = root / "questions.jsonl"
    questions.write_text("".join(json.dumps({"dataset": d, "qid": q, "question": v[0]}) + "\n"
                                 for d, items in DATA.items() for q, v in items.items()))
    return tree, questions


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


def fetch(db: Path, sql: str):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def snapshot(db: Path) -> list:
    if not db.exists():
        return []
    return fetch(db, "SELECT run, dataset, qid, arm, prediction, em, retrieval_calls, "
                     "created_at FROM arm_outcomes ORDER BY ALL")


def test_import_scores_joins_questions_and_counts_calls(tree, tmp_path):
    root, questions = tree
    db = tmp_path / "arms.duckdb"
    result = import_arms(root, questions, db, "pub")
    assert any("skipped adaptive_qa_" in w for w in result.warnings)
    assert fetch(db, "SELECT count(*) FROM arm_outcomes")[0][0] == 4 * 3
    rows = {(r[0], r[1]): r for r in fetch(
        db, "SELECT qid, arm, question, prediction, golds, em, f1, acc, retrieval_calls, "
            "seconds, hops, confidence, run, dataset FROM arm_outcomes")}
    q, arm, question, pred, golds, em, f1, acc, calls, secs, hops, conf, run, ds = \
        rows[("5a1", "single")]
    assert (question, pred, json.loads(golds)) == (DATA["hotpotqa"]["5a1"][0],
                                                   "the writer Oscar Wilde", ["Oscar Wilde"])
    assert (em, acc, calls, secs, hops, conf, run, ds) == (0.0, 1.0, 1.0, 0.0, None, None,
                                                           "pub", "hotpotqa")
    assert f1 == pytest.approx(0.8)                     # P 2/3, R 1
    assert rows[("5a1", "multi")][5:9] == (0.0, pytest.approx(2 / 3), 0.0, 3.0)
    assert rows[("5a1", "parametric")][5:9] == (1.0, 1.0, 1.0, 0.0)
    assert rows[("5a2", "single")][5] == 1.0            # second gold alias counts too
    assert rows[("5a2", "multi")][3] == "Akbarab\\u0101d"   # escapes kept as text
    assert rows[("single_nq_dev_2", "multi")][5:8] == (0.0, 0.0, 1.0)   # yes/no rule for F1
    summary = {(s["dataset"], s["arm"]): s for s in result.summary()}
    assert summary[("nq", "multi")]["calls"] == 1.5 and summary[("nq", "multi")]["n"] == 2
    assert summary[("hotpotqa", "parametric")]["acc"] == 50.0
    config = json.loads(fetch(db, "SELECT config FROM arm_imports WHERE run = 'pub'")[0][0])
    assert config["datasets"]["nq"]["multi_calls"] == {"from": "stepNum.json", "mean": 1.5}
    assert config["skipped"] == ["adaptive_qa_other_hotpotqa____x"]
    assert dict(fetch(db, "SELECT column_name, data_type FROM information_schema.columns "
                          "WHERE table_name = 'arm_outcomes'"))["retrieval_calls"] == "DOUBLE"


def test_fractional_multi_steps_are_imputed_recorded_and_readable(tree, tmp_path):
    from policies.armlog import load_arm_log

    root, questions = tree
    (root / folder_name("ircot", "hotpotqa") / "stepNum.json").unlink()
    db = tmp_path / "arms.duckdb"
    import_arms(root, questions, db, "pub", parse_multi_steps(["hotpotqa=3.45"]))
    calls = fetch(db, "SELECT DISTINCT retrieval_calls FROM arm_outcomes "
                      "WHERE dataset = 'hotpotqa' AND arm = 'multi'")
    assert calls == [(3.45,)]
    config = json.loads(fetch(db, "SELECT config FROM arm_imports")[0][0])
    assert config["datasets"]["hotpotqa"]["multi_calls"] == {"from": "--multi-steps",
                                                             "value": 3.45}
    assert config["datasets"]["nq"]["multi_calls"]["from"] == "stepNum.json"
    table = load_arm_log(db, runs=["pub"])
    assert len(table) == 4 and table.dropped == 0
    assert sorted(table.steps[:, 2]) == [1.0, 2.0, 3.45, 3.45]


def test_reimport_is_idempotent(tree, tmp_path):
    root, questions = tree
    db = tmp_path / "arms.duckdb"
    import_arms(root, questions, db, "pub")
    first = [r[:-1] for r in snapshot(db)]
    import_arms(root, questions, db, "pub")
    assert [r[:-1] for r in snapshot(db)] == first and len(first) == 12
    assert fetch(db, "SELECT count(*) FROM arm_imports")[0][0] == 1


def test_old_integer_column_is_migrated_keeping_rows(tree, tmp_path):
    root, questions = tree
    db = tmp_path / "old.duckdb"
    columns = {**ARM_COLUMNS, "retrieval_calls": "INTEGER"}
    con = duckdb.connect(str(db))
    con.execute(f"CREATE TABLE arm_outcomes ({', '.join(f'{k} {v}' for k, v in columns.items())}"
                ", PRIMARY KEY (run, dataset, qid, arm))")
    con.execute("INSERT INTO arm_outcomes (run, dataset, qid, arm, retrieval_calls) "
                "VALUES ('logged', 'x', '1', 'multi', 2)")
    con.close()
    (root / folder_name("ircot", "nq") / "stepNum.json").unlink()
    result = import_arms(root, questions, db, "pub", {"nq": 2.7})
    assert result.config["migrated_retrieval_calls"] is True
    assert fetch(db, "SELECT retrieval_calls FROM arm_outcomes WHERE run = 'logged'") == [(2.0,)]
    assert fetch(db, "SELECT DISTINCT retrieval_calls FROM arm_outcomes WHERE dataset = 'nq' "
                     "AND arm = 'multi'") == [(2.7,)]


def _drop_arm(root, q):
    shutil.rmtree(root / folder_name("oner", "nq"))


def _drop_question(root, q):
    q.write_text("".join(line + "\n" for line in q.read_text().splitlines()
                         if "single_nq_dev_2" not in line))


def _second_question(root, q):    # the last one silently won
    with q.open("a") as handle:
        handle.write(json.dumps({"dataset": "nq", "qid": "single_nq_dev_1",
                                 "question": "another question"}) + "\n")


def _garble(root, q):
    (root / folder_name("oner", "hotpotqa") / json_name("prediction", "hotpotqa")).write_text(
        "{not json")


def _drop_gold(root, q):
    path = root / folder_name("nor", "nq") / json_name("ground_truth", "nq")
    golds = json.loads(path.read_text())
    del golds["single_nq_dev_1"]
    path.write_text(json.dumps(golds))


def _blank_gold(root, q):    # scored an empty prediction EM 1 (and F1 0)
    path = root / folder_name("nor", "nq") / json_name("ground_truth", "nq")
    path.write_text(json.dumps({**json.loads(path.read_text()), "single_nq_dev_1": [" "]}))


def _surrogate_prediction(root, q):    # DuckDB's refusal named no file or qid
    path = root / folder_name("nor", "nq") / json_name("prediction", "nq")
    path.write_text(json.dumps({**json.loads(path.read_text()), "single_nq_dev_1": "a\ud800"}))


def _surrogate_gold(root, q):
    path = root / folder_name("oner", "nq") / json_name("ground_truth", "nq")
    path.write_text(json.dumps({**json.loads(path.read_text()),
                                "single_nq_dev_1": ["ok", "b\udfff"]}))


def _surrogate_question(root, q):
    q.write_text(q.read_text().replace('"single_nq_dev_1", "question": "',
                                       '"single_nq_dev_1", "question": "\\ud800', 1))


def _drop_steps(root, q):
    (root / folder_name("ircot", "nq") / "stepNum.json").unlink()


def _steps_missing_qid(root, q):
    (root / folder_name("ircot", "nq") / "stepNum.json").write_text('{"single_nq_dev_1": 2}')


def _duplicate_folder(root, q):
    shutil.copytree(root / folder_name("nor", "nq"),
                    root / folder_name("nor", "nq").replace(MODEL, "other_model"))


def _arm_lacks_qid(root, q):
    path = root / folder_name("ircot", "hotpotqa") / json_name("prediction", "hotpotqa")
    path.write_text(json.dumps({"5a1": "x"}))
    gold = path.with_name(json_name("ground_truth", "hotpotqa"))
    gold.write_text(json.dumps({"5a1": ["Oscar Wilde"]}))


@pytest.mark.parametrize("breaker, where, field", [
    (_drop_arm, "test", "single"),
    (_drop_question, "questions.jsonl", "single_nq_dev_2"),
    (_second_question, "questions.jsonl", "single_nq_dev_1"),
    (_garble, json_name("prediction", "hotpotqa"), None),
    (_drop_gold, json_name("ground_truth", "nq"), "single_nq_dev_1"),
    (_blank_gold, json_name("ground_truth", "nq"), "single_nq_dev_1"),
    (_surrogate_prediction, json_name("prediction", "nq"), "single_nq_dev_1"),
    (_surrogate_gold, json_name("ground_truth", "nq"), "single_nq_dev_1"),
    (_surrogate_question, "questions.jsonl", "question"),
    (_drop_steps, folder_name("ircot", "nq"), "multi-steps"),
    (_steps_missing_qid, "stepNum.json", "single_nq_dev_2"),
    (_duplicate_folder, "test", None),
    (_arm_lacks_qid, json_name("prediction", "hotpotqa"), "5a2"),
])
def test_bad_input_raises_named_error_and_changes_nothing(tree, tmp_path, breaker, where,
                                                          field):
    root, questions = tree
    db = tmp_path / "arms.duckdb"
    import_arms(root, questions, db, "good")
    before = snapshot(db)
    breaker(root, questions)
    with pytest.raises(InputError) as caught:
        import_arms(root, questions, db, "bad")
    assert Path(caught.value.path).name == where and caught.value.field == field
    assert snapshot(db) == before
    assert fetch(db, "SELECT run FROM arm_imports") == [("good",)]


@pytest.mark.parametrize("spec", ["hotpotqa", "hotpotqa=abc", "hotpotqa=-1", "=2",
                                  "hotpotqa=nan", "a=1=2"])
def test_bad_multi_steps_spec(spec):
    with pytest.raises(InputError) as caught:
        parse_multi_steps([spec])
    assert caught.value.field == "multi-steps" and spec in str(caught.value)


def test_multi_steps_for_unknown_dataset_is_rejected(tree):
    root, questions = tree
    with pytest.raises(InputError, match="'squad' is not in the tree"):
        build_import(root, questions, "pub", {"squad": 2.0})


def test_failed_write_rolls_back_everything(tree, tmp_path):
    root, questions = tree
    db = tmp_path / "arms.duckdb"
    import_arms(root, questions, db, "good")
    before = snapshot(db)
    good = build_import(root, questions, "bad")
    rows = [{**good.rows[0], "qid": str(i)} for i in range(300)]
    rows[-1]["em"] = "not a number"                      # fails in the second chunk
    with pytest.raises(duckdb.Error):
        write_import(db, ImportResult(rows, good.config), "bad")
    assert snapshot(db) == before


def test_cli_imports_and_reports_errors(tree, tmp_path, capsys):
    root, questions = tree
    db = tmp_path / "cli.duckdb"
    (root / folder_name("ircot", "hotpotqa") / "stepNum.json").unlink()
    base = ["eval", "import-arms", str(root), "--questions", str(questions), "--db", str(db),
            "--run", "pub"]
    assert main(base) == 2
    assert "give --multi-steps hotpotqa=N" in capsys.readouterr().err and not db.exists()
    assert main(base + ["--multi-steps", "hotpotqa=3.45"]) == 0
    out = capsys.readouterr()
    assert "12 rows written" in out.out and "skipped adaptive_qa_" in out.err
    line = next(x for x in out.out.splitlines() if x.startswith("hotpotqa") and " multi " in x)
    assert line.split()[2:] == ["2", "0.0", "33.3", "0.0", "3.45"]
    assert main(base + ["--multi-steps", "hotpotqa=x"]) == 2
    assert "field 'multi-steps'" in capsys.readouterr().err


def test_import_refuses_a_run_with_rows_from_elsewhere(tree, tmp_path):
    """INSERT OR REPLACE overwrote rows eval log-arms had computed under the same run (and
    mixed another tree's rows into it); now only a re-import of the same tree may write."""
    from eval.store import RunStore

    root, questions = tree
    db = tmp_path / "arms.duckdb"
    mine = {"run": "pub", "dataset": "hotpotqa", "qid": "5a1", "arm": "parametric",
            "question": "ours", "prediction": "computed here", "golds": '["Oscar Wilde"]',
            "em": 0.0, "f1": 0.0, "acc": 0.0, "retrieval_calls": 0, "seconds": 9.0}
    with RunStore(db) as store:
        store.insert("arm_outcomes", mine)
    with pytest.raises(InputError, match=r"run 'pub' already has rows written by eval "
                                         r"log-arms; use a new --run"):
        import_arms(root, questions, db, "pub")
    assert fetch(db, "SELECT prediction FROM arm_outcomes") == [("computed here",)]
    import_arms(root, questions, db, "pub2")
    import_arms(root, questions, db, "pub2")                      # the same tree again: fine
    other = tmp_path / "copy"
    shutil.copytree(root, other)
    with pytest.raises(InputError, match=r"run 'pub2' already has rows imported from .*test"):
        import_arms(other, questions, db, "pub2")
    assert fetch(db, "SELECT count(*) FROM arm_outcomes WHERE run = 'pub2'")[0][0] == 12
