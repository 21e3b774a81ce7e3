"""``searchagent index add|delete|compact|recover``: change a built index in place.

Each command is one generation (``docs/index-updates.md``); it prints the committed
generation, or leaves the previous one whole when it fails or is killed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from searchagent.errors import InputError


def register_updates(actions) -> None:
    add = actions.add_parser("add", help="insert or replace passages (corpus JSONL[.gz])")
    add.add_argument("index_dir", help="an index folder")
    add.add_argument("corpus", help="JSONL with {id,title,text}; existing ids are replaced")
    add.set_defaults(func=run_add)

    delete = actions.add_parser("delete", help="delete passages by corpus id")
    delete.add_argument("index_dir", help="an index folder")
    delete.add_argument("--ids", nargs="+", required=True, metavar="FILE|ID",
                        help="ids, or files with one id per line")
    delete.set_defaults(func=run_delete)

    compact = actions.add_parser("compact", help="merge segments, drop tombstones, rebalance")
    compact.add_argument("index_dir", help="an index folder")
    compact.set_defaults(func=run_compact)

    recover = actions.add_parser("recover", help="roll back an update that died, even when "
                                 "its journal is damaged")
    recover.add_argument("index_dir", help="an index folder")
    recover.add_argument("--verify", choices=["size", "full"], default="full",
                         help="then check the committed files' sizes only, or sizes and "
                         "sha256 (default)")
    recover.set_defaults(func=run_recover)


def _report(result: dict) -> int:
    print(json.dumps(result))
    return 0


def run_add(args) -> int:
    from index.corpus import read_corpus
    from index.living import LivingIndex

    with LivingIndex(args.index_dir) as index:      # a bad line stops it before any change
        passages = list(read_corpus(args.corpus, windows=index.config.chunk_words > 0))
        return _report(index.add(passages))


def read_ids(values: list[str]) -> list[str]:
    """Each value is a file of ids (one per line) when such a file exists, else an id."""
    ids: list[str] = []
    for value in values:
        path = Path(value)
        if path.is_file():
            try:
                lines = path.read_text(encoding="utf-8-sig").splitlines()   # BOM: Notepad
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"unreadable id file: {exc}", path=value) from exc
            ids.extend(line.strip() for line in lines if line.strip())
        else:
            ids.append(value)
    if not ids:
        raise InputError("no ids given", field="ids")
    return ids


def run_delete(args) -> int:
    from index.living import LivingIndex

    ids = read_ids(args.ids)
    with LivingIndex(args.index_dir) as index:
        summary = index.delete(ids)
    _report(summary)
    if not summary["deleted_ids"]:       # a mistyped id file name is read as an id
        print(f"searchagent: none of the {len(ids)} id(s) is in the index, nothing deleted "
              "(an --ids value is read as a file of ids only when that file exists)",
              file=sys.stderr)
        return 1
    return 0


def run_compact(args) -> int:
    from index.living import LivingIndex

    with LivingIndex(args.index_dir) as index:   # no other process can read it meanwhile
        return _report(index.compact(drop_old=True))


def run_recover(args) -> int:
    """Roll back an unfinished update, then check the committed generation: recover cannot
    repair a committed file, so a damaged one is an error naming it."""
    from index.living import LivingIndex
    from index.manifest import verify_whole_index
    from searchagent.errors import IndexFormatError

    with LivingIndex(args.index_dir, discard_damaged_journal=True) as index:
        generation, recovered = index.generation, index.recovered
    done = (f"rolled back an unfinished update to committed generation {generation}"
            if recovered else "nothing to recover (no unfinished update)")
    try:
        verify_whole_index(args.index_dir, args.verify)
    except IndexFormatError as exc:
        raise IndexFormatError(f"{done}, but committed generation {generation} is damaged: "
                               f"{exc}; recover cannot repair it, rebuild the index") from None
    print(json.dumps({"generation": generation, "recovered": recovered, "intact": True,
                      "verified": args.verify}))
    print(f"searchagent: {done}; committed generation {generation} is intact "
          f"({args.verify} check)", file=sys.stderr)
    return 0
