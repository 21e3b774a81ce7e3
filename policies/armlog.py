"""Read the evaluation harness's arm log (DuckDB table ``arm_outcomes``) into arrays.

One row per (run, dataset, qid, arm). ``load_arm_log`` keeps questions that have every
arm, takes the newest row when several runs logged the same (dataset, qid, arm), and
returns per-arm quality, steps, seconds, answers and the parametric arm's confidence.
Fixed-strategy rows of ``eval run`` (table ``results``) can be added as more arm outcomes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from policies.arms import ARMS
from searchagent.errors import InputError

TABLE = "arm_outcomes"
COLUMNS = ("run", "dataset", "qid", "question", "arm", "prediction", "golds", "em", "f1",
           "acc", "sup_recall", "retrieval_calls", "hops", "prompt_tokens",
           "completion_tokens", "seconds", "confidence", "created_at")


@dataclass
class ArmTable:
    keys: list[tuple[str, str]]               # (dataset, qid)
    questions: list[str]
    golds: list[list[str]]
    quality: dict[str, np.ndarray]            # metric -> (n, arms)
    steps: np.ndarray                         # retrieval calls, (n, arms)
    seconds: np.ndarray                       # (n, arms)
    confidence: np.ndarray                    # parametric arm's mean logprob, NaN if none
    dropped: int = 0                          # questions missing an arm
    answers: list[list[str]] | None = None    # each arm's answer, in ARMS order
    dropped_detail: str = ""                  # which arms those questions lack, an example
    arm_confidence: np.ndarray | None = None  # each arm's mean logprob (n, arms), NaN if none


    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, rows: Sequence[int]) -> "ArmTable":
        rows = np.asarray(rows, dtype=np.int64)
        return ArmTable([self.keys[i] for i in rows], [self.questions[i] for i in rows],
                        [self.golds[i] for i in rows],
                        {m: q[rows] for m, q in self.quality.items()},
                        self.steps[rows], self.seconds[rows], self.confidence[rows],
                        answers=None if self.answers is None else
                        [self.answers[i] for i in rows],
                        arm_confidence=None if self.arm_confidence is None else
                        self.arm_confidence[rows])

    def confidences(self) -> list[float | None]:
        return [None if math.isnan(c) else float(c) for c in self.confidence]

    def generated(self) -> list[list[tuple[str, float | None]]]:
        """Each arm's (answer, mean token log-probability or None), in ARMS order: what
        the answer cascade is trained and replayed on."""
        if self.answers is None:
            raise InputError("the cascade is trained on each arm's answer: this arm log has "
                             "none", field="prediction")
        confidence = (np.full((len(self), len(ARMS)), np.nan) if self.arm_confidence is None
                      else self.arm_confidence)
        return [[(text, None if np.isnan(c) else float(c)) for text, c in zip(answers, row)]
                for answers, row in zip(self.answers, confidence)]

    def has_confidence(self) -> bool:
        """Whether most answers carry the generator's token log-probabilities (the cascade
        then reads them; an imported published log has none)."""
        return self.arm_confidence is not None and \
            float(np.isfinite(self.arm_confidence).mean()) >= 0.5


def load_arm_log(path: str | Path, runs: Sequence[str] | None = None,
                 datasets: Sequence[str] | None = None,
                 results_from: str | Path | None = None) -> ArmTable:
    """Read ``arm_outcomes`` from ``path``; with ``results_from``, also the fixed-strategy
    rows (system = an arm name) of that runs database's ``results`` table, whose
    confidence is in the trace JSON. The newest row per (dataset, qid, arm) wins."""
    rows = _read(path, TABLE, runs, datasets)
    if results_from is not None:
        rows += _read(results_from, "results", runs, datasets)
    for column, wanted in (("run", runs), ("dataset", datasets)):
        if not wanted:
            continue
        known = set(_distinct(path, TABLE, column)) | (
            set(_distinct(results_from, "results", column)) if results_from else set())
        unknown = sorted(set(wanted) - known)
        if unknown:
            raise InputError(f"no arm outcomes for {column} {', '.join(map(repr, unknown))} "
                             f"(the log has {', '.join(sorted(known)) or 'none'})",
                             path=str(path), field=f"--{column}")
    newest: dict[tuple, tuple] = {}
    for row in sorted(rows, key=lambda r: (str(r[-1]), str(r[-2]))):
        newest[(row[0], row[1], row[3])] = row
    return _to_table([r[:-2] for r in newest.values()], str(path))


def _read(path: str | Path, table: str, runs, datasets) -> list[tuple]:
    import duckdb

    path = Path(path)
    if not path.is_file():
        raise InputError("arm log not found", path=str(path))
    for attempt in range(10):   # the harness opens the log per write: wait out a write
        try:
            con = duckdb.connect(str(path), read_only=True)
            break
        except duckdb.Error as exc:
            if attempt == 9 or "lock" not in str(exc).lower():
                raise InputError(f"cannot open arm log: {exc}", path=str(path)) from exc
            time.sleep(0.5)
    arm = "arm" if table == TABLE else "system"
    confidence = ("confidence" if table == TABLE
                  else "TRY_CAST(json_extract(trace, '$.confidence') AS DOUBLE)")
    try:
        present = {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
            [table]).fetchall()}
        if not present:
            raise InputError(f"no table {table} in this database", path=str(path), field=table)
        needed = ["run", "dataset", "qid", "question", arm, "prediction", "golds", "em", "f1",
                  "acc", "retrieval_calls", "seconds", "created_at",
                  "confidence" if table == TABLE else "trace"]
        missing = [c for c in needed if c not in present]
        if missing:
            raise InputError(f"arm log lacks column(s) {', '.join(missing)}",
                             path=str(path), field=f"{table}.{missing[0]}")
        where, params = [f"{arm} IN (?, ?, ?)"], list(ARMS)
        for name, values in (("run", runs), ("dataset", datasets)):
            if values:
                where.append(f"{name} IN ({', '.join('?' * len(values))})")
                params += list(values)
        return con.execute(
            f"SELECT dataset, qid, question, {arm}, golds, em, f1, acc, retrieval_calls, "
            f"seconds, {confidence}, prediction, run, created_at FROM {table} "
            f"WHERE {' AND '.join(where)}", params).fetchall()
    finally:
        con.close()


def _distinct(path, table: str, column: str) -> list[str]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return [str(r[0]) for r in con.execute(f"SELECT DISTINCT {column} FROM {table}").fetchall()]
    finally:
        con.close()


def _to_table(rows, source: str) -> ArmTable:
    by_key: dict[tuple[str, str], dict] = {}
    for dataset, qid, question, arm, golds, em, f1, acc, calls, seconds, conf, answer in rows:
        entry = by_key.setdefault((str(dataset), str(qid)),
                                  {"question": question, "golds": golds, "arms": {}})
        values = (em, f1, acc, calls, seconds)
        if any(v is None for v in values):
            raise InputError(f"NULL em/f1/acc/retrieval_calls/seconds for dataset={dataset} "
                             f"qid={qid} arm={arm}", path=source, field=TABLE)
        entry["arms"][arm] = (*map(float, values), conf, answer or "")
    complete = {k: v for k, v in by_key.items() if len(v["arms"]) == len(ARMS)}
    lacking: dict[str, list[tuple[str, str]]] = {}
    for key, entry in by_key.items():
        for arm in ARMS:
            if arm not in entry["arms"]:
                lacking.setdefault(arm, []).append(key)
    detail = "; ".join(f"{arm} for {len(keys)} (e.g. dataset={min(keys)[0]} qid={min(keys)[1]})"
                       for arm, keys in lacking.items())
    keys = sorted(complete)
    n = len(keys)
    table = np.zeros((5, n, len(ARMS)))
    arm_confidence = np.full((n, len(ARMS)), np.nan)
    golds = []
    for i, key in enumerate(keys):
        entry = complete[key]
        for a, arm in enumerate(ARMS):
            table[:, i, a] = entry["arms"][arm][:5]
            if entry["arms"][arm][5] is not None:
                arm_confidence[i, a] = float(entry["arms"][arm][5])
        golds.append(_parse_golds(entry["golds"], source, key))
    return ArmTable(keys, [complete[k]["question"] for k in keys], golds,
                    {"em": table[0], "f1": table[1], "acc": table[2]}, table[3], table[4],
                    arm_confidence[:, ARMS.index("parametric")].copy(), dropped=len(by_key) - n,
                    answers=[[complete[k]["arms"][arm][6] for arm in ARMS] for k in keys],
                    dropped_detail=detail, arm_confidence=arm_confidence)


def _parse_golds(value, source: str, key) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"golds is not JSON for dataset={key[0]} qid={key[1]}",
                             path=source, field="golds") from exc
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in (value or [])]


def split_by_id(keys: Sequence[tuple[str, str]], test_frac: float = 0.3,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint train/test row indices: sort by a seeded hash of (dataset, qid)."""
    import hashlib

    if not 0.0 < test_frac < 1.0:
        raise InputError(f"test fraction must be in (0, 1), got {test_frac}", field="test_frac")
    order = sorted(range(len(keys)), key=lambda i: hashlib.sha256(
        f"{seed}|{keys[i][0]}|{keys[i][1]}".encode()).hexdigest())
    n_test = int(round(len(keys) * test_frac))
    return (np.sort(np.asarray(order[n_test:], np.int64)),
            np.sort(np.asarray(order[:n_test], np.int64)))


def kfold_by_id(keys: Sequence[tuple[str, str]], folds: int,
                seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` disjoint (train, test) splits by the same seeded id hash; every question
    is held out exactly once (for small arm logs)."""
    import hashlib

    if folds < 2:
        raise InputError(f"need at least 2 folds, got {folds}", field="folds")
    order = sorted(range(len(keys)), key=lambda i: hashlib.sha256(
        f"{seed}|{keys[i][0]}|{keys[i][1]}".encode()).hexdigest())
    out = []
    for fold in range(folds):
        test = np.sort(order[fold::folds])
        out.append((np.setdiff1d(np.arange(len(keys)), test), test))
    return out
