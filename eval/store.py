"""The DuckDB schema for evaluation runs and the arm log, and the one class that writes it.

``results``: one row per (run, system, dataset, question) of ``searchagent eval run``.
``arm_outcomes``: one row per (run, dataset, question, arm) of ``searchagent eval log-arms``;
the table policies train on. Rows are inserted one at a time as questions finish, with
``INSERT OR IGNORE`` on the primary key, so a resumed run never duplicates a row.
``arm_outcomes.retrieval_calls`` is DOUBLE: imported logs (``eval import-arms``, which also
keeps ``arm_imports``) may carry a per-dataset mean; older INTEGER databases are migrated
by that import.

DuckDB lets one process at a time open a file. With ``hold=False`` the store connects only
for each operation (retrying while another process has the file), so reports and policy
training can read a database that a long run is still writing.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

import duckdb

RESULT_COLUMNS = {
    "run": "VARCHAR", "system": "VARCHAR", "dataset": "VARCHAR", "qid": "VARCHAR",
    "question": "VARCHAR", "prediction": "VARCHAR", "golds": "VARCHAR",
    "em": "DOUBLE", "f1": "DOUBLE", "acc": "DOUBLE", "sup_recall": "DOUBLE",
    "retrieval_calls": "INTEGER", "hops": "INTEGER", "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER", "seconds": "DOUBLE", "arm": "VARCHAR", "trace": "JSON",
    "created_at": "TIMESTAMP",
}
RESULT_KEY = ("run", "system", "dataset", "qid")

ARM_COLUMNS = {
    "run": "VARCHAR", "dataset": "VARCHAR", "qid": "VARCHAR", "question": "VARCHAR",
    "arm": "VARCHAR", "prediction": "VARCHAR", "golds": "VARCHAR",
    "em": "DOUBLE", "f1": "DOUBLE", "acc": "DOUBLE", "sup_recall": "DOUBLE",
    "retrieval_calls": "DOUBLE", "hops": "INTEGER", "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER", "seconds": "DOUBLE", "confidence": "DOUBLE",
    "created_at": "TIMESTAMP",
}
ARM_KEY = ("run", "dataset", "qid", "arm")

TABLES = {"results": (RESULT_COLUMNS, RESULT_KEY), "arm_outcomes": (ARM_COLUMNS, ARM_KEY)}
SETTINGS_SQL = "CREATE TABLE IF NOT EXISTS run_settings (run VARCHAR PRIMARY KEY, settings JSON)"


def create_sql(table: str) -> str:
    columns, key = TABLES[table]
    body = ", ".join(f"{name} {kind}" for name, kind in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {table} ({body}, PRIMARY KEY ({', '.join(key)}))"


class RunStore:
    """A runs database. Use it from one thread at a time (the runner's writer thread)."""

    def __init__(self, path: str | Path, read_only: bool = False, hold: bool = True,
                 wait_s: float = 300.0):
        self.path, self.read_only, self.hold, self.wait_s = Path(path), read_only, hold, wait_s
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._held = self._open() if hold else None
        with self._connection() as con:
            if not read_only:
                for table in TABLES:
                    con.execute(create_sql(table))
                con.execute(SETTINGS_SQL)

    def _open(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    @contextmanager
    def _connection(self):
        if self._held is not None:
            yield self._held
            return
        con = self._open()
        try:
            yield con
        finally:
            con.close()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._held is None:
            raise RuntimeError("this store connects per operation (hold=False)")
        return self._held

    def done_keys(self, table: str, **where: Any) -> set[tuple]:
        """Primary keys already stored, restricted by equality filters like ``run=...``."""
        columns, key = TABLES[table]
        if not self.has_table(table):
            return set()
        clause = " AND ".join(f"{name} = ?" for name in where) or "TRUE"
        with self._connection() as con:
            rows = con.execute(f"SELECT {', '.join(key)} FROM {table} WHERE {clause}",
                               list(where.values())).fetchall()
        return {tuple(row) for row in rows}

    def insert(self, table: str, row: dict[str, Any]) -> bool:
        """Insert one row (missing columns are NULL); False when its key was already there."""
        columns, key = TABLES[table]
        unknown = set(row) - set(columns)
        if unknown:
            raise ValueError(f"unknown {table} columns: {sorted(unknown)}")
        names = [c for c in columns if c != "created_at"]
        values = [_json_cell(row.get(c)) if columns[c] == "JSON" else row.get(c) for c in names]
        marks = ", ".join(["?"] * len(names))
        with self._connection() as con:
            before = _count(con, table, {k: row[k] for k in key})
            con.execute(f"INSERT OR IGNORE INTO {table} ({', '.join(names)}, created_at) "
                        f"VALUES ({marks}, now())", values)
        return before == 0

    def count(self, table: str, **where: Any) -> int:
        with self._connection() as con:
            return _count(con, table, where)

    def has_table(self, table: str) -> bool:
        with self._connection() as con:
            return _has_table(con, table)

    def rows(self, table: str, runs: Iterable[str]) -> list[dict]:
        """All rows of the given runs as dicts (JSON columns decoded)."""
        runs = list(runs)
        if not runs or not self.has_table(table):
            return []
        with self._connection() as con:
            cursor = con.execute(
                f"SELECT * FROM {table} WHERE run IN ({', '.join(['?'] * len(runs))}) "
                f"ORDER BY run, dataset, qid", runs)
            names = [d[0] for d in cursor.description]
            fetched = cursor.fetchall()
        out = []
        for values in fetched:
            row = dict(zip(names, values))
            for name in ("golds", "trace"):
                if isinstance(row.get(name), str):
                    row[name] = json.loads(row[name])
            out.append(row)
        return out

    def runs(self, table: str) -> list[str]:
        if not self.has_table(table):
            return []
        with self._connection() as con:
            return [r[0] for r in con.execute(f"SELECT DISTINCT run FROM {table} ORDER BY 1")
                    .fetchall()]

    def settings_of(self, run: str) -> dict | None:
        """The settings ``eval run`` / ``log-arms`` recorded for ``run`` here, if any."""
        if not self.has_table("run_settings"):
            return None
        with self._connection() as con:
            found = con.execute("SELECT settings FROM run_settings WHERE run = ?",
                                [run]).fetchone()
        return None if found is None else json.loads(found[0])

    def record_settings(self, run: str, settings: dict) -> None:
        with self._connection() as con:
            con.execute("INSERT OR REPLACE INTO run_settings VALUES (?, ?)",
                        [run, _json_cell(settings)])

    def imported_runs(self) -> set[str]:
        """Runs written by ``eval import-arms`` (table ``arm_imports``)."""
        if not self.has_table("arm_imports"):
            return set()
        with self._connection() as con:
            return {r[0] for r in con.execute("SELECT DISTINCT run FROM arm_imports")
                    .fetchall()}

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _count(con, table: str, where: dict[str, Any]) -> int:
    clause = " AND ".join(f"{name} = ?" for name in where) or "TRUE"
    return con.execute(f"SELECT count(*) FROM {table} WHERE {clause}",
                       list(where.values())).fetchone()[0]


def _has_table(con, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables "
                            "WHERE table_name = ?", [table]).fetchone()[0])


def _json_cell(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, ensure_ascii=False)
