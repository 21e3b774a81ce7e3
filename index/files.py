"""Durable file writes for index updates: temp name, fsync, rename, fsync the folder.

A file written this way is either absent or whole after a crash, and once the call
returns it survives power loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index.corpus import file_sha256
from searchagent.files import write_atomically


def write_durably(path: Path, save) -> None:
    """``save(handle)`` (a binary file) through ``write_atomically(..., durable=True)``:
    ``path`` is then either absent or whole after a crash."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            save(handle)

    try:
        write_atomically(path, write, durable=True)
    except OSError as exc:
        if exc.filename is not None:
            raise
        # a write through a handle names no file; numpy's short write has no errno either
        # ("132551 requested and 110560 written": the disk is full)
        reason = exc.strerror or f"{exc} (short write: is the disk full?)"
        raise OSError(exc.errno, reason, str(path)) from exc


def durable_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    write_durably(path, lambda handle: handle.write(data))


def durable_save(path: Path, array: np.ndarray) -> None:
    """``np.save`` through ``write_durably`` (streamed, no copy in memory)."""
    write_durably(path, lambda handle: np.save(handle, np.ascontiguousarray(array),
                                               allow_pickle=False))


def file_entry(path: Path) -> dict:
    """The manifest's record of an immutable file: size and sha256."""
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}
