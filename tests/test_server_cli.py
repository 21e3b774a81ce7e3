"""``searchagent serve`` as a process: a graceful stop on SIGTERM, and bad settings, a busy
port or a policy another server holds refused in one line before anything starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.test_server import ROOT


def ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:            # still loading the model: not listening yet
        return False


def test_cli_serve_finishes_in_flight_requests_on_sigterm(small_index, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "SEARCHAGENT__GENERATOR__THREADS": "1",
           "SEARCHAGENT__GENERATOR__MAX_NEW_TOKENS": "12"}
    process = subprocess.Popen([sys.executable, "-m", "searchagent", "serve", str(small_index),
                                "--port", "0", "--sessions", "1", "--no-agent"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert "serving" in line, line
        url = line.split(" on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        client = httpx.Client(base_url=url, timeout=180)
        assert client.get("/healthz").status_code == 200     # listening once it says so
        deadline = time.monotonic() + 180
        while not ready(client):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, "/v1/answer", json={
                "question": "Where did the band Tinted Windows first perform?", "strategy": "single"})
            while "searchagent_admitted_requests 1" not in client.get("/metrics").text:
                assert not pending.done() and time.monotonic() < deadline
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            reply = pending.result(timeout=180)
        assert reply.status_code == 200 and reply.json()["arm"] == "single"
        assert process.wait(timeout=120) == 0
        with pytest.raises(httpx.TransportError):
            client.get("/healthz")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_serve_refuses_a_busy_port_and_bad_limits_in_one_line(small_index, searcher,
                                                                  tmp_path):
    import duckdb

    from policies.online import JOURNAL
    from tests.test_web_page import linucb_policy

    policy = linucb_policy(searcher, tmp_path / "policy")
    journal = duckdb.connect(str(policy / JOURNAL))     # as a first server holds it
    with socket.socket() as busy, journal:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        nothing = {"SEARCHAGENT__AGENT__POLICY_DIR": str(small_index.parent / "no-policy")}
        for flags, expected, env in (
                ([], f"cannot listen on 127.0.0.1:{port}", {}),
                (["--sessions", "0"], "'server.sessions': must be >= 1", {}),
                (["--host", ""], "empty host", {}), (["--api-key", " "], "empty API key", {}),
                ([], "no trained policy here", nothing),
                ([], "decision journal is in use by another process (PID ",
                 {"SEARCHAGENT__AGENT__POLICY_DIR": str(policy)})):
            run = subprocess.run([sys.executable, "-m", "searchagent", "serve",
                                  str(small_index), "--port", str(port), *flags],
                                 cwd=ROOT, capture_output=True, text=True, timeout=120,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
            assert run.returncode == 2 and expected in run.stderr, run.stderr
            assert "Traceback" not in run.stderr and "serving" not in run.stdout


def test_a_mode_the_index_lacks_is_one_line_at_start_and_a_422_per_request(small_corpus,
                                                                          tmp_path):
    """``serve --mode dense`` on a BM25-only index loaded the models and died in uvicorn's
    start-up with a 58-line traceback; ``/v1/search`` with such a mode answered 500."""
    from index.build import build_index
    from retrievers.searcher import Searcher
    from searchagent.config import load_config
    from searchagent.server.app import create_app
    from tests.test_server import LiveServer
    from tests.test_server_documents import dead_backend

    index = tmp_path / "bm25-only"
    build_index(small_corpus, index, load_config(env={}, cli={"index": {"dense": False}}))
    run = subprocess.run([sys.executable, "-m", "searchagent", "serve", str(index),
                          "--port", "0", "--mode", "dense"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2 and "field 'mode'" in run.stderr, run.stderr
    assert "was built without dense" in run.stderr and "Traceback" not in run.stderr
    searcher = Searcher(index)
    server = LiveServer(create_app(searcher, dead_backend(), use_agent=False, warm_up=False))
    try:
        reply = server.client.post("/v1/search", json={"query": "Insomnia", "mode": "dense"})
        assert reply.status_code == 422, reply.text
        assert reply.json()["detail"][0]["field"] == "body.mode"
        assert server.client.post("/v1/search", json={"query": "Insomnia"}).status_code == 200
    finally:
        server.close()
        searcher.close()
