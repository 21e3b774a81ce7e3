"""Off-policy evaluation: a target policy's expected reward from bandit-feedback logs.

Each logged row i holds an action a_i drawn by the logging policy with probability
p_i = pi_log(a_i | x_i) (its propensity) and the reward r_i of that action only. With
the target's probabilities pi_t(a | x_i) as an (n, arms) matrix (a greedy policy is a
one-hot row) and importance weights w_i = pi_t(a_i | x_i) / p_i:

* IPS    V = mean(w_i r_i)                              unbiased when every p_i > 0 where
                                                        the target puts mass
* SNIPS  V = sum(w_i r_i) / sum(w_i)                    slightly biased, lower variance,
                                                        invariant to a reward shift
* DR     V = mean(sum_a pi_t(a|x_i) qhat_ia + w_i (r_i - qhat_{i,a_i}))
                                                        unbiased if either the propensities
                                                        or the reward model qhat are right

Standard errors: the sample standard deviation of the per-row terms over sqrt(n) for IPS
and DR, the delta method for SNIPS; the 95% interval is value +- 1.96 se (normal).
``min_propensity`` clips: propensities below it are raised to it, which caps every weight
at 1 / min_propensity -- less variance for some bias (IPS then underestimates a positive
reward). ``journal_bandit_log`` reads these inputs from an online learner's journal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from searchagent.errors import InputError

Z_95 = 1.959963984540054
ROW_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class OpeEstimate:
    method: str               # "ips", "snips" or "dr"
    value: float              # estimated expected reward of the target policy
    stderr: float
    ci_low: float             # value -+ 1.96 stderr
    ci_high: float
    n: int                    # logged rows used
    effective_n: float        # (sum w)^2 / sum w^2: how many rows the weights amount to
    n_clipped: int            # rows whose propensity was raised to min_propensity


class BanditLog(NamedTuple):
    """Inputs for the estimators: features, logged arm indices, rewards, propensities."""
    X: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray


def ips(actions, rewards, propensities, target, *,
        min_propensity: float | None = None) -> OpeEstimate:
    """Inverse propensity scoring."""
    _, rewards, weights, clipped = _weights(actions, rewards, propensities, target,
                                            min_propensity)
    return _mean_estimate("ips", weights * rewards, weights, clipped)


def snips(actions, rewards, propensities, target, *,
          min_propensity: float | None = None) -> OpeEstimate:
    """Self-normalised IPS; NaN when no logged action has target mass (sum w = 0)."""
    _, rewards, weights, clipped = _weights(actions, rewards, propensities, target,
                                            min_propensity)
    total = weights.sum()
    if total <= 0:
        return _estimate("snips", math.nan, math.nan, weights, clipped)
    value = float((weights * rewards).sum() / total)
    stderr = float(np.sqrt(np.sum(weights ** 2 * (rewards - value) ** 2)) / total)
    return _estimate("snips", value, stderr, weights, clipped)


def doubly_robust(actions, rewards, propensities, target, qhat, *,
                  min_propensity: float | None = None) -> OpeEstimate:
    """Doubly robust: the reward model's value plus an IPS correction of its residuals."""
    actions, rewards, weights, clipped = _weights(actions, rewards, propensities, target,
                                                  min_propensity)
    target = np.asarray(target, np.float64)
    qhat = _matrix(qhat, target.shape, "qhat")
    rows = np.arange(len(actions))
    terms = (target * qhat).sum(axis=1) + weights * (rewards - qhat[rows, actions])
    return _mean_estimate("dr", terms, weights, clipped)


def off_policy_values(actions, rewards, propensities, target, qhat=None, *,
                      min_propensity: float | None = None) -> dict[str, OpeEstimate]:
    """IPS and SNIPS, and DR when a reward model ``qhat`` is given, keyed by method."""
    out = {"ips": ips(actions, rewards, propensities, target, min_propensity=min_propensity),
           "snips": snips(actions, rewards, propensities, target,
                          min_propensity=min_propensity)}
    if qhat is not None:
        out["dr"] = doubly_robust(actions, rewards, propensities, target, qhat,
                                  min_propensity=min_propensity)
    return out


def policy_matrix(policy, X: np.ndarray, explore: bool = False,
                  lam: float | None = None) -> np.ndarray:
    """The (n, arms) matrix of ``policy.arm_probabilities`` over the rows of ``X``: the
    ``target`` argument for evaluating ``policy`` (greedy by default, as it is served
    with exploration off)."""
    return np.stack([policy.arm_probabilities(x, explore=explore, lam=lam)
                     for x in np.asarray(X, np.float64)])


def journal_bandit_log(source, fingerprint: str | None = None) -> BanditLog:
    """Rows of an online journal usable for off-policy evaluation, in feedback order.

    ``source`` is an ``OnlineLearner`` (its connection is used under its lock) or a policy
    folder holding ``online.duckdb`` (opened read-only: a learner serving from it in
    another process holds the lock). Kept: rows with features, a reward and a propensity
    whose arm was not forced -- a forced arm was not drawn from the policy, so its
    propensity (1.0) says nothing about what the policy would have done. Rows the answer
    cascade served are left out too (a journal of only those is an InputError): their
    propensity is the route's, not the served arm's, and their reward is charged for every
    arm the route ran. Only rows of one
    feature fingerprint are kept, as features of different maps do not compare: the
    learner's own by default, else the journal's only one (else name it).
    """
    from policies.arms import arm_index
    from policies.online import JOURNAL

    query = ("SELECT features, arm, reward, propensity, fingerprint, {route} FROM decisions "
             "WHERE reward IS NOT NULL AND features IS NOT NULL AND propensity IS NOT NULL "
             "AND NOT coalesce(forced, false) ORDER BY feedback_seq")
    routed = query.format(route="answers IS NOT NULL")
    if hasattr(source, "con") and hasattr(source, "lock"):
        with source.lock:
            rows = source.con.execute(routed).fetchall()
        fingerprint = fingerprint or source.fingerprint
    else:
        import duckdb

        path = Path(source) / JOURNAL
        if not path.exists():
            raise InputError("no decision journal in this folder", path=str(path))
        try:
            con = duckdb.connect(str(path), read_only=True)
            try:
                columns = {r[0] for r in con.execute("DESCRIBE decisions").fetchall()}
                rows = [] if "propensity" not in columns else con.execute(
                    routed if "answers" in columns else query.format(route="false")).fetchall()
            finally:
                con.close()
        except duckdb.Error as exc:
            raise InputError(f"cannot read the decision journal: {exc}",
                             path=str(path)) from exc
    cascade = sum(bool(row[5]) for row in rows)
    rows = [row for row in rows if not row[5]]
    if cascade and not rows:
        raise InputError(f"the journal's {cascade} rows with feedback were served by the answer "
                         "cascade: each is a route (closed book, then retrieve, then ...), its "
                         "propensity that of the route and its reward charged for every arm "
                         "that ran, not one arm's, so per-arm off-policy evaluation does not "
                         "apply", field="source")
    if fingerprint is None:
        found = sorted({row[4] for row in rows})
        if len(found) > 1:
            raise InputError(f"the journal mixes feature fingerprints {found}; name one",
                             field="fingerprint")
    else:
        rows = [row for row in rows if row[4] == fingerprint]
    if not rows:
        empty = np.zeros(0)
        return BanditLog(np.zeros((0, 0)), empty.astype(np.int64), empty, empty)
    return BanditLog(np.array([row[0] for row in rows], np.float64),
                     np.array([arm_index(row[1]) for row in rows], np.int64),
                     np.array([row[2] for row in rows], np.float64),
                     np.array([row[3] for row in rows], np.float64))


# -- validation and shared arithmetic -------------------------------------------------

def _weights(actions, rewards, propensities, target, min_propensity):
    """Validate the inputs; return (actions, rewards, weights, rows clipped)."""
    target = np.asarray(target, np.float64)
    if target.ndim != 2 or target.shape[0] == 0 or target.shape[1] == 0:
        raise InputError(f"target must be an (n, arms) matrix with n, arms > 0, got shape "
                         f"{target.shape}", field="target")
    n, n_arms = target.shape
    rewards = _vector(rewards, n, "rewards")
    propensities = _vector(propensities, n, "propensities")
    raw_actions = _vector(actions, n, "actions")
    if np.any(raw_actions != np.round(raw_actions)) or raw_actions.min() < 0 \
            or raw_actions.max() >= n_arms:
        raise InputError(f"actions must be arm indices in 0..{n_arms - 1}", field="actions")
    actions = raw_actions.astype(np.int64)
    if np.any(propensities <= 0) or np.any(propensities > 1):
        raise InputError("propensities must lie in (0, 1]", field="propensities")
    if not np.all(np.isfinite(target)) or np.any(target < 0) \
            or np.any(np.abs(target.sum(axis=1) - 1) > ROW_SUM_TOLERANCE):
        raise InputError("each target row must be probabilities (>= 0, summing to 1)",
                         field="target")
    clipped = 0
    if min_propensity is not None:
        if not 0 < min_propensity <= 1:
            raise InputError(f"min_propensity must lie in (0, 1], got {min_propensity}",
                             field="min_propensity")
        clipped = int(np.sum(propensities < min_propensity))
        propensities = np.maximum(propensities, min_propensity)
    weights = target[np.arange(n), actions] / propensities
    return actions, rewards, weights, clipped


def _vector(values, n: int, field: str) -> np.ndarray:
    try:
        values = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise InputError("must be numbers", field=field) from None
    if values.shape != (n,):
        raise InputError(f"expected {n} values (one per target row), got shape "
                         f"{values.shape}", field=field)
    if not np.all(np.isfinite(values)):
        raise InputError("must be finite numbers", field=field)
    return values


def _matrix(values, shape: tuple[int, int], field: str) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if values.shape != shape:
        raise InputError(f"expected shape {shape}, got {values.shape}", field=field)
    if not np.all(np.isfinite(values)):
        raise InputError("must be finite numbers", field=field)
    return values


def _mean_estimate(method: str, terms: np.ndarray, weights: np.ndarray,
                   clipped: int) -> OpeEstimate:
    stderr = float(terms.std(ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else math.nan
    return _estimate(method, float(terms.mean()), stderr, weights, clipped)


def _estimate(method: str, value: float, stderr: float, weights: np.ndarray,
              clipped: int) -> OpeEstimate:
    squares = float(np.sum(weights ** 2))
    effective_n = float(weights.sum() ** 2 / squares) if squares > 0 else 0.0
    return OpeEstimate(method, value, stderr, value - Z_95 * stderr, value + Z_95 * stderr,
                       len(weights), effective_n, clipped)
