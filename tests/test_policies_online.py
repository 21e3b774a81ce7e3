"""The online learner: journaled decisions, feedback, persistence across restarts, threads."""

from __future__ import annotations

import threading

import duckdb
import numpy as np
import pytest

from policies.features import FeatureMap, FeatureSpec
from policies.linucb import LinUCB
from policies.neural import NeuralEpsGreedy
from policies.online import JOURNAL, OnlineLearner
from policies.ope import journal_bandit_log
from policies.persistence import PolicyBundle, load_policy, save_policy
from policies.rewards import RewardSpec
from searchagent.errors import ConflictError, InputError


def make_bundle(lam: float = 0.1) -> PolicyBundle:
    fmap = FeatureMap.fit(FeatureSpec(embed_dim=8))
    return PolicyBundle(LinUCB(fmap.dim, seed=0), fmap, RewardSpec(lam=lam))


def features(fmap: FeatureMap, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return fmap.transform(rng.standard_normal((1, 8)), ["who wrote it?"], [-0.3])[0]


def test_feedback_updates_and_a_restart_loses_nothing(tmp_path):
    bundle = make_bundle()
    learner = OnlineLearner(tmp_path, bundle, explore=False, snapshot_every=1000)
    fmap = bundle.features
    served = []
    for i in range(6):
        decision = learner.decide(features(fmap, i), f"q{i}")
        learner.record_served(decision.request_id, "Paris", retrieval_calls=1, seconds=0.5)
        served.append(decision)
    assert all(d.fingerprint == fmap.fingerprint and len(d.scores) == 3 for d in served)
    first = learner.feedback(served[0].request_id, gold=["Paris"])
    assert first.applied and first.quality == 1.0
    assert first.reward == pytest.approx(1.0 - 0.1 * 1)
    assert learner.decide(probe_features := features(fmap, 50), "q", lam=0.3).lam == 0.3
    assert learner.feedback(served[1].request_id, reward=-0.5).reward == -0.5
    assert learner.decide(probe_features, "q", lam=0.3).lam is None   # bare reward: no parts
    assert learner.feedback(served[2].request_id, gold="London").quality == 0.0
    assert bundle.policy.updates == 3
    probe = features(fmap, 99)
    expected = bundle.policy.scores(probe, explore=False)
    # simulate a crash: no close(), no snapshot since the first save
    learner.con.close()
    assert load_policy(tmp_path).policy.updates == 0
    reopened = OnlineLearner(tmp_path, explore=False)
    assert reopened.bundle.policy.updates == 3
    assert np.allclose(reopened.bundle.policy.scores(probe, explore=False), expected)
    assert load_policy(tmp_path).policy.updates == 3          # replay took a snapshot
    with pytest.raises(InputError, match="already has feedback"):
        reopened.feedback(served[0].request_id, reward=1.0)
    reopened.feedback(served[3].request_id, reward=0.2)       # decisions survive restarts
    with pytest.raises(InputError, match="unknown request id"):
        reopened.feedback("nope", reward=1.0)
    with pytest.raises(InputError, match="exactly one"):
        reopened.feedback(served[4].request_id)
    for gold in ("", "The.", ["a", " "]):     # EM 1 for an empty answer: refused, and the
        with pytest.raises(InputError, match="no gold answer with a word"):  # request's
            reopened.feedback(served[4].request_id, gold=gold)    # feedback still to come
    answering = reopened.decide(probe, "q")                 # a gold answer before the
    with pytest.raises(ConflictError, match="no served answer yet"):   # answer: 409,
        reopened.feedback(answering.request_id, gold="Paris")        # not a 422
    assert reopened.decide(probe, "q", lam=0.5).lam is None    # still incomplete after restart
    assert reopened.feedback(served[4].request_id, gold=["the", "Paris"]).quality == 1.0
    stats = reopened.stats()
    assert stats["served"] == 10 and stats["feedback"] == 5
    reopened.close()
    assert OnlineLearner(tmp_path).bundle.policy.updates == 5


def test_forced_arms_and_missing_features(tmp_path):
    learner = OnlineLearner(tmp_path, make_bundle(), explore=False)
    decision = learner.decide(None, "q", forced_arm="multi")
    assert decision.arm == "multi" and decision.forced
    learner.record_served(decision.request_id, "x", 3, 1.0)
    result = learner.feedback(decision.request_id, reward=0.4)
    assert not result.applied and learner.bundle.policy.updates == 0
    with pytest.raises(InputError, match="features are needed"):
        learner.decide(None, "q")
    with pytest.raises(InputError, match="unknown arm"):
        learner.decide(None, "q", forced_arm="web")
    learner.close()


def test_concurrent_decisions_and_feedback(tmp_path):
    bundle = make_bundle()
    learner = OnlineLearner(tmp_path, bundle, explore=True, snapshot_every=7)
    errors = []

    def session(worker: int) -> None:
        try:
            for i in range(15):
                decision = learner.decide(features(bundle.features, worker * 100 + i), "q")
                learner.record_served(decision.request_id, "a", 1, 0.1)
                learner.feedback(decision.request_id, reward=float(i % 2))
        except Exception as exc:   # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert bundle.policy.updates == 90 and int(bundle.policy.counts.sum()) == 90
    learner.close()
    con = duckdb.connect(str(tmp_path / JOURNAL), read_only=True)
    seqs = [r[0] for r in con.execute("SELECT feedback_seq FROM decisions ORDER BY 1").fetchall()]
    con.close()
    assert seqs == list(range(1, 91))
    assert OnlineLearner(tmp_path).bundle.policy.updates == 90


def test_decisions_journal_their_propensity(tmp_path):
    fmap = FeatureMap.fit(FeatureSpec(embed_dim=8))
    eps = 0.45
    policy = NeuralEpsGreedy(fmap.dim, seed=2, eps=eps, eps_decay=1.0, steps_per_update=1)
    learner = OnlineLearner(tmp_path, PolicyBundle(policy, fmap, RewardSpec()), explore=True)
    decisions = [learner.decide(features(fmap, i), "q") for i in range(40)]
    for decision in decisions[:10]:
        learner.feedback(decision.request_id, reward=0.5)
    forced = learner.decide(features(fmap, 99), "q", forced_arm="multi")
    rows = dict(learner.con.execute("SELECT request_id, propensity FROM decisions").fetchall())
    assert forced.propensity == 1.0 and rows[forced.request_id] == 1.0
    assert any(d.explored for d in decisions) and not all(d.explored for d in decisions)
    for d in decisions:
        expected = eps / 3 if d.explored else 1 - eps + eps / 3
        assert d.propensity == pytest.approx(expected) and rows[d.request_id] == d.propensity
    learner.close()

    greedy = OnlineLearner(None, make_bundle(), explore=False)
    assert {greedy.decide(features(fmap, i), "q").propensity for i in range(5)} == {1.0}
    greedy.close()


def test_a_journal_without_propensities_opens(tmp_path):
    bundle = make_bundle()
    save_policy(bundle, tmp_path)
    con = duckdb.connect(str(tmp_path / JOURNAL))
    con.execute(OLD_SCHEMA)
    con.execute("INSERT INTO decisions (request_id, fingerprint, features, arm, forced, "
                "reward, feedback_seq) VALUES ('old', ?, ?, 'single', false, 1.0, 1)",
                [bundle.fingerprint, features(bundle.features, 0).tolist()])
    con.close()
    assert journal_bandit_log(tmp_path).X.shape == (0, 0)     # read-only: not migrated
    learner = OnlineLearner(tmp_path)
    assert learner.bundle.policy.updates == 1                  # the old feedback replayed
    new = learner.decide(features(bundle.features, 1), "q")
    learner.feedback(new.request_id, reward=0.2)
    learner.close()
    log = journal_bandit_log(tmp_path)                         # the old row has no propensity
    assert log.propensities.tolist() == [1.0] and log.rewards.tolist() == [0.2]


OLD_SCHEMA = """CREATE TABLE decisions (
    request_id VARCHAR PRIMARY KEY, created_at TIMESTAMP DEFAULT current_timestamp,
    fingerprint VARCHAR, question VARCHAR, features FLOAT[], arm VARCHAR, forced BOOLEAN,
    explored BOOLEAN, scores DOUBLE[], prediction VARCHAR, retrieval_calls DOUBLE,
    seconds DOUBLE, quality DOUBLE, reward DOUBLE, feedback_seq BIGINT,
    feedback_at TIMESTAMP)"""
