"""The REST server for real: uvicorn on 127.0.0.1 (ephemeral ports), the real tiny GGUF
model, the real index; bounded request counts; every server stops by itself."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from searchagent.config import Config
from searchagent.server.app import create_app

ROOT = Path(__file__).resolve().parents[1]


def server_config(**server) -> Config:
    return Config().updated({
        "server": {"sessions": 2, "max_queue": 1, "request_timeout_s": 120.0,
                   "max_body_bytes": 2048, **server},
        "generator": {"threads": 1, "max_new_tokens": 12, "context_tokens": 1024},
        "retrieval": {"k": 3, "funnel_coarse_k": 20, "funnel_shortlist": 6},
        "agent": {"max_hops": 2, "context_budget_tokens": 300}}, "test")


class LiveServer:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a thread."""

    def __init__(self, app):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [listener]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        self.client = httpx.Client(base_url=self.url, timeout=180)

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=120)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def generator():
    from searchagent.generators.factory import make_generator

    return make_generator(server_config().generator)


@pytest.fixture(scope="module")
def live(searcher, generator):
    server = LiveServer(create_app(searcher, server_config(), generator=generator))
    yield server
    server.close()


def test_health_readiness_docs_and_metrics(live):
    assert live.client.get("/healthz").json()["status"] == "ok"
    ready = live.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    paths = live.client.get("/openapi.json").json()["paths"]
    assert {"/v1/answer", "/v1/search", "/v1/feedback", "/v1/answer/stream"} <= set(paths)
    assert live.client.get("/docs").status_code == 200
    text = live.client.get("/metrics").text
    busy = [line for line in text.splitlines()
            if line.startswith("searchagent_generator_busy_seconds ")]
    assert busy and float(busy[0].split()[1]) > 0          # the warm-up generation
    assert "searchagent_queue_wait_seconds_bucket" in text
    assert "searchagent_admission_capacity 3" in text


def test_answer_single_then_feedback(live):
    reply = live.client.post("/v1/answer", json={"question": "Where did the band Tinted Windows first perform?",
                                                 "strategy": "single", "k": 2})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["arm"] == "single" and body["steps"] == 1 and isinstance(body["answer"], str)
    assert 1 <= len(body["passages"]) <= 2 and {"id", "title"} <= set(body["passages"][0])
    kinds = [step["kind"] for step in body["trace"]]
    assert "retrieve" in kinds and "generate" in kinds
    assert body["timings"]["generations"] == 1 and body["timings"]["retrievals"] == 1
    assert body["timings"]["total_s"] >= body["timings"]["generate_s"] > 0
    for gold in (" \n", "The."):     # was 200 (quality 0, or EM 1 for an empty answer),
        blank = live.client.post("/v1/feedback",           # and the one feedback spent
                                 json={"request_id": body["request_id"], "gold": gold})
        assert blank.status_code == 422, blank.text
        assert blank.json()["detail"][0]["field"] == "body.gold"
    given = live.client.post("/v1/feedback", json={"request_id": body["request_id"],
                                                   "gold": body["answer"] or "x"})
    assert given.status_code == 200 and given.json()["accepted"] is True
    unknown = live.client.post("/v1/feedback", json={"request_id": "nope", "reward": 1.0})
    assert unknown.status_code == 404 and "request" in unknown.json()["error"]


def test_answer_auto_and_multi_hop(live):
    auto = live.client.post("/v1/answer", json={"question": "Where is Tulsa?"})
    assert auto.status_code == 200 and auto.json()["arm"] in ("parametric", "single", "multi")
    multi = live.client.post("/v1/answer", json={"question": "Where did the band Tinted Windows first perform?",
                                                  "strategy": "multi", "max_hops": 2, "k": 2})
    assert multi.status_code == 200, multi.text
    body = multi.json()
    assert body["arm"] == "multi" and 1 <= body["hops"] <= 2 and body["steps"] >= 1


def metric(live, line_start: str) -> float:
    lines = live.client.get("/metrics").text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(line_start))


def test_stream_sends_each_step_then_the_answer(live):
    """Each step, then the answer, counted in the answer metrics as /v1/answer's are (the
    web page asks through the stream: its 'by arm' and 'mean latency' rows stayed empty)."""
    by_arm = 'searchagent_answers_by_arm_total{arm="parametric"}'
    latency = "searchagent_answer_latency_seconds_count"
    before = metric(live, by_arm), metric(live, latency)
    events = []
    with live.client.stream("POST", "/v1/answer/stream",
                            json={"question": "What is 2 plus 2?",
                                  "strategy": "parametric"}) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in reply.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    assert [n for n, _ in events][0] == "start" and events[-1][0] == "answer"
    steps = [data for n, data in events if n == "step"]
    assert steps and steps[0]["kind"] == "generate" and steps[0]["completion_tokens"] > 0
    assert events[-1][1]["arm"] == "parametric" and events[-1][1]["steps"] == 0
    started = events[0][1]["request_id"]
    assert started == events[-1][1]["request_id"]        # one id from the first event on
    assert (metric(live, by_arm), metric(live, latency)) == (before[0] + 1, before[1] + 1)
    given = live.client.post("/v1/feedback", json={"request_id": started, "reward": 1.0})
    assert given.status_code == 200, given.text


def test_feedback_waits_for_the_answer_to_arrive(live):
    """Feedback (a bare reward too) on a request still being answered is a 409: the
    policy would learn from an answer the client may never get."""
    question = {"question": "Where did the band Tinted Windows first perform?",
                "strategy": "multi", "max_hops": 2, "k": 2}
    with live.client.stream("POST", "/v1/answer/stream", json=question) as reply:
        lines = reply.iter_lines()
        request_id = next(json.loads(line[6:]) for line in lines
                          if line.startswith("data: "))["request_id"]
        early = httpx.post(f"{live.url}/v1/feedback", timeout=30,
                           json={"request_id": request_id, "reward": 1.0})
        assert early.status_code == 409 and "still being answered" in early.text, early.text
        assert "event: answer" in list(lines)
    given = live.client.post("/v1/feedback", json={"request_id": request_id, "reward": 1.0})
    assert given.status_code == 200, given.text


@pytest.mark.parametrize("payload, field", [
    ({}, "body.question"),
    ({"question": "   "}, "body.question"),
    ({"question": "q", "k": 0}, "body.k"),
    ({"question": "q", "strategy": "sometimes"}, "body.strategy"),
    ({"question": "q", "colour": "red"}, "body.colour"),
])
def test_invalid_answer_requests_name_the_field(live, payload, field):
    reply = live.client.post("/v1/answer", json=payload)
    assert reply.status_code == 422
    assert any(d["field"].startswith(field) for d in reply.json()["detail"])


def test_body_cap_search_and_feedback_validation(live):
    huge = live.client.post("/v1/answer", json={"question": "x" * 5000})
    assert huge.status_code == 413 and "max_body_bytes" in huge.json()["detail"]
    assert live.client.get("/v1/answer").status_code == 405
    assert live.client.get("/nowhere").status_code == 404
    metrics = live.client.get("/metrics").text    # middleware refusals were not counted
    assert 'route="/v1/answer",status="413"} 1' in metrics, metrics
    assert 'route="/v1/answer",status="405"} 1' in metrics and "/nowhere" not in metrics
    hits = live.client.post("/v1/search", json={"query": "Tinted Windows band", "k": 3,
                                                "mode": "bm25"}).json()["hits"]
    assert len(hits) == 3 and hits[0]["score"] >= hits[-1]["score"]
    assert live.client.post("/v1/search", json={"query": "x", "k": 0}).status_code == 422
    neither = live.client.post("/v1/feedback", json={"request_id": "abc"})
    assert neither.status_code == 422
    nan = live.client.post("/v1/feedback", content=b'{"request_id": "abc", "reward": NaN}',
                           headers={"content-type": "application/json"})
    assert nan.status_code == 422 and "finite" in nan.json()["detail"][0]["message"], nan.text


def test_admission_is_bounded_with_retry_after(live):
    question = {"question": "Name a planet.", "strategy": "parametric"}
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: live.client.post("/v1/answer", json=question),
                                range(6)))
    codes = sorted(r.status_code for r in replies)
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
    rejected = next(r for r in replies if r.status_code == 429)
    assert int(rejected.headers["Retry-After"]) >= 1


def test_a_failed_warm_up_stops_counting_once_a_generation_succeeds(searcher, generator):
    """One slow or failed warm-up (a busy machine) kept /readyz at 503 for good."""
    class FirstCallFails:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def generate(self, requests):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("too slow")
            return self.inner.generate(requests)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    server = LiveServer(create_app(searcher, server_config(), generator=FirstCallFails(
        generator), warm_up=True))
    try:
        ready = server.client.get("/readyz")
        assert ready.status_code == 503 and "warm-up failed" in ready.json()["reason"]
        answer = server.client.post("/v1/answer", json={"question": "Name a planet.",
                                                         "strategy": "parametric"})
        assert answer.status_code == 200, answer.text
        assert server.client.get("/readyz").status_code == 200
    finally:
        server.close()


def test_generator_backend_down_is_503_and_api_key_is_enforced(searcher):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()                                      # nothing listens there now
    config = server_config(api_key="s3cret").updated({"generator": {
        "backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "retries": 0,
        "timeout_s": 5.0}}, "test")
    server = LiveServer(create_app(searcher, config))
    try:
        ready = server.client.get("/readyz")
        assert ready.status_code == 503 and "unavailable" in ready.json()["reason"]
        question = {"question": "Where did the band Tinted Windows first perform?", "strategy": "parametric"}
        assert server.client.post("/v1/answer", json=question).status_code == 401
        wrong = server.client.post("/v1/answer", json=question,
                                   headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        down = server.client.post("/v1/answer", json=question, headers={"X-API-Key": "s3cret"})
        assert down.status_code == 503
        assert "generator backend unavailable" in down.json()["error"]
        assert f"127.0.0.1:{port}" in down.json()["error"]
    finally:
        server.close()
