"""Scoring a policy on an arm log: its greedy choices on held-out questions beside the
fixed arms and the oracle (reward, every quality metric, retrieval calls, seconds, arm
shares, the share of the best-fixed-arm -> oracle gap it closes)."""

from __future__ import annotations

import numpy as np

from policies.armlog import ArmTable
from policies.arms import ARMS
from policies.baselines import oracle_arms
from policies.cascade import AnswerCascade, route_cost
from policies.features import FeatureMap
from policies.persistence import PolicyBundle
from policies.rewards import RewardSpec


def features_for(table: ArmTable, fmap: FeatureMap, embeddings: np.ndarray) -> np.ndarray:
    return fmap.transform(embeddings, table.questions, table.confidences())


def reward_table(table: ArmTable, spec: RewardSpec) -> np.ndarray:
    return spec.reward_matrix(table.quality[spec.metric], table.steps, table.seconds)


def outcome_of(arms: np.ndarray, table: ArmTable, R: np.ndarray, spent: np.ndarray | None = None,
               spec: RewardSpec | None = None,
               seconds: np.ndarray | None = None) -> dict[str, float]:
    """Averages over questions when question i is answered by arm ``arms[i]``; a cascade
    passes the retrieval calls and ``seconds`` each question's route spent (every arm it
    ran) and the reward ``spec`` instead."""
    rows = np.arange(len(arms))
    share = np.bincount(arms, minlength=len(ARMS)) / max(len(arms), 1)
    out = {"reward": float(route_rewards(arms, spent, table, R, spec).mean()),
           **{m: float(q[rows, arms].mean()) for m, q in table.quality.items()},
           "steps": float((table.steps[rows, arms] if spent is None else spent).mean()),
           "seconds": float((table.seconds[rows, arms] if seconds is None else seconds).mean())}
    out.update({f"share_{arm}": float(s) for arm, s in zip(ARMS, share)})
    return out


def route_rewards(arms: np.ndarray, spent: np.ndarray | None, table: ArmTable, R: np.ndarray,
                  spec: RewardSpec | None) -> np.ndarray:
    """Each question's reward when arm ``arms[i]`` is served: ``R``'s entry, or for a
    cascade the served answer's quality less lambda times the calls its route ``spent``."""
    rows = np.arange(len(arms))
    return R[rows, arms] if spent is None else \
        table.quality[spec.metric][rows, arms] - spec.lam * spent


def reference_rows(table: ArmTable, R: np.ndarray) -> dict[str, dict[str, float]]:
    """The fixed arms and the oracle on the same questions."""
    n = len(table)
    rows = {f"always-{arm}": outcome_of(np.full(n, a, dtype=np.int64), table, R)
            for a, arm in enumerate(ARMS)}
    rows["oracle"] = outcome_of(oracle_arms(R), table, R)
    return rows


def evaluate(bundle: PolicyBundle, table: ArmTable, embeddings: np.ndarray,
             lam: float | None = None) -> dict:
    """Greedy (no exploration) choices of the policy on ``table`` next to the references;
    ``lam`` scores with another lambda (policies that support it) and rewards likewise."""
    spec = bundle.reward if lam is None else RewardSpec(lam, bundle.reward.metric,
                                                        bundle.reward.cost)
    R = reward_table(table, spec)
    refs = reference_rows(table, R)
    arms, route = greedy_choices(bundle, table, embeddings, lam)
    spent, seconds = (None, None) if route is None else \
        (route_cost(route, table.steps), route_cost(route, table.seconds))
    result = outcome_of(arms, table, R, spent, spec, seconds)
    best_fixed = max(v["reward"] for k, v in refs.items() if k.startswith("always-"))
    result["gap_closed"] = gap_closed(result["reward"], best_fixed, refs["oracle"]["reward"])
    return {"policy": result, "references": refs, "best_fixed_reward": best_fixed}


def greedy_arms(bundle: PolicyBundle, table: ArmTable, embeddings: np.ndarray,
                lam: float | None = None) -> np.ndarray:
    """The arm the policy serves (no exploration) for each question of ``table``."""
    return bundle.policy.choose_batch(features_for(table, bundle.features, embeddings), lam)


def greedy_choices(bundle: PolicyBundle, table: ArmTable, embeddings: np.ndarray,
                   lam: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The arm whose answer the policy serves (no exploration) for each question, and for
    a cascade the route it took (``policies.cascade.ROUTES``; None for other policies)."""
    if isinstance(bundle.policy, AnswerCascade):
        return bundle.policy.route_choices(features_for(table, bundle.features, embeddings),
                                           table.questions, table.generated(), lam)
    return greedy_arms(bundle, table, embeddings, lam), None


def greedy_routes(bundle: PolicyBundle, table: ArmTable, embeddings: np.ndarray,
                  lam: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``greedy_choices``, with for a cascade the retrieval calls its route spent (every
    arm it ran; None for other policies: the served arm's own)."""
    arms, route = greedy_choices(bundle, table, embeddings, lam)
    return arms, None if route is None else route_cost(route, table.steps)


def gap_closed(value: float, best_fixed: float, oracle: float) -> float:
    """Fraction of the best-fixed-arm -> oracle reward gap a policy closes (NaN: no gap)."""
    gap = oracle - best_fixed
    return float((value - best_fixed) / gap) if gap > 1e-12 else float("nan")
