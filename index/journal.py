"""The write-ahead side of index updates: one writer at a time, a journal, and rollback.

``journal.json`` is written (fsynced) before an update touches anything and removed after
the manifest's rename has committed the new generation. Finding it on open means an update
died part way: every component is rolled back to the manifest's generation, so nothing
half-applied stays and nothing committed is lost.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
from pathlib import Path

from index.dense_live import dense_files
from index.files import durable_write
from index.living_manifest import SPANN
from index.manifest import read_manifest
from searchagent.errors import IndexFormatError
from searchagent.files import fsync_dir, remove_durably

JOURNAL = "journal.json"
LOCK = ".update.lock"
FAULT_ENV = "SEARCHAGENT_FAULT"   # test hook: kill -9 this process at the named stage
# what a writer killed mid-write leaves: ``searchagent.files.sibling_temp`` files
# (``.df-3.tmp-<pid>-<hex>.npy``) and BM25's segment folders (``.seg-3.tmp-<pid>``)
_TEMPORARY = re.compile(r"\..+\.tmp-\d+(-[0-9a-f]+)?(\.[A-Za-z0-9]+)?")


def fault_point(stage: str) -> None:
    """Die as ``kill -9`` would when ``$SEARCHAGENT_FAULT`` names this stage (crash tests)."""
    if os.environ.get(FAULT_ENV) == stage:
        os.kill(os.getpid(), signal.SIGKILL)


class WriterLock:
    """An exclusive ``flock`` on ``INDEX_DIR/.update.lock``; released by the OS on death."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise IndexFormatError(f"another process (pid {holder}) is updating {folder}; "
                                   "one update runs at a time") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_journal(folder: Path, body: dict) -> None:
    durable_write(folder / JOURNAL,
                  (json.dumps({**body, "sha256": _digest(body)}, indent=2) + "\n").encode())


def read_journal(folder: Path) -> dict | None:
    """The journal of an update that died, or None; a damaged one is an error."""
    path = folder / JOURNAL
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        digest = data.pop("sha256")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError,
            TypeError) as exc:
        raise IndexFormatError(
            f"damaged journal {path} ({exc.__class__.__name__}: {exc}): an update of this "
            "index died and its record cannot be read. The index is intact at its last "
            f"committed generation; `searchagent index recover {folder}` rolls the "
            "unfinished update back") from exc
    if digest != _digest(data):
        raise IndexFormatError(
            f"damaged journal {path} (checksum mismatch): an update of this index died and "
            "its record cannot be trusted. The index is intact at its last committed "
            f"generation; `searchagent index recover {folder}` rolls the unfinished update "
            "back")
    return data


def clear_journal(folder: Path) -> None:
    path = folder / JOURNAL
    if path.exists():
        path.unlink()
        fsync_dir(folder)


def remove_temporaries(*folders: Path) -> list[str]:
    """Delete the temporary files and folders a killed writer left in ``folders`` (only
    while holding the ``WriterLock``: no live writer has any then); return their paths."""
    removed = []
    for folder in folders:
        doomed = [path for path in (folder.iterdir() if folder.is_dir() else ())
                  if _TEMPORARY.fullmatch(path.name)]
        remove_durably(folder, doomed)
        removed += sorted(str(path) for path in doomed)
    return removed


def recover(folder: Path, docstore, discard_damaged_journal: bool = False) -> dict | None:
    """Roll back an update that died (its journal is still here) and drop the temporary
    files of any writer killed mid-write (SPANN's own go with its rollback); return the
    journal with ``rolled_back_to``, or None when no update was unfinished. Only while
    holding the ``WriterLock``."""
    remove_temporaries(folder, folder / "bm25", folder / "dense")
    try:
        journal = read_journal(folder)
    except Exception:
        if not discard_damaged_journal:
            raise
        journal = {"damaged": True}
    if journal is None:
        return None
    committed = int(read_manifest(folder).get("generation", 0))
    rollback(folder, docstore, committed)
    return {**journal, "rolled_back_to": committed}


def rollback(folder: Path, docstore, committed: int) -> None:
    """Bring every component of ``folder`` back to generation ``committed``."""
    docstore.rollback(committed)
    if (folder / "bm25").is_dir():
        from retrievers.bm25_live import rollback as bm25_rollback

        bm25_rollback(folder / "bm25", committed)
    if (folder / SPANN).is_dir():
        from index.spann.lire import rollback as spann_rollback

        spann_rollback(folder / SPANN, committed)
    for path, (_, made) in dense_files(folder).items():
        if made > committed:
            path.unlink()
    fsync_dir(folder)
    clear_journal(folder)
