"""``LiveSearcher``: a ``Searcher`` that follows its index through updates (the server's).

It holds the index's single writer (``LivingIndex``) and the one writable doc store that
readers and the writer share. Each search runs on the generation current when it starts
(``using()`` pins it); after an update commits, the next search sees the new one. A
replaced searcher is closed as soon as no search pins it (at once when none did); until
then its generation stays leased (``index/leases.py``): updates append to the SPANN
posting file instead of reusing space, and a compaction keeps the text of passages it
still sees. Every ``server.compact_every`` updates the update that reaches it also
compacts (``compact(drop_old=True)``): otherwise each update's files (BM25 segments,
document frequencies, leases) stay, and the next update reads them all, until the server
stops and ``index compact`` runs.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from index.manifest import verify_index
from retrievers.docstore_live import LiveDocStore
from retrievers.searcher import Searcher
from searchagent.config import Config
from searchagent.errors import SearchAgentError
from searchagent.types import Passage, search_with_stats

SHARED = ("encoder",)     # loaded pieces that do not change between generations


class LiveSearcher:
    def __init__(self, folder: str | Path, config: Config | None = None):
        from index.living import LivingIndex

        self.folder, self.config = Path(folder), config or Config()
        verify_index(self.folder, self.config.index.verify)   # before anything is opened
        self.docstore = LiveDocStore(self.folder / "docs.duckdb")
        self.writer = LivingIndex(self.folder, docstore=self.docstore)
        self.current = Searcher(self.folder, self.config, verify="size",
                                docstore=self.docstore)
        self._update_lock = threading.Lock()
        self._pins_lock = threading.Lock()
        self._pins: dict[int, int] = {}       # id(searcher) -> searches running on it
        self._retired: list[Searcher] = []    # replaced, still pinned
        self._compact_from = 0                # no periodic compaction before this generation

    def __getattr__(self, name: str):
        """Everything else (bm25, dense, stored_vectors, manifest...) of the current
        generation's searcher."""
        return getattr(self.current, name)

    @contextmanager
    def using(self) -> Iterator[Searcher]:
        """The current generation's searcher, kept open until the block ends: a search
        that reads several components (the funnel) reads them all from one generation."""
        with self._pins_lock:
            searcher = self.current
            self._pins[id(searcher)] = self._pins.get(id(searcher), 0) + 1
        try:
            yield searcher
        finally:
            with self._pins_lock:
                self._pins[id(searcher)] -= 1
                if not self._pins[id(searcher)]:
                    del self._pins[id(searcher)]
            self._close_retired()

    def search(self, query: str, k: int = 10, mode: str | None = None):
        with self.using() as searcher:
            return searcher.search(query, k, mode)

    def retriever(self, mode: str | None = None, windows: bool = True) -> "FollowingRetriever":
        """A retriever that searches the generation current at each call: strategies keep
        theirs for the server's lifetime (``windows``: as ``Searcher.retriever``)."""
        self.current.retriever(mode)          # an unknown mode fails now, not per request
        return FollowingRetriever(self, mode, windows)

    def add(self, passages: Iterable[Passage]) -> dict:
        return self._update(lambda: self.writer.add(passages))

    def delete(self, ids: Iterable[str]) -> dict:
        return self._update(lambda: self.writer.delete(ids))

    def compact(self) -> dict:
        return self._update(self.writer.compact)

    def counts(self) -> dict:
        current = self.current
        counts = current.manifest["counts"]
        return {"generation": current.generation, "live": counts["passages"],
                "deleted": counts.get("deleted", 0)}

    def _update(self, change) -> dict:
        with self._update_lock:
            encoder = self.current.__dict__.get("encoder")
            if encoder is not None:
                self.writer.use_encoder(encoder)        # embed with the loaded model
            result = change()
            every = self.config.server.compact_every
            if every and self.writer.updates_since_compaction() >= every and \
                    self.writer.generation >= self._compact_from:
                result = {**result, "compacted": self._compact(every)}
            fresh = Searcher(self.folder, self.config, verify="size", docstore=self.docstore)
            for name in SHARED:
                if name in self.current.__dict__:
                    fresh.__dict__[name] = self.current.__dict__[name]
            if "vector_index" in self.current.__dict__:     # opened now, not mid-search
                fresh.open_vector_index_after(self.current)
            with self._pins_lock:
                self._retired.append(self.current)
                self.current = fresh
        self._close_retired()
        return result

    def _compact(self, every: int) -> dict:
        """The periodic compaction, after an update that committed: a failure (a full
        disk) is reported with that update, rolled back, and tried again ``every``
        updates later; it never stops the update from being served."""
        try:
            done = self.writer.compact(drop_old=True)
        except (SearchAgentError, OSError) as exc:
            self._compact_from = self.writer.generation + every
            return {"error": str(exc), "retry_at_generation": self._compact_from}
        return {"generation": done["generation"], "seconds": done["seconds"],
                "files_removed": len(done.get("removed", []))}

    def _close_retired(self) -> None:
        """Close the replaced searchers no search pins any more (their vector index and
        lease; not the shared doc store), so their memory and leases go at once."""
        with self._pins_lock:
            idle = [s for s in self._retired if id(s) not in self._pins]
            self._retired = [s for s in self._retired if id(s) in self._pins]
        for searcher in idle:
            searcher.close()

    def close(self) -> None:
        for searcher in self._retired:
            searcher.close()
        self.current.close()
        self.writer.close()
        self.docstore.close()


class FollowingRetriever:
    """Retriever protocol over ``live.current.retriever(mode)``, looked up per search."""

    def __init__(self, live: LiveSearcher, mode: str | None, windows: bool = True):
        self.live, self.mode, self.windows = live, mode, windows

    def search(self, query: str, k: int, *, budget: dict | None = None):
        with self.live.using() as searcher:
            return searcher.retriever(self.mode, self.windows).search(query, k, budget=budget)

    def search_with_stats(self, query: str, k: int, *, budget: dict | None = None,
                          exclude=()):
        """The current retriever's own stats (a collapse's ``windows_dropped``) where it
        has them; else its hits, ``exclude`` rows left out."""
        with self.live.using() as searcher:
            return search_with_stats(searcher.retriever(self.mode, self.windows), query, k,
                                     budget=budget, exclude=exclude)
