"""A request's and a server's ends, against the real app (the real index and tiny GGUF
model; uvicorn on 127.0.0.1, or the app called directly as ASGI where the test must pick
the moment a client leaves): a stream whose client leaves is stopped and counted however
early it leaves, a 429 names its real reason, and a stopping server saves what its
online policy learned."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from starlette.requests import ClientDisconnect

from searchagent.server.app import create_app
from searchagent.server.limits import Admission
from tests.test_server import LiveServer, server_config
from tests.test_server_admission import SlowGenerator

DELAY_S = 3.0                        # added to each generate() call of the slow generator
STREAM = "/v1/answer/stream"
QUESTION = {"question": "Name a planet.", "strategy": "parametric"}   # one generation


@pytest.fixture(scope="module")
def generator():
    from searchagent.generators.factory import make_generator

    return make_generator(server_config().generator)


@pytest.fixture(scope="module")
def slow(searcher, generator):
    server = LiveServer(create_app(searcher, server_config(sessions=2, max_queue=2),
                                   generator=SlowGenerator(generator, DELAY_S), warm_up=False))
    yield server
    server.close()


def metric(server: LiveServer, line_start: str) -> float:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


async def leave_stream(app, after_start: bool) -> tuple[list[dict], list[str]]:
    """POST a question to the stream route as an ASGI client that is gone before the
    response's first byte (an ASGI 2.4 server's ``send`` then raises OSError) or leaves
    once the ``start`` event arrived (uvicorn's 2.3: ``receive`` says so).
    -> (messages sent, reprs of this loop's tasks still pending afterwards)."""
    body = json.dumps(QUESTION).encode()
    spec = "2.3" if after_start else "2.4"
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": spec},
             "http_version": "1.1", "method": "POST", "scheme": "http", "path": STREAM,
             "raw_path": STREAM.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"test"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
    sent, started = [], asyncio.Event()
    inbox = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if inbox:
            return inbox.pop(0)
        if after_start:
            await started.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if not after_start:
            raise ConnectionResetError("the client is gone")
        sent.append(message)
        if b"event: start" in message.get("body", b""):
            started.set()

    try:
        await asyncio.wait_for(app(scope, receive, send), 30)
    except (ClientDisconnect, OSError):       # the server would note the client gone
        pass
    for _ in range(3):
        await asyncio.sleep(0)                 # let cancelled tasks finish cancelling
    current = asyncio.current_task()
    return sent, [repr(t) for t in asyncio.all_tasks() if t is not current]


def wait_idle(server: LiveServer, limit_s: float) -> float:
    started = time.monotonic()
    while metric(server, "searchagent_admitted_requests") > 0:
        assert time.monotonic() - started < limit_s, "the abandoned request kept running"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_stream_left_before_its_first_byte_is_stopped_and_counted(slow):
    """The client was gone before the stream's first byte: the generator that would have
    noticed never ran, so the work went on to the end, the request stayed 'still being
    answered' for feedback and no status was counted."""
    app, service = slow.server.config.app, slow.server.config.app.state.service
    before = metric(slow, f'searchagent_http_responses_total{{route="{STREAM}",status="499"}}')
    sent, _ = asyncio.run(leave_stream(app, after_start=False))
    assert sent == []                                          # nothing reached the client
    request_id = list(service._deliveries)[-1]
    assert wait_idle(slow, DELAY_S - 1.0) < DELAY_S - 1.0      # stopped, not run to the end
    late = slow.client.post("/v1/feedback", json={"request_id": request_id, "reward": 1.0})
    assert late.status_code == 409 and "status 499" in late.json()["error"], late.text
    after = metric(slow, f'searchagent_http_responses_total{{route="{STREAM}",status="499"}}')
    assert after == before + 1


def test_a_stream_left_mid_wait_leaves_no_task_pending(slow):
    """A client gone while the stream waited for the next step left that wait's
    ``Queue.get`` task pending for good ("Task was destroyed but it is pending!")."""
    sent, pending = asyncio.run(leave_stream(slow.server.config.app, after_start=True))
    assert any(b"event: start" in m.get("body", b"") for m in sent)
    assert pending == [], pending
    wait_idle(slow, DELAY_S - 1.0)


def test_a_429_for_a_kind_not_yet_measured_says_so(slow):
    """Such a refusal said the request 'would not finish within' a deadline it easily
    fit; it is the one-at-a-time rule for a kind with no finished request yet."""
    assert slow.client.post("/v1/answer", json=QUESTION).status_code == 200   # measured
    single = {"question": "Where is Tulsa?", "strategy": "single", "k": 2}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(slow.client.post, "/v1/answer", json=single)
        deadline = time.monotonic() + 10
        while metric(slow, "searchagent_admitted_requests") < 1:
            assert time.monotonic() < deadline and not first.done()
            time.sleep(0.02)
        second = slow.client.post("/v1/answer", json=single)
        assert first.result(timeout=60).status_code == 200
    assert second.status_code == 429, second.text
    detail = second.json()["detail"]
    assert "strategy=single, k<=2" in detail and "none like it has finished" in detail
    assert "would not finish" not in detail


def test_admission_names_each_reason_to_refuse():
    now = [0.0]
    admission = Admission(sessions=1, max_queue=1, deadline_s=10.0, clock=lambda: now[0])
    assert admission.acquire("a") == (True, 0, "")
    now[0] = 2.0
    admission.release(2.0, "a")                            # "a" measured: 2 s
    assert admission.acquire("b")[0]                       # unmeasured kind: one at a time
    assert admission.acquire("b")[2] == "unmeasured"
    assert admission.acquire("a")[0]                       # 10 s + 2 s > 10 s, but ...
    assert admission.acquire("a")[2] == "capacity"         # ... 2 admitted = capacity
    long = Admission(sessions=4, max_queue=4, deadline_s=3.0, expected_service_s=2.0)
    assert long.acquire()[0] and long.acquire() == (False, 2, "deadline")


def test_a_stopped_server_saves_what_its_policy_learned(searcher, generator, tmp_path):
    """The app's shutdown stopped the scheduler but never closed the agent: feedback
    since the last snapshot (every 20) stayed out of policy.json, and the decision
    journal stayed open."""
    from policies.online import APPLIED_KEY
    from policies.persistence import load_policy, save_policy
    from tests.policy_data import retrieve_once_cascade

    folder = tmp_path / "policy"
    save_policy(retrieve_once_cascade(searcher.encoder), folder)
    config = server_config().updated({"agent": {"policy_dir": str(folder)}}, "test")
    server = LiveServer(create_app(searcher, config, generator=generator, warm_up=False))
    try:
        answer = server.client.post("/v1/answer", json=QUESTION)
        assert answer.status_code == 200, answer.text
        given = server.client.post("/v1/feedback", json={
            "request_id": answer.json()["request_id"], "reward": 1.0})
        assert given.status_code == 200, given.text
    finally:
        server.close()
    assert load_policy(folder).meta.get(APPLIED_KEY) == 1
