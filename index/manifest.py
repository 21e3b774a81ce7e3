"""``manifest.json``: what an index folder holds, and the check that it still does.

It records the format version, corpus hash, counts, models, parameters, build time and a
size + sha256 for every file. ``verify_index`` fails with a clear error on any mismatch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from index.corpus import file_sha256
from searchagent.errors import IndexFormatError, InputError
from searchagent.files import process_alive, replaceable

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def file_table(folder: Path, append_only: tuple[str, ...] = ()) -> dict[str, dict]:
    """Size and sha256 of every file under ``folder`` except the manifest itself; files
    named in ``append_only`` (they grow under updates and check their own bytes, like
    SPANN's posting file) get only a minimum size."""
    table = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            rel = path.relative_to(folder).as_posix()
            table[rel] = ({"min_size": path.stat().st_size} if rel in append_only else
                          {"size": path.stat().st_size, "sha256": file_sha256(path)})
    return table


def write_manifest(folder: Path, info: dict, append_only: tuple[str, ...] = ()) -> dict:
    manifest = {"format_version": FORMAT_VERSION, **info,
                "files": file_table(folder, append_only)}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_json_in(folder: Path, name: str, what: str, article: str = "a") -> dict:
    """``folder/name`` parsed, or ``IndexFormatError`` saying the ``what`` folder is missing,
    lacks the file, or holds a corrupt one."""
    if not folder.is_dir():
        raise IndexFormatError(f"{what} folder not found: {folder}" + (
            " (that is a file; give the folder)" if folder.exists() else ""))
    path = folder / name
    if not path.is_file():
        raise IndexFormatError(f"not {article} {what} (no {name}): {folder}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"corrupt {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise IndexFormatError(f"corrupt {path}: expected a JSON object")
    return data


def built_index_config(folder: str | Path) -> dict:
    """The build's ``index`` settings (``INDEX_DIR/config.json``); {} where unreadable
    (what they are for, such as the window size, is then taken as absent)."""
    try:
        built = json.loads((Path(folder) / "config.json").read_text()).get("index", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return built if isinstance(built, dict) else {}


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    manifest = read_json_in(folder, MANIFEST, "index", article="an")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(f"{path}: format version {version!r}, this searchagent reads "
                               f"{FORMAT_VERSION}; rebuild the index")
    files, components = manifest.get("files"), manifest.get("components")
    if not (isinstance(files, dict) and all(isinstance(entry, dict) and ("size" in entry
            or "min_size" in entry or entry.get("mutable")) for entry in files.values())
            and isinstance(components, dict) and components
            and all(isinstance(c, dict) for c in components.values())):
        raise IndexFormatError(f"corrupt {path}: 'files' must map each file to its size and "
                               "'components' each built component to its record")
    return manifest


def check_files(folder: Path, files: dict[str, dict], mode: str = "full",
                what: str = "index", source: str = "manifest") -> None:
    """Every listed file exists with its recorded size (and sha256 when ``mode == 'full'``)."""
    if mode not in ("full", "size"):
        raise ValueError(f"verify must be 'full' or 'size', got {mode!r}")
    for rel, expected in files.items():
        path = folder / rel
        if not path.is_file():
            raise IndexFormatError(f"{what} file missing: {path}")
        if expected.get("mutable"):     # updated in place (the doc store of a living index)
            continue
        size = path.stat().st_size
        if "min_size" in expected:      # append-only; its owner checks what it holds
            if size < expected["min_size"]:
                raise IndexFormatError(f"{what} file {path} has {size} bytes, {source} says "
                                       f"at least {expected['min_size']} (truncated)")
            continue
        if size != expected["size"]:
            raise IndexFormatError(f"{what} file {path} has {size} bytes, {source} says "
                                   f"{expected['size']} (truncated or replaced)")
        if mode == "full" and file_sha256(path) != expected["sha256"]:
            raise IndexFormatError(f"{what} file {path} fails its sha256 check (corrupted)")


def verify_index(folder: str | Path, mode: str = "full") -> dict:
    """Read the manifest and check every file it lists."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    check_files(folder, manifest.get("files", {}), mode)
    return manifest


def verify_whole_index(folder: str | Path, mode: str = "full") -> dict:
    """``verify_index``, then what a component checks itself when opened: a SPANN posting
    file the manifest lists as append-only (the build region's sha256, each later
    posting's crc32). What ``index info`` and ``index recover`` report."""
    manifest = verify_index(folder, mode)
    index = manifest.get("components", {}).get("dense", {}).get("index", {})
    if index.get("kind") == "spann":
        from index.spann.opening import load_snapshot    # it imports this module

        load_snapshot(Path(folder) / "dense" / "spann", index.get("generation", 0), mode)
    return manifest


HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
_TEMP = re.compile(r"\.(tmp|old)-(\d+)(?:-\d+)?(?:-(.+))?")


def clean_stale_temps(out: Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID-TIME-HOST`` folders next to ``out`` left by builds of this
    host that died (kill -9, power loss), and ``.NAME.old-PID-...`` ones once ``out``
    exists again. Live builds and other hosts' folders are kept. Returns what was removed."""
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    prefix = f".{out.name}."
    for path in out.parent.iterdir():
        match = _TEMP.fullmatch(path.name[len(prefix) - 1:]) if path.name.startswith(prefix) \
            else None
        if not match or not path.is_dir():
            continue
        kind, pid, host = match.group(1), int(match.group(2)), match.group(3)
        if (host or HOST) != HOST or process_alive(pid) or (kind == "old" and not out.exists()):
            continue
        shutil.rmtree(path, ignore_errors=True)
        print(f"searchagent: removed {path}, left by a build (pid {pid}) that died",
              file=sys.stderr)
        removed.append(path)
    return removed


def temp_name(out: Path, kind: str = "tmp") -> Path:
    """A hidden sibling of ``out`` naming the builder (pid, start time, host)."""
    return out.parent / f".{out.name}.{kind}-{os.getpid()}-{int(time.time())}-{HOST}"


@contextmanager
def atomic_folder(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; rename it to ``out`` only if the block succeeds.
    Temporary folders of dead earlier builds are removed first. ``overwrite`` replaces an
    index or an empty folder, never anything else."""
    if not str(out).strip():
        raise InputError("the output folder is empty", field="out")
    out = Path(out).resolve()
    if out.exists() and not overwrite:
        raise InputError("output folder already exists (pass --overwrite to replace it)",
                         path=str(out))
    if not replaceable(out, MANIFEST):
        raise InputError("refusing to replace it: not an index folder (no manifest.json) "
                         "and not empty", path=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)
    tmp = temp_name(out)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = temp_name(out, "old")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
