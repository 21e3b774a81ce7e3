"""Off-policy evaluation on real outcomes: does IPS / SNIPS / DR recover a policy's value
from a bandit log drawn out of the full-information arm log?

For each of 5 folds by question id: the outcome policy is trained on the other folds
(full information; the target), and so is a second outcome model (the DR reward model,
another seed and blend so it is not the target's own estimate). On the held-out fold a
logging policy draws one arm per question (epsilon-greedy around the target's choice, or
uniform) and only that arm's reward is kept. The estimates from that log are compared with
the target's true held-out value, which the full arm log gives exactly; ``--draws``
logging draws per fold give bias, RMSE and the 95% CI coverage.

    .venv/bin/python benchmarks/ope_check.py --log bench-out/armlogs.duckdb
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import table  # noqa: E402
from policies.armlog import kfold_by_id  # noqa: E402
from policies.features import FeatureSpec  # noqa: E402
from policies.ope import off_policy_values  # noqa: E402
from policies.replay import load_replay_data, train_policy  # noqa: E402
from policies.scoring import features_for, reward_table  # noqa: E402
from policies.rewards import RewardSpec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb")
    parser.add_argument("--lam", type=float, default=0.05)
    parser.add_argument("--metric", default="f1")
    parser.add_argument("--draws", type=int, default=50)
    args = parser.parse_args()
    data, emb, embedder = load_replay_data(args.log)
    spec = FeatureSpec(embedder=embedder, embed_dim=emb.shape[1], confidence=False,
                       cues=True, standardize=True)
    reward = RewardSpec(lam=args.lam, metric=args.metric)
    R = reward_table(data, reward)
    loggers = {"uniform": 1.0, "eps-greedy 0.3": 0.3}
    errors = {(lg, m): [] for lg in loggers for m in ("ips", "snips", "dr")}
    covered = {key: 0 for key in errors}
    rng = np.random.default_rng(0)
    for train, test in kfold_by_id(data.keys, 5, seed=0):
        target, _ = train_policy("outcome", data.subset(train), emb[train], spec, reward, "full")
        model, _ = train_policy("outcome", data.subset(train), emb[train], spec, reward, "full",
                                seed=1, params={"blend": 0.8, "neighbors": 50})
        X = features_for(data.subset(test), target.features, emb[test])
        greedy = target.policy.choose_batch(X)
        pi_target = np.eye(R.shape[1])[greedy]
        quality, cost = model.policy.predict(X)
        qhat = quality - args.lam * cost
        truth = R[test][np.arange(len(test)), greedy].mean()
        for logger, eps in loggers.items():
            pi_log = (1 - eps) * pi_target + eps / R.shape[1]
            for _ in range(args.draws):
                actions = np.array([rng.choice(R.shape[1], p=p) for p in pi_log])
                rewards = R[test][np.arange(len(test)), actions]
                props = pi_log[np.arange(len(test)), actions]
                for method, est in off_policy_values(actions, rewards, props, pi_target,
                                                     qhat).items():
                    errors[logger, method].append(est.value - truth)
                    covered[logger, method] += est.ci_low <= truth <= est.ci_high
    rows = []
    for (logger, method), errs in errors.items():
        errs = np.asarray(errs)
        rows.append([logger, method, float(errs.mean()), float(np.sqrt((errs ** 2).mean())),
                     covered[logger, method] / len(errs)])
    print(f"OPE of the outcome policy (lambda {args.lam}, {args.metric} reward), 5 folds x "
          f"{args.draws} logging draws, {len(data)} questions\n")
    print(table(["logging policy", "estimator", "bias", "RMSE", "95% CI coverage"], rows))


if __name__ == "__main__":
    main()
