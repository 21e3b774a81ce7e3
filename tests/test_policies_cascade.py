"""The answer cascade (policies/cascade.py) and its answer features: a signal planted only in
the answers (not in the question) is learned, the cascade persists exactly, bad inputs are
named, and the agent-only entry points refuse a once-per-question decision."""

from __future__ import annotations

import numpy as np
import pytest

from policies.answer_features import agreement, answer_features, feature_count
from policies.armlog import ArmTable
from policies.features import FeatureSpec
from policies.online import OnlineLearner
from policies.persistence import load_policy, save_policy
from policies.replay import train_policy
from policies.scoring import evaluate, features_for
from policies.rewards import RewardSpec
from searchagent.errors import InputError

WORDS = ["river", "castle", "album", "senator", "novel", "bridge", "painter", "island"]
SPEC = FeatureSpec(embedder="test", embed_dim=8, confidence=False, cues=True, standardize=True)


def planted_table(n: int, seed: int = 0) -> tuple[ArmTable, np.ndarray, np.ndarray]:
    """Questions carry no signal. Kind 0 (30%): closed book answers a year and is right
    (stop); kind 1 (50%): closed book and one retrieval agree and are right (retrieve,
    serve); kind 2 (20%): they disagree and only multi-hop is right (escalate). Kinds 1
    and 2 look alike until the retrieved answer is in. 5% of outcomes are flipped."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(3, n, p=[0.3, 0.5, 0.2])
    answers, quality = [], np.zeros((n, 3))
    for i, kind in enumerate(kinds):
        if kind == 0:
            answers.append([str(rng.integers(1800, 2000)), "Anna Karenina", "1905"])
            quality[i] = [1, 0, 1]
        elif kind == 1:
            city = rng.choice(["Paris", "Lyon", "Oslo"])
            answers.append([city, f"the {city}", city])
            quality[i] = [1, 1, 1]
        else:
            answers.append(["Rome", "Milan Cathedral", "Turin"])
            quality[i] = [0, 0, 1]
    quality = np.where(rng.random(quality.shape) < 0.05, 1 - quality, quality)
    questions = [" ".join(rng.choice(WORDS, 5)) + "?" for _ in range(n)]
    steps = np.tile([0.0, 1.0, 3.0], (n, 1))
    table = ArmTable([("synthetic", f"q{i}") for i in range(n)], questions, [["x"]] * n,
                     {m: quality for m in ("em", "f1", "acc")}, steps, steps.copy(),
                     np.full(n, np.nan), answers=answers)
    emb = rng.standard_normal((n, 8)).astype(np.float32)
    return table, emb, kinds


def test_answer_features_measure_agreement():
    assert agreement("The Paris", "paris") == [1.0, 1.0, 1.0, 1.0]
    same, f1, first_in, second_in = agreement("Paris", "Paris, France")
    assert same == 0.0 and 0.6 < f1 < 0.7 and first_in == 1.0 and second_in == 0.0
    assert agreement("", "Rome")[:2] == [0.0, 0.0]
    for k in (1, 2, 3):
        assert len(answer_features("Who?", ["1912", "Oslo", "yes"][:k])) == feature_count(k)


def test_planted_answer_signal_is_learned_and_persists(tmp_path):
    table, emb, kinds = planted_table(900)
    train, test = np.arange(600), np.arange(600, 900)
    reward = RewardSpec(lam=0.05, metric="f1")
    bundle, _ = train_policy("cascade", table.subset(train), emb[train], SPEC, reward,
                             params={"neighbors": 20, "l2": 1.0, "cue_weight": 3.0})
    held = table.subset(test)
    X = features_for(held, bundle.features, emb[test])
    served, spent = bundle.policy.routes(X, held.questions, held.answers, held.steps)
    kind = kinds[test]
    # the planted routes: stop (0 calls), retrieve once (1), retrieve then escalate (4)
    assert (spent[kind == 0] == 0).mean() > 0.9
    assert (spent[kind == 1] == 1).mean() > 0.9
    assert (spent[kind == 2] == 4).mean() > 0.9 and (served[kind == 2] == 2).mean() > 0.9
    result = evaluate(bundle, held, emb[test])
    # best fixed arm: multi-hop, 0.95 - 0.05 * 3; the cascade ~ 0.95 - 0.05 * 1.3
    assert result["policy"]["reward"] > result["best_fixed_reward"] + 0.04
    assert result["policy"]["steps"] == pytest.approx(spent.mean())
    held.seconds = held.steps.copy()      # a route's seconds: every arm it ran (was: the
    assert evaluate(bundle, held, emb[test])["policy"]["seconds"] == \
        pytest.approx(spent.mean())       # served arm's only)
    outcome, _ = train_policy("outcome", table.subset(train), emb[train], SPEC, reward)
    assert result["policy"]["reward"] > evaluate(outcome, held, emb[test])["policy"]["reward"]

    save_policy(bundle, tmp_path)
    loaded = load_policy(tmp_path, expect_fingerprint=bundle.fingerprint)
    again = loaded.policy.routes(X, held.questions, held.answers, held.steps)
    assert np.array_equal(again[0], served) and np.array_equal(again[1], spent)
    action, values = loaded.policy.decide(1, X[0], held.questions[0], held.answers[0][:2])
    assert action in ("serve_closed_book", "serve_single", "escalate") and len(values) == 3


def test_online_feedback_teaches_every_step_and_survives_a_restart(tmp_path):
    """Trained where retrieving once pays; then online closed book is right and the
    retrieved / multi-hop answers wrong: after the feedback the cascade stops after closed
    book, and a restart replays the feedback no snapshot holds."""
    table, emb, _ = planted_table(60)
    table.quality = {m: np.tile([0.0, 1.0, 1.0], (60, 1)) for m in ("em", "f1", "acc")}
    bundle, _ = train_policy("cascade", table, emb, SPEC, RewardSpec(lam=0.05))
    X = features_for(table, bundle.features, emb)
    assert bundle.policy.decide(0, X[0], table.questions[0], ["Oslo"])[0] == "single"
    learner = OnlineLearner(tmp_path, bundle, snapshot_every=1000)
    for i in range(120):       # closed book right; one retrieval, or multi-hop, wrong
        second = ("single", "Paris", 1) if i % 2 else ("multi", "Lyon", 3)
        ran = [{"arm": "parametric", "answer": "Oslo", "calls": 0},
               dict(zip(("arm", "answer", "calls"), second))]
        decision = learner.journal(X[i % 60], table.questions[i % 60], second[0], [],
                                   answers=ran)
        learner.record_served(decision.request_id, second[1], second[2], 0.1)
        assert learner.feedback(decision.request_id, gold="Oslo").applied
    assert bundle.policy.decide(0, X[0], table.questions[0], ["Oslo"])[0] == "stop"
    rows = [len(model.Q) for model in bundle.policy.models]
    assert rows == [60 + 120, 60 + 60, 60]          # one row per step a feedback reached
    learner.con.close()                       # killed: the journal has it, no snapshot does
    again = OnlineLearner(tmp_path)
    assert [len(model.Q) for model in again.bundle.policy.models] == rows
    assert again.bundle.policy.decide(0, X[0], table.questions[0], ["Oslo"])[0] == "stop"
    with pytest.raises(InputError, match="not a cascade route"):
        again.bundle.policy.learn(X[0], "q", [{"arm": "single", "answer": "a", "calls": 1,
                                               "quality": 1.0}], "single")
    values = [again.bundle.policy.decide(k, X[1], table.questions[1], answers)[1]
              for k, answers in enumerate([["Oslo"], ["Oslo", "Paris"]])]
    assert any(model.stale for model in again.bundle.policy.models)   # rows not fitted yet
    again.close()                       # a snapshot; reloading it used to fit them too
    third = OnlineLearner(tmp_path)
    assert all(np.allclose(third.bundle.policy.decide(k, X[1], table.questions[1], a)[1], v)
               for k, (a, v) in enumerate(zip([["Oslo"], ["Oslo", "Paris"]], values)))
    third.close()


def test_cascade_inputs_and_entry_points_are_checked(tmp_path):
    table, emb, _ = planted_table(60)
    reward = RewardSpec(lam=0.05)
    table.answers = None
    with pytest.raises(InputError, match="each arm's answer") as info:
        train_policy("cascade", table, emb, SPEC, reward)
    assert info.value.field == "prediction"
    table, emb, _ = planted_table(60)
    with pytest.raises(InputError, match="--cost steps"):
        train_policy("cascade", table, emb, SPEC, RewardSpec(lam=0.05, cost="seconds"))
    bundle, _ = train_policy("cascade", table, emb, SPEC, reward)
    x = features_for(table, bundle.features, emb)[0]
    with pytest.raises(InputError, match="step 2 needs 3 answers, got 2"):
        bundle.policy.decide(2, x, table.questions[0], ["Rome", "Oslo"])
    with pytest.raises(InputError, match="decides after each answer"):
        bundle.policy.choose(x)
    learner = OnlineLearner(tmp_path, bundle)
    with pytest.raises(InputError, match="driven by the agent"):
        learner.decide(x, table.questions[0])
    forced = learner.decide(x, table.questions[0], forced_arm="multi")   # still journaled
    assert forced.arm == "multi" and forced.forced
    learner.close()


def test_a_parameter_grid_is_tuned_on_the_cascades_routes():
    """A list-valued parameter is chosen by inner cross-validation of the cascade's own
    routes (served answer less lambda x every call the route spent)."""
    table, emb, _ = planted_table(300)
    reward = RewardSpec(lam=0.05, metric="f1")
    bundle, _ = train_policy("cascade", table, emb, SPEC, reward, tune_rule="best",
                             params={"neighbors": 20, "l2": [1.0, 1000.0], "cue_weight": 3.0,
                                     "lam_grid": [0.05, 0.2]})     # a list, not a grid
    tuning = bundle.meta["tuning"]
    cv = tuning["cv_reward"]
    assert set(cv) == {"1.0", "1000.0"} and tuning["chosen"]["l2"] == float(max(cv, key=cv.get))
    assert bundle.policy.lam_grid == [0.05, 0.2]
    # always multi-hop earns 0.95 - 0.05 * 3; the planted routes ~0.95 - 0.05 * 1.3
    assert max(cv.values()) > 0.85 and bundle.policy.model_params["l2"] == tuning["chosen"]["l2"]


def test_a_requests_lambda_is_honoured_and_older_saves_still_load():
    """Trained at lambda 0.05 (retrieving once pays for kinds 1 and 2); a request at lambda 1
    makes every call dearer than any answer is worth, so every route stops at closed book.
    A cascade saved before step 1 had a column per lambda loads as one at its own lambda."""
    table, emb, kinds = planted_table(600)
    bundle, _ = train_policy("cascade", table, emb, SPEC, RewardSpec(lam=0.05),
                             params={"neighbors": 20, "l2": 1.0, "cue_weight": 3.0})
    cascade = bundle.policy
    X = features_for(table, bundle.features, emb)
    served, spent = cascade.routes(X, table.questions, table.answers, table.steps)
    assert (spent[kinds > 0] >= 1).mean() > 0.9
    served_dear, spent_dear = cascade.routes(X, table.questions, table.answers, table.steps,
                                             lam=1.0)
    assert (spent_dear == 0).all() and (served_dear == 0).all()
    assert cascade.decide(0, X[0], table.questions[0], table.answers[0][:1], lam=1.0)[0] == "stop"

    values, arrays = cascade.state()
    at_own_lam = 2 + cascade.lam_grid.index(0.05)
    del values["first_columns"]
    for part in ("Q", "C"):
        arrays[f"cascade0.{part}"] = arrays[f"cascade0.{part}"][:, [0, at_own_lam, 1]]
    old = type(cascade)(cascade.dim, lam=0.05, embed_dims=cascade.embed_dims,
                        **cascade.model_params)
    old.load_state(values, arrays)
    assert old.lam_grid == [0.05]
    again = old.routes(X, table.questions, table.answers, table.steps)
    assert np.array_equal(again[0], served) and np.array_equal(again[1], spent)


def test_exploring_steps_take_random_actions_with_their_probabilities():
    table, emb, _ = planted_table(120)
    bundle, _ = train_policy("cascade", table, emb, SPEC, RewardSpec(lam=0.05),
                             params={"eps": 0.5})
    cascade, x = bundle.policy, features_for(table, bundle.features, emb)[0]
    answers = dict(zip(("parametric", "single", "multi"), table.answers[0]))
    greedy = cascade.walk(x, table.questions[0], answers.get)[2][0]["action"]
    firsts = []
    for _ in range(300):
        steps = cascade.walk(x, table.questions[0], answers.get, explore=True)[2]
        for step in steps:
            chosen_is_greedy = not step["explored"]
            assert step["probability"] == pytest.approx(0.5 * chosen_is_greedy + 0.5 / 3)
        firsts.append(steps[0]["action"])
    # a random first action other than the greedy one: 0.5 x 2/3 of the walks
    assert 0.25 < np.mean([a != greedy for a in firsts]) < 0.42
    assert all(step["probability"] == 1.0 and not step["explored"]
               for step in cascade.walk(x, table.questions[0], answers.get)[2])
