"""Policies driven the wrong way: bad hyperparameters, damaged policy folders, a folder a
server is serving, logs with gaps, and which journal rows off-policy evaluation may use."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from policies.features import FeatureMap, FeatureSpec
from policies.persistence import make_policy
from searchagent.errors import InputError


@pytest.mark.parametrize("algo, params", [
    ("linucb", {"reg": 0}), ("linucb", {"reg": -5}), ("linucb", {"reg": math.nan}),
    ("linucb", {"alpha": -1}), ("thompson", {"v": -1}), ("thompson", {"reg": 0}),
    ("neural", {"eps": 2}), ("neural", {"eps_min": -0.1}), ("neural", {"eps_decay": 0}),
    ("neural", {"batch": 0}), ("neural", {"buffer": 0}), ("neural", {"lr": 0}),
    ("supervised", {"lr": -1}), ("supervised", {"l2": -1}), ("supervised", {"epochs": 0}),
])
def test_out_of_range_hyperparameters_are_refused(algo, params):
    # reg=0 divided by zero (a policy of NaNs that always served arm 0), eps=2 journaled
    # propensities above 1 and below 0, batch=0 crashed at the first update
    with pytest.raises(InputError, match=f"{algo} needs") as caught:
        make_policy(algo, 6, **params)
    assert caught.value.field == "params"


def test_neural_exploration_probabilities_stay_a_distribution():
    policy = make_policy("neural", 6, eps=1.0, eps_min=1.0)
    probabilities = policy.arm_probabilities(np.zeros(6))
    assert np.allclose(probabilities, 1 / 3)


def small_fmap() -> FeatureMap:
    return FeatureMap.fit(FeatureSpec(embed_dim=8))


def saved_linucb(folder) -> dict:
    from policies.persistence import PolicyBundle, save_policy
    from policies.rewards import RewardSpec

    fmap = small_fmap()
    save_policy(PolicyBundle(make_policy("linucb", fmap.dim), fmap, RewardSpec(0.1)), folder)
    return json.loads((folder / "policy.json").read_text())


def _rewrite_arrays(folder, doc: dict, drop: str) -> None:
    import hashlib

    name = next(iter(doc["files"]))
    with np.load(folder / name) as data:
        arrays = {k: data[k] for k in data.files if k != drop}
    np.savez(folder / name, **arrays)
    blob = (folder / name).read_bytes()
    doc["files"][name] = {"size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


@pytest.mark.parametrize("damage, message", [
    (lambda doc, folder: doc.update(params=[1]), "field 'params': expected a JSON object"),
    (lambda doc, folder: doc.update(files=None), "field 'files': expected a JSON object"),
    (lambda doc, folder: doc.update(state=None), "field 'state': expected a JSON object"),
    (lambda doc, folder: doc.update(dim="abc"), "damaged policy"),
    (lambda doc, folder: doc["state"].update(rng={"x": 1}), "damaged policy"),
    (lambda doc, folder: _rewrite_arrays(folder, doc, "b"), "lacks array 'b'"),
])
def test_a_damaged_policy_file_is_named_not_a_traceback(tmp_path, damage, message):
    from policies.persistence import load_policy

    doc = saved_linucb(tmp_path)
    damage(doc, tmp_path)
    (tmp_path / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=message) as caught:
        load_policy(tmp_path)
    assert str(tmp_path / "policy.json") in str(caught.value)


def test_training_into_a_folder_a_server_serves_is_refused(tmp_path):
    # the server kept its policy in memory and its next snapshot overwrote the new one
    import os
    import subprocess
    import sys

    import duckdb

    from policies.online import JOURNAL
    from tests.policy_data import write_arm_log

    write_arm_log(tmp_path / "arms.duckdb", limit=20)
    folder = tmp_path / "served"
    folder.mkdir()
    before = saved_linucb(folder)
    journal = duckdb.connect(str(folder / JOURNAL))          # as a serving process holds it
    with journal:
        run = subprocess.run([sys.executable, "-m", "searchagent", "policy", "train", "--log",
                              str(tmp_path / "arms.duckdb"), "--algo", "fixed", "--out",
                              str(folder)], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2, run.stderr
    assert "decision journal is in use by another process (PID " in run.stderr
    assert "Traceback" not in run.stderr
    assert json.loads((folder / "policy.json").read_text())["algo"] == before["algo"]


@pytest.fixture(scope="module")
def gappy_log(tmp_path_factory):
    from tests.policy_data import write_arm_log

    path = tmp_path_factory.mktemp("gappy") / "arms.duckdb"
    write_arm_log(path, limit=40, skip_arm_for={3, 5, 8})    # 'multi' missing for 3
    return path


def log_args(log) -> list[str]:
    from tests.policy_data import shared_cache

    return ["--log", str(log), "--cache", str(shared_cache())]


def test_an_empty_split_or_another_split_is_refused_by_policy_eval(gappy_log, tmp_path, capsys):
    from searchagent.cli import main

    out = tmp_path / "policy"
    assert main(["policy", "train", *log_args(gappy_log), "--algo", "fixed", "--test-frac",
                 "0.001", "--out", str(out)]) == 0
    assert "--test-frac 0.001 holds out none of 37 questions" in capsys.readouterr().out
    assert main(["policy", "eval", *log_args(gappy_log), "--policy", str(out)]) == 2  # IndexError
    assert "field 'split': the test split of this log is empty" in capsys.readouterr().err
    assert main(["policy", "eval", *log_args(gappy_log), "--policy", str(out),
                 "--split", "all"]) == 0
    capsys.readouterr()
    for flags in (["--test-frac", "0.5"], ["--split-seed", "3"]):   # silently ignored before
        assert main(["policy", "eval", *log_args(gappy_log), "--policy", str(out),
                     "--split", "all", *flags]) == 2
        assert "its held-out split is fixed by that" in capsys.readouterr().err
    assert main(["policy", "eval", *log_args(gappy_log), "--policy", str(out), "--split", "all",
                 "--test-frac", "0.001", "--split-seed", "0"]) == 0      # the same: fine


def test_questions_lacking_an_arm_and_unknown_runs_are_named(gappy_log, tmp_path, capsys):
    from searchagent.cli import main

    out = tmp_path / "policy"
    assert main(["policy", "train", *log_args(gappy_log), "--algo", "fixed", "--out",
                 str(out)]) == 0                        # the 3 were dropped without a word
    err = capsys.readouterr().err
    assert "left out 3 question(s) that lack an arm's outcome (missing multi for 3 (e.g. " \
           "dataset=sample qid=" in err and "37 have every arm" in err
    assert main(["policy", "eval", *log_args(gappy_log), "--policy", str(out)]) == 0
    assert "left out 3 question(s)" in capsys.readouterr().err
    for flags, message in ((["--run", "synthetic", "--run", "nope"],
                            "field '--run': no arm outcomes for run 'nope' (the log has "
                            "synthetic)"),
                           (["--dataset", "squad"], "no arm outcomes for dataset 'squad' "
                            "(the log has sample)")):
        assert main(["policy", "eval", *log_args(gappy_log), "--policy", str(out),
                     *flags]) == 2           # was: 'no question with every arm'
        assert message in capsys.readouterr().err


def test_ope_leaves_out_the_cascades_routes(tmp_path):
    # a cascade row's propensity is its route's (a product of steps), not P(served arm),
    # and its reward pays for every arm that ran: as arm-level IPS input it was biased
    from policies.online import OnlineLearner
    from policies.ope import journal_bandit_log
    from policies.persistence import PolicyBundle
    from policies.rewards import RewardSpec

    fmap = small_fmap()
    learner = OnlineLearner(tmp_path, PolicyBundle(make_policy("thompson", fmap.dim), fmap,
                                                   RewardSpec(0.1)))
    x = fmap.transform(np.ones((1, 8)), ["who?"], [-0.3])[0]
    routes = [learner.journal(x, "who?", "parametric", [], propensity=0.8 * 0.7, answers=[
        {"arm": "parametric", "answer": "Rome", "calls": 0},
        {"arm": "single", "answer": "Oslo", "calls": 1}]) for _ in range(3)]
    for decision in routes:
        learner.record_served(decision.request_id, "Rome", 1, 0.1)
        learner.feedback(decision.request_id, gold="Rome")
    with pytest.raises(InputError, match="served by the answer cascade"):
        journal_bandit_log(learner)
    drawn = learner.decide(x, "who?")
    learner.record_served(drawn.request_id, "Rome", 1, 0.1)
    learner.feedback(drawn.request_id, gold="Rome")
    log = journal_bandit_log(learner)
    assert log.propensities.tolist() == [pytest.approx(drawn.propensity)]
    learner.close()
    assert len(journal_bandit_log(tmp_path).actions) == 1          # the read-only path too


def test_a_bare_reward_the_outcome_models_cannot_learn_from_is_not_applied(tmp_path):
    # feedback said applied: true, yet the outcome models only learn quality and cost apart
    from policies.online import OnlineLearner
    from policies.persistence import PolicyBundle
    from policies.rewards import RewardSpec

    fmap = small_fmap()
    policy = make_policy("outcome", fmap.dim, embed_dims=8)
    learner = OnlineLearner(None, PolicyBundle(policy, fmap, RewardSpec(0.1)), explore=False)
    x = fmap.transform(np.ones((1, 8)), ["who?"], [-0.3])[0]
    first, second = (learner.decide(x, "who?") for _ in range(2))
    for decision in (first, second):
        learner.record_served(decision.request_id, "Rome", 0, 0.1)
    assert not learner.feedback(first.request_id, reward=0.7).applied
    assert len(policy.X) == 0
    assert learner.feedback(second.request_id, gold="Rome").applied
    assert len(policy.X) == 1


def test_a_policy_trained_into_a_folder_does_not_replay_the_old_policys_feedback(tmp_path):
    """The folder's journal kept feedback on the policy being replaced (rewards on its
    lambda and metric); the new policy replayed all of it when it was next opened."""
    from policies.online import OnlineLearner
    from policies.persistence import load_policy
    from searchagent.cli import main
    from tests.policy_data import write_arm_log

    write_arm_log(tmp_path / "arms.duckdb", limit=20)
    out = tmp_path / "policy"
    train = ["policy", "train", *log_args(tmp_path / "arms.duckdb"), "--algo", "linucb",
             "--test-frac", "0", "--out", str(out)]
    assert main(train) == 0
    served = OnlineLearner(out)
    x = np.zeros(served.bundle.features.dim)
    for _ in range(3):
        decision = served.journal(x, "who?", "single", [0.0, 0.0, 0.0])
        assert served.feedback(decision.request_id, reward=1.0).applied
    served.close()
    assert main(train + ["--lam", "0.3"]) == 0
    trained = load_policy(out).policy.updates
    reopened = OnlineLearner(out)
    assert reopened.bundle.policy.updates == trained           # nothing replayed
    assert reopened.stats()["feedback"] == 3                   # the journal keeps them
    reopened.close()


def test_train_refuses_what_it_cannot_honour_and_reuses_a_killed_saves_folder(gappy_log,
                                                                              tmp_path, capsys):
    """--cost seconds on a log without times trained on quality alone, silently; --mode
    bandit for the supervised classifier trained on full information; a nested --param
    crashed after the whole cross-validation; a damaged journal read as 'in use by another
    process'; a save killed before its policy.json left a folder train refused; eval --json
    printed NaN, which strict JSON parsers reject."""
    import shutil
    import subprocess

    import duckdb

    from policies.online import JOURNAL
    from searchagent.cli import main

    untimed = tmp_path / "untimed.duckdb"
    shutil.copy(gappy_log, untimed)
    with duckdb.connect(str(untimed)) as con:          # as eval import-arms writes them
        con.execute("UPDATE arm_outcomes SET seconds = 0")
    out = tmp_path / "policy"
    for log, flags, message in (
            (untimed, ["--algo", "outcome", "--cost", "seconds"],
             "field 'cost': the log records no answer's seconds"),
            (gappy_log, ["--algo", "supervised", "--mode", "bandit"],
             "--mode bandit does not apply"),
            (gappy_log, ["--algo", "linucb", "--param", "alpha=[[1]]"],
             "field '--param alpha': expected a value or a non-empty list")):
        assert main(["policy", "train", *log_args(log), *flags, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    dead = subprocess.Popen(["true"])
    dead.wait()
    out.mkdir()                                          # what a killed first save leaves
    (out / "arrays-0123456789ab.npz").write_bytes(b"partial")
    (out / f".policy.tmp-{dead.pid}-0123456789ab.json").write_text("{")
    assert main(["policy", "train", *log_args(gappy_log), "--algo", "fixed", "--lam", "10",
                 "--out", str(out)]) == 0
    names = sorted(path.name for path in out.iterdir())
    assert names[-1] == "policy.json" and len(names) == 2 and names[0].startswith("arrays-")
    capsys.readouterr()
    assert main(["policy", "eval", *log_args(gappy_log), "--policy", str(out), "--split",
                 "all", "--json"]) == 0       # lambda 10: the oracle is closed book, no gap
    result = json.loads(capsys.readouterr().out, parse_constant=lambda name: 1 / 0)
    assert result["policy"]["gap_closed"] is None
    (out / JOURNAL).write_text("not a database")
    assert main(["policy", "train", *log_args(gappy_log), "--algo", "fixed", "--out",
                 str(out)]) == 2
    assert "cannot open the policy's decision journal" in capsys.readouterr().err
