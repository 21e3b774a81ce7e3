"""The scheduler: queue order, sessions on the real tiny GGUF model, retrieval on the
executor over a real index, the non-stall cut and the stall accounting."""

from __future__ import annotations

import threading
import time

import pytest

from searchagent.config import Config, GeneratorConfig
from searchagent.errors import InputError
from searchagent.generators.base import GenRequest
from searchagent.scheduler import (NonStallRetriever, PriorityWeights, ScheduledSearcher,
                                   Scheduler, SchedulerOptions, Session, SessionCancelled,
                                   make_queue)
from searchagent.scheduler.queues import Ticket

SYSTEM = {"role": "system", "content": "Answer with one short phrase."}


def ticket(session: Session, enqueued: float) -> Ticket:
    return Ticket(request=None, session=session, enqueued=enqueued)


def test_fcfs_serves_in_arrival_order():
    queue = make_queue("fcfs")
    a, b, c = (Session(id=x, started=0.0) for x in "abc")
    b.retrievals = 5
    for session, at in ((c, 3.0), (a, 1.0), (b, 2.0)):
        queue.push(ticket(session, at))
    assert [t.session.id for t in queue.pop_batch(2, now=4.0)] == ["a", "b"]
    assert [t.session.id for t in queue.pop_batch(5, now=4.0)] == ["c"]
    assert queue.pop_batch(1, now=4.0) == []


def test_priority_levels_then_longest_wait():
    weights = PriorityWeights(per_round=1, age_step_s=100.0, context_step=1000, max_level=8)
    queue = make_queue("priority", weights)
    fresh, waited, deep, long_ctx = (Session(id=x, started=0.0)
                                     for x in ("fresh", "waited", "deep", "long"))
    deep.retrievals = 2                      # two rounds done: level 2
    long_ctx.context_tokens = 1500           # one context step: level 1
    queue.push(ticket(fresh, 5.0))
    queue.push(ticket(waited, 1.0))          # same level as fresh, waited longer
    queue.push(ticket(long_ctx, 6.0))
    queue.push(ticket(deep, 7.0))
    order = [t.session.id for t in queue.pop_batch(4, now=8.0)]
    assert order == ["deep", "long", "waited", "fresh"]


def test_priority_age_raises_level_and_abandoned_are_dropped():
    queue = make_queue("priority", PriorityWeights(age_step_s=1.0, context_step=0))
    old, new, gone = Session(id="old", started=0.0), Session(id="new", started=9.5), \
        Session(id="gone", started=0.0)
    queue.push(ticket(new, 9.6))
    queue.push(ticket(old, 9.7))             # arrived later but its session is 10 s old
    dropped = ticket(gone, 0.1)
    dropped.abandoned = True
    queue.push(dropped)
    assert [t.session.id for t in queue.pop_batch(3, now=10.0)] == ["old", "new"]
    assert len(queue) == 0


def test_unknown_queue_kind_names_the_field():
    with pytest.raises(InputError, match="server.scheduler"):
        make_queue("lifo")


@pytest.fixture(scope="module")
def generator():
    from searchagent.generators.factory import make_generator

    return make_generator(GeneratorConfig(threads=1, context_tokens=1024))


def ask(text: str, tokens: int = 4) -> GenRequest:
    return GenRequest(messages=[SYSTEM, {"role": "user", "content": text}],
                      max_new_tokens=tokens)


def test_sessions_share_the_generator_with_queue_stats_and_kv_reuse(generator):
    scheduler = Scheduler(generator, SchedulerOptions(queue="priority", sessions=3))
    try:
        def work(session: Session):
            first = scheduler.generator.generate([ask(f"Name a colour ({session.id}).")])[0]
            second = scheduler.generator.generate([ask(f"Name a colour ({session.id}). "
                                                       "Now name a fruit.")])[0]
            return first, second

        futures = [scheduler.submit(Session(id=f"s{i}"), work) for i in range(3)]
        results = [f.result(timeout=120) for f in futures]
        stats = scheduler.stats.snapshot()
    finally:
        scheduler.stop()
    assert all(r.completion_tokens > 0 for pair in results for r in pair)
    assert stats["generations_total"] == 6 and stats["sessions_total"] == 3
    assert stats["queue_wait_seconds_count"] == 6
    assert stats["generator_busy_seconds"] > 0
    assert 0.0 <= stats["generator_idle_fraction"] < 1.0
    # each session's second prompt extends its first: its saved KV prefix is reused
    assert sum(second.cached_tokens for _, second in results) > 0
    assert stats["cached_prompt_tokens_total"] > 0


def test_expired_session_is_cancelled_before_generating(generator):
    scheduler = Scheduler(generator, SchedulerOptions(sessions=1))
    try:
        session = Session(id="late", deadline=time.monotonic() - 1)
        future = scheduler.submit(session, lambda s: scheduler.generator.generate([ask("hi")]))
        with pytest.raises(SessionCancelled):
            future.result(timeout=30)
        assert session.cancel.is_set()
        assert scheduler.stats.snapshot()["generations_total"] == 0
    finally:
        scheduler.stop()


def test_timings_count_the_wait_for_a_session_thread(generator):
    """A request admitted while every session thread was busy waited for one, and its
    timings left that out: the parts did not add up to its total."""
    scheduler = Scheduler(generator, SchedulerOptions(sessions=1))
    release = threading.Event()
    try:
        busy = scheduler.submit(Session(id="busy"), lambda s: release.wait(timeout=30))
        waiting = Session(id="waiting")
        future = scheduler.submit(waiting, lambda s: s.timings())
        time.sleep(0.3)                     # it cannot start before ``busy`` ends
        release.set()
        assert busy.result(timeout=30)
        timings = future.result(timeout=30)
    finally:
        scheduler.stop()
    assert timings["session_wait_s"] >= 0.3 and timings["queue_wait_s"] == 0
    assert timings["session_wait_s"] <= timings["total_s"]


class Delayed:
    """A retriever that is slow to answer (like a remote or disk-bound one)."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds = inner, seconds

    def search(self, query, k, *, budget=None):
        time.sleep(self.seconds)
        return self.inner.search(query, k, budget=budget)


def run_retrieval(scheduler: Scheduler, retriever, query: str, k: int = 5):
    box = {}

    def work(session: Session):
        start = time.monotonic()
        box["hits"], box["stats"] = retriever.search_with_stats(query, k)
        box["seconds"] = time.monotonic() - start
        return session
    box["session"] = scheduler.submit(Session(id="r"), work).result(timeout=60)
    return box


def test_non_stall_returns_best_so_far_when_generation_idles(generator, searcher):
    options = SchedulerOptions(non_stall=True, retrieval_budget_s=0.05)
    scheduler = Scheduler(generator, options)
    try:
        slow_dense = Delayed(searcher.dense, 3.0)
        retriever = NonStallRetriever(scheduler, {"bm25": searcher.bm25, "dense": slow_dense})
        box = run_retrieval(scheduler, retriever, "Tinted Windows band debut album")
        stats = scheduler.stats.snapshot()
    finally:
        scheduler.stop()
    assert box["seconds"] < 2.0                      # did not wait for the slow part
    assert box["stats"]["partial"] and box["stats"]["nonstall_cut"]
    assert box["stats"]["parts"] == ["bm25"]
    expected = [h.id for h in searcher.bm25.search("Tinted Windows band debut album", 50)[:5]]
    assert [h.id for h in box["hits"]] == expected
    assert stats["nonstall_cuts_total"] == 1 and stats["partial_retrievals_total"] == 1
    event = box["session"].trace()[-1]
    assert event["kind"] == "retrieve" and event["partial"] and event["hits"] == expected


def test_without_non_stall_the_retrieval_waits_and_stalls_generation(generator, searcher):
    scheduler = Scheduler(generator, SchedulerOptions(non_stall=False, queue="fcfs"))
    try:
        retriever = NonStallRetriever(scheduler, {"bm25": searcher.bm25,
                                                  "dense": Delayed(searcher.dense, 0.4)})
        box = run_retrieval(scheduler, retriever, "Kiss and Tell")
        stats = scheduler.stats.snapshot()
    finally:
        scheduler.stop()
    assert box["seconds"] >= 0.4
    assert sorted(box["stats"]["parts"]) == ["bm25", "dense"] and not box["stats"]["partial"]
    assert stats["retrieval_stall_seconds"] >= 0.35  # the generator idled on it
    assert stats["nonstall_cuts_total"] == 0


def test_scheduled_searcher_runs_on_the_retrieval_executor(generator, searcher):
    scheduler = Scheduler(generator, SchedulerOptions())
    threads = []
    real_search = searcher.bm25.search

    class Spy:
        def search(self, query, k, *, budget=None):
            threads.append(threading.current_thread().name)
            return real_search(query, k, budget=budget)

    try:
        scheduled = ScheduledSearcher(searcher, scheduler)
        hits = scheduler.submit(Session(id="q"), lambda s: scheduled.search(
            "Tinted Windows band", 3, "hybrid")).result(timeout=60)
        spied = NonStallRetriever(scheduler, {"bm25": Spy()})
        scheduler.submit(Session(id="q2"), lambda s: spied.search("Tinted Windows", 2)).result(60)
        with pytest.raises(InputError, match="query"):
            scheduled.search("  ", 3)
    finally:
        scheduler.stop()
    assert len(hits) == 3 and hits == sorted(hits, key=lambda h: -h.score)
    assert threads and all(name.startswith("retrieval") for name in threads)
    assert scheduler.stats.snapshot()["retrievals_total"] == 2


def test_config_builds_scheduler_options():
    config = Config().updated({"server": {"scheduler": "fcfs", "non_stall": False,
                                          "retrieval_budget_ms": 20}}, "test")
    options = SchedulerOptions.from_server_config(config.server)
    assert (options.queue, options.non_stall, options.retrieval_budget_s) == \
        ("fcfs", False, 0.02)
