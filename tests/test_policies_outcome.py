"""Per-arm outcome models (policies/outcome.py) and the question-style features they use:
a per-question signal planted in the question text is learned with full information and
from bandit feedback, lambda moves the choice, the policy persists exactly."""

from __future__ import annotations

import numpy as np
import pytest

from policies.armlog import ArmTable
from policies.features import CUE_NAMES, FeatureMap, FeatureSpec, question_cues
from policies.outcome import OutcomeModels
from policies.persistence import load_policy, save_policy
from policies.replay import train_policy
from policies.scoring import evaluate, greedy_arms
from policies.rewards import RewardSpec
from searchagent.errors import InputError

WORDS = ["river", "castle", "album", "senator", "novel", "bridge", "painter", "island"]


def planted_table(n: int, seed: int = 0) -> tuple[ArmTable, np.ndarray]:
    """Search-box questions (lower case, no question mark) are answered only with one
    retrieval; quiz questions ("Which ...?") closed book; multi is right for both but
    costs 3 calls. Outcomes are noisy (10% flipped); the embeddings separate the two
    styles weakly (as a sentence embedder does), the text cues exactly."""
    rng = np.random.default_rng(seed)
    questions, quality = [], np.zeros((n, 3))
    for i in range(n):
        words = " ".join(rng.choice(WORDS, 4))
        if i % 2:
            questions.append(f"who wrote the {words}")
            quality[i] = [0, 1, 1]
        else:
            questions.append(f"Which {words.title()} came first?")
            quality[i] = [1, 0, 1]
    flip = rng.random(quality.shape) < 0.1
    quality = np.where(flip, 1 - quality, quality)
    keys = [("synthetic", f"q{i}") for i in range(n)]
    steps = np.tile([0.0, 1.0, 3.0], (n, 1))
    table = ArmTable(keys, questions, [["x"]] * n, {m: quality for m in ("em", "f1", "acc")},
                     steps, steps.copy(), np.full(n, np.nan))
    emb = rng.standard_normal((n, 8))
    emb[:, 0] += 2.0 * (np.arange(n) % 2)
    return table, emb.astype(np.float32)


SPEC = FeatureSpec(embedder="test", embed_dim=8, confidence=False, cues=True, standardize=True)


@pytest.mark.parametrize("mode", ["full", "bandit"])
def test_planted_question_signal_is_learned(mode):
    table, emb = planted_table(600)
    train, test = np.arange(400), np.arange(400, 600)
    reward = RewardSpec(lam=0.05, metric="f1")
    params = {"neighbors": 20, "l2": 1.0, "eps": 0.3}   # few rows per arm under bandit feedback
    bundle, _ = train_policy("outcome", table.subset(train), emb[train], SPEC, reward, mode,
                             epochs=2, seed=1, params=params)
    arms = greedy_arms(bundle, table.subset(test), emb[test])
    planted = np.where(np.arange(400, 600) % 2, 1, 0)
    assert (arms == planted).mean() > 0.85
    result = evaluate(bundle, table.subset(test), emb[test])
    assert result["policy"]["reward"] > result["best_fixed_reward"] + 0.04
    assert result["policy"]["gap_closed"] > 0.15


def test_lambda_moves_the_choice_and_state_round_trips(tmp_path):
    table, emb = planted_table(300)
    bundle, _ = train_policy("outcome", table, emb, SPEC, RewardSpec(lam=0.0), "full")
    calls = [table.steps[np.arange(300), greedy_arms(bundle, table, emb, lam)].mean()
             for lam in (0.0, 0.1, 1.0)]
    assert calls[0] > calls[1] >= calls[2] == 0.0      # free retrieval -> multi; costly -> none
    save_policy(bundle, tmp_path)
    loaded = load_policy(tmp_path, expect_fingerprint=bundle.fingerprint)
    X = bundle.features.transform(emb[:20], table.questions[:20])
    assert np.allclose(loaded.features.transform(emb[:20], table.questions[:20]), X)
    for x in X:
        assert np.allclose(loaded.policy.scores(x, explore=False, lam=0.1),
                           bundle.policy.scores(x, explore=False, lam=0.1))
    for x in X[:10]:          # online rows short of a refit (refit_every 50): buffered
        bundle.policy.observe(x, {0: (0.0, 0.0), 1: (1.0, 1.0), 2: (1.0, 3.0)})
    save_policy(bundle, tmp_path)           # a reload used to fit them too: other scores
    loaded = load_policy(tmp_path).policy
    assert loaded.stale == bundle.policy.stale == 10 and len(loaded.X) == 310
    for x in X:
        assert np.allclose(loaded.scores(x, explore=False, lam=0.1),
                           bundle.policy.scores(x, explore=False, lam=0.1))


def test_exploration_distribution_and_optimism():
    policy = OutcomeModels(dim=3, eps=0.3, min_rows=2)
    x = np.array([1.0, 0.0, 0.5])
    assert (policy.scores(x, explore=False) == 1.0).all()     # untried arms look perfect
    for _ in range(3):
        policy.update(x, 0, 0.9, quality=0.9, cost=0.0)
        policy.update(x, 1, 0.2, quality=0.2, cost=1.0)
        policy.update(x, 2, 0.1, quality=0.1, cost=3.0)
    probabilities = policy.arm_probabilities(x)
    assert np.argmax(policy.scores(x, explore=False)) == 0
    assert np.allclose(probabilities, [0.8, 0.1, 0.1]) and probabilities.sum() == pytest.approx(1)
    draws = np.bincount([policy.choose(x)[0] for _ in range(3000)], minlength=3) / 3000
    assert np.allclose(draws, probabilities, atol=0.03)
    policy.update(x, 0, 0.5)                                   # a bare reward: counted only
    assert policy.updates == 10 and len(policy.X) == 9


def test_bad_outcome_parameters():
    with pytest.raises(InputError, match="blend"):
        OutcomeModels(dim=4, blend=2.0)
    with pytest.raises(InputError, match="embed_dims"):
        OutcomeModels(dim=4, embed_dims=5)


def test_question_cues_and_standardized_features():
    lower = dict(zip(CUE_NAMES, question_cues("who sang the song in the film 1999")))
    quiz = dict(zip(CUE_NAMES, question_cues("Which director's film won in 1999, X or Y?")))
    assert lower["starts_lower"] == 1 and lower["question_mark"] == 0 and lower["all_lower"] == 1
    assert quiz["question_mark"] == 1 and quiz["possessives"] > 0 and quiz["commas"] > 0
    assert lower["years"] > 0 and lower["template_cues"] > 0
    table, emb = planted_table(50)
    fmap = FeatureMap.fit(SPEC, emb, table.questions)
    X = fmap.transform(emb, table.questions)
    varying = X.std(axis=0) > 1e-6
    assert np.allclose(X[:, varying].mean(axis=0), 0, atol=1e-5)
    assert np.allclose(X[:, varying].std(axis=0), 1, atol=1e-3)
    assert X[0, fmap.names.index("bias")] == SPEC.bias          # the constant stays constant
    with pytest.raises(InputError, match="standardiz"):
        FeatureMap(SPEC)


def test_fingerprints_of_older_feature_sets_are_unchanged():
    """Values computed by the release before cues/standardize existed: policies saved then
    keep loading."""
    assert FeatureMap.fit(FeatureSpec()).fingerprint == "b37a6777bc9991f7"
    assert FeatureMap.fit(FeatureSpec(projection="random", proj_dim=16)).fingerprint \
        == "c7f8e721918f78a8"
    assert FeatureMap.fit(FeatureSpec(cues=True)).fingerprint != "b37a6777bc9991f7"
