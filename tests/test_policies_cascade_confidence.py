"""The answer cascade reads the generator's confidence in each answer (its mean token
log-probability, which every strategy reports and `eval log-arms` records): a signal planted
only there is learned, `policy train` turns it on when the log has it, and it persists
(the agent's side: tests/test_agent.py)."""

from __future__ import annotations

import numpy as np
import pytest

from policies.answer_features import answer_features, feature_count
from policies.armlog import ArmTable
from policies.features import FeatureSpec
from policies.persistence import load_policy, save_policy
from policies.replay import train_policy
from policies.scoring import evaluate
from policies.rewards import RewardSpec

SPEC = FeatureSpec(embedder="test", embed_dim=8, confidence=False, cues=True, standardize=True)


def confident_table(n: int, seed: int = 0) -> tuple[ArmTable, np.ndarray]:
    """Questions and answer texts carry no signal; closed book is right exactly when the
    generator was sure of it (mean log-probability near 0), else one retrieval is."""
    rng = np.random.default_rng(seed)
    sure = rng.random(n) < 0.5
    logprob = np.where(sure, -np.abs(rng.normal(0, 0.2, n)), rng.normal(-1.8, 0.4, n))
    quality = np.column_stack([sure, ~sure, ~sure]).astype(float)
    cities = ["Paris", "Lyon", "Oslo", "Rome", "Lima"]
    answers = [list(rng.choice(cities, 3, replace=False)) for _ in range(n)]
    confidence = np.column_stack([logprob, rng.normal(-1, 0.3, n), rng.normal(-1, 0.3, n)])
    questions = [f"question {rng.integers(10**6)}?" for _ in range(n)]
    steps = np.tile([0.0, 1.0, 3.0], (n, 1))
    table = ArmTable([("synthetic", f"q{i}") for i in range(n)], questions, [["x"]] * n,
                     {m: quality for m in ("em", "f1", "acc")}, steps, steps.copy(),
                     confidence[:, 0].copy(), answers=answers, arm_confidence=confidence)
    return table, rng.standard_normal((n, 8)).astype(np.float32)


def test_confidence_features():
    plain = answer_features("Who?", ["Oslo", "Rome"])
    read = answer_features("Who?", [("Oslo", -0.1), ("Rome", None)], confidence=True)
    assert len(read) == feature_count(2, confidence=True) == len(plain) + 4
    assert read[:len(plain)] == plain                     # texts as before, then each answer's
    assert read[len(plain):] == [pytest.approx(np.exp(-0.1)), 0.0, 0.0, 1.0]   # p, missing


def test_a_signal_only_in_the_confidence_is_learned_and_persists(tmp_path):
    table, emb = confident_table(800)
    train, test = np.arange(500), np.arange(500, 800)
    reward = RewardSpec(lam=0.05, metric="f1")
    bundle, _ = train_policy("cascade", table.subset(train), emb[train], SPEC, reward)
    assert bundle.policy.confidence                       # the log has it: turned on
    held = table.subset(test)
    result = evaluate(bundle, held, emb[test])
    # best fixed: closed book, 0.5; reading the confidence, up to 0.5 + 0.5 * 0.95
    assert result["policy"]["reward"] > result["best_fixed_reward"] + 0.2
    blind, _ = train_policy("cascade", table.subset(train), emb[train], SPEC, reward,
                            params={"confidence": False})
    assert not blind.policy.confidence
    assert evaluate(blind, held, emb[test])["policy"]["reward"] < result["best_fixed_reward"] + 0.05
    save_policy(bundle, tmp_path)
    loaded = load_policy(tmp_path, expect_fingerprint=bundle.fingerprint)
    assert loaded.policy.confidence
    assert evaluate(loaded, held, emb[test])["policy"] == result["policy"]
    published = table.subset(train)
    published.arm_confidence = np.full(published.arm_confidence.shape, np.nan)
    imported, _ = train_policy("cascade", published, emb[train], SPEC, reward)
    assert not imported.policy.confidence                 # a log without it: off

