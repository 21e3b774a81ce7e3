"""The embedded document store: one DuckDB file, ``passages(row, id, title, text)``.

``row`` is the dense integer id every index uses; ``id`` is the corpus id.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Sequence

import duckdb

from searchagent.errors import IndexFormatError
from searchagent.types import Hit, Passage

SCHEMA = ("CREATE TABLE passages (row BIGINT NOT NULL, id VARCHAR NOT NULL, "
          "title VARCHAR NOT NULL, text VARCHAR NOT NULL)")


def write_docstore(path: str | Path, passages: Iterable[Passage], batch: int = 50_000) -> int:
    """Bulk-load passages in order (row = position) through a JSONL staging file."""
    con = duckdb.connect(str(path))
    con.execute(SCHEMA)
    count = 0
    fd, staging = tempfile.mkstemp(suffix=".jsonl", dir=os.path.dirname(os.path.abspath(path)))

    def flush(lines: list[str]) -> None:
        with open(staging, "w", encoding="utf-8") as out:
            out.writelines(lines)
        con.execute("INSERT INTO passages SELECT row, id, title, text FROM read_json(?, "
                    "columns={'row': 'BIGINT', 'id': 'VARCHAR', 'title': 'VARCHAR', "
                    "'text': 'VARCHAR'}, format='newline_delimited', "
                    "maximum_object_size=67108864)", [staging])

    try:
        os.close(fd)
        lines: list[str] = []
        for passage in passages:
            lines.append(json.dumps({"row": count, "id": passage.id, "title": passage.title,
                                     "text": passage.text}) + "\n")
            count += 1
            if len(lines) >= batch:
                flush(lines)
                lines = []
        if lines:
            flush(lines)
        con.execute("CHECKPOINT")
    finally:
        con.close()
        os.unlink(staging)
    return count


class DocStore:
    """Read access to the passages; safe to share between threads.

    ``writable`` opens the file for updates (``docstore_live.LiveDocStore``); DuckDB then
    locks it against other processes.
    """

    def __init__(self, path: str | Path, writable: bool = False):
        self.path = path = Path(path)
        if not path.is_file():
            raise IndexFormatError(f"doc store missing: {path}")
        try:
            self._con = duckdb.connect(str(path), read_only=not writable)
            self.size = self._con.execute("SELECT count(*) FROM passages").fetchone()[0]
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise IndexFormatError(
                    f"doc store {path} is open for updates by another process (a server "
                    f"started with --allow-updates, or an index add/delete/compact): {exc}"
                ) from exc
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
        """Yield (row, title, text) in row order, for building indexes."""
        cursor = self._con.cursor()
        cursor.execute("SELECT row, title, text FROM passages ORDER BY row")
        while chunk := cursor.fetchmany(batch):
            yield from chunk

    def close(self) -> None:
        self._con.close()
