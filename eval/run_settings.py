"""A run's recorded settings: ``runs/<run>/config.json`` and the database's copy.

A resumed run must be the same experiment: settings that change a row's outcome are
compared with the record and a difference is refused (or, with ``--force``, kept in
``superseded``).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from searchagent.errors import InputError
from searchagent.files import write_atomically

# settings that do not change a row's outcome: a resumed run may differ in them (the
# database's own path: a database copied or moved resumes its runs)
UNRECORDED = ("config.generator.threads", "config.server", "db")
UNION = ("systems", "policies")     # a resumed run may add systems: compared where shared


def record_run(store, db, run: str, folder: Path, settings: dict, force: bool) -> None:
    """Check and record ``run``'s settings in ``folder/config.json`` and in the database;
    the database's record decides, so a run resumed from another working directory or
    ``--runs-dir`` is checked against the settings its rows were made with. A run
    ``eval import-arms`` wrote is refused: its rows come from another system."""
    if run in store.imported_runs():
        raise InputError(f"run {run!r} holds arm outcomes imported by eval import-arms; "
                         "pick a new --run name", path=str(db), field="run")
    store.record_settings(run, write_run_config(folder, settings, force,
                                                store.settings_of(run)))


def absolute_specs(specs: list[str], cwd: str) -> list[str]:
    """``--dataset`` specs with their paths made absolute (from ``cwd``), so one file named
    relatively and absolutely, or from another directory, is the same setting."""
    from eval.loaders import parse_spec

    out = []
    for spec in specs:
        parsed = parse_spec(spec)
        fmt = f"{parsed.fmt}:" if parsed.fmt else ""
        out.append(f"{parsed.name}:{fmt}{(Path(cwd) / parsed.path).resolve()}")
    return out


def differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two settings dicts."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [prefix]
    return [key for name in sorted(set(old) | set(new))
            for key in differences(old.get(name), new.get(name),
                                   f"{prefix}.{name}" if prefix else name)]


def write_run_config(folder: Path, settings: dict, force: bool,
                     recorded: dict | None = None) -> dict:
    """Record the run's settings and return the record. A run resumed with settings other
    than ``recorded`` (else its config.json's) is refused, naming them, unless ``force``:
    then the old settings stay in ``superseded`` (rows already written keep the outcomes
    they were computed with). The systems are the union."""
    path = folder / "config.json"
    superseded: list[dict] = []
    old = recorded if recorded is not None else (
        json.loads(path.read_text()) if path.exists() else None)
    settings = {**settings, "datasets": absolute_specs(settings["datasets"], os.getcwd())}
    if old is not None and "datasets" in old:
        old = {**old, "datasets": absolute_specs(old["datasets"], old.get("cwd") or ".")}
    if old is not None:
        shared = set(old.get("policies", {})) & set(settings.get("policies", {}))
        changed = [key for key in differences(
                   {k: v for k, v in old.items() if k in settings and k not in UNION},
                   {k: v for k, v in settings.items() if k not in UNION})
                   + differences({k: old["policies"][k] for k in shared},
                                 {k: settings["policies"][k] for k in shared}, "policies")
                   if not key.startswith(UNRECORDED)]
        if changed and not force:
            where = "its database" if recorded is not None else str(path)
            raise InputError(f"run already exists with different {', '.join(changed)} (as "
                             f"recorded in {where}); pick a new --run name or pass --force",
                             path=str(path))
        superseded = old.get("superseded", [])
        if changed:
            print(f"searchagent: --force: {', '.join(changed)} changed; the rows already "
                  f"written keep the old settings (in {path}, 'superseded')", file=sys.stderr)
            superseded = [*superseded, {k: v for k, v in old.items() if k != "superseded"}]
        settings = {**settings, "systems": list(dict.fromkeys(
            [*old.get("systems", []), *settings["systems"]])),
            **({"policies": {**old.get("policies", {}), **settings["policies"]}}
               if "policies" in settings else {})}
    folder.mkdir(parents=True, exist_ok=True)
    record = {**settings, "command": shlex.join(["searchagent", *sys.argv[1:]]),
              "cwd": os.getcwd(), **({"superseded": superseded} if superseded else {})}
    write_atomically(path, lambda tmp: Path(tmp).write_text(
        json.dumps(record, indent=2, sort_keys=True)))
    return record
