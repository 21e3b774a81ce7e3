"""``searchagent eval run`` end to end with a real strategy (parametric, real GGUF model):
a run killed mid-way resumes without losing or duplicating rows; the run folder records
the resolved config and command; report works on the result."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from searchagent.cli import main
from searchagent.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "eval"
QUESTIONS = ROOT / "searchagent" / "sample" / "questions.jsonl"
LIMIT = 10

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval-cli")
    assert main(["eval", "pool", f"hotpotqa:{FIX / 'hotpot_official.json'}",
                 "--out", str(folder / "corpus.jsonl")]) == 0
    assert main(["index", "build", str(folder / "corpus.jsonl"), "--out",
                 str(folder / "index"), "--bm25"]) == 0
    return folder / "index"


def command(index: Path, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "searchagent", "eval", "run", "--dataset",
            f"sample:{QUESTIONS}", "--index", str(index), "--strategy", "parametric",
            "--max-new-tokens", "4", "--threads", "1", "--limit", str(LIMIT), "--run", "r1",
            "--db", str(tmp / "runs.duckdb"), "--runs-dir", str(tmp / "runs")]


def progress(text: str) -> int:
    counts = [int(n) for n in re.findall(rf"(\d+)/{LIMIT}\b", text)]
    return max(counts, default=0)


def test_killed_run_resumes_without_loss_or_duplicates(bm25_index, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command(bm25_index, tmp_path), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(
        iter(lambda: proc.stderr.read(64).decode(errors="replace"), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    while progress("".join(seen)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    reader.join(5)
    killed_at = progress("".join(seen))
    assert 3 <= killed_at < LIMIT, "".join(seen)[-2000:]

    again = subprocess.run(command(bm25_index, tmp_path), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed_from = min(int(n) for n in re.findall(rf"(\d+)/{LIMIT}\b", again.stderr))
    assert resumed_from >= killed_at                          # finished rows were kept
    con = duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True)
    total, distinct = con.execute("SELECT count(*), count(DISTINCT qid) FROM results "
                                  "WHERE run = 'r1' AND system = 'parametric'").fetchone()
    tokens = con.execute("SELECT max(completion_tokens), min(retrieval_calls) FROM results"
                         ).fetchone()
    con.close()
    assert total == distinct == LIMIT
    assert tokens[0] <= 4 and tokens[1] == 0
    saved = json.loads((tmp_path / "runs" / "r1" / "config.json").read_text())
    assert saved["config"]["generator"]["max_new_tokens"] == 4
    assert saved["command"].startswith("searchagent eval run --dataset")
    assert saved["limit"] == LIMIT

    changed = command(bm25_index, tmp_path)
    changed[changed.index("--limit") + 1] = "5"
    assert main(changed[3:]) == 2                            # same run name, other settings
    out = tmp_path / "report"
    assert main(["eval", "report", "r1", "--db", str(tmp_path / "runs.duckdb"),
                 "--out", str(out)]) == 0
    assert f"| parametric | {LIMIT} |" in (out / "report.md").read_text()


def test_log_arms_cli_writes_the_arm_table(bm25_index, tmp_path):
    db = tmp_path / "arms.duckdb"
    args = ["eval", "log-arms", "--dataset", f"hotpotqa:{FIX / 'hotpot_official.json'}",
            "--index", str(bm25_index), "--arms", "parametric", "--max-new-tokens", "4",
            "--threads", "1", "--run", "a1", "--db", str(db), "--runs-dir", str(tmp_path)]
    assert main(args) == 0
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT qid, arm, golds, confidence, sup_recall FROM arm_outcomes "
                       "ORDER BY qid").fetchall()
    con.close()
    assert [(r[0], r[1]) for r in rows] == [("hp1", "parametric"), ("hp2", "parametric")]
    assert json.loads(rows[1][2]) == ["yes"]
    assert all(r[3] is not None and r[3] <= 0 for r in rows)     # mean token log-prob
    assert all(r[4] == 0.0 for r in rows)                        # closed book: no passages
    assert main(args) == 0                                        # rerun: nothing to do


def test_a_failed_start_leaves_no_run_to_block_its_retry(bm25_index, tmp_path):
    """The run's settings used to be recorded before the index and generator opened: a
    mistyped --index left runs/a2/config.json, and the corrected command was refused."""
    args = ["eval", "log-arms", "--dataset", f"hotpotqa:{FIX / 'hotpot_official.json'}",
            "--index", str(tmp_path / "typo"), "--arms", "parametric", "--max-new-tokens",
            "4", "--threads", "1", "--run", "a2", "--db", str(tmp_path / "arms.duckdb"),
            "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 2
    assert not (tmp_path / "runs").exists()
    args[args.index(str(tmp_path / "typo"))] = str(bm25_index)
    assert main(args) == 0 and (tmp_path / "runs" / "a2" / "config.json").is_file()
    for name in ("", "../escaped", ".."):
        args[args.index("--run") + 1] = name
        assert main(args) == 2
    assert not (tmp_path / "escaped").exists()
    args[args.index("--run") + 1], args[args.index("--arms") + 1] = "a3", ""
    assert main(args) == 2                                        # no arm: nothing to run


def test_a_run_resumed_from_another_runs_dir_is_checked_against_its_database(bm25_index,
                                                                            tmp_path):
    """The settings check read only runs/<run>/config.json: from another working directory
    or --runs-dir a run resumed with other settings mixed rows of two configurations."""
    args = ["eval", "log-arms", "--dataset", f"hotpotqa:{FIX / 'hotpot_official.json'}",
            "--index", str(bm25_index), "--arms", "parametric", "--max-new-tokens", "4",
            "--threads", "1", "--run", "a4", "--db", str(tmp_path / "arms.duckdb"),
            "--runs-dir", str(tmp_path / "here"), "--limit", "1"]
    assert main(args) == 0
    args[args.index("--runs-dir") + 1] = str(tmp_path / "elsewhere")
    args[args.index("--max-new-tokens") + 1] = "8"
    assert main(args) == 2
    assert not (tmp_path / "elsewhere").exists()
    args[args.index("--max-new-tokens") + 1] = "4"                 # the same settings resume
    assert main(args) == 0 and (tmp_path / "elsewhere" / "a4" / "config.json").is_file()


def test_a_resumed_run_names_what_changed_and_force_keeps_the_old_settings(tmp_path, capsys):
    from eval.run_settings import write_run_config

    def settings(k: int, threads: int, systems: list[str]) -> dict:
        return {"config": {"retrieval": {"k": k}, "generator": {"threads": threads}},
                "datasets": ["d:x.jsonl"], "systems": systems, "limit": 4}

    folder = tmp_path / "run"
    umask = os.umask(0o022)
    try:
        write_run_config(folder, settings(2, 1, ["parametric", "single"]), force=False)
    finally:
        os.umask(umask)
    assert (folder / "config.json").stat().st_mode & 0o777 == 0o644     # not mkstemp's 0600
    write_run_config(folder, settings(2, 4, ["parametric"]), force=False)   # harmless
    recorded = json.loads((folder / "config.json").read_text())
    assert recorded["systems"] == ["parametric", "single"] and "superseded" not in recorded
    with pytest.raises(InputError, match=r"different config\.retrieval\.k \(as recorded in "
                       r".*config\.json\); pick a new"):
        write_run_config(folder, settings(3, 1, ["multi"]), force=False)
    write_run_config(folder, settings(3, 1, ["multi"]), force=True)
    assert "config.retrieval.k changed" in capsys.readouterr().err
    recorded = json.loads((folder / "config.json").read_text())
    assert recorded["config"]["retrieval"]["k"] == 3
    assert recorded["systems"] == ["parametric", "single", "multi"]
    assert recorded["superseded"][0]["config"]["retrieval"]["k"] == 2


def test_a_resumed_run_compares_its_policies_and_not_the_database_path(tmp_path):
    """Another policy folder of the same name (or one retrained in place) resumed a run and
    its rows were credited to the old policy; a copied database refused every resume."""
    from eval.run_settings import write_run_config

    def settings(policies: dict, db: str) -> dict:
        return {"config": {}, "datasets": ["d:x.jsonl"], "limit": 2, "db": db,
                "systems": ["single", *policies], "policies": policies}

    folder = tmp_path / "run"
    write_run_config(folder, settings({"policy:p": "aaa"}, "/x/runs.duckdb"), force=False)
    write_run_config(folder, settings({"policy:p": "aaa"}, "/y/copy.duckdb"), force=False)
    write_run_config(folder, settings({"policy:q": "ccc"}, "/y/copy.duckdb"), force=False)
    recorded = json.loads((folder / "config.json").read_text())   # added systems: a union
    assert recorded["policies"] == {"policy:p": "aaa", "policy:q": "ccc"}
    with pytest.raises(InputError, match=r"different policies\.policy:p \("):
        write_run_config(folder, settings({"policy:p": "bbb"}, "/x/runs.duckdb"), force=False)
    old_record = {"config": {}, "datasets": ["d:x.jsonl"], "limit": 2, "systems": ["single"]}
    write_run_config(tmp_path / "old", old_record, force=False)   # recorded before policies
    write_run_config(tmp_path / "old", settings({}, "/x/runs.duckdb"), force=False)


def test_one_dataset_file_named_relatively_or_absolutely_is_the_same_setting(tmp_path,
                                                                             monkeypatch):
    """`--dataset d:x.jsonl` resumed as `d:/abs/x.jsonl` (or from another directory) was
    refused as a change of datasets; another file under the same name still is."""
    from eval.run_settings import write_run_config

    def settings(spec: str) -> dict:
        return {"config": {}, "datasets": [spec], "systems": ["single"], "limit": 4}

    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "run"
    write_run_config(folder, settings("d:x.jsonl"), force=False)
    assert json.loads((folder / "config.json").read_text())["datasets"] == [
        f"d:{tmp_path / 'x.jsonl'}"]
    write_run_config(folder, settings(f"d:{tmp_path / 'x.jsonl'}"), force=False)
    monkeypatch.chdir(tmp_path / "sub")
    write_run_config(folder, settings("d:../x.jsonl"), force=False)
    with pytest.raises(InputError, match="different datasets"):
        write_run_config(folder, settings("d:x.jsonl"), force=False)   # sub/x.jsonl


def test_a_run_resumed_with_another_policy_of_its_name_is_refused(bm25_index, tmp_path,
                                                                  capsys):
    """Systems were recorded by label alone (``policy:<folder name>``), so another policy
    folder named alike resumed the run and its rows were credited to the first; a copy of
    the database refused to resume at all (its old path was a compared setting)."""
    from policies.persistence import save_policy
    from retrievers.encoder import Encoder
    from tests.policy_data import retrieve_once_cascade

    encoder = Encoder("default")
    save_policy(retrieve_once_cascade(encoder), tmp_path / "a" / "p")
    save_policy(retrieve_once_cascade(encoder, confidence=True), tmp_path / "b" / "p")
    args = ["eval", "run", "--dataset", f"sample:{QUESTIONS}", "--index", str(bm25_index),
            "--policy", str(tmp_path / "a" / "p"), "--max-new-tokens", "2", "--threads", "1",
            "--limit", "1", "--run", "pol", "--db", str(tmp_path / "runs.duckdb"),
            "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 0
    args[args.index("--policy") + 1] = str(tmp_path / "b" / "p")
    assert main(args) == 2
    assert "different policies.policy:p" in capsys.readouterr().err
    shutil.copy(tmp_path / "runs.duckdb", tmp_path / "copy.duckdb")
    args[args.index("--policy") + 1] = str(tmp_path / "a" / "p")
    args[args.index("--db") + 1] = str(tmp_path / "copy.duckdb")
    assert main(args) == 0 and "0 rows written" in capsys.readouterr().out


def test_shards_of_one_run_split_its_questions(bm25_index, tmp_path, capsys):
    """``--shard I/N``: the shards answer disjoint questions that together are the run's,
    and share its settings record; a bad shard is refused."""
    args = ["eval", "run", "--dataset", f"sample:{QUESTIONS}", "--dataset",
            f"hotpotqa:{FIX / 'hotpot_official.json'}", "--index", str(bm25_index),
            "--strategy", "parametric", "--max-new-tokens", "2", "--threads", "1",
            "--limit", "4", "--run", "s1", "--db", str(tmp_path / "runs.duckdb"),
            "--runs-dir", str(tmp_path / "runs")]
    for bad in ("0/2", "3/2", "2"):
        assert main([*args, "--shard", bad]) == 2
    assert "must be I/N with 1 <= I <= N" in capsys.readouterr().err
    rows = []
    for shard in ("2/2", "1/2"):
        assert main([*args, "--shard", shard]) == 0
        con = duckdb.connect(str(tmp_path / "runs.duckdb"), read_only=True)
        rows.append(set(con.execute("SELECT dataset, qid FROM results").fetchall()))
        con.close()
    assert "shard 1/2: 3 of 6 questions" in capsys.readouterr().err   # 4 + 2, each split
    assert len(rows[0]) == 3 and len(rows[1]) == 6 and rows[0] < rows[1]
    assert {dataset for dataset, _ in rows[0]} == {"sample", "hotpotqa"}   # both datasets
    assert main(args) == 0 and "0 rows written" in capsys.readouterr().out   # nothing left
