"""Strategy policies on a strong generator's published arm log, side by side.

The arm log comes from ``searchagent eval import-arms`` (Llama-3.1-8B-Instruct under no
retrieval / one retrieval / IRCoT on 2,980 questions of six datasets). K-fold by question
id (every question held out once per seed), ``--seeds`` different fold assignments;
for each reward metric (EM, F1) and lambda: the fixed arms, the dataset-name router (a
privileged reference: it knows each question's dataset and serves the dataset's best arm on
the training folds), the oracle and every policy, trained on the training folds and scored
greedily on the held-out fold. Reported per system: reward, EM, F1, InAcc (``acc``),
retrieval calls, arm shares, gap to the oracle closed, the paired bootstrap 95% CI of the
reward difference against the best fixed arm, and per dataset. The table and checks are
printed (``policy_armlogs_report``), rows go to ``--out``/policy_armlogs.json and the plot to
``--out``/policy_armlogs_pareto.png.

    .venv/bin/python benchmarks/policy_armlogs.py --log bench-out/armlogs.duckdb
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from policies.armlog import kfold_by_id  # noqa: E402
from policies.arms import ARMS  # noqa: E402
from policies.features import FeatureSpec  # noqa: E402
from policies.replay import load_replay_data, train_policy  # noqa: E402
from policies.scoring import greedy_routes  # noqa: E402
from policies.rewards import RewardSpec  # noqa: E402

# (name, algo, mode, params, trained per lambda?) -- full-information outcome and linear
# models keep quality and cost apart, and the cascade's first step has a model per lambda
# of its grid, so one fit serves every lambda
SYSTEMS = [
    ("cascade/full", "cascade", "full", {}, False),
    ("outcome/full", "outcome", "full", {}, False),
    ("outcome/bandit", "outcome", "bandit", {}, True),
    ("linucb/full", "linucb", "full", {"reg": 10.0}, False),
    ("linucb/bandit", "linucb", "bandit", {"reg": 10.0}, True),
    ("thompson/bandit", "thompson", "bandit", {"reg": 10.0}, True),
    ("neural/bandit", "neural", "bandit", {}, True),
    ("supervised/full", "supervised", "full", {}, True),
]
FEATURES = {"features": dict(confidence=False, cues=True, standardize=True),
            "raw": dict(confidence=False)}     # the feature set policies used before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb")
    parser.add_argument("--run", action="append")
    parser.add_argument("--lams", default="0,0.01,0.02,0.05,0.1")
    parser.add_argument("--metrics", default="f1,em")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2, help="fold assignments")
    parser.add_argument("--systems", default=",".join(s[0] for s in SYSTEMS))
    parser.add_argument("--diagnose", action="store_true",
                        help="first, why LinUCB collapsed to one arm: old raw features vs "
                             "standardized features + cues, reg grid, one-SE vs best rule")
    parser.add_argument("--out", default="bench-out/policy_armlogs")
    parser.add_argument("--report-only", action="store_true",
                        help="redo the tables and plot from the saved held-out choices")
    args = parser.parse_args()
    lams = [float(x) for x in args.lams.split(",")]
    wanted = set(args.systems.split(","))
    systems = [s for s in SYSTEMS if s[0] in wanted]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table, emb, embedder = load_replay_data(args.log, args.run)
    datasets = np.array([key[0] for key in table.keys])
    print(f"arm log {args.log}: {len(table)} questions, datasets "
          f"{dict(zip(*np.unique(datasets, return_counts=True)))}; {args.folds} folds x "
          f"{args.seeds} seeds by question id", flush=True)
    specs = {name: FeatureSpec(embedder=embedder, embed_dim=emb.shape[1], **kw)
             for name, kw in FEATURES.items()}
    if args.diagnose:
        diagnose(table, emb, specs)
    results = {"args": vars(args), "n": len(table), "datasets": datasets.tolist(),
               "arms": {},           # (metric, lam, system) -> per-seed arm arrays
               "calls": {}}          # the same for a cascade's retrieval calls
    if args.report_only:
        with np.load(out / "policy_armlogs_arms.npz") as saved:
            for key in saved.files:
                kind, metric, lam, system, seed = (["arms"] + key.split("|"))[-5:]
                record(results, metric, float(lam), system, int(seed), saved[key], kind)
    for metric in [] if args.report_only else args.metrics.split(","):
        for seed in range(args.seeds):
            splits = kfold_by_id(table.keys, args.folds, seed=seed)
            for lam in lams:
                R = RewardSpec(lam=lam, metric=metric).reward_matrix(
                    table.quality[metric], table.steps, table.seconds)
                record(results, metric, lam, "router", seed,
                       router_arms(splits, datasets, R))
            for name, algo, mode, params, per_lam in systems:
                if algo == "cascade":        # step 1 fitted at exactly these lambdas
                    params = {**params, "lam_grid": lams}
                started = time.perf_counter()
                spec = specs["features"]
                for lam in lams if per_lam else [None]:
                    arms = {lam_: np.full(len(table), -1) for lam_ in lams}
                    spent = {lam_: np.zeros(len(table)) for lam_ in lams}
                    for train, test in splits:
                        reward = RewardSpec(lam=lam or 0.0, metric=metric)
                        bundle, _ = train_policy(algo, table.subset(train), emb[train], spec,
                                                 reward, mode, 1, seed, params,
                                                 tune_rule="one-se")
                        for lam_ in ([lam] if per_lam else lams):
                            arms[lam_][test], calls = greedy_routes(
                                bundle, table.subset(test), emb[test], None if per_lam else lam_)
                            if calls is not None:           # a cascade's own route costs
                                spent[lam_][test] = calls
                    for lam_ in ([lam] if per_lam else lams):
                        record(results, metric, lam_, name, seed, arms[lam_])
                        if algo == "cascade":
                            record(results, metric, lam_, name, seed, spent[lam_], "calls")
                print(f"  {metric} seed {seed} {name}: {time.perf_counter() - started:.0f} s",
                      flush=True)
    from benchmarks.policy_armlogs_report import report

    if not args.report_only:
        save_arms(results, out)

    rows = report(results, table, lams, out)
    (out / "policy_armlogs.json").write_text(json.dumps(
        {"args": vars(args), "rows": rows}, indent=1))


def diagnose(table, emb: np.ndarray, specs: dict) -> None:
    """LinUCB (full information) on a 70/30 split, as first tried: each feature set with
    a reg grid tuned by inner CV, chosen by the one-SE rule and by the best mean."""
    from policies.armlog import split_by_id
    from policies.scoring import evaluate

    train, test = split_by_id(table.keys, 0.3, seed=0)
    grid = {"reg": [1.0, 100.0, 10000.0, 100000.0]}
    print("\n| lambda | features | rule | chosen reg | held-out reward | best fixed | "
          "parametric / single / multi |\n|---|---|---|---|---|---|---|")
    for lam in (0.0, 0.05):
        reward = RewardSpec(lam=lam, metric="f1")
        for name, spec in specs.items():
            for rule in ("one-se", "best"):
                bundle, _ = train_policy("linucb", table.subset(train), emb[train], spec,
                                         reward, "full", 1, 0, grid, tune_rule=rule)
                result = evaluate(bundle, table.subset(test), emb[test])
                row = result["policy"]
                print(f"| {lam} | {name} | {rule} | {bundle.meta['tuning']['chosen']['reg']:g} "
                      f"| {row['reward']:.4f} | {result['best_fixed_reward']:.4f} | "
                      + " / ".join(f"{row['share_' + arm]:.2f}" for arm in ARMS) + " |",
                      flush=True)


def save_arms(results: dict, out: Path) -> None:
    """Every held-out choice, so the report can be redone without retraining."""
    np.savez(out / "policy_armlogs_arms.npz", **{
        f"{'calls|' if kind == 'calls' else ''}{metric}|{lam}|{system}|{seed}": values
        for kind in ("arms", "calls")
        for (metric, lam, system), seeds in results[kind].items()
        for seed, values in seeds.items()})


def record(results: dict, metric: str, lam: float, system: str, seed: int,
           values: np.ndarray, kind: str = "arms") -> None:
    """Held-out arms (the served answer's arm) or, for a cascade, the calls it spent."""
    if kind == "arms" and (values < 0).any():
        raise RuntimeError(f"{system}: some questions were never held out")
    results[kind].setdefault((metric, lam, system), {})[seed] = \
        values.astype(np.int64 if kind == "arms" else np.float64)


def router_arms(splits, datasets: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Each held-out question gets its dataset's best arm on the training folds."""
    arms = np.full(len(R), -1, dtype=np.int64)
    for train, test in splits:
        for name in np.unique(datasets[test]):
            rows = train[datasets[train] == name]
            best = int(np.argmax(R[rows].mean(axis=0))) if len(rows) else ARMS.index("single")
            arms[test[datasets[test] == name]] = best
    return arms


if __name__ == "__main__":
    main()
