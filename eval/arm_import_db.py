"""Writing an arm-log import (``arm_import.ImportResult``) into a run database.

The rows go in with one transaction (``INSERT OR REPLACE`` on the primary key, so a re-run
of the same import replaces its rows); ``arm_imports`` records each import: source,
questions file and a JSON config saying where multi's calls came from per dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from eval.store import RunStore
from searchagent.errors import InputError

if TYPE_CHECKING:
    from eval.arm_import import ImportResult

IMPORTS_SQL = ("CREATE TABLE IF NOT EXISTS arm_imports (run VARCHAR, source VARCHAR, "
               "questions VARCHAR, imported_at TIMESTAMP, config JSON, "
               "PRIMARY KEY (run, source))")
ROW_COLUMNS = ("run", "dataset", "qid", "question", "arm", "prediction", "golds", "em",
               "f1", "acc", "retrieval_calls", "seconds")


def migrate_calls(con) -> bool:
    """Make ``arm_outcomes.retrieval_calls`` DOUBLE (older databases have INTEGER)."""
    kind = con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = "
                       "'arm_outcomes' AND column_name = 'retrieval_calls'").fetchone()
    if kind is None or kind[0] == "DOUBLE":
        return False
    con.execute("ALTER TABLE arm_outcomes ALTER retrieval_calls TYPE DOUBLE")
    return True


def check_run_is_free(con, run: str, source: str, db: str | Path) -> None:
    """Only a re-import of the same tree may write into a run that has rows (REPLACE would
    overwrite what ``eval log-arms`` or another tree wrote, or mix into it); a run name
    that ``eval run`` / ``eval log-arms`` used is refused even without rows yet."""
    sources = {r[0] for r in con.execute("SELECT source FROM arm_imports WHERE run = ?",
                                         [run]).fetchall()}
    rows = con.execute("SELECT count(*) FROM arm_outcomes WHERE run = ?", [run]).fetchone()[0]
    if sources - {source} or (rows and not sources):
        came = f"imported from {min(sources)}" if sources else "written by eval log-arms"
        raise InputError(f"run {run!r} already has rows {came}; use a new --run name",
                         path=str(db), field="run")
    local = con.execute("SELECT (SELECT count(*) FROM results WHERE run = ?) + "
                        "(SELECT count(*) FROM run_settings WHERE run = ?)",
                        [run, run]).fetchone()[0]
    if local:   # the report would show the published outcomes as part of that run
        raise InputError(f"run {run!r} is a run of eval run / eval log-arms here; use a new "
                         "--run name", path=str(db), field="run")


def write_import(db: str | Path, result: "ImportResult", run: str) -> None:
    """All rows plus the ``arm_imports`` record in one transaction (all or nothing)."""
    with RunStore(db) as store:
        con = store.con
        con.execute("BEGIN TRANSACTION")
        try:
            result.config["migrated_retrieval_calls"] = migrate_calls(con)
            con.execute(IMPORTS_SQL)
            check_run_is_free(con, run, result.config["source"], db)
            width = len(ROW_COLUMNS) + 1
            for start in range(0, len(result.rows), 250):
                chunk = result.rows[start:start + 250]
                marks = ", ".join(["(" + ", ".join(["?"] * (width - 1)) + ", now())"]
                                  * len(chunk))
                con.execute(f"INSERT OR REPLACE INTO arm_outcomes ({', '.join(ROW_COLUMNS)}, "
                            f"created_at) VALUES {marks}",
                            [row[c] for row in chunk for c in ROW_COLUMNS])
            con.execute("INSERT OR REPLACE INTO arm_imports VALUES (?, ?, ?, now(), ?)",
                        [run, result.config["source"], result.config["questions"],
                         json.dumps(result.config, sort_keys=True)])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
