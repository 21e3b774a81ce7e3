"""The OpenAI-compatible HTTP backend against a real llama_cpp.server on 127.0.0.1 (bundled
GGUF), plus small stdlib HTTP servers that misbehave on purpose (down, garbage, 503s)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from searchagent.errors import BackendError
from searchagent.generators.base import GenRequest
from searchagent.generators.openai_http import OpenAIHTTPGenerator
from searchagent.models import gguf_path

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ask(text: str, **kw) -> GenRequest:
    return GenRequest(messages=[{"role": "system", "content": "You answer in a few words."},
                                {"role": "user", "content": text}], **kw)


@pytest.fixture(scope="module")
def server_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf_path(),
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024",
                             "--n_threads", "1", "--verbose", "False"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not come up within 120 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_generation_over_http_with_usage_and_logprobs(server_url):
    gen = OpenAIHTTPGenerator(server_url, timeout_s=120)
    first, second = gen.generate([ask("What is the capital of France?", max_new_tokens=8,
                                      logprobs=True),
                                  ask("Name a fruit.", max_new_tokens=8)])
    assert first.text and second.text
    assert first.prompt_tokens > 10 and 0 < first.completion_tokens <= 8
    assert len(first.token_logprobs) == first.completion_tokens
    assert all(lp <= 0 for lp in first.token_logprobs)
    assert second.token_logprobs is None and first.seconds > 0


def test_count_tokens_uses_the_server_tokenizer(server_url):
    from searchagent.generators.llama_cpp import LlamaCppGenerator

    gen = OpenAIHTTPGenerator(server_url, timeout_s=60)
    text = "Retrieval-augmented generation with a tiny model"
    local = LlamaCppGenerator(threads=1, context_tokens=256).count_tokens(text)
    assert abs(gen.count_tokens(text) - local) <= 1          # the server may count a BOS
    assert gen._tokenize_route.endswith("/extras/tokenize")


def test_server_down_is_a_clear_error_after_bounded_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"
    gen = OpenAIHTTPGenerator(url, retries=2, backoff_s=0.05, timeout_s=2)
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"is down or failing: not reachable.*3 attempts"):
        gen.generate([ask("hello")])
    assert time.monotonic() - start < 10


class Scripted(BaseHTTPRequestHandler):
    """Answers POSTs from a script: (status, body) per call, the last one repeating."""

    script: list[tuple[int, str]] = []
    calls = 0

    def do_POST(self):  # noqa: N802 (http.server naming)
        cls = type(self)
        status, body, *headers = cls.script[min(cls.calls, len(cls.script) - 1)]
        cls.calls += 1
        cls.times.append(time.monotonic())
        cls.bodies.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
        if callable(body):                 # chosen by the request (concurrent calls)
            status, body = body(cls.bodies[-1])
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in (headers[0] if headers else {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body == TRICKLE:                # headers, then a byte every 0.2 s for 6 s
            for _ in range(30):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
            return
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    handler = type("Handler", (Scripted,), {"script": [], "calls": 0, "bodies": [],
                                            "times": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


TRICKLE = "trickle"
GOOD = json.dumps({"choices": [{"message": {"content": "Paris. More"}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 12, "completion_tokens": 3}})


def test_retries_503_with_backoff_then_succeeds(scripted):
    handler, url = scripted
    handler.script = [(503, "busy"), (503, "busy"), (200, GOOD)]
    [result] = OpenAIHTTPGenerator(url, retries=2, backoff_s=0.01).generate(
        [ask("capital?", stop=["."])])
    assert handler.calls == 3
    assert result.text == "Paris" and result.prompt_tokens == 12
    handler.script, handler.calls = [(503, "busy")], 0
    with pytest.raises(BackendError, match="HTTP 503"):
        OpenAIHTTPGenerator(url, retries=1, backoff_s=0.01).generate([ask("capital?")])
    assert handler.calls == 2


@pytest.mark.parametrize("status,body,message", [
    (200, "<html>oops</html>", "non-JSON"),
    (200, json.dumps({"object": "list"}), "not a chat completion"),
    (200, "[1, 2]", "expected a JSON object"),
    (404, json.dumps({"error": "no such model"}), "refused the request: HTTP 404"),
    (200, json.dumps({"choices": [{"message": {"content": "x"}}],
                      "usage": {"prompt_tokens": None, "completion_tokens": "many"}}),
     "not a chat completion"),
])
def test_garbage_answers_are_clear_errors(scripted, status, body, message):
    handler, url = scripted
    handler.script = [(status, body)]
    with pytest.raises(BackendError, match=message):
        OpenAIHTTPGenerator(url, retries=0).generate([ask("hi")])


def test_a_reply_stopped_at_a_leading_blank_line_is_asked_again(scripted):
    """The server applies the strategies' "\\n" stop: a model opening with a blank line got
    an empty answer. Asked again without whitespace stops, cut here past the blank line."""
    def reply(content: str, finish: str, tokens: int) -> str:
        return json.dumps({"choices": [{"message": {"content": content},
                                        "finish_reason": finish}],
                           "usage": {"prompt_tokens": 12, "completion_tokens": tokens}})

    handler, url = scripted
    handler.script = [(200, reply("", "stop", 1)), (200, reply("\n\nParis\nMore", "length", 6))]
    [result] = OpenAIHTTPGenerator(url, retries=0).generate([ask("capital?", stop=["\n", "."])])
    assert result.text == "Paris" and handler.calls == 2
    assert [body["stop"] for body in handler.bodies] == [["\n", "."], ["."]]
    assert (result.prompt_tokens, result.completion_tokens) == (24, 7)
    handler.script, handler.calls = [(200, reply("", "stop", 1))], 0
    [empty] = OpenAIHTTPGenerator(url, retries=0).generate([ask("capital?", stop=["."])])
    assert empty.text == "" and handler.calls == 1         # no whitespace stop: no retry


def test_a_refused_request_fails_alone_and_says_so_without_the_key(scripted):
    """A prompt over the server's context (HTTP 400) failed every request batched with it
    and read as an outage (503, /readyz not ready); an API key with a trailing newline
    appeared in the error ('Illegal header value b'Bearer sk-...'); null usage counts
    crashed with a TypeError."""
    from searchagent.errors import BatchErrors, GenerationRefused, InputError

    handler, url = scripted
    usage = json.dumps({"choices": [{"message": {"content": "Paris"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": None, "completion_tokens": None}})
    handler.script = [(200, lambda body: (400, '{"error": "context length exceeded"}')
                       if "long" in body["messages"][-1]["content"] else (200, usage))]
    gen = OpenAIHTTPGenerator(url, api_key="sk-SECRET-123\n", retries=0)
    with pytest.raises(BatchErrors) as caught:
        gen.generate([ask("short"), ask("very long"), ask("short")])
    ok, refused, also = caught.value.outcomes
    assert ok.text == also.text == "Paris" and ok.prompt_tokens == 0
    assert isinstance(refused, GenerationRefused) and "context length" in str(refused)
    assert not isinstance(refused, BackendError)               # 422 over REST, not 503
    with pytest.raises(InputError, match="generator.api_key") as bad:
        OpenAIHTTPGenerator(url, api_key="ключ-SECRET")
    assert "SECRET" not in str(bad.value)


def test_retry_after_cancel_and_a_trickling_reply_bound_a_call(scripted):
    """Retry-After was ignored (0.5 s backoff against a server asking for 1 s); a request
    cancelled (its client got a 504) went on retrying on the one generation worker; a
    reply trickling in a byte at a time never timed out (httpx bounds each read)."""
    import threading

    handler, url = scripted
    handler.script = [(503, "busy", {"Retry-After": "1"}), (200, GOOD)]
    [result] = OpenAIHTTPGenerator(url, retries=1, backoff_s=0.01).generate(
        [ask("capital?", stop=["."])])
    assert result.text == "Paris" and handler.times[1] - handler.times[0] >= 0.9
    handler.script, handler.calls = [(503, "busy", {"Retry-After": "30"})], 0
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    [cut] = OpenAIHTTPGenerator(url, retries=3, timeout_s=60).generate(
        [ask("capital?", cancel=cancel)])
    assert cut.finish_reason == "cancelled" and handler.calls == 1
    handler.script, handler.calls = [(200, TRICKLE)], 0
    with pytest.raises(BackendError, match="no whole reply within timeout_s=1"):
        OpenAIHTTPGenerator(url, retries=0, timeout_s=1).generate([ask("hi")])


def test_the_confidence_of_a_reply_cut_here_scores_only_what_is_kept(scripted):
    """After the blank-line re-ask the reply is cut at "\n" here, but its confidence
    averaged every token the server generated past the cut."""
    def reply(content: str, tokens: list[tuple[str, float]]) -> str:
        return json.dumps({"choices": [{"message": {"content": content}, "finish_reason": "stop",
                                        "logprobs": {"content": [{"token": t, "logprob": lp}
                                                                 for t, lp in tokens]}}],
                           "usage": {"prompt_tokens": 12, "completion_tokens": len(tokens)}})

    handler, url = scripted
    handler.script = [(200, reply("", [("\n", -0.5)])),
                      (200, reply("\n\nParis\nMore text", [("\n", -1.0), ("\n", -1.0),
                                  ("Paris", -0.1), ("\n", -5.0), ("More", -5.0),
                                  (" text", -5.0)]))]
    [result] = OpenAIHTTPGenerator(url, retries=0).generate(
        [ask("capital?", stop=["\n"], logprobs=True)])
    assert result.text == "Paris" and result.token_logprobs == [-1.0, -1.0, -0.1]


def test_the_scheduler_fails_only_the_refused_session_and_stays_ready(scripted):
    from searchagent.errors import GenerationRefused
    from searchagent.scheduler import Scheduler, SchedulerOptions, Session

    handler, url = scripted
    handler.script = [(200, lambda body: (400, '{"error": "context length exceeded"}')
                       if "long" in body["messages"][-1]["content"] else (200, GOOD))]
    scheduler = Scheduler(OpenAIHTTPGenerator(url, retries=0),
                          SchedulerOptions(sessions=3, max_batch=3))
    try:
        futures = [scheduler.submit(Session(id=text), lambda s, text=text:
                                    scheduler.generator.generate([ask(text, stop=["."])])[0])
                   for text in ("short one", "very long", "short two")]
        first, third = futures[0].result(timeout=60), futures[2].result(timeout=60)
        with pytest.raises(GenerationRefused):
            futures[1].result(timeout=60)
    finally:
        scheduler.stop()
    assert first.text == third.text == "Paris"
    assert scheduler.last_backend_error is None               # /readyz stays ready


class Held(BaseHTTPRequestHandler):
    """Holds each POST until ``release`` is set (or 10 s), counting calls in flight."""

    def do_POST(self):  # noqa: N802 (http.server naming)
        cls = type(self)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with cls.lock:
            cls.in_flight += 1
            cls.most = max(cls.most, cls.in_flight)
            if cls.most >= cls.wanted:
                cls.release.set()
        cls.release.wait(timeout=10)
        with cls.lock:
            cls.in_flight -= 1
        cls.answered += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(GOOD.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def held():
    handler = type("Handler", (Held,), {"lock": threading.Lock(), "release": threading.Event(),
                                        "in_flight": 0, "most": 0, "wanted": 99,
                                        "answered": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/v1"
    handler.release.set()
    server.shutdown()
    server.server_close()


def test_a_cancel_returns_before_the_server_answers(held):
    """A cancel was seen only when a chunk of the reply arrived: a server slow to answer
    kept the (single) generation worker waiting after the client had gone."""
    handler, url = held
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    [cut] = OpenAIHTTPGenerator(url, retries=0, timeout_s=30).generate(
        [ask("capital?", cancel=cancel)])
    assert cut.finish_reason == "cancelled" and handler.answered == 0   # still held there
    # an abandoned call holds its slot until it ends: the server never runs more than
    # max_parallel of ours (cancelled calls piled up there, each still generating)
    held_before = handler.in_flight                    # the call above, still held there
    gen = OpenAIHTTPGenerator(url, retries=0, timeout_s=30, max_parallel=2)
    for _ in range(3):
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        assert gen.generate([ask("hi", cancel=cancel)])[0].finish_reason == "cancelled"
    assert handler.most - held_before == 2


def test_the_scheduler_sends_calls_to_a_server_while_others_are_in_flight(held):
    """The generation worker waited for each call to an OpenAI-compatible server before
    sending the next: one slow call held up every request behind it. Each server call is
    held until two are in flight at once."""
    from searchagent.scheduler import Scheduler, SchedulerOptions, Session

    handler, url = held
    handler.wanted = 2
    scheduler = Scheduler(OpenAIHTTPGenerator(url, retries=0, timeout_s=30),
                          SchedulerOptions(sessions=2))
    try:
        first = scheduler.submit(Session(id="a"), lambda s: scheduler.generator.generate(
            [ask("first", stop=["."])])[0])
        while not handler.in_flight:        # the first call is at the server, held there
            time.sleep(0.01)
        second = scheduler.submit(Session(id="b"), lambda s: scheduler.generator.generate(
            [ask("second", stop=["."])])[0])
        assert first.result(timeout=60).text == second.result(timeout=60).text == "Paris"
    finally:
        scheduler.stop()
    assert handler.most == 2


def test_an_echoed_key_a_long_backoff_and_odd_content_are_handled(scripted):
    """A 401 or 5xx body echoing the Authorization header put the API key into errors
    (and /readyz); backoff doubled without a cap (16 retries: 9 hours); a reply whose
    content is a list of parts or a number was a TypeError, not a named error."""
    handler, url = scripted
    handler.script = [(401, '{"error": "invalid key: Bearer sk-SECRET-123"}')]
    with pytest.raises(BackendError, match="HTTP 401") as refused:
        OpenAIHTTPGenerator(url, api_key="sk-SECRET-123", retries=0).generate([ask("hi")])
    handler.script, handler.calls = [(500, '{"error": "got Bearer sk-SECRET-123"}')], 0
    gen = OpenAIHTTPGenerator(url, api_key="sk-SECRET-123", retries=4, backoff_s=5,
                              timeout_s=0.5)
    waits = []
    gen._sleep = lambda seconds, cancelled: waits.append(seconds)
    with pytest.raises(BackendError, match="down or failing") as down:
        gen.generate([ask("hi")])
    assert "SECRET" not in str(refused.value) + str(down.value)
    assert waits == [0.5] * 4 and handler.calls == 5
    escaped = 'sk-SECRET\\"x'                   # echoed JSON-escaped: sk-SECRET\\\"x
    handler.script, handler.calls = [(401, json.dumps({"error": f"bad key {escaped}"}))], 0
    with pytest.raises(BackendError, match="HTTP 401") as refused:
        OpenAIHTTPGenerator(url, api_key=escaped, retries=0).generate([ask("hi")])
    assert "SECRET" not in str(refused.value)
    parts = {"choices": [{"message": {"content": [{"type": "text", "text": "Paris"}]},
                          "finish_reason": "stop"}]}
    handler.script, handler.calls = [(200, json.dumps(parts))], 0
    [result] = OpenAIHTTPGenerator(url, retries=0).generate([ask("capital?")])
    assert result.text == "Paris"
    parts["choices"][0]["message"]["content"] = 5
    handler.script = [(200, json.dumps(parts))]
    with pytest.raises(BackendError, match=r"message.content is a int"):
        OpenAIHTTPGenerator(url, retries=0).generate([ask("capital?")])
