"""``searchagent eval pool|run|log-arms|import-arms|report``: the evaluation harness."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from searchagent.config import load_config
from searchagent.errors import InputError

DEFAULT_DB = "runs/runs.duckdb"


def register(sub) -> None:
    ev = sub.add_parser("eval", help="benchmark loaders, pooled corpora, runs, reports")
    actions = ev.add_subparsers(dest="action", required=True)

    pool = actions.add_parser("pool", help="pool the context paragraphs of dataset files "
                              "into one corpus JSONL")
    pool.add_argument("datasets", nargs="+", metavar="NAME[:FORMAT]:PATH",
                      help="benchmark files whose paragraphs make the corpus")
    pool.add_argument("--out", required=True, help="corpus JSONL to write")
    pool.set_defaults(func=run_pool)

    for name, helptext in (("run", "evaluate strategies or policies, one row per question"),
                           ("log-arms", "run every arm on every question (policy training)")):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("--dataset", action="append", required=True, metavar="NAME[:FORMAT]:PATH",
                       help="a benchmark file to answer (repeatable)")
        p.add_argument("--index", required=True, help="index folder")
        p.add_argument("--run", required=True, help="run name (rerun the same name to resume)")
        p.add_argument("--db", default=DEFAULT_DB, help=f"runs database (default {DEFAULT_DB})")
        p.add_argument("--runs-dir", default="runs", help="where runs/<run>/config.json goes")
        p.add_argument("--limit", type=int, help="questions per dataset")
        p.add_argument("--seed", type=int, help="with --limit: a seeded random sample "
                       "(default: the first N)")
        p.add_argument("--workers", type=int, default=1, help="questions in flight")
        p.add_argument("--shard", metavar="I/N", help="answer only every N-th question, "
                       "starting at the I-th (1 <= I <= N): run shards 1/N ... N/N of one run "
                       "side by side, as separate processes on the same --db")
        p.add_argument("--mode", choices=["bm25", "dense", "hybrid"], help="retrieval mode")
        p.add_argument("-k", type=int, help="passages per retrieval")
        p.add_argument("--max-hops", type=int, help="hop limit for multi (agent.max_hops)")
        p.add_argument("--max-new-tokens", type=int,
                       help="tokens per generation (generator.max_new_tokens)")
        p.add_argument("--threads", type=int, help="generator threads (0 = all cores)")
        p.add_argument("--force", action="store_true",
                       help="reuse a run name even though its settings changed")
    run = actions.choices["run"]
    run.add_argument("--strategy", action="append", metavar="NAME[,NAME]",
                     help="fixed strategy (parametric, single, multi); repeatable")
    run.add_argument("--policy", action="append", metavar="DIR",
                     help="trained policy folder, run through the agent; repeatable")
    run.set_defaults(func=run_eval)
    arms = actions.choices["log-arms"]
    arms.add_argument("--arms", default="parametric,single,multi",
                      help="comma-separated arms to run on every question")
    arms.set_defaults(func=run_log_arms)

    imp = actions.add_parser("import-arms", help="import published per-question arm "
                             "outcomes (an Adaptive-RAG predictions/ tree) into arm_outcomes")
    imp.add_argument("path", help="predictions/<split>/ folder with nor_qa_*, oner_qa_*, "
                     "ircot_qa_* subfolders")
    imp.add_argument("--questions", required=True, help="JSONL of {dataset, qid, question}")
    imp.add_argument("--db", default=DEFAULT_DB, help=f"runs database (default {DEFAULT_DB})")
    imp.add_argument("--run", required=True, help="run name (re-import replaces its rows)")
    imp.add_argument("--multi-steps", action="extend", nargs="+", default=[],
                     metavar="DATASET=N", help="multi arm's retrieval calls for a dataset "
                     "whose ircot folder has no stepNum.json (e.g. hotpotqa=3.45)")
    imp.set_defaults(func=run_import_arms)

    report = actions.add_parser("report", help="markdown tables and plots for runs")
    report.add_argument("runs", nargs="+", metavar="RUN", help="run names to compare")
    report.add_argument("--db", action="append", help=f"runs database(s) (default {DEFAULT_DB};"
                        " repeat to combine, e.g. a run and an arm log)")
    report.add_argument("--out", required=True, help="folder for report.md and PNGs")
    report.add_argument("--common", action="store_true", help="only questions every system "
                        "answered (compare partial runs fairly)")
    report.add_argument("--baseline", metavar="SYSTEM", help="also give every system's "
                        "paired per-question difference to SYSTEM, with a bootstrap 95%% CI "
                        "(a system as the report names it: single, arm:single, oracle; "
                        "RUN/single with several runs)")
    report.set_defaults(func=run_report)


def run_pool(args) -> int:
    from eval.pooling import pool_corpus

    stats = pool_corpus(args.datasets, args.out)
    for spec, counts in stats["datasets"].items():
        print(f"{spec}: {counts['questions']} questions, {counts['paragraphs']} paragraphs")
    print(f"wrote {args.out}: {stats['passages']} unique passages "
          f"(from {stats['paragraphs']} paragraphs)")
    return 0


def _setup(args, systems: list[str]):
    """Config, examples and the run's settings (recorded by ``_record_run`` once every
    resource opened, so a failed start leaves no run behind to block its retry)."""
    from eval.examples import interleave, subset
    from eval.loaders import load_spec

    cli = {"retrieval": {"mode": args.mode, "k": args.k},
           "agent": {"max_hops": args.max_hops},
           "generator": {"max_new_tokens": args.max_new_tokens, "threads": args.threads}}
    config = load_config(args.config, cli=cli)
    if not re.fullmatch(r"[\w.-]+", args.run) or args.run in (".", ".."):
        raise InputError(f"must be a plain name (letters, digits, _ . -), got {args.run!r}",
                         field="run")
    if not systems:
        raise InputError("nothing to run: name at least one strategy", field="arms")
    if args.workers < 1:
        raise InputError(f"must be >= 1, got {args.workers}", field="workers")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"must be >= 1, got {args.limit}", field="limit")
    if args.seed is not None and args.limit is None:
        raise InputError("--seed picks a sample of --limit questions; give --limit too",
                         field="seed")
    groups, first_in = [], {}
    for n, spec in enumerate(args.dataset):
        groups.append(subset(load_spec(spec), args.limit, args.seed))
        for ex in groups[-1]:    # a second row with this key would be dropped as done
            other = first_in.setdefault((ex.dataset, ex.id), n)
            if other != n:
                raise InputError(f"question id {ex.id!r} of dataset {ex.dataset!r} is also "
                                 f"in --dataset {args.dataset[other]}; give the files "
                                 "different NAMEs", path=spec.rpartition(":")[2],
                                 field="dataset")
    if args.shard:     # each dataset's every N-th; not a setting: shards share the record
        index, count = _shard(args.shard)
        total, groups = sum(map(len, groups)), [g[index::count] for g in groups]
        print(f"shard {args.shard}: {sum(map(len, groups))} of {total} questions",
              file=sys.stderr)
    examples = interleave(groups)
    settings = {"config": config.public_dict(), "datasets": args.dataset, "systems": systems,
                "index": str(Path(args.index).resolve()), "limit": args.limit,
                "seed": args.seed, "db": str(Path(args.db).resolve())}   # db: not compared
    return config, examples, settings


def _shard(value: str) -> tuple[int, int]:
    """``I/N`` -> (I - 1, N)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise InputError(f"must be I/N with 1 <= I <= N (e.g. 1/2), got {value!r}",
                         field="shard")
    return int(match.group(1)) - 1, int(match.group(2))


def _record_run(args, settings: dict, store) -> None:
    from eval.run_settings import record_run

    record_run(store, args.db, args.run, Path(args.runs_dir) / args.run, settings, args.force)


def _open(args, config):
    from retrievers.searcher import Searcher
    from searchagent.generators.factory import make_generator

    return Searcher(args.index, config), make_generator(config.generator)


def _finish(summary, db: str) -> int:
    print(f"{summary.done} rows written to {db}, {summary.failed} failed"
          + (f", {summary.existing} already written by another process" if summary.existing
             else "")
          + ("; rerun the same command to retry them" if summary.failed else ""))
    return 1 if summary.failed else 0


def run_eval(args) -> int:
    from eval.runner import evaluate
    from eval.store import RunStore
    from eval.systems import (make_policy_system, make_strategy_system, policy_fingerprint,
                              policy_label, strategy_names)

    names = strategy_names(args.strategy)
    policies = args.policy or []
    if not names and not policies:
        raise InputError("give --strategy NAME and/or --policy DIR", field="strategy")
    labels = names + [policy_label(p) for p in policies]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:   # one label per system: a second policy of that name would replace the first
        raise InputError(f"two systems named {twice[0]!r} (policies are named by their "
                         "folder's name); give each policy folder its own name",
                         field="policy")
    config, examples, settings = _setup(args, labels)
    settings["policies"] = {label: policy_fingerprint(path)
                            for path, label in zip(policies, labels[len(names):])}
    searcher, generator = _open(args, config)
    systems = {n: make_strategy_system(n, searcher, generator, config) for n in names}
    for path, label in zip(policies, labels[len(names):]):
        systems[label] = make_policy_system(path, searcher, generator, config)
    with RunStore(args.db, hold=False) as store:
        _record_run(args, settings, store)
        summary = evaluate(systems, examples, store, args.run, args.workers, args.seed)
    return _finish(summary, args.db)


def run_log_arms(args) -> int:
    from eval.arm_log import log_arms
    from eval.store import RunStore
    from eval.systems import make_strategy_system, strategy_names

    arms = strategy_names([args.arms])
    config, examples, settings = _setup(args, arms)
    searcher, generator = _open(args, config)
    systems = {arm: make_strategy_system(arm, searcher, generator, config) for arm in arms}
    with RunStore(args.db, hold=False) as store:
        _record_run(args, settings, store)
        summary = log_arms(systems, examples, store, args.run, args.workers, args.seed)
    return _finish(summary, args.db)


def run_import_arms(args) -> int:
    from eval.arm_import import format_summary, import_arms, parse_multi_steps

    result = import_arms(args.path, args.questions, args.db, args.run,
                         parse_multi_steps(args.multi_steps))
    for warning in result.warnings:
        print(f"searchagent: warning: {warning}", file=sys.stderr)
    print(format_summary(result))
    print(f"{len(result.rows)} rows written to {args.db} (run {args.run}; config in table "
          "arm_imports)")
    return 0


def run_report(args) -> int:
    from eval.report import write_report

    path = write_report(args.db or [DEFAULT_DB], args.runs, args.out, common=args.common,
                        baseline=args.baseline)
    print(f"wrote {path}")
    return 0
