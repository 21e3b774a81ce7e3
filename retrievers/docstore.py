"""The embedded document store: one DuckDB file, ``passages(row, id, title, text)``.

``row`` is the dense integer id every index uses; ``id`` is the corpus id.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Sequence

import duckdb

from searchagent.errors import IndexFormatError
from searchagent.types import Hit, Passage

SCHEMA = ("CREATE TABLE passages (row BIGINT NOT NULL, id VARCHAR NOT NULL, "
          "title VARCHAR NOT NULL, text VARCHAR NOT NULL)")
# DuckDB's buffer pool (blocks read or written, aggregates) may otherwise grow to 80% of the
# machine's memory; an index build caps it so that its memory does not grow with the corpus.
# Beyond a cap DuckDB spills (aggregates) or evicts (cached blocks); a statement that still
# cannot run (passages of tens of MB) doubles the cap and runs again (``execute_growing``).
BUILD_MEMORY_LIMIT = "256MB"        # loading: read_json alone takes 128 MiB buffers
BUILD_READ_MEMORY_LIMIT = "96MB"    # reading passages back in row ranges
_UNITS = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def execute_growing(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None
                    ) -> duckdb.DuckDBPyConnection:
    """``con.execute``; on DuckDB's out-of-memory error, double the database's memory limit
    (up to 80% of the machine's memory, DuckDB's default) and run the statement again (a
    failed statement was rolled back)."""
    while True:
        try:
            return con.execute(sql, params or [])
        except duckdb.OutOfMemoryException:
            number, unit = con.execute("SELECT current_setting('memory_limit')"
                                       ).fetchone()[0].split()
            now = float(number) * _UNITS[unit]
            most = 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            if now >= most:
                raise
            con.execute(f"SET memory_limit = '{int(min(2 * now, most)) >> 20}MiB'")


def write_docstore(path: str | Path, passages: Iterable, batch: int = 50_000,
                   sources: str | Path | None = None) -> int:
    """Bulk-load passages in order (row = position) through a JSONL staging file.

    With ``sources`` (a DuckDB file to create), the items are ``(line, source id, passage)``:
    each corpus record's line and id (``None`` for its second and later chunks) are loaded
    there for ``pop_duplicate_source``, so no set of ids is held in memory."""
    con = duckdb.connect(str(path), config={"memory_limit": BUILD_MEMORY_LIMIT})
    con.execute(SCHEMA)
    if sources is not None:
        con.execute("ATTACH ? AS origin", [str(sources)])
        con.execute("CREATE TABLE origin.sources (line BIGINT NOT NULL, id VARCHAR NOT NULL)")
    count = 0
    folder = os.path.dirname(os.path.abspath(path))
    staging = [tempfile.mkstemp(suffix=".jsonl", dir=folder) for _ in range(2)]

    def flush(lines: list[str], origins: list[str]) -> None:
        for (_, staged), rows in zip(staging, (lines, origins)):
            with open(staged, "w", encoding="utf-8") as out:
                out.writelines(rows)
        execute_growing(con, "INSERT INTO passages SELECT row, id, title, text FROM read_json(?, "
                    "columns={'row': 'BIGINT', 'id': 'VARCHAR', 'title': 'VARCHAR', "
                    "'text': 'VARCHAR'}, format='newline_delimited', "
                    "maximum_object_size=67108864)", [staging[0][1]])
        if origins:
            execute_growing(con, "INSERT INTO origin.sources SELECT line, id FROM read_json(?, "
                        "columns={'line': 'BIGINT', 'id': 'VARCHAR'}, "
                        "format='newline_delimited', maximum_object_size=67108864)",
                        [staging[1][1]])

    try:
        for fd, _ in staging:
            os.close(fd)
        lines: list[str] = []
        origins: list[str] = []
        for item in passages:
            if sources is not None:
                line, source, passage = item
                if source is not None:
                    origins.append(json.dumps({"line": line, "id": source}) + "\n")
            else:
                passage = item
            lines.append(json.dumps({"row": count, "id": passage.id, "title": passage.title,
                                     "text": passage.text}) + "\n")
            count += 1
            if len(lines) >= batch:
                flush(lines, origins)
                lines, origins = [], []
        if lines:
            flush(lines, origins)
        con.execute("CHECKPOINT")
    finally:
        con.close()
        for _, staged in staging:
            os.unlink(staged)
    return count


def pop_duplicate_source(sources: str | Path) -> tuple[str, int, int] | None:
    """The first repeated corpus id in the ``sources`` file that ``write_docstore`` filled,
    as (id, its first line, the line that repeats it), the repeat earliest in the file;
    ``None`` if every id is unique. The file is deleted either way."""
    con = duckdb.connect(str(sources), config={"memory_limit": BUILD_MEMORY_LIMIT})
    try:
        found = execute_growing(
            con,
            "WITH dup AS (SELECT id, min(line) AS first FROM sources GROUP BY id "
            "HAVING count(*) > 1) "
            "SELECT s.id, dup.first, min(s.line) AS again FROM sources s JOIN dup "
            "ON s.id = dup.id AND s.line > dup.first GROUP BY s.id, dup.first "
            "ORDER BY again LIMIT 1").fetchone()
    finally:
        con.close()
        for leftover in (Path(sources), Path(f"{sources}.wal")):
            leftover.unlink(missing_ok=True)
    return None if found is None else (found[0], int(found[1]), int(found[2]))


class DocStore:
    """Read access to the passages; safe to share between threads.

    ``writable`` opens the file for updates (``docstore_live.LiveDocStore``); DuckDB then
    locks it against other processes. ``memory_limit`` caps DuckDB's buffer pool (an index
    build passes ``BUILD_READ_MEMORY_LIMIT``; a server keeps DuckDB's default cache).
    """

    def __init__(self, path: str | Path, writable: bool = False,
                 memory_limit: str | None = None):
        self.path = path = Path(path)
        if not path.is_file():
            raise IndexFormatError(f"doc store missing: {path}")
        try:
            config = {} if memory_limit is None else {"memory_limit": memory_limit}
            self._con = duckdb.connect(str(path), read_only=not writable, config=config)
            self.size = self._con.execute("SELECT count(*) FROM passages").fetchone()[0]
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower() and writable:      # any other user blocks a writer
                raise IndexFormatError(
                    f"doc store {path} is open in another process (a server, a search, an "
                    f"evaluation or another update), and DuckDB lets no process update it "
                    f"meanwhile: stop that process, or update a served index through the "
                    f"server (--allow-updates){_lock_holder(exc)}") from exc
            if "lock" in str(exc).lower():
                raise IndexFormatError(
                    f"doc store {path} is open for updates by another process (a server "
                    f"started with --allow-updates, or an index add/delete/compact)"
                    f"{_lock_holder(exc)}") from exc
            raise IndexFormatError(f"doc store corrupt or unreadable: {path}: {exc}") from exc
        except duckdb.Error as exc:
            raise IndexFormatError(f"doc store corrupt or unreadable: {path}: {exc}") from exc
        self._local = threading.local()

    def _query(self, sql: str, params: list) -> list[tuple]:
        """Run a read; a damaged file (found only when its block is read) is an
        ``IndexFormatError`` naming it, not a raw DuckDB error."""
        try:
            return self._cursor().execute(sql, params).fetchall()
        except duckdb.Error as exc:
            raise IndexFormatError(
                f"doc store corrupt or unreadable: {self.path}: {exc} (rebuild the index; "
                "index.verify = \"full\" finds such damage when the index is opened)") from exc

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._con.cursor()
        return cursor

    def fetch(self, rows: Sequence[int]) -> dict[int, Passage]:
        """Passages for the given rows (missing rows are simply absent)."""
        if len(rows) == 0:
            return {}
        result = self._query("SELECT row, id, title, text FROM passages WHERE row IN "
                             "(SELECT UNNEST(?::BIGINT[]))", [[int(r) for r in rows]])
        return {row: Passage(pid, title, text) for row, pid, title, text in result}

    def hits(self, rows: Sequence[int], scores: Sequence[float]) -> list[Hit]:
        """Attach passage text to ranked (row, score) pairs, keeping the order."""
        found = self.fetch(rows)
        return [Hit(id=found[r].id, score=float(s), title=found[r].title, text=found[r].text,
                    row=int(r)) for r, s in zip(rows, scores) if int(r) in found]

    def rows_for_ids(self, ids: Sequence[str]) -> dict[str, int]:
        result = self._query("SELECT id, row FROM passages WHERE id IN "
                             "(SELECT UNNEST(?::VARCHAR[]))", [list(ids)])
        return dict(result)

    def iter_texts(self, batch: int = 10_000) -> Iterable[tuple[int, str, str]]:
        """Yield (row, title, text) in row order, for building indexes.

        One query per range of ``batch`` rows: a single ``ORDER BY row`` over the table
        would sort all of it in memory (hundreds of MB at 1M passages); a range is found by
        the row groups' min/max, so memory stays flat for any corpus size."""
        cursor = self._con.cursor()
        end = cursor.execute("SELECT max(row) + 1 FROM passages").fetchone()[0] or 0
        for start in range(0, end, batch):
            yield from execute_growing(
                cursor, "SELECT row, title, text FROM passages WHERE row >= ? AND row < ? "
                "ORDER BY row", [start, start + batch]).fetchall()

    def close(self) -> None:
        self._con.close()


def _lock_holder(exc: Exception) -> str:
    """' (held by PROGRAM, pid N)' from DuckDB's lock error, without its advice for the
    DuckDB shell; the whole error where it does not say."""
    found = re.search(r"held in (.+?) \(PID (\d+)\)", str(exc))
    return f" (held by {found.group(1)}, pid {found.group(2)})" if found else f": {exc}"
