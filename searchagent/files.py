"""Atomic file replacement: write a temporary sibling, then rename it onto the target.

The temporary file is opened by name, so it gets the umask's usual permissions
(``tempfile.mkstemp`` makes 0600 files, and a file renamed into place keeps them: reports,
run configs and policies written that way could not be read by a colleague).
"""

from __future__ import annotations

import os
import re
import shutil
import tokenize
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Callable

# what reading a damaged .npy / .npz / .json can raise (numpy parses an .npy header with
# ``tokenize`` and ``ast``: a one-byte change there is a TokenError or a SyntaxError)
UNREADABLE = (OSError, ValueError, KeyError, EOFError, TypeError, SyntaxError,
              tokenize.TokenError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError)


def sibling_temp(path: str | Path) -> Path:
    """A fresh name next to ``path`` (the same folder, so ``os.replace`` onto ``path`` is
    atomic) that keeps its suffix (``np.savez`` would otherwise append ``.npz``)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
                          f"{path.suffix}")


def replaceable(folder: str | Path, marker: str,
                leftovers: re.Pattern | None = None) -> bool:
    """Whether writing ``folder`` loses nothing: it is missing, holds ``marker`` (the file
    that says it is what the writer makes: an index's manifest, a policy), or holds only
    files whose names match ``leftovers`` (what a writer killed before its marker leaves)."""
    folder = Path(folder)
    if not folder.exists() or folder.is_dir() and (folder / marker).is_file():
        return True
    return folder.is_dir() and all(leftovers is not None and leftovers.fullmatch(path.name)
                                   for path in folder.iterdir())


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(folder: str | Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_durably(folder: str | Path, paths: list[Path]) -> None:
    """Delete ``paths`` (files or folders inside ``folder``) in the order given, then make
    the removals durable."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if paths:
        fsync_dir(folder)


def write_atomically(path: str | Path, write: Callable[[str], object],
                     durable: bool = False) -> None:
    """``write(tmp)`` to a fresh sibling of ``path``, then rename it onto ``path``: readers
    see the old file or the whole new one, and a failure leaves no temporary behind. With
    ``durable``, the file is fsynced before the rename and the folder after it, so the new
    file also survives a power loss once this returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling_temp(path)
    try:
        write(str(tmp))
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)
