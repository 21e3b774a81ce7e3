"""What an update writes into, and reads from, an index's manifest (``index.living``):
the summary it reports, which files a generation replaces, the committed generation."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from index.manifest import read_manifest

SPANN = "dense/spann"


def update_summary(manifest: dict, op: str, rows_added: int = 0, rows_deleted: int = 0,
                   seconds: float = 0.0) -> dict:
    """What an update reports: the generation ``manifest`` commits, its counts, the change."""
    counts = manifest["counts"]
    return {"generation": int(manifest.get("generation", 0)), "op": op,
            "passages": counts["passages"], "deleted_total": counts.get("deleted", 0),
            "rows_added": rows_added, "rows_deleted": rows_deleted, "seconds": seconds}


def committed_generation(folder: Path, before: int) -> int:
    """The generation ``manifest.json`` commits now (``before`` if it cannot be read)."""
    try:
        return int(read_manifest(folder).get("generation", 0))
    except Exception:
        return before


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def replaced_each_generation(name: str) -> bool:
    """Files a new generation replaces in the manifest's table (re-listed by their owner)."""
    return name.startswith(("bm25/", SPANN + "/", "dense/deleted-"))


def without(entry: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in entry.items() if k not in keys}


def without_files(summary: dict) -> dict:
    """A component's summary as the manifest keeps it (file lists live in ``files``)."""
    return {k: v for k, v in summary.items() if k not in ("files", "written")}


def replace_files(files: dict, prefix: str | tuple[str, ...], new: dict) -> dict:
    """``files`` with the entries under ``prefix`` (or any of several) replaced by ``new``
    (when there is one)."""
    if not new:
        return files
    return {**{name: entry for name, entry in files.items() if not name.startswith(prefix)},
            **new}


def merge_files(files: dict, prefix: str, new: dict) -> dict:
    """``files`` plus ``new`` (paths relative to ``prefix``)."""
    return {**files, **{prefix + rel: entry for rel, entry in new.items()}}
