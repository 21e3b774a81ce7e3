"""Reports: per dataset x system tables (EM / F1 / Acc with bootstrap 95% CIs, steps, hops,
seconds, tokens; Adaptive-RAG Table 1 style), per-arm breakdowns, paired differences
against a baseline system, and the plots.

Runs are looked up in both tables: ``results`` rows appear under their system name;
``arm_outcomes`` rows appear as one system per arm plus ``oracle`` (per question the
cheapest arm that gets EM 1, else the best-F1 arm), the upper bound a policy aims at.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Iterable

from eval.bootstrap import Interval, bootstrap_ci
from eval.store import RunStore
from searchagent.errors import InputError
from searchagent.files import write_atomically
from searchagent.strategies.base import ARMS


@dataclass
class Scores:
    """EM / F1 / Acc of ``system`` on ``n`` questions of ``dataset``; steps = retrieval
    calls (None: not recorded)."""
    dataset: str
    system: str
    n: int
    em: Interval
    f1: Interval
    acc: Interval
    steps: float | None


@dataclass
class SystemSummary(Scores):
    hops: float | None      # None: not recorded (imported arm logs lack hops, tokens,
    seconds: float | None   # seconds)
    tokens: float | None
    sup_recall: float | None
    arms: Counter = field(default_factory=Counter)
    em_by_arm: dict[str, float] = field(default_factory=dict)


def summarize(rows: list[dict], seed: int = 0) -> SystemSummary:
    def mean(values):
        known = [float(v) for v in values if v is not None]
        return fmean(known) if known else None

    recalls = [r["sup_recall"] for r in rows if r.get("sup_recall") is not None]
    arms = Counter(r.get("arm") or "?" for r in rows)
    em_by_arm = {arm: fmean(r["em"] for r in rows if (r.get("arm") or "?") == arm)
                 for arm in arms}
    return SystemSummary(
        dataset=rows[0]["dataset"], system=rows[0]["system"], n=len(rows),
        em=bootstrap_ci([r["em"] for r in rows], seed=seed),
        f1=bootstrap_ci([r["f1"] for r in rows], seed=seed),
        acc=bootstrap_ci([r["acc"] for r in rows], seed=seed),
        steps=mean(r["retrieval_calls"] for r in rows), hops=mean(r["hops"] for r in rows),
        seconds=mean(r["seconds"] for r in rows),
        tokens=mean(None if r["prompt_tokens"] is None and r["completion_tokens"] is None
                    else (r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0)
                    for r in rows),
        sup_recall=fmean(recalls) if recalls else None, arms=arms, em_by_arm=em_by_arm)


class Difference(Scores):
    """``system`` minus the baseline on the ``n`` questions of ``dataset`` both answered."""


def paired_differences(rows: list[dict], baseline: str, seed: int = 0) -> list[Difference]:
    """Per dataset (and all datasets pooled), every other system minus ``baseline``: the
    mean per-question difference with a bootstrap 95% CI of it. Paired over the questions
    both answered, so it is not widened by how hard the questions are, which both systems
    share (their own CIs are)."""
    systems = sorted({r["system"] for r in rows})
    if baseline not in systems:
        raise InputError(f"no system {baseline!r} in these runs (systems: "
                         f"{', '.join(systems)})", field="baseline")
    base = {(r["dataset"], r["qid"]): r for r in rows if r["system"] == baseline}
    pairs: dict[tuple, list[tuple[dict, dict]]] = defaultdict(list)
    for row in rows:
        other = base.get((row["dataset"], row["qid"]))
        if row["system"] != baseline and other is not None:
            pairs[(row["dataset"], row["system"])].append((row, other))
    if len({dataset for dataset, _ in base}) > 1:
        for (_, system), group in list(pairs.items()):
            pairs[(ALL, system)] += group

    def diff(group, metric):
        return bootstrap_ci([a[metric] - b[metric] for a, b in group], seed=seed)

    out = []
    for dataset, system in sorted(pairs, key=lambda k: (k[0] == ALL, k)):
        group = pairs[(dataset, system)]
        calls = [(a["retrieval_calls"], b["retrieval_calls"]) for a, b in group]
        steps = None if any(a is None or b is None for a, b in calls) else \
            fmean(a - b for a, b in calls)
        out.append(Difference(dataset, system, len(group), diff(group, "em"),
                              diff(group, "f1"), diff(group, "acc"), steps))
    return out


def oracle_rows(arm_rows: Iterable[dict]) -> list[dict]:
    """Per question: the cheapest arm with EM 1, else the highest-F1 (then cheapest) arm.
    A question some arm of its run and dataset has not answered yet (a partial log) gets
    no oracle row: its best arm is not known."""
    by_question: dict[tuple, list[dict]] = defaultdict(list)
    arms: dict[tuple, set] = defaultdict(set)
    for row in arm_rows:
        by_question[(row["run"], row["dataset"], row["qid"])].append(row)
        arms[(row["run"], row["dataset"])].add(row["arm"])
    cost = {arm: n for n, arm in enumerate(ARMS)}
    out = []
    for (run, dataset, _), rows in by_question.items():
        if {r["arm"] for r in rows} != arms[(run, dataset)]:
            continue
        rows = sorted(rows, key=lambda r: (cost.get(r["arm"], len(cost)), r["retrieval_calls"]))
        correct = [r for r in rows if r["em"] >= 1]
        best = correct[0] if correct else max(rows, key=lambda r: r["f1"])
        out.append({**best, "system": "oracle"})
    return out


def load_rows(dbs: str | Path | list, runs: list[str]) -> list[dict]:
    """Result rows plus arm-log rows (as arm systems and the oracle) of the given runs,
    gathered from one or several runs databases."""
    results, arm_rows, known = [], [], set()
    dbs = [dbs] if isinstance(dbs, (str, Path)) else dbs
    dbs = list(dict.fromkeys(Path(db).resolve() for db in dbs))   # one named twice: once
    found_in: dict[str, Path] = {}
    for db in dbs:
        if not Path(db).is_file():
            raise InputError("runs database not found", path=str(db))
        with RunStore(db, read_only=True, hold=False) as store:
            here = set(store.runs("results")) | set(store.runs("arm_outcomes"))
            for run in sorted(here & set(runs)):   # its rows would be counted twice
                if run in found_in:
                    raise InputError(f"run {run!r} is in two databases ({found_in[run]} "
                                     "and this one); give only one of them", path=str(db))
                found_in[run] = db
            imported = store.imported_runs()     # their seconds are stored as 0.0
            for run in sorted(imported & set(runs)):
                if run in store.runs("results") or store.settings_of(run) is not None:
                    raise InputError(f"run {run!r} mixes outcomes imported by eval import-"
                                     "arms with rows of eval run / log-arms; its systems "
                                     "would read as one run", path=str(db))
            results += store.rows("results", runs)
            arm_rows += [{**r, "seconds": None} if r["run"] in imported else r
                         for r in store.rows("arm_outcomes", runs)]
            known |= here
    missing = [r for r in runs if r not in known]
    if missing:
        raise InputError(f"no rows for run(s) {', '.join(missing)} (known: "
                         f"{', '.join(sorted(known)) or 'none'})",
                         path=", ".join(str(db) for db in dbs))
    rows = list(results)
    rows += [{**r, "system": f"arm:{r['arm']}"} for r in arm_rows]
    rows += oracle_rows(arm_rows)
    if len(runs) > 1:
        rows = [{**r, "system": f"{r['run']}/{r['system']}"} for r in rows]
    return rows


ALL = "all datasets"


def common_questions(rows: list[dict]) -> list[dict]:
    """Only the questions every system answered (for partial runs): a dataset one system
    did not run is left out for all, so the pooled rows compare the same questions."""
    systems = {row["system"] for row in rows}
    answered: dict[tuple, set] = defaultdict(set)
    for row in rows:
        answered[(row["dataset"], row["qid"])].add(row["system"])
    return [r for r in rows if answered[(r["dataset"], r["qid"])] == systems]


def summaries(rows: list[dict]) -> list[SystemSummary]:
    """One summary per (dataset, system), plus ``all datasets`` (pooled over questions)
    when there are several datasets."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["dataset"], row["system"])].append(row)
    if len({row["dataset"] for row in rows}) > 1:
        for row in rows:
            groups[(ALL, row["system"])].append({**row, "dataset": ALL})
    return [summarize(groups[key]) for key in sorted(groups, key=lambda k: (k[0] == ALL, k))]


def _cell(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(summaries_: list[SystemSummary], runs: list[str], plots: list[str],
             differences: list[Difference] = (), baseline: str = "") -> str:
    lines = [f"# Evaluation report: {', '.join(runs)}", "",
             "EM / F1 / Acc in %, mean over questions with a bootstrap 95% CI; steps = "
             "retrieval calls per question; seconds = wall time per question; tokens = "
             "prompt + completion tokens per question; sup. recall = share of gold "
             "supporting titles among the passages used.", ""]
    for dataset in sorted({s.dataset for s in summaries_}, key=lambda d: (d == ALL, d)):
        lines += [f"## {dataset}", "",
                  "| system | n | EM | F1 | Acc | steps | hops | seconds | tokens | sup. recall |",
                  "|---|---:|---|---|---|---:|---:|---:|---:|---:|"]
        for s in (s for s in summaries_ if s.dataset == dataset):
            recall = _cell(None if s.sup_recall is None else 100 * s.sup_recall, ".1f")
            lines.append(f"| {s.system} | {s.n} | {s.em.fmt()} | {s.f1.fmt()} | {s.acc.fmt()} "
                         f"| {_cell(s.steps)} | {_cell(s.hops)} | {_cell(s.seconds)} "
                         f"| {_cell(s.tokens, '.0f')} | {recall} |")
        lines.append("")
    mixed = [s for s in summaries_ if len(s.arms) > 1]
    if mixed:
        arms = [*ARMS, *sorted({a for s in mixed for a in s.arms} - set(ARMS))]
        lines += ["## Arms chosen", "", "| dataset | system | " +
                  " | ".join(f"{a} share (EM)" for a in arms) + " |",
                  "|---|---|" + "---|" * len(arms)]
        for s in mixed:
            cells = [f"{100 * s.arms[a] / s.n:.0f}% ({100 * s.em_by_arm[a]:.1f})"
                     if a in s.arms else "0%" for a in arms]
            lines.append(f"| {s.dataset} | {s.system} | " + " | ".join(cells) + " |")
        lines.append("")
    if differences:
        lines += [f"## Paired differences against {baseline}", "",
                  "Per question, system minus baseline on the questions both answered "
                  "(points of EM / F1 / Acc, mean with a bootstrap 95% CI; a CI clear of 0 "
                  "is a difference these questions show); steps: retrieval calls.", "",
                  "| dataset | system | n | EM | F1 | Acc | steps |",
                  "|---|---|---:|---|---|---|---:|"]
        lines += [f"| {d.dataset} | {d.system} | {d.n} | {d.em.fmt(signed=True)} "
                  f"| {d.f1.fmt(signed=True)} | {d.acc.fmt(signed=True)} "
                  f"| {_cell(d.steps, '+.2f')} |" for d in differences]
        lines.append("")
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(db: str | Path | list, runs: list[str], out: str | Path,
                 common: bool = False, baseline: str | None = None) -> Path:
    """Write ``report.md`` and the PNG plots into ``out``; return the report path.
    ``common`` keeps only questions that every system answered; ``baseline``
    adds every system's paired difference to that system."""
    from eval.plots import arm_plot, quality_plots

    rows = load_rows(db, runs)          # an unknown run or baseline fails before ``out``
    if common and rows and not (rows := common_questions(rows)):
        raise InputError("--common: no question was answered by every system (of "
                         f"{', '.join(runs)}); leave --common out or report runs that share "
                         "questions", field="common")
    differences = paired_differences(rows, baseline) if baseline else []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = summaries(rows)
    plots = quality_plots(table, out) + arm_plot(table, out)
    path = out / "report.md"
    text = markdown(table, runs, [str(p) for p in plots], differences, baseline or "")
    write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path
