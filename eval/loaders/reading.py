"""Reading dataset files: JSON (list or wrapped object) or JSONL, optionally gzipped.

Every record carries a ``Location`` so a bad field is reported with its file and line
(JSONL) or item number (JSON list).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from index.corpus import open_text
from searchagent.errors import InputError, json_lines

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


@dataclass(frozen=True)
class Location:
    path: str
    line: int | None = None     # 1-based line in a JSONL file
    item: int | None = None     # 0-based position in a JSON list
    position: int = 0           # 0-based record number, used for ids when a file has none
    qid: str | None = None      # the record's own id, when it has a usable one

    def error(self, message: str, field: str | None = None) -> InputError:
        if self.item is not None:
            field = f"[{self.item}]" + (f".{field}" if field else "")
        if self.qid is not None:
            message += f" (question id {self.qid!r})"
        return InputError(message, path=self.path, line=self.line, field=field)


def read_records(path: str | Path) -> Iterator[tuple[Location, Any]]:
    """Yield ``(location, record)``; a JSON file's top-level ``data``/``Data`` list is unwrapped."""
    name = str(path)
    if not Path(path).is_file():
        raise InputError("dataset file not found", path=name)
    with open_text(path) as handle:
        try:
            text = handle.read()
        except (UnicodeDecodeError, OSError, EOFError) as exc:
            raise InputError(f"unreadable file: {exc}", path=name) from exc
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    items = whole if isinstance(whole, list) else (
        _wrapped_list(whole) if isinstance(whole, dict) else None)
    records = _jsonl(text, name) if items is None else (   # JSON lines (a bare string or
        (Location(name, item=n, position=n), record)       # number is one line)
        for n, record in enumerate(items))
    suspect = (_SURROGATE_ESCAPE.search(text) is not None      # the ways to a lone surrogate:
               or not _encodes(text))                          # an escape, a byte not UTF-8
    for loc, record in records:
        if suspect:
            require_utf8_tree(record, with_record_id(loc, record))
        yield loc, record


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require_utf8_tree(value: Any, loc: Location, field: str | None = None) -> None:
    """Refuse a string anywhere in ``value`` that UTF-8 cannot encode (a JSON escape of a
    lone surrogate): DuckDB refuses to store it, which stopped a whole run at that question."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise loc.error(f"not valid UTF-8 text (character {exc.start + 1} is a lone "
                            "surrogate)", field) from None
    elif isinstance(value, list):
        for n, item in enumerate(value):
            require_utf8_tree(item, loc, f"{field or ''}[{n}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            require_utf8_tree(key, loc, field)
            require_utf8_tree(item, loc, f"{field}.{key}" if field else str(key))


def _wrapped_list(whole: dict) -> list | None:
    for key in ("data", "Data"):
        if isinstance(whole.get(key), list):
            return whole[key]
    return None


def _jsonl(text: str, name: str) -> Iterator[tuple[Location, Any]]:
    for position, (line_no, record) in enumerate(json_lines(text, name)):
        yield Location(name, line=line_no, position=position), record


def require(record: Any, key: str, loc: Location, kind: type | tuple = str) -> Any:
    """``record[key]`` checked for presence and type (strings must be non-empty)."""
    if not isinstance(record, dict):
        raise loc.error("expected a JSON object")
    if key not in record or record[key] is None:
        raise loc.error("missing field", key)
    value = record[key]
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        wanted = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise loc.error(f"expected a non-empty {wanted}", key)
    return value


def answer_strings(value: Any, loc: Location, field: str) -> list[str]:
    """A gold answer field (string, number, or list of them) as a non-empty list of strings."""
    values = value if isinstance(value, list) else [value]
    out = [str(v).strip() for v in values
           if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip()]
    if not out:
        raise loc.error("no gold answer", field)
    return out


def record_id(record: dict, loc: Location, *keys: str, where: str = "") -> str:
    """The first present id field (a string, or an integer kept as its digits), else the
    record's position in the file; an id of any other type, or an empty one, is refused
    (``where`` prefixes the field name in that error)."""
    for key in keys:
        if key not in record:
            continue
        value = record[key]
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        got = "an empty string" if isinstance(value, str) else f"JSON {_json_type(value)}"
        raise loc.error(f"expected a non-empty string or integer id, got {got}", where + key)
    return str(loc.position)


ID_KEYS = ("_id", "id", "question_id", "QuestionId")


def with_record_id(loc: Location, record: Any) -> Location:
    """``loc`` naming the record's id in its errors (the first string or integer id field)."""
    if isinstance(record, dict):
        for key in ID_KEYS:
            value = record.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and \
                    str(value).strip():
                return replace(loc, qid=str(value))
    return loc


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)
