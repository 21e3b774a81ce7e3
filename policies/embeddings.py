"""Question embeddings computed once and cached in an npz keyed by question hash."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from searchagent.errors import InputError
from searchagent.files import UNREADABLE, write_atomically


def question_key(question: str) -> str:
    return hashlib.sha1(question.strip().encode("utf-8")).hexdigest()


class EmbeddingCache:
    """``get(questions, encoder)`` returns embeddings, encoding (and saving) only new ones.

    The file holds two arrays, ``keys`` (sha1 hex of each question) and ``vectors``, plus
    ``model`` naming the encoder; a cache built by another encoder is refused.
    """

    def __init__(self, path: str | Path, model: str):
        self.path = Path(path)
        self.model = model
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                stored = str(data["model"])
                keys, vectors = data["keys"], data["vectors"]
        except UNREADABLE as exc:
            raise InputError(f"unreadable embedding cache: {exc}", path=str(self.path)) from exc
        if stored != self.model:
            raise InputError(f"embedding cache was built with {stored!r}, not {self.model!r}; "
                             "delete it or pass another --cache", path=str(self.path))
        self.vectors = {str(k): v for k, v in zip(keys, vectors)}

    def get(self, questions: Sequence[str], encoder, batch_size: int = 64) -> np.ndarray:
        keys = [question_key(q) for q in questions]
        missing = sorted({k: q for k, q in zip(keys, questions) if k not in self.vectors}.items())
        if missing:
            fresh = encoder.encode([q for _, q in missing], batch_size=batch_size,
                                   progress=len(missing) > 256)
            self.vectors.update({k: v for (k, _), v in zip(missing, fresh)})
            self.save()
        return np.stack([self.vectors[k] for k in keys]).astype(np.float32)

    def save(self) -> None:
        keys = sorted(self.vectors)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:    # a handle: np.savez appends no ".npz"
                np.savez(handle, model=np.array(self.model), keys=np.array(keys),
                         vectors=np.stack([self.vectors[k] for k in keys]).astype(np.float32))

        write_atomically(self.path, write)
