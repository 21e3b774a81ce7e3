"""Temporary siblings for atomic file replacement.

``tempfile.mkstemp`` creates files readable by their owner only (0600), and a file
renamed into place keeps that: reports, run configs and policies written that way could
not be read by a colleague. A file opened by name gets the umask's usual permissions.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def sibling_temp(path: str | Path) -> Path:
    """A fresh name next to ``path`` (the same folder, so ``os.replace`` onto ``path`` is
    atomic) that keeps its suffix (``np.savez`` would otherwise append ``.npz``)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
                          f"{path.suffix}")
