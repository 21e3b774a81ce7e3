"""Error types shared by every stage; each message says what was wrong and where."""

from __future__ import annotations

import json


class SearchAgentError(Exception):
    """Base class for errors a user can act on (the CLI prints them without a traceback)."""


class InputError(SearchAgentError):
    """Bad user input: names the file, line and field when there is one (``item``: the
    0-based position of the bad entry in a request's list, for the server's field path)."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None, item: int | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")
        self.path, self.line, self.field, self.item = path, line, field, item


def malformed_json(exc) -> str:
    """The message for a line that is not JSON (a ``json.JSONDecodeError``; its 'Invalid
    control character at' ends in 'at' already)."""
    return f"malformed JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})"


def json_lines(lines, path: str):
    """``(line number, record)`` for each non-blank line of a JSON Lines text (a ``str``,
    split at ``\\n`` only: ``str.splitlines`` also breaks at U+2028 and other characters a
    JSON string may hold raw) or of an open file; a bad line is an ``InputError`` naming
    ``path`` and the line."""
    for number, line in enumerate(lines.split("\n") if isinstance(lines, str) else lines, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(malformed_json(exc), path=path, line=number) from exc


def require_utf8(value: str, field: str, path: str | None = None,
                 line: int | None = None) -> str:
    """``value`` if it encodes as UTF-8, else an ``InputError`` naming where it came from
    (bytes that are not UTF-8 reach Python as lone surrogates, as does a JSON ``\\ud800``
    escape, and no tokenizer or database can encode them)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"not valid UTF-8 text (character {exc.start + 1} is an undecodable "
                         "byte or a lone surrogate)", path=path, line=line, field=field) from None
    return value


def require_text(value: object, field: str) -> str:
    """``value`` if it is non-blank text that encodes as UTF-8, else an ``InputError`` naming
    ``field``."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"empty {field}", field=field)
    return require_utf8(value, field)


class IndexFormatError(SearchAgentError):
    """A missing, incomplete or corrupted index folder."""


class BackendError(SearchAgentError):
    """A model backend (generator server, embedder) is unavailable or misbehaving."""


class BatchErrors(SearchAgentError):
    """Some requests of a batch failed: ``outcomes`` holds each one's result or error, in
    the batch's order, so one request's failure is not every request's."""

    def __init__(self, outcomes: list):
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        super().__init__(f"{len(failed)} of {len(outcomes)} requests failed; the first: "
                         f"{failed[0] if failed else '-'}")
        self.outcomes = outcomes


class GenerationRefused(InputError):
    """The generation server refused this one request (HTTP 400 / 413 / 422: a prompt over
    its context, say); it still serves others, so this is no outage."""


class ConflictError(InputError):
    """The request is valid but clashes with what already happened (e.g. a second feedback
    on one request id); the REST API answers 409."""
