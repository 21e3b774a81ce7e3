"""Commands that would lose data or drop questions are refused up front, with one line
naming what is wrong. Real files and the real CLI; none of these loads a model."""

from __future__ import annotations

import shutil
from pathlib import Path

from searchagent.cli import main

FIX = Path(__file__).parent / "fixtures" / "eval"


def test_pool_refuses_to_write_over_one_of_its_dataset_files(tmp_path, capsys):
    """``eval pool hotpotqa:dev.json --out dev.json`` replaced the benchmark by the pool."""
    dataset = tmp_path / "dev.json"
    shutil.copy(FIX / "hotpot_official.json", dataset)
    before = dataset.read_bytes()
    assert main(["eval", "pool", f"hotpotqa:{dataset}", "--out", str(dataset)]) == 2
    assert "--out is the dataset file of 'hotpotqa'" in capsys.readouterr().err
    assert dataset.read_bytes() == before


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    """An ``eval run`` whose index does not exist: a check that passes reaches the index
    and fails there (exit 2 either way), so only the message tells them apart."""
    return ["eval", "run", "--index", str(tmp_path / "no-index"), "--run", "r",
            "--db", str(tmp_path / "runs.duckdb"), "--runs-dir", str(tmp_path / "runs"),
            *extra]


def test_two_dataset_files_sharing_a_question_key_are_refused(tmp_path, capsys):
    """Both files numbered their questions 0, 1, ... under one NAME: the second file's rows
    hit the first's primary keys and were dropped, while the run said '4 rows written'."""
    two = ["--dataset", f"q:{FIX / 'qa_list.jsonl'}", "--dataset", f"q:{FIX / 'nq_open.jsonl'}",
           "--strategy", "parametric"]
    assert main(run_args(tmp_path, *two)) == 2
    err = capsys.readouterr().err
    assert "nq_open.jsonl, field 'dataset': question id '0' of dataset 'q' is also in" in err
    same = ["--dataset", f"q:{FIX / 'qa_list.jsonl'}"] * 2 + ["--strategy", "parametric"]
    assert main(run_args(tmp_path, *same)) == 2 and "is also in" in capsys.readouterr().err
    apart = two[:1] + [f"q1:{FIX / 'qa_list.jsonl'}"] + two[2:]
    assert main(run_args(tmp_path, *apart)) == 2
    assert "index folder not found" in capsys.readouterr().err    # got past the check
    assert not (tmp_path / "runs").exists() and not (tmp_path / "runs.duckdb").exists()


def test_flags_a_run_would_ignore_are_refused(tmp_path, capsys):
    """``--seed`` without ``--limit`` sampled nothing (every question ran, in file order),
    and two --policy folders with one name made one system: the second replaced the first."""
    data = ["--dataset", f"q:{FIX / 'qa_list.jsonl'}"]
    assert main(run_args(tmp_path, *data, "--strategy", "parametric", "--seed", "3")) == 2
    assert "field 'seed': --seed picks a sample of --limit" in capsys.readouterr().err
    policies = ["--policy", str(tmp_path / "a" / "p"), "--policy", str(tmp_path / "b" / "p")]
    assert main(run_args(tmp_path, *data, *policies)) == 2
    assert "two systems named 'policy:p'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
