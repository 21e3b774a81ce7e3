"""Import published per-question arm outcomes into ``arm_outcomes``.

The source is an Adaptive-RAG / IRCoT ``predictions/<split>/`` tree: one folder per
(strategy, dataset), named ``<prefix>_qa_<model>_<dataset>____<settings>``, each holding
``prediction__<ds>_to_<ds>__<split>.json`` ({qid: answer}), the matching
``ground_truth__...json`` ({qid: [golds]}) and, for IRCoT, ``stepNum.json`` ({qid: steps}).
Prefixes map to arms: ``nor`` -> parametric (0 calls), ``oner`` -> single (1 call),
``ircot`` -> multi (calls from ``stepNum.json``, or a per-dataset value given by the user).
Other folders are skipped with a warning.

Everything is read, checked and scored before the database is opened; the rows then go in
with one transaction (``arm_import_db``).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from eval.arm_import_db import write_import
from eval.metrics import answer_scores
from searchagent.errors import InputError, json_lines, require_utf8
from searchagent.strategies.base import ARMS

PREFIX_ARMS = {"nor": "parametric", "oner": "single", "ircot": "multi"}
ARM_PREFIX = {arm: prefix for prefix, arm in PREFIX_ARMS.items()}
FIXED_CALLS = {"parametric": 0.0, "single": 1.0}
STEPS_FILE = "stepNum.json"
_PREDICTION = re.compile(r"^prediction__(?:.+)_to_(?P<ds>.+?)__.*\.json$")
_SPEC = re.compile(r"^(?P<ds>[^=\s]+)=(?P<value>[^=\s]+)$")


@dataclass
class ImportResult:
    rows: list[dict]
    config: dict
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> list[dict]:
        """Per (dataset, arm): n and mean em / f1 / acc (0-100) and retrieval calls."""
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for row in self.rows:
            groups[(row["dataset"], row["arm"])].append(row)
        out = []
        for (dataset, arm) in sorted(groups, key=lambda k: (k[0], ARMS.index(k[1]))):
            rows = groups[(dataset, arm)]
            mean = lambda name, scale=1.0: scale * sum(r[name] for r in rows) / len(rows)
            out.append({"dataset": dataset, "arm": arm, "n": len(rows),
                        "em": mean("em", 100), "f1": mean("f1", 100),
                        "acc": mean("acc", 100), "calls": mean("retrieval_calls")})
        return out


def parse_multi_steps(specs: Iterable[str] | None) -> dict[str, float]:
    """``["hotpotqa=3.45", ...]`` -> ``{"hotpotqa": 3.45}``; a clear error for a bad spec."""
    out: dict[str, float] = {}
    for spec in specs or []:
        match = _SPEC.match(spec.strip())
        try:
            value = float(match["value"]) if match else math.nan
        except ValueError:
            value = math.nan
        if not match or not math.isfinite(value) or value < 0:
            raise InputError(f"expected DATASET=N with N a number >= 0, got {spec!r}",
                             field="multi-steps")
        if match["ds"] in out and out[match["ds"]] != value:
            raise InputError(f"two values for dataset {match['ds']!r}", field="multi-steps")
        out[match["ds"]] = value
    return out


def _load_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {what} as JSON: {exc}", path=str(path)) from None
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object {{qid: ...}}, got "
                         f"{type(value).__name__}", path=str(path))
    return value


def _dataset_of(folder: Path, prediction: Path, warnings: list[str]) -> str:
    head = folder.name.split("____")[0]
    match = _PREDICTION.match(prediction.name)
    if match is None:   # unusual file name: fall back to the folder name's last token
        return head.rsplit("_", 1)[-1]
    dataset = match["ds"]
    if not head.endswith("_" + dataset):
        warnings.append(f"{folder.name}: folder name does not end with dataset {dataset!r} "
                        f"(taken from {prediction.name})")
    return dataset


def scan_tree(root: Path, warnings: list[str],
              skipped: list[str]) -> dict[tuple[str, str], Path]:
    """(dataset, arm) -> prediction file, for every recognised folder under ``root``."""
    if not root.is_dir():
        raise InputError("not a folder (expected a predictions/<split>/ tree)", path=str(root))
    found: dict[tuple[str, str], Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        prefix = folder.name.split("_", 1)[0]
        if prefix not in PREFIX_ARMS or not folder.name.startswith(f"{prefix}_qa_"):
            skipped.append(folder.name)
            warnings.append(f"skipped {folder.name}: prefix is not one of "
                            f"{', '.join(p + '_qa_' for p in PREFIX_ARMS)}")
            continue
        predictions = sorted(folder.glob("prediction__*.json"))
        if len(predictions) != 1:
            raise InputError(f"expected one prediction__*.json, found {len(predictions)}",
                             path=str(folder))
        key = (_dataset_of(folder, predictions[0], warnings), PREFIX_ARMS[prefix])
        if key in found:
            raise InputError(f"two folders for dataset {key[0]!r} arm {key[1]!r}: "
                             f"{found[key].parent.name} and {folder.name}", path=str(root))
        found[key] = predictions[0]
    if not found:
        raise InputError("no nor_qa_/oner_qa_/ircot_qa_ folders found", path=str(root))
    for dataset in sorted({ds for ds, _ in found}):
        for arm in ARMS:
            if (dataset, arm) not in found:
                raise InputError(f"dataset {dataset!r} has no {ARM_PREFIX[arm]}_qa_ folder "
                                 f"(arm {arm}); every dataset needs all three arms",
                                 path=str(root), field=arm)
    return found


def _read_arm(prediction: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Predictions and golds of one folder, checked to cover the same qids."""
    gold_path = prediction.with_name("ground_truth__" + prediction.name[len("prediction__"):])
    if not gold_path.is_file():
        raise InputError("missing ground-truth file for this prediction file",
                         path=str(gold_path))
    preds, golds = _load_json(prediction, "predictions"), _load_json(gold_path, "ground truth")
    for qid, answer in preds.items():
        if not isinstance(answer, str):
            raise InputError(f"prediction must be a string, got {type(answer).__name__}",
                             path=str(prediction), field=qid)
        require_utf8(qid, "qid", str(prediction))     # a JSON-escaped lone surrogate: no
        require_utf8(answer, qid, str(prediction))    # file or qid in DuckDB's refusal
        gold = golds.get(qid)
        gold = [gold] if isinstance(gold, str) else gold
        if isinstance(gold, list) and all(isinstance(g, str) for g in gold):
            gold = [g for g in gold if g.strip()]   # a blank gold: EM 1 for an empty answer
        if not isinstance(gold, list) or not gold or not all(isinstance(g, str) for g in gold):
            raise InputError("prediction has no gold answer (need a non-empty list of "
                             "non-blank strings)", path=str(gold_path), field=qid)
        for text in gold:
            require_utf8(text, qid, str(gold_path))
        golds[qid] = gold
    extra = sorted(set(golds) - set(preds))
    if extra:
        raise InputError(f"gold answer without a prediction ({len(extra)} qids)",
                         path=str(prediction), field=extra[0])
    return preds, golds


def _multi_calls(prediction: Path, dataset: str, qids: Iterable[str],
                 multi_steps: dict[str, float]) -> tuple[dict[str, float], dict]:
    steps_path = prediction.parent / STEPS_FILE
    if not steps_path.is_file():
        if dataset not in multi_steps:
            raise InputError(f"no {STEPS_FILE}; give --multi-steps {dataset}=N (mean "
                             "retrieval calls of the multi arm)", path=str(prediction.parent),
                             field="multi-steps")
        value = multi_steps[dataset]
        return {q: value for q in qids}, {"from": "--multi-steps", "value": value}
    steps = _load_json(steps_path, "step counts")
    calls = {}
    for qid in qids:
        value = steps.get(qid)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0):
            raise InputError(f"need a number >= 0 of retrieval steps, got {value!r}",
                             path=str(steps_path), field=qid)
        calls[qid] = float(value)
    record = {"from": STEPS_FILE, "mean": sum(calls.values()) / max(len(calls), 1)}
    if dataset in multi_steps:
        record["ignored_multi_steps"] = multi_steps[dataset]
    return calls, record


def load_questions(path: Path) -> dict[tuple[str, str], str]:
    """(dataset, qid) -> question text from a JSONL file of {dataset, qid, question}."""
    out: dict[tuple[str, str], str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read questions: {exc}", path=str(path)) from None
    for number, record in json_lines(text, str(path)):
        for name in ("dataset", "qid", "question"):
            if not isinstance(record, dict) or not isinstance(record.get(name), (str, int)):
                raise InputError("need dataset, qid and question", path=str(path),
                                 line=number, field=name)
        key, question = (str(record["dataset"]), str(record["qid"])), str(record["question"])
        for name, value in (("dataset", key[0]), ("qid", key[1]), ("question", question)):
            require_utf8(value, name, str(path), number)
        if out.setdefault(key, question) != question:
            raise InputError(f"a second, different question for dataset {key[0]!r} qid "
                             f"{key[1]!r} (the first: {out[key]!r})", path=str(path),
                             line=number, field=key[1])
    return out


def build_import(root: str | Path, questions: str | Path, run: str,
                 multi_steps: dict[str, float] | None = None) -> ImportResult:
    """Read, check and score the whole tree; no database is touched."""
    root, questions, multi_steps = Path(root), Path(questions), dict(multi_steps or {})
    if not run:
        raise InputError("run name must not be empty", field="run")
    warnings: list[str] = []
    skipped: list[str] = []
    found = scan_tree(root, warnings, skipped)
    datasets = sorted({ds for ds, _ in found})
    unknown = sorted(set(multi_steps) - set(datasets))
    if unknown:
        raise InputError(f"dataset {unknown[0]!r} is not in the tree (has: "
                         f"{', '.join(datasets)})", field="multi-steps")
    texts = load_questions(questions)
    rows, config = [], {"source": str(root.resolve()), "questions": str(questions.resolve()),
                        "seconds": "not recorded (0.0)", "datasets": {}}
    for dataset in datasets:
        arms = {arm: _read_arm(found[(dataset, arm)]) for arm in ARMS}
        qids = sorted(arms[ARMS[0]][0])
        for arm in ARMS[1:]:
            missing = sorted(set(qids) ^ set(arms[arm][0]))
            if missing:
                side = found[(dataset, arm if missing[0] in qids else ARMS[0])]
                raise InputError(f"qid missing here but answered by another arm of "
                                 f"{dataset!r}", path=str(side), field=missing[0])
        for qid in qids:
            if not texts.get((dataset, qid), "").strip():
                raise InputError(f"no question text for dataset={dataset} qid={qid}",
                                 path=str(questions), field=qid)
        multi, multi_record = _multi_calls(found[(dataset, "multi")], dataset, qids,
                                           multi_steps)
        if "ignored_multi_steps" in multi_record:
            warnings.append(f"{dataset}: --multi-steps ignored, {STEPS_FILE} has per-question "
                            "steps")
        for arm in ARMS:
            preds, golds = arms[arm]
            for qid in qids:
                calls = multi[qid] if arm == "multi" else FIXED_CALLS[arm]
                rows.append({"run": run, "dataset": dataset, "qid": qid,
                             "question": texts[(dataset, qid)], "arm": arm,
                             "prediction": preds[qid],
                             "golds": json.dumps(golds[qid], ensure_ascii=False),
                             **answer_scores(preds[qid], golds[qid]),
                             "retrieval_calls": calls, "seconds": 0.0})
        config["datasets"][dataset] = {
            "questions": len(qids), "multi_calls": multi_record,
            "folders": {arm: found[(dataset, arm)].parent.name for arm in ARMS}}
    config["rows"] = len(rows)
    config["skipped"] = skipped
    return ImportResult(rows, config, warnings)


def import_arms(root: str | Path, questions: str | Path, db: str | Path, run: str,
                multi_steps: dict[str, float] | None = None) -> ImportResult:
    """Check and score the tree, then write it to ``db`` under ``run``."""
    result = build_import(root, questions, run, multi_steps)
    write_import(db, result, run)
    return result


def format_summary(result: ImportResult) -> str:
    lines = [f"{'dataset':<16} {'arm':<10} {'n':>5} {'EM':>6} {'F1':>6} {'Acc':>6} "
             f"{'calls':>6}"]
    for s in result.summary():
        lines.append(f"{s['dataset']:<16} {s['arm']:<10} {s['n']:>5} {s['em']:>6.1f} "
                     f"{s['f1']:>6.1f} {s['acc']:>6.1f} {s['calls']:>6.2f}")
    return "\n".join(lines)
