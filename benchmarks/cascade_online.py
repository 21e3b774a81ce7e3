"""Does the cascade's online learning pay? Offline on part of an arm log, then online.

Held-out 30% of the questions (by id) for evaluation; of the rest, 3/7 (30% of all) train
the cascade offline and 4/7 (40%) arrive as a stream: the cascade serves each (each step
exploring a random action with probability ``--eps``), only the strategies its route runs
reveal their answers, and feedback (the logged outcomes of exactly those answers) goes
through ``AnswerCascade.learn``. Reported per lambda and eps (F1 reward, cost = retrieval
calls): held-out reward of (a) the offline-only cascade, (b) the same after the online
stream, what the stream's users got, and (c) a cascade trained offline on the seed and the
stream with full information (every arm's outcome: the upper reference).

    .venv/bin/python benchmarks/cascade_online.py --log bench-out/armlogs.duckdb
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from policies.armlog import split_by_id  # noqa: E402
from policies.arms import ARMS  # noqa: E402
from policies.features import FeatureSpec  # noqa: E402
from policies.replay import load_replay_data, train_policy  # noqa: E402
from policies.scoring import evaluate, features_for  # noqa: E402
from policies.rewards import RewardSpec  # noqa: E402


def serve_and_learn(cascade, x, question, answers, quality, steps, lam: float) -> float:
    """Serve one question from its logged answers (exploring); learn from what ran; the
    reward the user got."""
    served, ran, _ = cascade.walk(x, question, lambda arm: answers[ARMS.index(arm)],
                                  explore=True)
    cascade.learn(x, question, [{"arm": arm, "answer": answers[ARMS.index(arm)],
                                 "calls": float(steps[ARMS.index(arm)]),
                                 "quality": float(quality[ARMS.index(arm)])} for arm in ran],
                  served)
    return float(quality[ARMS.index(served)] - lam * sum(steps[ARMS.index(a)] for a in ran))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb")
    parser.add_argument("--lams", default="0.02,0.05")
    parser.add_argument("--metric", default="f1")
    parser.add_argument("--eps", default="0,0.1,0.2", help="per-step exploration rates")
    args = parser.parse_args()
    table, emb, embedder = load_replay_data(args.log)
    rest, test = split_by_id(table.keys, 0.3, seed=0)
    seed, stream = rest[: len(rest) * 3 // 7], rest[len(rest) * 3 // 7:]
    spec = FeatureSpec(embedder=embedder, embed_dim=emb.shape[1], confidence=False, cues=True,
                       standardize=True)
    held = table.subset(test)
    print(f"{len(seed)} offline, {len(stream)} streamed, {len(test)} held out\n")
    print("| lambda | eps | offline on 30% | + online on 40% | stream's own reward | "
          "offline, full information, on 70% |\n|---|---|---|---|---|---|")
    for lam in map(float, args.lams.split(",")):
        reward = RewardSpec(lam=lam, metric=args.metric)
        offline, _ = train_policy("cascade", table.subset(seed), emb[seed], spec, reward)
        before = evaluate(offline, held, emb[test])["policy"]["reward"]
        full, _ = train_policy("cascade", table.subset(rest), emb[rest], spec, reward)
        upper = evaluate(full, held, emb[test])["policy"]["reward"]
        X = features_for(table.subset(stream), offline.features, emb[stream])
        for eps in map(float, args.eps.split(",")):
            bundle = copy.deepcopy(offline)
            bundle.policy.eps = eps
            got = [serve_and_learn(bundle.policy, x, table.questions[i], table.answers[i],
                                   table.quality[args.metric][i], table.steps[i], lam)
                   for x, i in zip(X, stream)]
            after = evaluate(bundle, held, emb[test])["policy"]["reward"]
            print(f"| {lam:g} | {eps:g} | {before:.4f} | {after:.4f} | "
                  f"{sum(got) / len(got):.4f} | {upper:.4f} |", flush=True)


if __name__ == "__main__":
    main()
