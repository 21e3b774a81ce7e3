"""Requests past their deadline, against the real server (uvicorn on 127.0.0.1, the real
index and tiny GGUF model): a 504 carries the trace so far, stays JSON with a policy's NaN
scores, and takes no feedback."""

from __future__ import annotations

import json
import time

import pytest

from searchagent.server.app import create_app
from tests.test_server import LiveServer, server_config


@pytest.fixture(scope="module")
def generator():
    from searchagent.generators.factory import make_generator

    return make_generator(server_config().generator)


def test_deadline_gives_504_with_partial_trace(searcher, generator):
    server = LiveServer(create_app(searcher, server_config(request_timeout_s=1.0),
                                   generator=generator, warm_up=False))
    try:
        reply = server.client.post("/v1/answer", json={
            "question": "Which city did the band behind the album Tinted Windows first perform in?",
            "strategy": "multi", "max_hops": 4, "k": 4})
        assert reply.status_code == 504, reply.text
        body = reply.json()
        assert body["request_id"] and isinstance(body["trace"], list)
        assert body["timings"]["total_s"] >= 1.0
        assert {e["kind"] for e in body["trace"]} <= {"retrieve", "generate"}
        late = server.client.post("/v1/feedback", json={"request_id": body["request_id"],
                                                        "gold": "Chicago"})
        assert late.status_code == 409 and "status 504" in late.text, late.text
        assert server.client.get("/healthz").status_code == 200
    finally:
        server.close()


def test_a_policy_traced_arm_forced_by_the_client_stays_json(searcher, generator, tmp_path):
    """With a policy loaded, a forced arm's policy step has no scores (NaN inside): the
    504 body could not be written (a 500) and the stream sent bare NaN, not JSON."""
    from policies.linucb import LinUCB
    from policies.persistence import save_policy
    from tests.test_agent import bundle_for

    save_policy(bundle_for(searcher, LinUCB), tmp_path / "policy")
    config = server_config(request_timeout_s=1.0).updated(
        {"agent": {"policy_dir": str(tmp_path / "policy")}}, "test")
    server = LiveServer(create_app(searcher, config, generator=generator, warm_up=False))
    body = {"question": "Which city did the band behind the album Tinted Windows first "
            "perform in?", "strategy": "multi", "max_hops": 4, "k": 4}
    try:
        reply = server.client.post("/v1/answer", json=body)
        assert reply.status_code == 504, reply.text
        policy = next(e for e in reply.json()["trace"] if e["kind"] == "policy")
        assert policy["forced"] and policy["scores"] == [None, None, None]
        deadline = time.monotonic() + 60               # the cut answer's last call ends
        while "searchagent_admitted_requests 0" not in server.client.get("/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with server.client.stream("POST", "/v1/answer/stream", json=body) as stream:
            lines = list(stream.iter_lines())
            assert stream.status_code == 200, lines
            data = [json.loads(line[6:]) for line in lines
                    if line.startswith("data: ")]        # json.loads accepts NaN: check text
        assert data[-1]["status"] == 504 and "NaN" not in json.dumps(data)
    finally:
        server.close()
