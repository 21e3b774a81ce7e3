"""Arm log reading, the id split, offline replay (bandit and full information), the CLI."""

from __future__ import annotations

import dataclasses
import json

import duckdb
import numpy as np
import pytest

from policies.armlog import kfold_by_id, load_arm_log, split_by_id
from policies.features import FeatureSpec
from policies.persistence import load_policy
from policies.replay import simplest_within_one_se, train_policy
from policies.scoring import evaluate
from policies.rewards import RewardSpec
from searchagent.cli import main
from searchagent.errors import InputError
from tests.policy_data import replay_data, shared_cache, write_arm_log


@pytest.fixture(scope="module")
def arm_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("armlog") / "arms.duckdb"
    write_arm_log(path, skip_arm_for={5, 7})
    return path


def test_load_arm_log(arm_log, tmp_path):
    table = load_arm_log(arm_log)
    assert len(table) == 298 and table.dropped == 2
    assert table.steps[0].tolist() == [0, 1, 3]
    assert set(np.unique(table.quality["f1"][:, 2])) == {1.0}
    known = table.confidence > -1
    assert (table.quality["f1"][known, 0] == 1).all() and (table.quality["f1"][~known, 0] == 0).all()
    assert isinstance(table.golds[0], list) and table.golds[0]
    # a newer run overrides an older one for the same (dataset, qid, arm)
    path = tmp_path / "two.duckdb"
    write_arm_log(path, run="a", limit=10)
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO arm_outcomes SELECT 'b', dataset, qid, question, arm, prediction, "
                "golds, 0.5, 0.5, 0.5, sup_recall, retrieval_calls, hops, prompt_tokens, "
                "completion_tokens, seconds, confidence, created_at + INTERVAL 1 HOUR "
                "FROM arm_outcomes WHERE arm = 'multi'")
    con.close()
    assert set(load_arm_log(path).quality["f1"][:, 2]) == {0.5}
    assert set(load_arm_log(path, runs=["a"]).quality["f1"][:, 2]) == {1.0}


def test_fixed_strategy_results_add_arm_outcomes(tmp_path):
    from eval.store import create_sql

    write_arm_log(tmp_path / "arms.duckdb", limit=4)
    con = duckdb.connect(str(tmp_path / "runs.duckdb"))
    con.execute(create_sql("results"))
    for arm, calls in (("parametric", 0), ("single", 1), ("multi", 2), ("policy:x", 1)):
        con.execute("INSERT INTO results (run, system, dataset, qid, question, prediction, "
                    "golds, em, f1, acc, retrieval_calls, hops, seconds, arm, trace, "
                    "created_at) VALUES ('fixed', ?, 'other', 'q9', 'Who?', 'x', '[\"x\"]', "
                    "1, 1, 1, ?, ?, 0.5, ?, ?, now())",
                    [arm, calls, calls, arm, json.dumps({"confidence": -0.25, "steps": []})])
    con.close()
    table = load_arm_log(tmp_path / "arms.duckdb", results_from=tmp_path / "runs.duckdb")
    assert len(table) == 5
    row = table.keys.index(("other", "q9"))
    assert table.steps[row].tolist() == [0, 1, 2] and table.confidence[row] == -0.25


def test_bad_arm_logs_fail_clearly(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_arm_log(tmp_path / "nope.duckdb")
    con = duckdb.connect(str(tmp_path / "empty.duckdb"))
    con.execute("CREATE TABLE arm_outcomes (run VARCHAR, dataset VARCHAR, qid VARCHAR)")
    con.close()
    with pytest.raises(InputError, match="lacks column.*question") as info:
        load_arm_log(tmp_path / "empty.duckdb")
    assert "empty.duckdb" in str(info.value)


def test_split_is_disjoint_deterministic_and_order_free():
    keys = [("d", str(i)) for i in range(100)]
    train, test = split_by_id(keys, 0.3, seed=0)
    assert len(test) == 30 and not set(train) & set(test) and len(train) + len(test) == 100
    shuffled = list(reversed(keys))
    _, test2 = split_by_id(shuffled, 0.3, seed=0)
    assert {keys[i] for i in test} == {shuffled[i] for i in test2}
    _, test3 = split_by_id(keys, 0.3, seed=1)
    assert set(test3) != set(test)
    folds = kfold_by_id(keys, 5)
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(100))
    assert all(not set(tr) & set(te) and len(tr) + len(te) == 100 for tr, te in folds)


@pytest.mark.parametrize("algo,mode", [("linucb", "bandit"), ("thompson", "bandit"),
                                       ("linucb", "full"), ("supervised", "full")])
def test_replay_beats_every_fixed_arm_on_heldout(arm_log, algo, mode):
    table, embeddings, name = replay_data(arm_log)
    train, test = split_by_id(table.keys, 0.3, seed=0)
    bundle, log = train_policy(algo, table.subset(train), embeddings[train],
                               FeatureSpec(embedder=name, projection="random", proj_dim=32),
                               RewardSpec(lam=0.1), mode, epochs=2, seed=0)
    result = evaluate(bundle, table.subset(test), embeddings[test])
    policy, refs = result["policy"], result["references"]
    assert policy["reward"] > result["best_fixed_reward"] + 0.03
    assert policy["reward"] <= refs["oracle"]["reward"] + 1e-9
    assert 0.2 < policy["gap_closed"] <= 1.0
    assert policy["steps"] < refs["always-multi"]["steps"]
    if mode == "bandit":   # regret shrinks as the policy learns
        half = len(log.regret) // 2
        assert log.regret[half:].mean() < log.regret[:half].mean()
        assert len(log.cumulative_regret) == 2 * len(train)


def test_cli_train_and_eval(arm_log, tmp_path, capsys):
    out = tmp_path / "policy"
    args = ["--log", str(arm_log), "--cache", str(shared_cache())]
    assert main(["policy", "train", *args, "--algo", "linucb", "--lam", "0.1", "--out",
                 str(out), "--projection", "random", "--proj-dim", "32", "--epochs", "2",
                 "--param", "alpha=0.3"]) == 0
    printed = capsys.readouterr().out
    assert "held-out (89 questions)" in printed and "oracle" in printed
    bundle = load_policy(out)
    assert bundle.policy.alpha == 0.3 and bundle.meta["train_questions"] == 209
    assert main(["policy", "eval", *args, "--policy", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["policy"]["reward"] == pytest.approx(bundle.meta["heldout"]["reward"])
    assert main(["policy", "train", *args, "--algo", "linucb", "--out", str(out),
                 "--param", "gamma"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["policy", "train", *args, "--algo", "outcome", "--out", str(out),
                 "--param", "reg=1"]) == 2
    assert "its parameters: lam, embed_dims, l2" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    (tmp_path / "a-file").write_text("precious")
    for flags, message in ((["--algo", "linucb", "--param", "alpha=abc"], "alpha"),
                           (["--out", str(tmp_path / "mine")], "it holds notes.txt"),
                           (["--out", str(tmp_path / "a-file")], "it is a file, not a folder"),
                           (["--out", ""], "field 'out'"),
                           (["--epochs", "0"], "field 'epochs': must be >= 1"),
                           (["--lam", "nan"], "field 'lam': must be a finite number")):
        assert main(["policy", "train", *args, "--out", str(out), *flags]) == 2  # tracebacks,
        assert message in capsys.readouterr().err                   # or NaN in policy.json
    assert main(["policy", "train", *args, "--out", str(out), "--test-frac", "0.999"]) == 2
    assert "field 'test_frac': 0 training question(s): the log has 298" in \
        capsys.readouterr().err


def test_cli_default_cascade_policy_on_every_question(arm_log, tmp_path, capsys):
    out = tmp_path / "policy"
    args = ["--log", str(arm_log), "--cache", str(shared_cache())]
    assert main(["policy", "train", *args, "--lam", "0.1", "--test-frac", "0",
                 "--out", str(out)]) == 0
    assert "no held-out split" in capsys.readouterr().out
    bundle = load_policy(out)
    assert bundle.policy.algo == "cascade" and bundle.meta["mode"] == "full"
    assert bundle.meta["train_questions"] == 298 and bundle.meta["heldout"] is None
    assert {"starts_lower", "question_mark"} <= set(bundle.features.names)
    assert main(["policy", "eval", *args, "--policy", str(out)]) == 2
    assert "--test-frac 0" in capsys.readouterr().err
    assert main(["policy", "eval", *args, "--policy", str(out), "--split", "all",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["policy"]["reward"] > result["best_fixed_reward"]


def test_grid_params_are_tuned_inside_the_training_split(arm_log):
    table, embeddings, name = replay_data(arm_log)
    train, _ = split_by_id(table.keys, 0.3, seed=0)
    spec, reward = FeatureSpec(embedder=name, projection="random", proj_dim=32), RewardSpec(0.1)
    bundle, _ = train_policy("linucb", table.subset(train), embeddings[train], spec, reward,
                             "full", params={"reg": [1e5, 1.0], "alpha": 0.3})
    tuning = bundle.meta["tuning"]
    # the log has a learnable rule: inner CV prefers fitting it over shrinking it away
    assert tuning["chosen"] == {"reg": 1.0} and tuning["folds"] == 3
    assert tuning["cv_reward"]["1.0"] > tuning["cv_reward"]["100000.0"] + 0.03
    assert bundle.policy.reg == 1.0 and bundle.policy.alpha == 0.3
    with pytest.raises(InputError, match="empty grid"):
        train_policy("linucb", table.subset(train), embeddings[train], spec, reward, "full",
                     params={"reg": []})


def test_one_standard_error_rule_prefers_shrinkage_only_within_the_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, 400)
    swing = np.tile([1.0, -1.0], 200)                     # paired SE of the difference: 0.05
    close = {(1.0,): noise + 0.05, (100.0,): noise + 0.02 + swing}
    assert simplest_within_one_se(close, (1.0,), ["reg"]) == (100.0,)
    far = {(1.0,): noise + 0.5, (100.0,): noise}              # paired SE is 0
    assert simplest_within_one_se(far, (1.0,), ["reg"]) == (1.0,)
    # no shrinkage parameter in the grid: the best value stays
    assert simplest_within_one_se({(0.1,): noise, (0.9,): noise + 0.01}, (0.9,),
                                   ["alpha"]) == (0.9,)


def test_one_se_tuning_falls_back_to_shrinkage_without_signal(arm_log):
    table, embeddings, name = replay_data(arm_log)
    perm = np.random.default_rng(5).permutation(len(table))   # outcomes unrelated to features
    table = dataclasses.replace(table, quality={m: q[perm] for m, q in table.quality.items()},
                                steps=table.steps[perm])
    spec, reward = FeatureSpec(embedder=name, projection="random", proj_dim=32), RewardSpec(0.1)
    grid = {"reg": [1.0, 1e5]}
    bundle, _ = train_policy("linucb", table, embeddings, spec, reward, "full", params=grid)
    assert bundle.meta["tuning"]["rule"] == "one-se" and bundle.policy.reg == 1e5
    best, _ = train_policy("linucb", table, embeddings, spec, reward, "full", params=grid,
                           tune_rule="best")
    cv = best.meta["tuning"]["cv_reward"]
    # on this permutation reg=1 fits noise that wins inner CV by a margin within one SE
    assert best.policy.reg == 1.0 and cv["1.0"] > cv["100000.0"] + 0.005
    with pytest.raises(InputError, match="unknown tuning rule"):
        train_policy("linucb", table, embeddings, spec, reward, "full", params=grid,
                     tune_rule="median")


def test_a_log_without_confidences_trains_without_that_feature(arm_log, tmp_path, capsys):
    import shutil

    log = tmp_path / "published.duckdb"
    shutil.copy(arm_log, log)
    with duckdb.connect(str(log)) as con:
        con.execute("UPDATE arm_outcomes SET confidence = NULL")
    out = tmp_path / "policy"
    assert main(["policy", "train", "--log", str(log), "--cache", str(shared_cache()),
                 "--algo", "linucb", "--epochs", "1", "--out", str(out)]) == 0
    assert "no closed-book confidences" in capsys.readouterr().err
    assert load_policy(out).features.spec.confidence is False
