"""Policies: features, rewards, bandits, baselines, persistence (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from policies.baselines import FixedArm, SupervisedClassifier, cheapest_correct_labels, oracle_arms
from policies.features import FeatureMap, FeatureSpec, confidence_features, lexical_features, \
    LEXICAL_NAMES
from policies.linucb import LinUCB
from policies.neural import NeuralEpsGreedy
from policies.persistence import PolicyBundle, load_policy, make_policy, save_policy
from policies.rewards import RewardSpec
from policies.thompson import LinearThompson
from searchagent.errors import InputError


def linear_problem(n=400, dim=8, seed=1):
    """Best arm depends linearly on x: arm a's reward = w_a . x + noise."""
    rng = np.random.default_rng(seed)
    X = np.hstack([rng.standard_normal((n, dim - 1)), np.ones((n, 1))])
    W = rng.standard_normal((3, dim))
    R = X @ W.T + 0.05 * rng.standard_normal((n, 3))
    return X, R


def test_lexical_features_catch_cues():
    comparison = dict(zip(LEXICAL_NAMES, lexical_features(
        "Which is older, Eric Clapton or Mick Jagger?")))
    simple = dict(zip(LEXICAL_NAMES, lexical_features("who wrote hamlet")))
    yes_no = dict(zip(LEXICAL_NAMES, lexical_features("Are both bands from Tulsa?")))
    assert comparison["comparison"] > 0 and comparison["wh_which"] == 1
    assert comparison["entities"] > simple["entities"] == 0
    assert simple["wh_who"] == 1 and simple["comparison"] == 0
    assert yes_no["wh_yesno"] == 1 and yes_no["wh_other"] == 0
    assert confidence_features(None) == [0.0, 1.0]
    assert confidence_features(0.0) == [1.0, 0.0]


def test_feature_map_dims_and_fingerprints():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((20, 384)).astype(np.float32)
    questions = [f"who is person {i}?" for i in range(20)]
    full = FeatureMap.fit(FeatureSpec())
    X = full.transform(emb, questions, [-0.5] * 20)
    assert X.shape == (20, 384 + len(LEXICAL_NAMES) + 2) == (20, full.dim)
    pca = FeatureMap.fit(FeatureSpec(projection="pca", proj_dim=16), emb)
    random = FeatureMap.fit(FeatureSpec(projection="random", proj_dim=16))
    assert pca.transform(emb, questions).shape == (20, 16 + len(LEXICAL_NAMES) + 2)
    prints = {full.fingerprint, pca.fingerprint, random.fingerprint,
              FeatureMap.fit(FeatureSpec(confidence=False)).fingerprint}
    assert len(prints) == 4
    assert FeatureMap.fit(FeatureSpec()).fingerprint == full.fingerprint
    with pytest.raises(InputError, match="expects"):
        full.transform(emb[:, :100], questions)
    with pytest.raises(InputError, match="projection"):
        FeatureSpec(projection="umap")


def test_reward_spec():
    spec = RewardSpec(lam=0.2, metric="f1", cost="steps")
    assert spec.quality("Paris, France", ["paris"]) == pytest.approx(2 / 3)
    assert spec.reward(1.0, 3, 10.0) == pytest.approx(0.4)
    assert RewardSpec(lam=0.5, cost="seconds").reward(1.0, 3, 1.0) == pytest.approx(0.5)
    table = spec.reward_matrix(np.array([[1.0, 1.0]]), np.array([[0, 2]]), np.zeros((1, 2)))
    assert table[0].tolist() == pytest.approx([1.0, 0.6])
    with pytest.raises(InputError, match="metric"):
        RewardSpec(metric="bleu")
    with pytest.raises(InputError, match="lambda"):
        RewardSpec(lam=-1)


@pytest.mark.parametrize("cls", [LinUCB, LinearThompson])
def test_linear_bandits_learn_the_best_arm(cls):
    X_all, R_all = linear_problem(600)
    X, R, X_test, R_test = X_all[:400], R_all[:400], X_all[400:], R_all[400:]
    policy = cls(X.shape[1], seed=0)
    regret = []
    for x, r in zip(X, R):
        arm, _ = policy.choose(x)
        policy.update(x, arm, r[arm])
        regret.append(r.max() - r[arm])
    assert np.mean(regret[-100:]) < 0.5 * np.mean(regret[:100])
    greedy = policy.choose_batch(X_test)
    assert (greedy == R_test.argmax(1)).mean() > 0.85


def test_sherman_morrison_matches_explicit_inverse():
    X, R = linear_problem(50)
    policy = LinUCB(X.shape[1], reg=2.0, intercept=False)
    for x, r in zip(X, R):
        policy.update(x, 1, r[1])
    explicit = np.linalg.inv(2.0 * np.eye(X.shape[1]) + X.T @ X)
    assert np.allclose(policy.A_inv[1], explicit, atol=1e-8)
    assert np.allclose(policy.theta[1], explicit @ (X.T @ R[:, 1]))
    assert np.allclose(policy.A_inv[0], np.eye(X.shape[1]) / 2.0)   # untouched arm


@pytest.mark.parametrize("cls", [LinUCB, LinearThompson])
def test_large_reg_falls_back_to_the_best_mean_arm(cls):
    """The intercept is not shrunk: with reg huge, features (here large, noisy and arm-
    specific) drop out and every question gets the arm with the best mean reward."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) * 3.0
    means = np.array([0.10, 0.13, 0.08])
    R = means + 0.2 * X[:, :3] * rng.standard_normal((300, 3))   # noise, no signal
    shrunk, plain = cls(6, reg=1e6), cls(6, reg=1e6, intercept=False)
    for x, r in zip(X, R):
        for arm in range(3):
            shrunk.update(x, arm, r[arm])
            plain.update(x, arm, r[arm])
    predicted = np.array([shrunk.scores(x, explore=False) for x in X])
    assert np.allclose(predicted.mean(0), R.mean(0), atol=2e-3)
    assert (predicted.argmax(1) == R.mean(0).argmax()).all()
    assert np.abs(np.array([plain.scores(x, explore=False) for x in X])).max() < 0.02


def test_neural_heavy_weight_decay_falls_back_to_the_best_mean_arm():
    """Decay leaves the biases alone: with it huge, the features drop out and each head
    predicts its arm's mean reward instead of shrinking towards zero."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)) * 3.0
    means = np.array([0.30, 0.50, 0.20])
    R = means + 0.2 * X[:, :3] * rng.standard_normal((300, 3))   # noise, no signal
    policy = NeuralEpsGreedy(6, seed=0, hidden=16, weight_decay=100.0)
    for x, r in zip(X, R):
        for arm in range(3):
            policy.update(x, arm, r[arm])
    predicted = np.array([policy.scores(x, explore=False) for x in X])
    assert np.allclose(predicted.mean(0), R.mean(0), atol=0.05)
    assert predicted.std(0).max() < 0.02
    assert (policy.choose_batch(X) == 1).all()


def test_neural_loss_touches_only_the_chosen_head_and_learns():
    X_all, R_all = linear_problem(500, dim=6)
    X, R, X_test, R_test = X_all[:300], R_all[:300], X_all[300:], R_all[300:]
    policy = NeuralEpsGreedy(6, seed=0, hidden=32, weight_decay=0.0, lr=1e-2)
    heads_before = policy.net.heads.weight.detach().clone()
    for x, r in zip(X[:50], R[:50]):
        policy.update(x, 0, r[0])
    heads_after = policy.net.heads.weight.detach()
    assert not np.allclose(heads_after[0], heads_before[0])
    assert np.allclose(heads_after[1:], heads_before[1:])       # other heads got no gradient
    eps_start = policy.epsilon
    for x, r in zip(X, R):
        arm, _ = policy.choose(x)
        policy.update(x, arm, r[arm])
    assert policy.epsilon < eps_start
    chosen = policy.choose_batch(X_test)
    rows = np.arange(len(X_test))
    assert R_test[rows, chosen].mean() > R_test.mean(axis=1).mean() + 0.3


def test_baselines():
    quality = np.array([[0, 1, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=float)
    rewards = quality - 0.1 * np.array([0, 1, 3])
    assert cheapest_correct_labels(quality, rewards).tolist() == [1, 2, 0, 0]
    assert oracle_arms(rewards).tolist() == [1, 2, 0, 0]
    X, R = linear_problem(300)
    clf = SupervisedClassifier(X.shape[1])
    clf.fit(X, (R == R.max(1, keepdims=True)).astype(float), R)
    assert (clf.choose_batch(X) == R.argmax(1)).mean() > 0.85
    fixed = FixedArm(X.shape[1], arm="multi")
    assert set(fixed.choose_batch(X)) == {2}
    with pytest.raises(InputError, match="unknown arm"):
        FixedArm(4, arm="web")


@pytest.mark.parametrize("algo", ["linucb", "thompson", "neural", "supervised", "fixed"])
def test_persistence_round_trip(tmp_path, algo):
    fmap = FeatureMap.fit(FeatureSpec(embed_dim=16, projection="random", proj_dim=4))
    X, R = linear_problem(60, dim=fmap.dim)
    policy = make_policy(algo, X.shape[1], seed=3)
    if algo == "supervised":
        policy.fit(X, (R > 0).astype(float), R)
    else:
        for x, r in zip(X, R):
            arm, _ = policy.choose(x)
            policy.update(x, arm, r[arm])
    bundle = PolicyBundle(policy, fmap, RewardSpec(lam=0.3), {"note": "t"})
    save_policy(bundle, tmp_path)
    loaded = load_policy(tmp_path, expect_fingerprint=fmap.fingerprint)
    assert loaded.reward.lam == 0.3 and loaded.meta["note"] == "t"
    assert type(loaded.policy) is type(policy)
    assert np.array_equal(loaded.policy.choose_batch(X), policy.choose_batch(X))
    for x in X[:5]:   # exploration randomness continues identically too
        assert np.allclose(loaded.policy.scores(x, explore=True), policy.scores(x, explore=True))
    if algo == "neural":
        assert list(tmp_path.glob("model-*.safetensors"))


def test_a_linear_policy_saved_before_the_intercept_still_loads(tmp_path):
    fmap = FeatureMap.fit(FeatureSpec(embed_dim=8))
    X, R = linear_problem(40, dim=fmap.dim)
    old = LinUCB(fmap.dim, intercept=False)
    for x, r in zip(X, R):
        old.update(x, 1, r[1])
    save_policy(PolicyBundle(old, fmap, RewardSpec()), tmp_path)
    doc = json.loads((tmp_path / "policy.json").read_text())
    del doc["params"]["intercept"]                  # what an older version wrote
    (tmp_path / "policy.json").write_text(json.dumps(doc))
    loaded = load_policy(tmp_path).policy
    assert not loaded.intercept
    assert np.allclose([loaded.scores(x, explore=False) for x in X],
                       [old.scores(x, explore=False) for x in X])


def test_loading_refuses_other_feature_sets_versions_and_tampering(tmp_path):
    fmap = FeatureMap.fit(FeatureSpec(embed_dim=8))
    bundle = PolicyBundle(LinUCB(fmap.dim), fmap, RewardSpec())
    save_policy(bundle, tmp_path)
    other = FeatureMap.fit(FeatureSpec(embed_dim=8, confidence=False))
    with pytest.raises(InputError, match="trained on feature set"):
        load_policy(tmp_path, expect_fingerprint=other.fingerprint)
    doc = json.loads((tmp_path / "policy.json").read_text())
    (tmp_path / "policy.json").write_text(json.dumps({**doc, "version": 99}))
    with pytest.raises(InputError, match="version 99"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text(json.dumps(doc))
    npz = next(tmp_path.glob("arrays-*.npz"))
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(InputError, match="changed since"):
        load_policy(tmp_path)
    with pytest.raises(InputError, match="no trained policy"):
        load_policy(tmp_path / "missing")
    with pytest.raises(InputError, match="unknown policy algorithm"):
        make_policy("ppo", 4)


def test_linear_policies_rescore_for_another_lambda_exactly():
    X, Q = linear_problem(80)
    C = np.abs(Q) + np.arange(3)                      # some per-arm cost
    trained, reference = LinUCB(X.shape[1]), LinUCB(X.shape[1])
    for i, x in enumerate(X):
        arm = i % 3
        trained.update(x, arm, Q[i, arm] - 0.1 * C[i, arm], Q[i, arm], C[i, arm])
        reference.update(x, arm, Q[i, arm] - 0.4 * C[i, arm])
    assert trained.supports_lam()
    for x in X[:5]:
        assert np.allclose(trained.scores(x, explore=False, lam=0.4),
                           reference.scores(x, explore=False))
        assert np.allclose(trained.scores(x, explore=False, lam=0.1),
                           trained.scores(x, explore=False))
    trained.update(X[0], 0, 1.0)                      # a bare reward: parts now incomplete
    assert not trained.supports_lam()
    assert np.allclose(trained.scores(X[1], explore=False, lam=0.4),
                       trained.scores(X[1], explore=False))
