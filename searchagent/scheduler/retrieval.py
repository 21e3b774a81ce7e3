"""Retrieval on the scheduler's retrieval executor, with the non-stall best-so-far cut.

``NonStallRetriever`` runs its component retrievers (BM25 and dense for hybrid; or one
whole retriever such as the multi-hop funnel) on the retrieval executor and waits until
they finish -- or until the retrieval's cancel event fires (the non-stall rule, the
request's own cancel, or its deadline). The cancel event reaches the components through
``budget["cancel"]``: the SPANN index and the funnel honour it and return their own
best-so-far. Components that cannot stop are cut from the outside: the ones that
finished are fused and returned once they hold k passages (a top-k cut); until then the
cut waits for more components, so a cut never returns fewer than k passages merely
because it was cut (a request deadline or cancel may).
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, wait
from typing import TYPE_CHECKING, Any, Collection

from retrievers.hybrid import rrf_fuse
from retrievers.windows import FIRST_FETCH, collapse, top_up
from searchagent.errors import InputError, require_text
from searchagent.scheduler.session import SessionCancelled
from searchagent.types import Hit, search_with_stats

if TYPE_CHECKING:
    from searchagent.scheduler.scheduler import Scheduler

POLL_S = 0.005
HYBRID_DEPTH = 50
RETRIEVER_ATTRIBUTES = ("retriever", "funnel")
SNIPPET_CHARS = 240          # characters of each passage a trace step shows


def _enough(futures: dict, pending: set, k: int) -> bool:
    """Top-k cut: the finished components already hold k distinct passages."""
    ids: set[str] = set()
    for future in futures:
        if future not in pending and future.exception() is None:
            ids.update(hit.id for hit in future.result()[0])
    return len(ids) >= k


class NonStallRetriever:
    """Retriever protocol (plus ``search_with_stats``) over named components."""

    def __init__(self, scheduler: "Scheduler", parts: dict[str, Any], rrf_k: int = 60,
                 depth: int = HYBRID_DEPTH, windows_per_doc: int = 0):
        self.scheduler, self.parts, self.rrf_k, self.depth = scheduler, parts, rrf_k, depth
        self.windows_per_doc = windows_per_doc   # fused parts: at most this many of a doc

    def search(self, query: str, k: int, *, budget: dict | None = None) -> list[Hit]:
        return self.search_with_stats(query, k, budget=budget)[0]

    def search_with_stats(self, query: str, k: int, *, budget: dict | None = None,
                          exclude: Collection[int] = ()) -> tuple[list[Hit], dict]:
        session = self.scheduler.session_for()
        session.check()
        budget = dict(budget or {})
        outer_cancel = budget.get("cancel")
        deadline = min((d for d in (budget.get("deadline"), session.deadline) if d is not None),
                       default=None)
        handle = self.scheduler.retrieval_begin(session)
        sub_budget = {**budget, "cancel": handle.cancel, "deadline": deadline}
        depth = k if len(self.parts) == 1 else max(k * FIRST_FETCH if self.windows_per_doc
                                                   else k, self.depth)
        start = time.monotonic()
        futures = {self.scheduler.retrieval_pool.submit(search_with_stats, part, query, depth,
                                                        budget=sub_budget,
                                                        exclude=exclude): name
                   for name, part in self.parts.items()}
        cut_outside = False
        try:
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                if not pending:
                    break
                hard_stop = session.cancel.is_set() or (
                    deadline is not None and time.monotonic() >= deadline)
                if hard_stop or (outer_cancel is not None and outer_cancel.is_set()):
                    handle.cancel.set()
                if hard_stop or (handle.cancel.is_set() and _enough(futures, pending, k)):
                    cut_outside = True
                    break
        finally:
            seconds = time.monotonic() - start
            partial = cut_outside or handle.cancel.is_set()
            self.scheduler.retrieval_end(handle, seconds, partial)
        if session.cancel.is_set():
            raise SessionCancelled(f"session {session.id} was cancelled during retrieval")
        finished = [(futures[f], *f.result()) for f in futures if f.done()]
        if len(self.parts) == 1:
            hits, stats = (finished[0][1], dict(finished[0][2])) if finished else ([], {})
            hits = hits[:k]
        else:
            rankings = [h for _, h, _ in finished]
            stats = {}
            if self.windows_per_doc:   # windows fused, then collapsed: as the CLI's first round
                fused = rrf_fuse(rankings, k * FIRST_FETCH, self.rrf_k)
                hits, stats["windows_dropped"] = top_up(
                    fused, collapse(fused, self.windows_per_doc), k)
            else:
                hits = rrf_fuse(rankings, k, self.rrf_k)
        partial = partial or bool(stats.get("partial"))
        stats.update(partial=partial, nonstall_cut=handle.cut,
                     parts=[name for name, _, _ in finished],
                     scheduled_seconds=round(seconds, 6))
        session.retrievals += 1
        session.retrieve_s += seconds
        session.partial_retrievals += int(partial)
        session.record("retrieve", query=query[:300], k=k, seconds=round(seconds, 4),
                       partial=partial, nonstall_cut=handle.cut, parts=stats["parts"],
                       hits=[h.id for h in hits], passages=[_shown(h) for h in hits])
        return hits, stats


def _shown(hit: Hit) -> dict:
    """A retrieved passage as a trace shows it: title, score and the text's opening."""
    text = " ".join((getattr(hit, "text", "") or "").split())
    return {"id": hit.id, "title": hit.title, "score": round(float(hit.score), 6),
            "snippet": text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "")}


def schedule_strategy(strategy: Any, scheduler: "Scheduler") -> Any:
    """Route a built strategy's retriever (``retriever`` or ``funnel`` attribute) through
    the scheduler, unless it already goes through it. Returns the strategy."""
    for attribute in RETRIEVER_ATTRIBUTES:
        inner = getattr(strategy, attribute, None)
        if inner is not None and not isinstance(inner, NonStallRetriever):
            setattr(strategy, attribute, NonStallRetriever(scheduler, {attribute: inner}))
    return strategy


class ScheduledSearcher:
    """A ``Searcher`` stand-in whose ``retriever()``/``search()`` go through the scheduler;
    everything else (doc store, encoder, components) is the wrapped searcher's."""

    def __init__(self, searcher: Any, scheduler: "Scheduler"):
        self._searcher, self._scheduler = searcher, scheduler

    def __getattr__(self, name: str):
        return getattr(self._searcher, name)

    def retriever(self, mode: str | None = None) -> NonStallRetriever:
        searcher = self._searcher
        mode = mode or searcher.config.retrieval.mode
        if mode in ("bm25", "dense"):
            return NonStallRetriever(self._scheduler, {mode: searcher.retriever(mode)})
        if mode == "hybrid":       # every window of each part: collapsed after the fusion
            names = [name for name in ("bm25", "dense") if name in searcher.components]
            if len(names) == 1:    # hybrid of one retriever: that retriever
                return self.retriever(names[0])
            parts = {name: searcher.retriever(name, windows=False) for name in names}
            return NonStallRetriever(self._scheduler, parts, searcher.config.retrieval.rrf_k,
                                     windows_per_doc=searcher.windows_per_doc)
        return searcher.retriever(mode)  # unknown modes raise the searcher's own error

    def search(self, query: str, k: int = 10, mode: str | None = None, *,
               budget: dict | None = None) -> list[Hit]:
        require_text(query, "query")
        if k <= 0:
            raise InputError(f"k must be positive, got {k}", field="k")
        return self.retriever(mode).search(query, k, budget=budget)
