"""Policies on held-out questions of a real arm log: a lambda sweep, side by side.

For each lambda: the fixed arms, the oracle, and every policy (LinUCB, linear Thompson,
neural epsilon-greedy: bandit feedback and full information; the supervised classifier)
trained by replay on the training split (disjoint question ids, fixed seed) and scored
greedily on the held-out split. Bandit rows are the median over ``--seeds`` replay orders.
Rows ``ALGO/bandit@L`` are one linear policy trained at lambda L and rescored at serve time
for each lambda of the sweep (the per-request dial).
Prints a markdown table and the acceptance checks, writes the Pareto plot (F1 vs average
retrieval steps) and the regret curves.

    .venv/bin/python benchmarks/policy_replay.py --log bench-out/armlog.duckdb [--folds 5] \
        [--params '{"linucb": {"reg": [1, 100, 10000, 100000]}}']
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

from policies.armlog import kfold_by_id, split_by_id  # noqa: E402
from policies.features import FeatureSpec  # noqa: E402
from policies.replay import TUNING_RULES, load_replay_data, train_policy  # noqa: E402
from policies.rewards import RewardSpec  # noqa: E402
from policies.scoring import (gap_closed, greedy_arms, outcome_of,  # noqa: E402
                              reference_rows, reward_table)

SYSTEMS = [("linucb", "bandit"), ("thompson", "bandit"), ("neural", "bandit"),
           ("linucb", "full"), ("thompson", "full"), ("neural", "full"), ("supervised", "full")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlog.duckdb")
    parser.add_argument("--run", action="append")
    parser.add_argument("--results", help="also the fixed-strategy rows of this runs DB")
    parser.add_argument("--lams", default="0,0.02,0.05,0.1,0.2,0.3")
    parser.add_argument("--mba-lam", type=float, default=0.1,
                        help="the lambda that balances like MBA-RAG (checked for F1/steps)")
    parser.add_argument("--metric", default="f1")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--projection", default="random")
    parser.add_argument("--proj-dim", type=int, default=64)
    parser.add_argument("--test-frac", type=float, default=0.3)
    parser.add_argument("--folds", type=int, default=1,
                        help="k>1: k-fold by question id, every question held out once")
    parser.add_argument("--systems", default=",".join(f"{a}/{m}" for a, m in SYSTEMS))
    parser.add_argument("--params", default="{}", type=json.loads,
                        help='hyperparameters per "algo" or "algo/mode" as JSON; a list is a '
                             'grid tuned by inner CV on each training split, e.g. '
                             '\'{"linucb/full": {"reg": [1, 10, 100]}}\'')
    parser.add_argument("--tune-rule", default="one-se", choices=TUNING_RULES,
                        help="how a grid value is chosen (see policies.replay.tune_params)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    systems = [tuple(s.split("/")) for s in args.systems.split(",")]
    lams = [float(x) for x in args.lams.split(",")]

    table, emb, embedder = load_replay_data(args.log, args.run, results_from=args.results)
    splits = (kfold_by_id(table.keys, args.folds) if args.folds > 1
              else [split_by_id(table.keys, args.test_frac, seed=0)])
    held = np.sort(np.concatenate([test for _, test in splits]))
    spec = FeatureSpec(embedder=embedder, embed_dim=emb.shape[1], projection=args.projection,
                       proj_dim=args.proj_dim)
    print(f"arm log {args.log}: {len(table)} questions with every arm ({table.dropped} "
          f"incomplete dropped); {len(splits)} split(s) by question id, held-out "
          f"{len(held)} in all; features {spec.projection}/{spec.proj_dim}, metric "
          f"{args.metric}")

    def params_for(algo: str, mode: str) -> dict | None:
        return args.params.get(f"{algo}/{mode}", args.params.get(algo))

    def heldout(train_one, lam: float) -> dict:
        """Pooled held-out outcome: each split's policy answers that split's test ids."""
        arms = np.full(len(table), -1, dtype=np.int64)
        for fold, (train, test) in enumerate(splits):
            bundle = train_one(fold, train)
            arms[test] = greedy_arms(bundle, table.subset(test), emb[test], lam)
        reward = RewardSpec(lam=lam, metric=args.metric)
        R = reward_table(table, reward)[held]
        sub = table.subset(held)
        refs = reference_rows(sub, R)
        row = outcome_of(arms[held], sub, R)
        # serving with the confidence feature runs the closed-book arm first (reused when
        # the policy picks parametric): its seconds are paid on every other answer too
        picked = arms[held]
        seconds = sub.seconds[np.arange(len(picked)), picked] + (picked != 0) * sub.seconds[:, 0]
        row["seconds_with_probe"] = float(seconds.mean())
        best = max(v["reward"] for k, v in refs.items() if k.startswith("always-"))
        row["gap_closed"] = gap_closed(row["reward"], best, refs["oracle"]["reward"])
        return row

    def median(results: list[dict]) -> dict:
        return {k: statistics.median(r[k] for r in results) for k in results[0]}

    rows, curves = [], {}
    for lam in lams:
        reward = RewardSpec(lam=lam, metric=args.metric)
        for name, row in reference_rows(table.subset(held),
                                        reward_table(table, reward)[held]).items():
            rows.append({"lam": lam, "system": name, **row})
        for algo, mode in systems:
            results, started = [], time.perf_counter()
            seeds = 1 if algo == "supervised" else args.seeds
            for seed in range(seeds):
                def train_one(fold, train, seed=seed, algo=algo, mode=mode, reward=reward):
                    bundle, log = train_policy(algo, table.subset(train), emb[train], spec,
                                               reward, mode, args.epochs, seed,
                                               params_for(algo, mode), tune_rule=args.tune_rule)
                    if lam == args.mba_lam and mode == "bandit" and seed == 0 and fold == 0:
                        curves[algo] = log.cumulative_regret.tolist()
                    return bundle
                results.append(heldout(train_one, lam))
            row = median(results)
            row["train_seconds"] = (time.perf_counter() - started) / seeds / len(splits)
            rows.append({"lam": lam, "system": f"{algo}/{mode}", **row})
            print(f"  lam={lam} {algo}/{mode}: reward {row['reward']:.4f} "
                  f"f1 {row['f1']:.3f} steps {row['steps']:.2f}", flush=True)
    for algo, mode in [s for s in (("linucb", "bandit"), ("thompson", "bandit")) if s in systems]:
        trained = {}                         # one policy per (seed, fold), trained at mba_lam
        for lam in lams:                     # ... rescored for every lambda at serve time
            results = []
            for seed in range(args.seeds):
                def train_one(fold, train, seed=seed, algo=algo, mode=mode):
                    if (seed, fold) not in trained:
                        trained[seed, fold] = train_policy(
                            algo, table.subset(train), emb[train], spec,
                            RewardSpec(lam=args.mba_lam, metric=args.metric), mode,
                            args.epochs, seed, params_for(algo, mode),
                            tune_rule=args.tune_rule)[0]
                    return trained[seed, fold]
                results.append(heldout(train_one, lam))
            rows.append({"lam": lam, "system": f"{algo}/{mode}@{args.mba_lam}", **median(results)})
    rows.sort(key=lambda r: r["lam"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "policy_replay.json").write_text(json.dumps({"rows": rows, "regret": curves,
                                                        "args": vars(args)}, indent=1))
    print_table(rows, lams)
    checks(rows, lams, args.mba_lam)
    plot(rows, curves, lams, out, args.mba_lam)


def print_table(rows: list[dict], lams: list[float]) -> None:
    print("\n| lambda | system | reward | F1 | EM | avg steps | avg s (with probe) | "
          "parametric / single / multi | gap to oracle closed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        gap = row.get("gap_closed")
        gap = "" if gap is None or np.isnan(gap) else f"{gap:.2f}"
        probe = row.get("seconds_with_probe")
        seconds = f"{row['seconds']:.1f}" + (f" ({probe:.1f})" if probe is not None else "")
        print(f"| {row['lam']} | {row['system']} | {row['reward']:.4f} | {row['f1']:.3f} | "
              f"{row['em']:.3f} | {row['steps']:.2f} | {seconds} | "
              f"{row['share_parametric']:.2f} / {row['share_single']:.2f} / "
              f"{row['share_multi']:.2f} | {gap} |")


def checks(rows: list[dict], lams: list[float], mba_lam: float) -> None:
    print("\nChecks")
    for lam in lams:
        at = [r for r in rows if r["lam"] == lam]
        fixed = max((r for r in at if r["system"].startswith("always-")), key=lambda r: r["reward"])
        policies = [r for r in at if "/" in r["system"]]
        best = max(policies, key=lambda r: r["reward"])
        verdict = "PASS" if best["reward"] >= fixed["reward"] - 1e-12 else "FAIL"
        print(f"  lambda={lam}: best policy {best['system']} reward {best['reward']:.4f} vs best "
              f"fixed {fixed['system']} {fixed['reward']:.4f} -> {verdict}")
    at = [r for r in rows if r["lam"] == mba_lam]
    multi = next((r for r in at if r["system"] == "always-multi"), None)
    if multi is None:                           # --lams left the MBA lambda out
        print(f"  lambda={mba_lam} (--mba-lam) was not run: no always-multi comparison")
    for r in (r for r in at if "/" in r["system"] and multi is not None):
        f1_ok = r["f1"] >= 0.98 * multi["f1"]
        steps_ok = r["steps"] <= 0.5 * multi["steps"]
        print(f"  lambda={mba_lam} {r['system']}: F1 {r['f1']:.3f} = "
              f"{r['f1'] / max(multi['f1'], 1e-12):.1%} of always-multi, steps "
              f"{r['steps']:.2f} = {r['steps'] / max(multi['steps'], 1e-12):.1%} -> "
              f"{'PASS' if f1_ok and steps_ok else 'FAIL'}")
    print("  any lambda: (policy, lambda) with F1 >= 98% of always-multi at <= 50% of its steps:")
    hits = []
    for r in (r for r in rows if "/" in r["system"]):
        multi = next(m for m in rows if m["lam"] == r["lam"] and m["system"] == "always-multi")
        if r["f1"] >= 0.98 * multi["f1"] and r["steps"] <= 0.5 * multi["steps"]:
            hits.append(f"{r['system']} at {r['lam']} (F1 {r['f1']:.3f}, steps {r['steps']:.2f})")
    print("    " + ("; ".join(hits) if hits else "none"))


def plot(rows: list[dict], curves: dict, lams: list[float], out: Path, mba_lam: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name in dict.fromkeys(r["system"] for r in rows if "/" in r["system"] or
                              r["system"] == "oracle"):
        series = sorted((r for r in rows if r["system"] == name), key=lambda r: r["lam"])
        style = {"marker": "o", "linestyle": "-"} if name != "oracle" else \
            {"marker": "*", "linestyle": "--", "color": "black", "markersize": 10}
        ax.plot([r["steps"] for r in series], [r["f1"] for r in series], label=name, **style)
    for arm, marker in (("parametric", "s"), ("single", "^"), ("multi", "D")):
        row = next(r for r in rows if r["system"] == f"always-{arm}")
        ax.scatter(row["steps"], row["f1"], marker=marker, s=90, color="grey", zorder=5)
        ax.annotate(f"always-{arm}", (row["steps"], row["f1"]), textcoords="offset points",
                    xytext=(5, -12))
    ax.set_xlabel("average retrieval steps per question")
    ax.set_ylabel("F1 (held-out)")
    ax.set_title(f"F1 vs. steps over lambda in {lams}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "policy_pareto.png", dpi=120)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, curve in curves.items():
        ax.plot(curve, label=name)
    ax.set_xlabel("replay step (bandit feedback)")
    ax.set_ylabel("cumulative regret")
    ax.set_title(f"Training regret, lambda={mba_lam}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "policy_regret.png", dpi=120)
    print(f"\nwrote {out / 'policy_pareto.png'} and {out / 'policy_regret.png'}")


if __name__ == "__main__":
    main()
