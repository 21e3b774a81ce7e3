"""Sentence-transformers text encoder producing normalized float32 vectors."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from searchagent.models import embedder_path


def passage_text(title: str, text: str) -> str:
    """How a passage is shown to the embedder."""
    return f"{title}\n{text}" if title else text


class Encoder:
    """Loads a local sentence-transformers model once; CUDA when torch sees a GPU."""

    def __init__(self, model: str = "default", device: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        self.path = embedder_path(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(self.path, device=self.device)
        dimension = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def encode(self, texts: Sequence[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        vectors = self.model.encode(list(texts), batch_size=batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)
