"""Reader leases: which generations of a SPANN folder some reader, in any process, still uses.

A reader (``SpannIndex``) holds a shared ``flock`` on ``leases/gen-N.lock`` while it has
generation N open. An updater may overwrite blocks that the newest committed generation no
longer reads only when no lease below that generation is held (``held_below``); it removes
the older generations' files first, so a reader that takes its lease after the check finds
its generation gone and opens the newest (``SpannIndex.open`` retries). Either the reader's
lease comes first and the updater sees it, or the files are gone before the reader reads
them: no reader ever maps bytes that are being reused.

A lease file is removed only under an exclusive lock; a reader whose locked file was removed
meanwhile (a different inode at the path) takes a fresh one. In a folder the process may
not write (read-only media) no lease is taken: no updater can write there either.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

LEASES = "leases"
_LEASE_FILE = re.compile(r"gen-(\d+)\.lock")


def lease_path(folder: Path, generation: int) -> Path:
    return Path(folder) / LEASES / f"gen-{int(generation)}.lock"


class Lease:
    """A shared lock on one generation, held until ``release`` (or garbage collection)."""

    def __init__(self, folder: str | Path, generation: int):
        self.generation, self.fd = int(generation), -1
        path = lease_path(Path(folder), generation)
        try:
            path.parent.mkdir(exist_ok=True)
            while self.fd < 0:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_SH)
                try:
                    current = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    current = False
                if current:
                    self.fd = fd
                else:                       # removed by an updater after we opened it
                    os.close(fd)
        except OSError:                     # read-only folder: nothing can reuse its space
            self.fd = -1

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)               # closing drops the lock
            self.fd = -1

    __del__ = release


def held_below(folder: str | Path, generation: int) -> list[int]:
    """Generations below ``generation`` whose lease some reader holds; the lease files of
    the others are removed."""
    held = []
    for path in sorted((Path(folder) / LEASES).glob("gen-*.lock")):
        match = _LEASE_FILE.fullmatch(path.name)
        if match is None or int(match.group(1)) >= generation:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.append(int(match.group(1)))
        else:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return held
