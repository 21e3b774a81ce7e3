"""Offline replay: train a policy from the arm log and evaluate it on held-out questions.

The arm log has every arm's outcome for every question, so replay is exact: in the
bandit variant the policy picks an arm and only that arm's reward is revealed to it; in
the full-information variant every arm's reward is revealed. Both record a regret curve
(best reward minus the reward of the arm the policy would have played, cumulated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from policies.armlog import ArmTable
from policies.arms import ARMS
from policies.base import Policy
from policies.baselines import SupervisedClassifier
from policies.cascade import AnswerCascade
from policies.outcome import OutcomeModels
from policies.embeddings import EmbeddingCache
from policies.features import FeatureMap, FeatureSpec, embedder_identity
from policies.persistence import PolicyBundle, make_policy
from policies.rewards import RewardSpec
from policies.scoring import features_for, greedy_routes, reward_table, route_rewards
from searchagent.errors import InputError

MODES = ("bandit", "full")


@dataclass
class TrainLog:
    arms: np.ndarray          # arm played (bandit) or greedy arm before the update (full)
    regret: np.ndarray        # per-step regret of that arm

    @property
    def cumulative_regret(self) -> np.ndarray:
        return np.cumsum(self.regret)


def embed_questions(questions: list[str], encoder, cache: str | Path | None,
                    model_name: str) -> np.ndarray:
    """Embeddings for the questions, through the npz cache when one is given."""
    if cache is None:
        return encoder.encode(questions)
    return EmbeddingCache(cache, model_name).get(questions, encoder)


def cost_table(table: ArmTable, spec: RewardSpec) -> np.ndarray:
    return table.steps if spec.cost == "steps" else table.seconds


def train_bandit(policy: Policy, X: np.ndarray, R: np.ndarray, epochs: int = 1,
                 seed: int = 0, progress: bool = False, Q: np.ndarray | None = None,
                 C: np.ndarray | None = None) -> TrainLog:
    """True bandit feedback: only the played arm's reward (and its quality and cost, when
    ``Q`` and ``C`` are given) reaches the policy."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(X)) for _ in range(epochs)])
    arms = np.zeros(len(order), dtype=np.int64)
    regret = np.zeros(len(order))
    for t, i in enumerate(tqdm(order, desc=f"replay {policy.algo}", disable=not progress)):
        arm, _ = policy.choose(X[i], explore=True)
        policy.update(X[i], arm, float(R[i, arm]), *_parts(Q, C, i, arm))
        arms[t], regret[t] = arm, R[i].max() - R[i, arm]
    return TrainLog(arms, regret)


def train_full(policy: Policy, X: np.ndarray, R: np.ndarray, quality: np.ndarray,
               epochs: int = 1, seed: int = 0, progress: bool = False,
               C: np.ndarray | None = None) -> TrainLog:
    """Full information: every arm's reward is revealed for each training question."""
    if isinstance(policy, (SupervisedClassifier, OutcomeModels)):
        if isinstance(policy, OutcomeModels):    # models quality and cost, not the reward
            policy.fit(X, quality, np.zeros_like(quality) if C is None else C)
        else:
            policy.fit(X, quality, R)
        arms = policy.choose_batch(X)
        return TrainLog(arms, R.max(axis=1) - R[np.arange(len(X)), arms])
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(X)) for _ in range(epochs)])
    arms = np.zeros(len(order), dtype=np.int64)
    for t, i in enumerate(tqdm(order, desc=f"full-info {policy.algo}", disable=not progress)):
        arms[t], _ = policy.choose(X[i], explore=False)
        for arm in range(len(ARMS)):
            policy.update(X[i], arm, float(R[i, arm]), *_parts(quality, C, i, arm))
    return TrainLog(arms, R[order].max(axis=1) - R[order, arms])


def _parts(Q, C, i: int, arm: int) -> tuple:
    if Q is None or C is None:
        return None, None
    return float(Q[i, arm]), float(C[i, arm])


def train_policy(algo: str, table: ArmTable, embeddings: np.ndarray, features: FeatureSpec,
                 reward: RewardSpec, mode: str = "bandit", epochs: int = 1, seed: int = 0,
                 params: dict[str, Any] | None = None, progress: bool = False,
                 tune_rule: str = "one-se") -> tuple[PolicyBundle, TrainLog]:
    """Train ``algo`` on ``table``. A list as a parameter value is a grid: the value is
    chosen by inner cross-validation on ``table`` alone (see ``tune_params``)."""
    if mode not in MODES:
        raise InputError(f"unknown training mode {mode!r} (choose from {', '.join(MODES)})",
                         field="mode")
    if algo in ("supervised", "cascade"):
        mode = "full"       # labels (every answer) need every arm's outcome
    if algo == "cascade" and reward.cost != "steps":
        raise InputError("the cascade prices retrieval calls: train it with --cost steps",
                         field="cost")
    tuning = None
    if grid_names(params or {}):
        params, tuning = tune_params(algo, table, embeddings, features, reward, mode, epochs,
                                     seed, params, rule=tune_rule)
    fmap = FeatureMap.fit(features, embeddings, table.questions, table.confidences())
    X = features_for(table, fmap, embeddings)
    R = reward_table(table, reward)
    if algo in ("outcome", "cascade"):   # quality and cost apart: tell it lambda and layout
        params = {"lam": reward.lam, "embed_dims": sum(n.startswith("emb") for n in fmap.names),
                  **({"confidence": table.has_confidence()} if algo == "cascade" else {}),
                  **(params or {})}
    policy = make_policy(algo, fmap.dim, seed, **(params or {}))
    Q, C = table.quality[reward.metric], cost_table(table, reward)
    if isinstance(policy, AnswerCascade):
        answers = table.generated()
        policy.fit_log(X, table.questions, answers, Q, C)
        served, spent = policy.routes(X, table.questions, answers, C)
        log = TrainLog(served, R.max(axis=1) - route_rewards(served, spent, table, R, reward))
    elif mode == "bandit":
        log = train_bandit(policy, X, R, epochs, seed, progress, Q, C)
    else:
        log = train_full(policy, X, R, Q, epochs, seed, progress, C)
    meta = {"mode": mode, "epochs": epochs, "train_questions": len(table),
            "final_cumulative_regret": float(log.regret.sum())}
    if tuning is not None:
        meta["tuning"] = tuning
    return PolicyBundle(policy, fmap, reward, meta), log


SHRINKAGE = ("reg", "l2", "weight_decay", "neighbors")   # larger: a simpler model
TUNING_RULES = ("one-se", "best")
LIST_PARAMS = ("lam_grid",)          # list-valued parameters that are not grids to tune


def grid_names(params: dict[str, Any]) -> list[str]:
    """The parameters given as a list of values to choose from by cross-validation."""
    return [k for k, v in params.items() if isinstance(v, list) and k not in LIST_PARAMS]


def tune_params(algo: str, table: ArmTable, embeddings: np.ndarray, features: FeatureSpec,
                reward: RewardSpec, mode: str, epochs: int, seed: int,
                grid: dict[str, Any], folds: int = 3,
                rule: str = "one-se") -> tuple[dict[str, Any], dict]:
    """Pick each list-valued parameter's value by ``folds``-fold cross-validation inside
    ``table``, so the questions a policy is later tested on never choose its
    hyperparameters. Every question is held out once; its greedy reward is recorded.

    ``rule="best"`` takes the highest mean held-out reward (ties to the earlier value).
    ``rule="one-se"`` (default) takes the simplest value whose mean is within one standard
    error of the best (the SE of the paired per-question difference), where simpler
    means larger shrinkage (``reg``, ``l2``, ``weight_decay``). With a weak signal this
    keeps a policy from chasing noise: a larger ridge ``reg`` pulls a linear policy toward
    the arms' mean rewards, i.e. toward the best fixed arm."""
    import itertools

    from policies.armlog import kfold_by_id

    if rule not in TUNING_RULES:
        raise InputError(f"unknown tuning rule {rule!r} (choose from "
                         f"{', '.join(TUNING_RULES)})", field="rule")
    names = grid_names(grid)
    if any(not grid[k] for k in names):
        raise InputError(f"empty grid for {', '.join(k for k in names if not grid[k])}",
                         field="params")
    splits = kfold_by_id(table.keys, folds, seed=seed + 1)
    R = reward_table(table, reward)
    heldout = {}                                # values -> greedy reward per question
    for values in itertools.product(*(grid[k] for k in names)):
        params = {**grid, **dict(zip(names, values))}
        rewards = np.zeros(len(table))
        for train, test in splits:
            bundle, _ = train_policy(algo, table.subset(train), embeddings[train], features,
                                     reward, mode, epochs, seed, params)
            arms, spent = greedy_routes(bundle, table.subset(test), embeddings[test])
            rewards[test] = route_rewards(arms, spent, table.subset(test), R[test], reward)
        heldout[values] = rewards
    best = max(heldout, key=lambda v: heldout[v].mean())     # max keeps the earliest tie
    chosen = best if rule == "best" else simplest_within_one_se(heldout, best, names)
    report = {"grid": {k: grid[k] for k in names}, "folds": folds, "rule": rule,
              "chosen": dict(zip(names, chosen)), "best": dict(zip(names, best)),
              "cv_reward": {",".join(map(str, v)): round(float(r.mean()), 6)
                            for v, r in heldout.items()}}
    return {**grid, **dict(zip(names, chosen))}, report


def simplest_within_one_se(heldout: dict[tuple, np.ndarray], best: tuple,
                            names: list[str]) -> tuple:
    """The one-standard-error rule over per-question held-out rewards (see tune_params)."""
    def within(values: tuple) -> bool:
        diff = heldout[values] - heldout[best]
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        return diff.mean() >= -se

    def simplicity(values: tuple) -> tuple:
        shrink = tuple(v for k, v in zip(names, values) if k in SHRINKAGE)
        return shrink, heldout[values].mean()

    return max((v for v in heldout if within(v)), key=simplicity)


def load_replay_data(log: str | Path, runs=None, datasets=None, cache: str | Path | None = None,
                     embedder: str = "default", encoder=None, results_from=None):
    """The arm log as an ArmTable plus each question's embedding (cached), and the encoder name."""
    from policies.armlog import load_arm_log

    table = load_arm_log(log, runs, datasets, results_from)
    if len(table) == 0:
        raise InputError("the arm log has no question with every arm "
                         f"({', '.join(ARMS)}) for this selection", path=str(log))
    if encoder is None:
        from retrievers.encoder import Encoder

        encoder = Encoder(embedder)
    name = embedder_identity(encoder)
    if cache is None:
        cache = Path(log).with_name(Path(log).name + f".{name}.emb.npz")
    return table, embed_questions(table.questions, encoder, cache, name), name
