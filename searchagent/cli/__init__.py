"""The ``searchagent`` console script: one subcommand group per module in this package.

Each module ``searchagent/cli/<name>_cmd.py`` exposes ``register(subparsers)``; every
parser sets ``func(args) -> int``. User errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from searchagent import __version__
from searchagent.errors import SearchAgentError

COMMAND_MODULES = ("index", "search", "ask", "eval", "policy", "serve", "demo")
DESCRIPTION = ("An adaptive retrieval-augmented search agent: build and search indexes, "
               "answer questions, evaluate strategies, train the policy that picks one per "
               "question, and serve it over REST.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="searchagent", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"searchagent {__version__}")
    parser.add_argument("--config", help="config file (TOML or JSON); env SEARCHAGENT__S__K "
                        "and flags override it")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        module_name = f"searchagent.cli.{name}_cmd"
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).register(sub)
    _accept_config_anywhere(parser)
    return parser


def _accept_config_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let every subcommand take ``--config`` too (``searchagent serve IDX --config c.toml``);
    given there, it overrides one given before the subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("--config" in a.option_strings for a in child._actions):
                    child.add_argument("--config", default=argparse.SUPPRESS,
                                       help="config file (TOML or JSON), as before the "
                                       "subcommand")
                _accept_config_anywhere(child)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")   # no bar per model load
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SearchAgentError as exc:
        print(f"searchagent: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:                 # unwritable output, a file where a folder goes...
        print(f"searchagent: error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_database_error(exc):
            raise
        print(f"searchagent: error: DuckDB: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("searchagent: interrupted", file=sys.stderr)
        return 130


def os_error_text(exc: OSError) -> str:
    """``exc`` as one line: what failed and on which path(s)."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or str(exc)
    return f"{reason}: {paths}" if paths else reason


def is_database_error(exc: BaseException) -> bool:
    """A DuckDB error (a database file that is not one, locked, or unwritable)."""
    duckdb = sys.modules.get("duckdb")
    return duckdb is not None and isinstance(exc, duckdb.Error)
