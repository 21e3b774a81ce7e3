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
