"""The doc store under updates: rows tagged with the generation that added / deleted them.

A passage row is never rewritten. Replacing a passage marks its old row deleted at
generation N and inserts the new text under a new row added at N; deleting marks only.
Because every change carries its generation, ``rollback(committed)`` undoes exactly the
changes of a generation that never committed (the index manifest's rename is the commit
point), and ``purge`` drops deleted rows' text when the index is compacted.
"""

from __future__ import annotations

import time

import duckdb

from retrievers.docstore import DocStore
from searchagent.errors import IndexFormatError
from searchagent.types import Passage

LIVE = "gen_deleted IS NULL"


class LiveDocStore(DocStore):
    """A writable doc store; reads behave as ``DocStore``'s (rows are immutable)."""

    def __init__(self, path):
        super().__init__(path, writable=True)

    @property
    def tagged(self) -> bool:
        """Whether rows carry generation tags yet (an index never updated has none)."""
        return "gen_added" in {row[0] for row in self._con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'passages'").fetchall()}

    def add_generation_tags(self) -> None:
        """Give an index's first update its tag columns (build rows: generation 0)."""
        if not self.tagged:
            self._con.execute("ALTER TABLE passages ADD COLUMN gen_added INTEGER DEFAULT 0")
            self._con.execute("ALTER TABLE passages ADD COLUMN gen_deleted INTEGER")
            self.checkpoint()

    def counts(self) -> dict[str, int]:
        """``rows`` ever written (the next row number), ``live`` and ``deleted`` passages."""
        if not self.tagged:
            return {"rows": int(self.size), "live": int(self.size), "deleted": 0}
        rows, live, deleted = self._con.execute(
            f"SELECT coalesce(max(row) + 1, 0), count(*) FILTER ({LIVE}), "
            f"count(*) FILTER (NOT {LIVE}) FROM passages").fetchone()
        return {"rows": int(rows), "live": int(live), "deleted": int(deleted)}

    def live_rows(self, ids: list[str], chunks: bool = True) -> dict[str, list[int]]:
        """Live rows of each corpus id (with ``chunks``, also its ``id#n`` windows: ``n``
        digits only, so another passage whose id starts with ``id#`` is not one of them)."""
        found: dict[str, list[int]] = {}
        if not ids:
            return found
        for pid, row in self._con.execute(self.live_rows_sql(chunks), [list(ids)]).fetchall():
            found.setdefault(pid, []).append(int(row))
        return found

    def live_rows_sql(self, chunks: bool = True) -> str:
        """``live_rows``'s query (one parameter: the ids). Equality joins only, so DuckDB
        hash-joins: an OR or a prefix test in the join condition is a nested loop, ids x
        passages (17 s for 4,000 ids on 300,000 windows; minutes on a million)."""
        live = f"p.{LIVE}" if self.tagged else "TRUE"
        keys = ["p.id", "regexp_extract(p.id, '(?s)^(.*)#[0-9]+$', 1)"] if chunks else ["p.id"]
        return ("WITH q AS (SELECT UNNEST(?::VARCHAR[]) AS id) SELECT id, row FROM ("
                + " UNION ".join(f"SELECT q.id, p.row FROM q JOIN passages p ON {key} = q.id "
                                 f"WHERE {live}" for key in keys) + ") ORDER BY row")

    def apply(self, generation: int, first_row: int, added: list[Passage],
              deleted_rows: list[int]) -> None:
        """In one DuckDB transaction: mark ``deleted_rows`` deleted and insert ``added``
        under rows ``first_row, first_row + 1, ...``, all tagged with ``generation``."""
        con = self._con
        try:
            con.execute("BEGIN TRANSACTION")
            if deleted_rows:
                con.execute(f"UPDATE passages SET gen_deleted = ? WHERE {LIVE} AND row IN "
                            "(SELECT UNNEST(?::BIGINT[]))", [generation, deleted_rows])
            if added:
                con.executemany(
                    "INSERT INTO passages (row, id, title, text, gen_added) VALUES (?, ?, ?, ?, ?)",
                    [(first_row + i, p.id, p.title, p.text, generation)
                     for i, p in enumerate(added)])
            con.execute("COMMIT")
        except BaseException as exc:
            try:
                con.execute("ROLLBACK")
            except duckdb.Error:        # a failed COMMIT (disk full) has ended it already
                pass
            if isinstance(exc, duckdb.Error):
                raise IndexFormatError(f"doc store update failed: {self.path}: {exc}") from exc
            raise
        self.size = self.counts()["live"]

    def rollback(self, committed: int) -> int:
        """Undo every change of generations above ``committed``; return rows touched."""
        if not self.tagged:
            return 0
        con = self._con
        con.execute("BEGIN TRANSACTION")
        added = con.execute("DELETE FROM passages WHERE gen_added > ?", [committed]).fetchone()[0]
        undeleted = con.execute("UPDATE passages SET gen_deleted = NULL WHERE gen_deleted > ?",
                                [committed]).fetchone()[0]
        con.execute("COMMIT")
        self.checkpoint()
        return int(added) + int(undeleted)

    def purge(self, upto: int) -> int:
        """Drop the text of rows deleted at generation ``upto`` or before (compaction: no
        reader still sees them live); return how many went."""
        count = self._con.execute("DELETE FROM passages WHERE gen_deleted <= ?",
                                  [int(upto)]).fetchone()[0]
        self.checkpoint()
        return int(count)

    def checkpoint(self, tries: int = 40, wait_s: float = 0.05) -> bool:
        """Fold the write-ahead log into the file. DuckDB refuses while a search's read
        transaction is open, so retry for a while, then leave it to the next one: the
        log is durable either way. Returns whether it ran."""
        for _ in range(tries):
            try:
                self._con.execute("CHECKPOINT")
                return True
            except duckdb.TransactionException:
                time.sleep(wait_s)
        return False
