"""Off-policy evaluation: IPS / SNIPS / DR recover known values; policies' arm probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from policies.baselines import FixedArm
from policies.features import FeatureMap, FeatureSpec
from policies.linucb import LinUCB
from policies.neural import NeuralEpsGreedy
from policies.online import OnlineLearner
from policies.ope import (doubly_robust, ips, journal_bandit_log, off_policy_values,
                          policy_matrix, snips)
from policies.persistence import PolicyBundle
from policies.rewards import RewardSpec
from policies.thompson import LinearThompson
from searchagent.errors import InputError

N_ARMS = 3


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def logged():
    """20k rows: known expected reward per (context, arm), a stochastic logging policy
    with known propensities, Bernoulli rewards, and two target policies."""
    rng = np.random.default_rng(7)
    n, dim = 20_000, 4
    X = rng.standard_normal((n, dim))
    mean_reward = 1 / (1 + np.exp(-(X @ rng.standard_normal((dim, N_ARMS))
                                    + np.array([0.3, 0.0, -0.3]))))
    logging = 0.8 * softmax(X @ rng.standard_normal((dim, N_ARMS))) + 0.2 / N_ARMS
    actions = np.array([rng.choice(N_ARMS, p=row) for row in logging])
    rows = np.arange(n)
    rewards = (rng.random(n) < mean_reward[rows, actions]).astype(np.float64)
    greedy = np.eye(N_ARMS)[np.argmax(X @ rng.standard_normal((dim, N_ARMS)), axis=1)]
    stochastic = softmax(X @ rng.standard_normal((dim, N_ARMS)))
    return {"mean_reward": mean_reward, "actions": actions, "rewards": rewards,
            "propensities": logging[rows, actions], "targets": [greedy, stochastic]}


def true_value(data, target) -> float:
    return float((target * data["mean_reward"]).sum(axis=1).mean())


def close_to(estimate, truth: float) -> bool:
    return abs(estimate.value - truth) < min(3.5 * estimate.stderr, 0.03)


@pytest.mark.parametrize("which", [0, 1], ids=["greedy-target", "stochastic-target"])
def test_estimators_recover_the_true_value(logged, which):
    target = logged["targets"][which]
    truth = true_value(logged, target)
    args = (logged["actions"], logged["rewards"], logged["propensities"], target)
    right_model = logged["mean_reward"]
    wrong_model = np.clip(right_model[:, ::-1] + 0.3, 0, 1)     # arms swapped, shifted
    estimates = off_policy_values(*args, qhat=right_model)
    assert set(estimates) == {"ips", "snips", "dr"}
    for estimate in estimates.values():
        assert close_to(estimate, truth), estimate
        assert estimate.ci_low < truth < estimate.ci_high
        assert estimate.n == 20_000 and estimate.n_clipped == 0
    assert estimates["dr"].stderr < 0.8 * estimates["ips"].stderr
    assert close_to(doubly_robust(*args, wrong_model), truth)


def test_estimators_on_a_hand_computed_log():
    actions, rewards = [0, 1, 2, 1], [1.0, 0.0, 0.5, 1.0]
    propensities = [0.5, 0.25, 0.5, 0.5]
    target = np.eye(N_ARMS)[[0, 1, 0, 1]]             # weights 2, 4, 0, 2
    result = ips(actions, rewards, propensities, target)
    assert result.value == pytest.approx(1.0)
    assert result.stderr == pytest.approx(np.std([2, 0, 0, 2], ddof=1) / 2)
    assert result.effective_n == pytest.approx(64 / 24)
    assert result.ci_high - result.value == pytest.approx(1.959964 * result.stderr)
    assert snips(actions, rewards, propensities, target).value == pytest.approx(0.5)
    assert doubly_robust(actions, rewards, propensities, target,
                         np.full((4, 3), 0.5)).value == pytest.approx(0.5)
    assert doubly_robust(actions, rewards, propensities, target,
                         np.zeros((4, 3))).value == pytest.approx(1.0)
    clipped = ips(actions, rewards, propensities, target, min_propensity=0.5)
    assert clipped.n_clipped == 1 and clipped.effective_n == pytest.approx(3.0)
    never = snips(actions, rewards, propensities, np.eye(N_ARMS)[[1, 0, 0, 0]])
    assert np.isnan(never.value) and never.effective_n == 0.0


def test_clipping_trades_variance_for_bias(logged):
    target = logged["targets"][0]
    args = (logged["actions"], logged["rewards"], logged["propensities"], target)
    plain, clipped = ips(*args), ips(*args, min_propensity=0.3)
    assert clipped.n_clipped > 0 and clipped.stderr < plain.stderr
    assert clipped.value < plain.value                        # rewards >= 0: biased down
    assert ips(*args, min_propensity=0.01) == plain           # below every propensity


@pytest.mark.parametrize("change, field", [
    ({"propensities": [0.5, 0.0]}, "propensities"),
    ({"propensities": [0.5, 1.5]}, "propensities"),
    ({"rewards": [1.0]}, "rewards"),
    ({"rewards": [1.0, float("nan")]}, "rewards"),
    ({"actions": [0, 3]}, "actions"),
    ({"actions": [0, 1.5]}, "actions"),
    ({"actions": ["a", "b"]}, "actions"),
    ({"target": [[1.0, 0.0, 0.0], [0.5, 0.0, 0.0]]}, "target"),
    ({"target": [1.0, 0.0]}, "target"),
    ({"qhat": np.zeros((2, 2))}, "qhat"),
    ({"qhat": [[0.0, 0.0, np.inf], [0.0, 0.0, 0.0]]}, "qhat"),
    ({"min_propensity": 0.0}, "min_propensity"),
])
def test_bad_inputs_name_the_field(change, field):
    inputs = {"actions": [0, 1], "rewards": [1.0, 0.0], "propensities": [0.5, 0.5],
              "target": np.eye(N_ARMS)[[0, 1]], "qhat": np.zeros((2, 3)),
              "min_propensity": None, **change}
    with pytest.raises(InputError) as raised:
        doubly_robust(inputs["actions"], inputs["rewards"], inputs["propensities"],
                      inputs["target"], inputs["qhat"], min_propensity=inputs["min_propensity"])
    assert raised.value.field == field


def trained(policy, updates: int = 40):
    rng = np.random.default_rng(3)
    for _ in range(updates):
        x = rng.standard_normal(policy.dim)
        arm = int(rng.integers(N_ARMS))
        policy.update(x, arm, float(x[0] * (arm - 1) + rng.normal(0, 0.1)))
    return policy


def draw_frequencies(policy, x, draws: int) -> np.ndarray:
    arms = [policy.choose(x, explore=True)[0] for _ in range(draws)]
    return np.bincount(arms, minlength=N_ARMS) / draws


@pytest.mark.parametrize("policy, draws", [
    (LinearThompson(4, seed=1, v=1.0), 20_000),
    (NeuralEpsGreedy(4, seed=1, eps=0.5, eps_decay=1.0, steps_per_update=1), 4_000),
], ids=["thompson", "neural"])
def test_arm_probabilities_match_the_draws_and_leave_the_rng_alone(policy, draws):
    trained(policy)
    x = np.array([0.3, -0.2, 0.5, 0.1])
    rng_before = policy.rng.bit_generator.state
    probabilities = policy.arm_probabilities(x)
    assert policy.rng.bit_generator.state == rng_before
    assert probabilities.sum() == pytest.approx(1.0) and np.all(probabilities > 0)
    assert np.abs(draw_frequencies(policy, x, draws) - probabilities).max() < 0.025
    greedy = np.argmax(policy.scores(x, explore=False))
    assert np.array_equal(policy.arm_probabilities(x, explore=False), np.eye(N_ARMS)[greedy])
    if isinstance(policy, NeuralEpsGreedy):
        expected = np.full(N_ARMS, 0.5 / N_ARMS)
        expected[greedy] += 0.5
        assert np.allclose(probabilities, expected)


def test_deterministic_policies_are_one_hot():
    linucb = trained(LinUCB(4, alpha=2.0))
    x = np.array([0.3, -0.2, 0.5, 0.1])
    assert np.array_equal(linucb.arm_probabilities(x),
                          np.eye(N_ARMS)[np.argmax(linucb.scores(x, explore=True))])
    assert np.array_equal(LinearThompson(4, v=0.0).arm_probabilities(x), np.eye(N_ARMS)[0])
    fixed = FixedArm(4, arm="multi")
    assert np.array_equal(policy_matrix(fixed, np.zeros((2, 4))), np.eye(N_ARMS)[[2, 2]])


def test_ips_from_an_online_journal():
    """An eps-greedy learner logs; IPS of a fixed arm matches that arm's true mean."""
    fmap = FeatureMap.fit(FeatureSpec(embed_dim=8))
    policy = NeuralEpsGreedy(fmap.dim, seed=0, eps=0.6, eps_decay=1.0, steps_per_update=1)
    learner = OnlineLearner(None, PolicyBundle(policy, fmap, RewardSpec()), explore=True)
    rng = np.random.default_rng(11)
    arm_means = np.array([0.2, 0.5, 0.7])
    forced = learner.decide(rng.standard_normal(fmap.dim), "q", forced_arm="single")
    learner.feedback(forced.request_id, reward=5.0)
    for _ in range(600):
        decision = learner.decide(rng.standard_normal(fmap.dim), "q")
        arm = ["parametric", "single", "multi"].index(decision.arm)
        learner.feedback(decision.request_id, reward=float(rng.random() < arm_means[arm]))
    log = journal_bandit_log(learner)
    assert len(log.actions) == 600 and log.X.shape == (600, fmap.dim)   # forced row left out
    assert set(np.round(log.propensities, 6)) <= {0.6, 0.2}   # 1 - eps + eps/3, eps/3
    target = policy_matrix(FixedArm(fmap.dim, arm="multi"), log.X)
    estimate = ips(log.actions, log.rewards, log.propensities, target)
    assert abs(estimate.value - 0.7) < min(4 * estimate.stderr, 0.15), estimate
    assert journal_bandit_log(learner, fingerprint="other").X.shape == (0, 0)
    learner.close()
