"""``LiveSearcher``: a ``Searcher`` that follows its index through updates (the server's).

It holds the index's single writer (``LivingIndex``) and the one writable doc store that
readers and the writer share. Each search runs on the generation current when it starts;
after an update commits, the next search sees the new one. Replaced searchers are closed
once no search can still be using them (after ``retire_after_s``); until then their
generation stays leased (``index/leases.py``): updates append to the SPANN posting file
instead of reusing space, and a compaction keeps the text of passages they still see.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterable

from index.manifest import verify_index
from retrievers.docstore_live import LiveDocStore
from retrievers.searcher import Searcher
from searchagent.config import Config
from searchagent.types import Passage, search_with_stats

SHARED = ("encoder",)     # loaded pieces that do not change between generations


class LiveSearcher:
    def __init__(self, folder: str | Path, config: Config | None = None,
                 retire_after_s: float = 300.0):
        from index.living import LivingIndex

        self.folder, self.config = Path(folder), config or Config()
        verify_index(self.folder, self.config.index.verify)   # before anything is opened
        self.docstore = LiveDocStore(self.folder / "docs.duckdb")
        self.writer = LivingIndex(self.folder, docstore=self.docstore)
        self.current = Searcher(self.folder, self.config, verify="size",
                                docstore=self.docstore)
        self.retire_after_s = retire_after_s
        self._update_lock = threading.Lock()
        self._retired: list[tuple[float, Searcher]] = []

    def __getattr__(self, name: str):
        """Everything else (bm25, dense, stored_vectors, manifest...) of the current
        generation's searcher."""
        return getattr(self.current, name)

    def search(self, query: str, k: int = 10, mode: str | None = None):
        return self.current.search(query, k, mode)

    def retriever(self, mode: str | None = None) -> "FollowingRetriever":
        """A retriever that searches the generation current at each call: strategies keep
        theirs for the server's lifetime."""
        self.current.retriever(mode)          # an unknown mode fails now, not per request
        return FollowingRetriever(self, mode)

    def add(self, passages: Iterable[Passage]) -> dict:
        return self._update(lambda: self.writer.add(passages))

    def delete(self, ids: Iterable[str]) -> dict:
        return self._update(lambda: self.writer.delete(ids))

    def compact(self) -> dict:
        return self._update(self.writer.compact)

    def counts(self) -> dict:
        counts = self.current.manifest["counts"]
        return {"generation": self.current.generation, "live": counts["passages"],
                "deleted": counts.get("deleted", 0)}

    def _update(self, change) -> dict:
        with self._update_lock:
            self._close_retired()      # first: their leases would keep the update from
            encoder = self.current.__dict__.get("encoder")        # reusing disk space
            if encoder is not None:
                self.writer.use_encoder(encoder)        # embed with the loaded model
            result = change()
            fresh = Searcher(self.folder, self.config, verify="size", docstore=self.docstore)
            for name in SHARED:
                if name in self.current.__dict__:
                    fresh.__dict__[name] = self.current.__dict__[name]
            if "vector_index" in self.current.__dict__:
                fresh.vector_index             # opened (and leased) now, not mid-search later
            old, self.current = self.current, fresh
            self._retired.append((time.monotonic(), old))
            return result

    def _close_retired(self) -> None:
        now, keep = time.monotonic(), []
        for retired_at, searcher in self._retired:
            if now - retired_at > self.retire_after_s:
                searcher.close()                # its vector index files; not the doc store
            else:
                keep.append((retired_at, searcher))
        self._retired = keep

    def close(self) -> None:
        for _, searcher in self._retired:
            searcher.close()
        self.current.close()
        self.writer.close()
        self.docstore.close()


class FollowingRetriever:
    """Retriever protocol over ``live.current.retriever(mode)``, looked up per search."""

    def __init__(self, live: LiveSearcher, mode: str | None):
        self.live, self.mode = live, mode

    def search(self, query: str, k: int, *, budget: dict | None = None):
        return self.live.current.retriever(self.mode).search(query, k, budget=budget)

    def search_with_stats(self, query: str, k: int, *, budget: dict | None = None,
                          exclude=()):
        """The current retriever's own stats (a collapse's ``windows_dropped``) where it
        has them; else its hits, ``exclude`` rows left out."""
        return search_with_stats(self.live.current.retriever(self.mode), query, k,
                                 budget=budget, exclude=exclude)
