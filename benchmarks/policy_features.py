"""Feature sets and projections for LinUCB, side by side on one arm log: held-out reward,
training time and per-decision latency (embedding one question + features + choice).

    .venv/bin/python benchmarks/policy_features.py --log bench-out/armlog.duckdb --lam 0.1 \
        [--params '{"reg": [1, 100, 10000]}']
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from policies.armlog import split_by_id  # noqa: E402
from policies.features import FeatureSpec  # noqa: E402
from policies.replay import load_replay_data, train_policy  # noqa: E402
from policies.scoring import evaluate  # noqa: E402
from policies.rewards import RewardSpec  # noqa: E402

VARIANTS = [  # name, projection, proj_dim, lexical, confidence
    ("full 384-d + lexical + confidence", "none", 384, True, True),
    ("random-64 + lexical + confidence", "random", 64, True, True),
    ("pca-64 + lexical + confidence", "pca", 64, True, True),
    ("random-16 + lexical + confidence", "random", 16, True, True),
    ("random-64 + lexical (no confidence)", "random", 64, True, False),
    ("random-64 + confidence (no lexical)", "random", 64, False, True),
    ("random-64 only", "random", 64, False, False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlog.duckdb")
    parser.add_argument("--results", help="also the fixed-strategy rows of this runs DB")
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--algo", default="linucb")
    parser.add_argument("--mode", default="bandit")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--params", default="{}", type=json.loads,
                        help="hyperparameters as JSON; a list is a grid tuned by inner CV")
    args = parser.parse_args()

    from retrievers.encoder import Encoder

    encoder = Encoder("default")
    table, emb, embedder = load_replay_data(args.log, encoder=encoder,
                                            results_from=args.results)
    train, test = split_by_id(table.keys, 0.3, seed=0)
    reward = RewardSpec(lam=args.lam)
    encode_ms = []
    for question in table.questions[:50]:
        started = time.perf_counter()
        encoder.encode([question])
        encode_ms.append((time.perf_counter() - started) * 1000)
    print(f"{len(table)} questions (train {len(train)}, held-out {len(test)}), {args.algo}/"
          f"{args.mode}, lambda={args.lam}, median of {args.seeds} replay orders; embedding "
          f"one question: median {statistics.median(encode_ms):.1f} ms")
    print("\n| features | dim | held-out reward | F1 | steps | gap closed | train s | "
          "decision ms (features + choose) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, projection, proj_dim, lexical, confidence in VARIANTS:
        spec = FeatureSpec(embedder=embedder, embed_dim=emb.shape[1], projection=projection,
                           proj_dim=proj_dim, lexical=lexical, confidence=confidence)
        results, seconds = [], []
        for seed in range(args.seeds):
            started = time.perf_counter()
            bundle, _ = train_policy(args.algo, table.subset(train), emb[train], spec, reward,
                                     args.mode, args.epochs, seed, args.params)
            seconds.append(time.perf_counter() - started)
            results.append(evaluate(bundle, table.subset(test), emb[test])["policy"])
        latency = []
        for i in test[:100]:
            started = time.perf_counter()
            x = bundle.features.transform(emb[i:i + 1], [table.questions[i]],
                                          [table.confidences()[i]])[0]
            bundle.policy.choose(x, explore=False)
            latency.append((time.perf_counter() - started) * 1000)
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        gap = "" if np.isnan(med["gap_closed"]) else f"{med['gap_closed']:.2f}"
        print(f"| {name} | {bundle.features.dim} | {med['reward']:.4f} | {med['f1']:.3f} | "
              f"{med['steps']:.2f} | {gap} | {statistics.median(seconds):.2f} | "
              f"{statistics.median(latency):.3f} |", flush=True)


if __name__ == "__main__":
    main()
