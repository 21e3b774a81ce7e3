"""The server does what its OpenAPI says: documented error bodies and statuses (400, 404,
409, 413, 422), the stream's content type, strict numbers, a long question that fits the
context, metrics by real status, no stray asyncio tracebacks."""

from __future__ import annotations

import gc
import logging
import re
import socket
import time

import pytest

from searchagent.server.app import create_app
from tests.test_server import LiveServer, server_config

POSTS = ("/v1/answer", "/v1/answer/stream", "/v1/search", "/v1/feedback")


@pytest.fixture(scope="module")
def live(searcher, generator):
    server = LiveServer(create_app(searcher, server_config(max_body_bytes=65536),
                                   generator=generator))
    yield server
    server.close()


@pytest.fixture(scope="module")
def generator():
    from searchagent.generators.factory import make_generator

    return make_generator(server_config().generator)


def resolve(spec: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_openapi_documents_the_bodies_and_statuses_the_server_sends(live):
    spec = live.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path in POSTS:
        responses = spec["paths"][path]["post"]["responses"]
        assert {"400", "413", "422"} <= set(responses), path
        invalid = resolve(spec, responses["422"]["content"]["application/json"]["schema"])
        assert set(invalid["required"]) >= {"error", "detail"}
        item = resolve(spec, invalid["properties"]["detail"]["items"])
        assert set(item["properties"]) == {"field", "message", "type"}
    for path in ("/v1/answer", "/v1/answer/stream", "/v1/search"):   # a damaged index file
        assert "500" in spec["paths"][path]["post"]["responses"], path
    feedback = spec["paths"]["/v1/feedback"]["post"]["responses"]
    assert {"404", "409"} <= set(feedback)
    stream = spec["paths"]["/v1/answer/stream"]["post"]["responses"]["200"]["content"]
    assert list(stream) == ["text/event-stream"]
    body = spec["components"]["schemas"]["FeedbackRequest"]
    assert sorted(map(str, body["oneOf"])) == sorted(map(str, [{"required": ["gold"]},
                                                               {"required": ["reward"]}]))


def test_every_422_has_the_documented_shape(live):
    for path, payload in (("/v1/answer", {"question": "q", "lambda": False}),
                          ("/v1/answer", {"question": "q", "k": "3"}),
                          ("/v1/feedback", {"request_id": "a", "reward": True}),
                          ("/v1/feedback", {"request_id": "a", "gold": None}),
                          ("/v1/feedback", {"request_id": "a", "gold": "x", "reward": 1.0}),
                          ("/v1/search", {"query": "q", "k": 2.5})):
        reply = live.client.post(path, json=payload)
        assert reply.status_code == 422, (path, payload, reply.text)
        body = reply.json()
        assert body["error"] and body["detail"]
        assert all(set(d) == {"field", "message", "type"} for d in body["detail"]), body
    lam = live.client.post("/v1/answer", json={"question": "q", "lambda": False}).json()
    assert lam["detail"][0]["field"] == "body.lambda"
    # the attribute's own name was accepted too, though the schema forbids other fields
    internal = live.client.post("/v1/answer", json={"question": "q", "lam": 1.0})
    assert internal.status_code == 422 and internal.json()["detail"][0]["field"] == "body.lam"


def test_unparseable_body_is_a_400_that_says_where(live):
    for path in ("/v1/answer", "/v1/search", "/v1/feedback"):
        broken = live.client.post(path, content=b'{"question": ',
                                  headers={"content-type": "application/json"})
        assert broken.status_code == 400, (path, broken.text)
        body = broken.json()
        assert body["error"] == "the body is not valid JSON"
        assert body["detail"][0]["field"] == "body" and "at character 13" in \
            body["detail"][0]["message"], body


def test_second_feedback_on_one_request_is_409(live):
    answer = live.client.post("/v1/answer", json={"question": "Name a planet.",
                                                  "strategy": "parametric"})
    assert answer.status_code == 200, answer.text
    request_id = answer.json()["request_id"]
    first = live.client.post("/v1/feedback", json={"request_id": request_id, "reward": 1.0})
    assert first.status_code == 200, first.text
    again = live.client.post("/v1/feedback", json={"request_id": request_id, "reward": 0.0})
    assert again.status_code == 409, again.text
    assert "already" in again.json()["error"]
    unknown = live.client.post("/v1/feedback", json={"request_id": "nope", "reward": 1.0})
    assert unknown.status_code == 404


def test_chunked_body_over_the_cap_is_413(live):
    chunks = (b'{"question": "' + b"x" * 65536 for _ in range(32))       # 2 MB, no length
    reply = live.client.post("/v1/answer", content=chunks,
                             headers={"content-type": "application/json"})
    assert reply.status_code == 413, reply.text
    assert "max_body_bytes" in reply.json()["detail"]
    assert live.client.get("/healthz").status_code == 200


@pytest.mark.parametrize("strategy", ["parametric", "single"])
def test_longest_allowed_question_fits_the_context(live, strategy):
    question = ("Which river flows through the city where Tinted Windows first played? "
                + "東京の音楽家が最初に演奏した川の名前は何ですか" * 100)[:2000]   # ~3,500 tokens
    reply = live.client.post("/v1/answer", json={"question": question, "strategy": strategy})
    assert reply.status_code == 200, reply.text[:500]
    fits = [s for s in reply.json()["trace"] if s["kind"] == "fit_context"]
    assert fits and fits[0]["prompt_tokens"] <= fits[0]["context_tokens"]
    assert fits[0]["question_chars"] < 2000 <= fits[0]["question_chars_given"]


def metric(text: str, route: str, status: int) -> float:
    found = re.search(rf'http_responses_total{{route="{re.escape(route)}",status="{status}"}} '
                      r"(\S+)", text)
    return float(found.group(1)) if found else 0.0


def test_stream_counts_each_response_by_its_real_status(searcher):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    config = server_config().updated({"generator": {
        "backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "retries": 0,
        "timeout_s": 5.0}}, "test")
    server = LiveServer(create_app(searcher, config, warm_up=False))
    try:
        with server.client.stream("POST", "/v1/answer/stream",
                                  json={"question": "Name a planet.",
                                        "strategy": "parametric"}) as reply:
            text = "".join(reply.iter_text())
        assert "event: error" in text and '"status": 503' in text
        assert server.client.post("/v1/answer/stream", json={"k": 0}).status_code == 422
        page = server.client.get("/metrics").text
        assert metric(page, "/v1/answer/stream", 503) == 1
        assert metric(page, "/v1/answer/stream", 422) == 1
        assert metric(page, "/v1/answer/stream", 504) == 0
    finally:
        server.close()


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("path", ["/v1/answer", "/v1/answer/stream"])
def test_a_504_leaves_no_unretrieved_future_behind(searcher, generator, path):
    server = LiveServer(create_app(searcher, server_config(request_timeout_s=1.0),
                                   generator=generator, warm_up=False))
    records = Records()
    logging.getLogger("asyncio").addHandler(records)
    try:
        reply = server.client.post(path, json={
            "question": "Which city did the band behind the album Tinted Windows first "
                        "perform in?", "strategy": "multi", "max_hops": 4, "k": 4})
        assert reply.status_code == 504 or '"status": 504' in reply.text, reply.text[:300]
        deadline = time.monotonic() + 60
        while "searchagent_admitted_requests 0" not in server.client.get("/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)                         # the loop sets the wrapped future's result
        page = server.client.get("/metrics").text
        assert metric(page, path, 504) == 1
    finally:
        server.close()
        gc.collect()
        logging.getLogger("asyncio").removeHandler(records)
    assert not [m for m in records.messages if "never retrieved" in m], records.messages
