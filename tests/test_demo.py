"""``searchagent demo``'s policy: the bundled arm-log sample is imported into DuckDB, the
default cascade is trained on it once, and ``auto`` answers with it (real embedder, real
GGUF model, a real index)."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pytest

from searchagent.cli.demo_policy import RUN, ensure_demo_policy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "policy"
    assert ensure_demo_policy(folder, 0.1, None) == folder
    return folder


def test_the_sample_policy_is_trained_once_and_kept_with_its_arm_log(trained, capsys):
    folder, tmp_path = trained, trained.parent
    assert (folder / "policy.json").is_file()
    with duckdb.connect(str(folder / "armlog.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT count(*), count(DISTINCT qid), count(DISTINCT dataset) "
                           "FROM arm_outcomes WHERE run = ?", [RUN]).fetchone()
    assert rows == (1800, 600, 6)
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]      # no staging left
    saved = (folder / "policy.json").stat().st_mtime_ns
    capsys.readouterr()
    ensure_demo_policy(folder, 0.1, None)
    assert "using existing policy" in capsys.readouterr().out
    assert (folder / "policy.json").stat().st_mtime_ns == saved


def test_a_policy_dir_holding_other_files_is_refused(tmp_path):
    from searchagent.errors import InputError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="something other than a policy"):
        ensure_demo_policy(tmp_path, 0.1, None)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_demo_answers_with_the_policy(trained, small_index):
    result = subprocess.run(
        [sys.executable, "-m", "searchagent", "demo", "--index-dir", str(small_index),
         "--policy-dir", str(trained), "-n", "1", "--strategies",
         "auto,parametric"], capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "using existing policy" in out and "using existing index" in out
    auto = next(line for line in out.splitlines() if line.strip().startswith("auto:"))
    route = next(line for line in out.splitlines() if line.strip().startswith("policy:"))
    assert route.split("policy:")[1].strip().startswith("closed book -> ")
    assert "after the closed-book answer, lambda 0.1: stop " in route
    assert "parametric:" in out and "retrievals" in auto
