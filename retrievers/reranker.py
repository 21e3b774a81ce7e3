"""Optional cross-encoder re-ranker (sentence-transformers ``CrossEncoder``).

None is bundled: pass a local cross-encoder folder (e.g. an ms-marco MiniLM model) as
``retrieval.reranker``; models are never downloaded.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from searchagent.errors import BackendError
from searchagent.types import Hit


class CrossEncoderReranker:
    """Scores (query, title + text) pairs jointly and sorts hits by that score."""

    def __init__(self, model_path: str, device: str | None = None, batch_size: int = 32,
                 max_length: int = 256):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if not Path(model_path).is_dir():
            raise BackendError(f"cross-encoder folder not found: {model_path} (models are "
                               "never downloaded; pass a local folder)")
        import torch
        from sentence_transformers import CrossEncoder

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = CrossEncoder(model_path, device=device, max_length=max_length)
        self.batch_size = batch_size

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        if not hits:
            return []
        pairs = [(query, f"{hit.title}\n{hit.text}") for hit in hits]
        scores = self.model.predict(pairs, batch_size=self.batch_size,
                                    show_progress_bar=False)
        rescored = [replace(hit, score=float(s)) for hit, s in zip(hits, scores)]
        return sorted(rescored, key=lambda hit: -hit.score)
