"""``searchagent policy train|eval``: bandit policies from the evaluation arm log."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from searchagent.errors import InputError
from searchagent.files import replaceable
from searchagent.json_values import plain


def register(sub) -> None:
    policy = sub.add_parser("policy", help="train and evaluate strategy-choosing policies")
    actions = policy.add_subparsers(dest="action", required=True)

    train = actions.add_parser("train", help="offline replay training from an arm log")
    _log_args(train)
    train.add_argument("--algo", default="cascade",
                       choices=["cascade", "outcome", "linucb", "thompson", "neural",
                                "supervised", "fixed"],
                       help="cascade (default, the best measured in BENCHMARKS.md): closed "
                            "book first, then stop, retrieve or go multi-hop after each answer "
                            "(needs each arm's answer in the log); outcome: per-arm outcome "
                            "models on the question alone; linucb/thompson/neural: online "
                            "bandits")
    train.add_argument("--lam", type=float, default=0.1, help="cost weight lambda")
    train.add_argument("--metric", default="f1", choices=["f1", "em", "acc"],
                       help="answer quality in the reward (default f1)")
    train.add_argument("--cost", default="steps", choices=["steps", "seconds"],
                       help="what lambda charges: retrieval calls (default) or seconds")
    train.add_argument("--out", required=True, help="policy folder to write")
    train.add_argument("--mode", choices=["bandit", "full"],
                       help="bandit: only the chosen arm's reward is revealed; full: all arms "
                            "(default: full for cascade, outcome and supervised, bandit "
                            "otherwise; the cascade always trains on full information)")
    train.add_argument("--epochs", type=int, default=1, help="passes over the training split")
    train.add_argument("--seed", type=int, default=0, help="policy and feature seed")
    train.add_argument("--projection", default="none", choices=["none", "random", "pca"],
                       help="reduce the question embedding (default: keep it whole)")
    train.add_argument("--proj-dim", type=int, default=64,
                       help="dimensions after --projection (default 64)")
    train.add_argument("--no-confidence", action="store_true",
                       help="leave out the generator's confidence (token log-probabilities): "
                       "the closed-book feature, and for the cascade each answer's")
    train.add_argument("--no-lexical", action="store_true", help="leave out lexical features")
    train.add_argument("--no-cues", action="store_true",
                       help="leave out the question-style cues (case, punctuation, templates)")
    train.add_argument("--no-standardize", action="store_true",
                       help="keep raw feature scales (default: zero mean, unit variance)")
    train.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="algorithm hyperparameter, e.g. alpha=0.5 (repeatable); a JSON "
                            "list is a grid tuned by cross-validation, e.g. 'reg=[1,100]'")
    # policies.replay.TUNING_RULES, spelled out: importing it would slow every CLI start
    train.add_argument("--tune-rule", default="one-se", choices=["one-se", "best"],
                       help="grid choice: the simplest value within one standard error "
                            "of the best (default) or the best")
    train.set_defaults(func=run_train)

    ev = actions.add_parser("eval", help="evaluate a trained policy on held-out questions")
    _log_args(ev)
    ev.add_argument("--policy", required=True, help="policy folder")
    ev.add_argument("--split", default="test", choices=["test", "train", "all"],
                    help="questions to evaluate on (default: the held-out split)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    # the split is the policy's own (policy.json meta): another would test on training rows
    ev.set_defaults(func=run_eval, test_frac=None, split_seed=None)


def _log_args(parser) -> None:
    parser.add_argument("--log", required=True, help="arm log DuckDB (table arm_outcomes)")
    parser.add_argument("--run", action="append", help="only these runs (repeatable)")
    parser.add_argument("--dataset", action="append", help="only these datasets (repeatable)")
    parser.add_argument("--test-frac", type=float, default=0.3,
                        help="held-out share, split by question id (train: 0 trains on "
                             "every question and evaluates nothing)")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the split by question id")
    parser.add_argument("--results", metavar="DB", help="also use the fixed-strategy rows "
                        "(system parametric|single|multi) of this runs database")
    parser.add_argument("--cache", help="question-embedding cache (default: beside the log)")
    parser.add_argument("--embedder", default="default", help="sentence-transformers folder")


def _params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"expected KEY=VALUE, got {pair!r}", field="--param")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
        grid = params[key] if isinstance(params[key], list) else [params[key]]
        if not grid or any(isinstance(v, (list, dict)) for v in grid):
            raise InputError(f"expected a value or a non-empty list of values (a grid), got "
                             f"{value!r}", field=f"--param {key}")
    return params


def _what_is_there(folder: str) -> str:
    path = Path(folder)
    if not path.is_dir():
        return "it is a file, not a folder"
    names = sorted(p.name for p in path.iterdir())
    return "it holds " + ", ".join(names[:3]) + (f" and {len(names) - 3} more"
                                                  if len(names) > 3 else "")


def run_train(args) -> int:
    import numpy as np

    from policies.armlog import split_by_id
    from policies.features import FeatureSpec
    from policies.online import APPLIED_KEY, journal_feedback_seq
    from policies.persistence import LEFTOVERS, POLICY_FILE, save_policy
    from policies.replay import load_replay_data, train_policy
    from policies.scoring import evaluate
    from policies.rewards import RewardSpec

    if args.epochs < 1:
        raise InputError(f"must be >= 1, got {args.epochs}", field="epochs")
    if not args.out.strip() or not replaceable(args.out, POLICY_FILE, LEFTOVERS):
        raise InputError("give a new or empty folder, or one holding a policy to replace "
                         f"({_what_is_there(args.out) if args.out.strip() else 'a blank name'})",
                         path=args.out or "''",
                         field="out")
    if not math.isfinite(args.lam) or args.lam < 0:
        raise InputError(f"must be a finite number >= 0, got {args.lam}", field="lam")
    _check_not_served(args.out)
    table, embeddings, embedder = load_replay_data(args.log, args.run, args.dataset,
                                                   args.cache, args.embedder,
                                                   results_from=args.results)
    _note_dropped(table, args.log)
    if args.test_frac == 0:
        train_rows, test_rows = np.arange(len(table)), np.arange(0)
    else:
        train_rows, test_rows = split_by_id(table.keys, args.test_frac, args.split_seed)
    if len(train_rows) < 2:
        raise InputError(f"{len(train_rows)} training question(s): the log has {len(table)} "
                         f"and --test-frac {args.test_frac:g} holds out {len(test_rows)}; "
                         "a policy needs at least 2", path=args.log, field="test_frac")
    confidence = not args.no_confidence
    if confidence and np.isnan(table.confidence[train_rows]).all():
        print("the log has no closed-book confidences (a published log has none): training "
              "without that feature, as --no-confidence", file=sys.stderr)
        confidence = False
    features = FeatureSpec(embedder=embedder, embed_dim=int(embeddings.shape[1]),
                           projection=args.projection, proj_dim=args.proj_dim,
                           lexical=not args.no_lexical, confidence=confidence,
                           seed=args.seed, cues=not args.no_cues,
                           standardize=not args.no_standardize)
    reward = RewardSpec(lam=args.lam, metric=args.metric, cost=args.cost)
    if args.cost == "seconds" and not (table.seconds[train_rows] > 0).any():
        raise InputError("the log records no answer's seconds (an imported log has none): "
                         "with --cost seconds every reward would be the quality alone; use "
                         "--cost steps", path=args.log, field="cost")
    if args.mode == "bandit" and args.algo in ("cascade", "supervised"):
        raise InputError(f"--algo {args.algo} learns from every arm's outcome (full "
                         "information): --mode bandit does not apply", field="mode")
    mode = args.mode or ("full" if args.algo in ("cascade", "outcome", "supervised")
                         else "bandit")
    params = _params(args.param)
    if args.algo == "cascade" and not confidence:    # nor each answer's confidence
        params = {"confidence": False, **(params or {})}
    bundle, log = train_policy(args.algo, table.subset(train_rows), embeddings[train_rows],
                               features, reward, mode, args.epochs, args.seed, params,
                               progress=True, tune_rule=args.tune_rule)
    result = (evaluate(bundle, table.subset(test_rows), embeddings[test_rows])
              if len(test_rows) else None)
    bundle.meta.update({"log": str(Path(args.log).resolve()), "runs": args.run,
                        "results": str(Path(args.results).resolve()) if args.results else None,
                        "datasets": args.dataset, "test_frac": args.test_frac,
                        "split_seed": args.split_seed, "test_questions": len(test_rows),
                        "dropped_incomplete": table.dropped,
                        "heldout": result["policy"] if result else None})
    _check_not_served(args.out)          # a server may have started while this trained
    # the folder's journal holds feedback on the policy it replaces (rewards on that
    # policy's lambda and metric): this one starts after it instead of replaying it
    bundle.meta[APPLIED_KEY] = old_feedback = journal_feedback_seq(args.out)
    save_policy(bundle, args.out)
    print(f"trained {args.algo} ({bundle.meta['mode']}, lambda={args.lam}) on "
          f"{len(train_rows)} questions; features {bundle.fingerprint} ({bundle.features.dim}-d)"
          f"; saved to {args.out}")
    if old_feedback:
        print(f"{args.out}: its decision journal keeps {old_feedback} feedback(s) given to "
              "the policy this one replaces; this one does not learn from them (their "
              "rewards follow that policy's settings)", file=sys.stderr)
    if args.algo == "cascade":
        print("the cascade reads " + ("each answer's confidence (token log-probabilities)"
                                      if bundle.policy.confidence else
                                      "the answers' texts only (no token log-probabilities)"))
    if result is None:
        print(f"no held-out split (--test-frac {args.test_frac:g} holds out none of "
              f"{len(table)} questions): evaluate on another arm log")
    else:
        _print_table(result, f"held-out ({len(test_rows)} questions)")
    return 0


def _note_dropped(table, log: str) -> None:
    if table.dropped:
        print(f"{log}: left out {table.dropped} question(s) that lack an arm's outcome "
              f"(missing {table.dropped_detail}); {len(table)} have every arm",
              file=sys.stderr)


def _check_not_served(folder: str) -> None:
    from policies.online import check_journal_free

    check_journal_free(folder, "a server is serving this policy folder, and its next "
                       "snapshot would overwrite the policy trained here; stop it first, "
                       "or train into another folder")


def run_eval(args) -> int:
    import numpy as np

    from policies.armlog import split_by_id
    from policies.persistence import load_policy
    from policies.replay import load_replay_data
    from policies.scoring import evaluate

    bundle = load_policy(args.policy)
    test_frac, split_seed = _policy_split(bundle.meta, args)
    table, embeddings, embedder = load_replay_data(args.log, args.run, args.dataset,
                                                   args.cache, args.embedder,
                                                   results_from=args.results)
    _note_dropped(table, args.log)
    if embedder != bundle.features.spec.embedder:
        raise InputError(f"policy was trained on {bundle.features.spec.embedder} embeddings, "
                         f"not {embedder}", path=args.policy, field="features.embedder")
    if test_frac == 0:
        if args.split == "test":
            raise InputError("this policy was trained on every question of its log "
                             "(--test-frac 0): there is no held-out split; use --split all "
                             "on another arm log", path=args.policy, field="test_frac")
        train_rows, test_rows = np.arange(len(table)), np.arange(0)
    else:
        train_rows, test_rows = split_by_id(table.keys, test_frac, split_seed)
    rows = {"test": test_rows, "train": train_rows}.get(args.split)
    if rows is not None and len(rows) == 0:
        raise InputError(f"the {args.split} split of this log is empty ({len(table)} "
                         f"question(s), the policy's --test-frac {test_frac:g}); use --split "
                         "all or a larger log", path=args.log, field="split")
    if rows is not None:
        table, embeddings = table.subset(rows), embeddings[rows]
    result = evaluate(bundle, table, embeddings)
    if args.json:           # NaN (a gap_closed with no gap) as null: strict JSON
        print(json.dumps(plain(result), indent=1))
    else:
        _print_table(result, f"{args.split} split ({len(table)} questions), "
                             f"{bundle.policy.algo}, lambda={bundle.reward.lam}")
    return 0


def _policy_split(meta: dict, args) -> tuple[float, int]:
    """The held-out share and seed the policy was trained with; an explicit other value
    is refused, as its 'test' split would hold questions the policy trained on."""
    split = []
    for key, flag, default in (("test_frac", "--test-frac", 0.3), ("split_seed", "--split-seed", 0)):
        given, trained = getattr(args, key), meta.get(key)
        if given is not None and trained is not None and given != trained:
            raise InputError(f"this policy was trained with {flag} {trained:g}: its held-out "
                             f"split is fixed by that (given {given:g}); leave {flag} out",
                             field=key)
        split.append(trained if trained is not None else given if given is not None else default)
    return float(split[0]), int(split[1])


def _print_table(result: dict, title: str) -> None:
    print(title)
    header = f"{'system':<18}{'reward':>8}{'f1':>7}{'em':>7}{'steps':>7}{'param':>7}" \
             f"{'single':>7}{'multi':>7}"
    print(header)
    rows = {"policy": result["policy"], **result["references"]}
    for name, row in rows.items():
        print(f"{name:<18}{row['reward']:>8.4f}{row['f1']:>7.3f}{row['em']:>7.3f}"
              f"{row['steps']:>7.2f}{row['share_parametric']:>7.2f}{row['share_single']:>7.2f}"
              f"{row['share_multi']:>7.2f}")
    print(f"gap to oracle closed: {result['policy']['gap_closed']:.3f}")
