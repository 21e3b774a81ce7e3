"""OpenAI-compatible HTTP backend (vLLM, SGLang, llama.cpp server, llama_cpp.server).

A batch is sent as concurrent ``/chat/completions`` calls so a batching server can run
them together; one call's failure fails that request only (``BatchErrors``). Connection
errors, timeouts (``timeout_s`` bounds a whole call, however slowly its reply trickles
in), 429 and 5xx are retried with exponential backoff or the server's ``Retry-After``
(``retries`` times, each wait at most ``timeout_s``), never for a request already
cancelled; a cancel ends the wait for a reply at once. A refusal of the request
itself (400, 413, 422: a prompt over the model's context) raises ``GenerationRefused``;
anything else, or a reply that is not a chat completion, ``BackendError``, naming the URL
and what was wrong (never the API key).

Stop strings are the server's to apply, but a model that opens its reply with a blank line
(SmolLM2-size models often do after a prefilled answer marker) is stopped there by a
``"\n"`` stop: an empty reply. Such a reply is asked again without the whitespace stops,
which are then applied here past the leading whitespace (``cut_at_stop``); the result
counts both calls' tokens and time.
"""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from searchagent.errors import BackendError, BatchErrors, GenerationRefused, InputError
from searchagent.generators.base import GenRequest, GenResult, check_request, cut_at_stop
from searchagent.generators.openai_reply import (chat_logprobs, content_text, logprobs_of,
                                                 retry_after)

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
REFUSED_STATUS = {400, 413, 422}        # this request, not the server: no outage
MAX_REPLY_BYTES = 16 * 2**20


def check_api_key(api_key: str) -> str:
    """The key as sent (surrounding whitespace dropped), or an ``InputError`` if an HTTP
    header cannot carry it (the message never shows the key)."""
    key = api_key.strip()
    if any(not "\x21" <= c <= "\x7e" for c in key):
        raise InputError("the API key has a character an HTTP header cannot carry "
                         "(spaces, control or non-ASCII characters)", field="generator.api_key")
    return key


class _Cancelled(Exception):
    """The request was cancelled while waiting for a reply or a retry."""


class OpenAIHTTPGenerator:
    """Generator over an OpenAI-compatible chat completions endpoint."""

    name = "openai"

    def __init__(self, base_url: str, model: str = "default", api_key: str = "",
                 timeout_s: float = 60.0, retries: int = 2, backoff_s: float = 0.5,
                 max_parallel: int = 8):
        import httpx

        if not base_url:
            raise BackendError("the openai backend needs generator.base_url, e.g. "
                               "http://127.0.0.1:8080/v1")
        self.base_url = base_url.rstrip("/")
        self.model, self.retries, self.backoff_s = model, retries, backoff_s
        self.max_parallel = max_parallel      # calls in flight at once (the scheduler's too)
        # held by a call's thread until it ends, a cancelled one included: the server never
        # runs more than max_parallel of our calls, however many were abandoned
        self._calls = threading.BoundedSemaphore(max_parallel)
        self.timeout_s = float(timeout_s)
        self._key = check_api_key(api_key)
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10)),
                                    headers=headers)
        self._pool = ThreadPoolExecutor(max_workers=max_parallel,
                                        thread_name_prefix="openai-http")
        self._tokenize_route: str | None = None
        self._route_lock = threading.Lock()

    # -- protocol ---------------------------------------------------------------------
    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        for i, request in enumerate(requests):
            check_request(request, i)
        if len(requests) == 1:
            return [self._complete(requests[0])]
        futures = [self._pool.submit(self._complete, request) for request in requests]
        outcomes = [future.exception() or future.result() for future in futures]
        if any(isinstance(outcome, BaseException) for outcome in outcomes):
            raise BatchErrors(outcomes)
        return outcomes

    def count_tokens(self, text: str) -> int:
        """Ask the server's tokenizer (vLLM/SGLang ``/tokenize``, llama_cpp.server
        ``/extras/tokenize``, llama.cpp ``/tokenize``); estimate 4 chars/token if none."""
        with self._route_lock:
            if self._tokenize_route is None:
                self._tokenize_route = self._find_tokenize_route()
        if self._tokenize_route == "":
            return max(1, math.ceil(len(text) / 4))
        url, body = self._tokenize_body(self._tokenize_route, text)
        return len(self._post(url, body).get("tokens") or [])

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()

    # -- internals --------------------------------------------------------------------
    def _complete(self, request: GenRequest, blank_retry: bool = True) -> GenResult:
        stops = list(request.stop) if blank_retry else [s for s in request.stop if s.strip()]
        body = {"model": self.model, "messages": request.messages,
                "max_tokens": request.max_new_tokens, "temperature": request.temperature,
                "stream": False}
        if stops:
            body["stop"] = stops
        if request.logprobs:
            body.update(logprobs=True, top_logprobs=1)   # llama_cpp.server needs both
        if request.messages[-1]["role"] == "assistant":     # prefill (vLLM / SGLang names)
            body.update(continue_final_message=True, add_generation_prompt=False)
        start = time.perf_counter()
        try:
            reply = self._post(f"{self.base_url}/chat/completions", body, request.cancelled)
        except _Cancelled:
            return GenResult("", 0, 0, time.perf_counter() - start, finish_reason="cancelled")
        seconds = time.perf_counter() - start
        try:
            choice = reply["choices"][0]
            text = content_text(choice["message"]["content"])
            usage = reply.get("usage") or {}
            tokens = chat_logprobs(choice.get("logprobs")) if request.logprobs else None
            details = usage.get("prompt_tokens_details") or {}
            counts = [int(value or 0) for value in (usage.get("prompt_tokens"),
                      usage.get("completion_tokens"), details.get("cached_tokens"))]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise BackendError(f"{self.base_url}/chat/completions answered something that is "
                               f"not a chat completion ({type(exc).__name__}: {exc}): "
                               f"{self._hide_key(str(reply))[:200]}") from exc
        text, cut = cut_at_stop(text, request.stop)
        result = GenResult(text=text.strip(), prompt_tokens=counts[0],
                           completion_tokens=counts[1], seconds=seconds,
                           token_logprobs=logprobs_of(tokens, len(text) if cut else None),
                           cached_tokens=counts[2],
                           finish_reason=str(choice.get("finish_reason") or ""))
        if blank_retry and not result.text and result.finish_reason == "stop" \
                and any(s and not s.strip() for s in request.stop) and not request.cancelled():
            again = self._complete(request, blank_retry=False)   # stopped at a blank line
            again.prompt_tokens += result.prompt_tokens
            again.completion_tokens += result.completion_tokens
            again.seconds += result.seconds
            return again
        return result

    def _post(self, url: str, body: dict, cancelled=lambda: False) -> dict:
        last, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(min(max(wait, self.backoff_s * 2 ** (attempt - 1)),
                                self.timeout_s), cancelled)
            if cancelled():
                raise _Cancelled()
            try:
                status, headers, raw = self._send(url, body, cancelled)
            except OSError as exc:       # _send's timeouts and transport failures
                last = self._hide_key(str(exc))
                continue
            wait = retry_after(headers.get("retry-after"), self.timeout_s)
            text = self._hide_key(raw.decode("utf-8", "replace"))   # a body may echo it
            if status in RETRYABLE_STATUS:
                last = f"HTTP {status}: {text[:200]}"
                continue
            if status in REFUSED_STATUS:
                raise GenerationRefused(f"the generator server {url} refused this request: "
                                        f"HTTP {status}: {text[:300]}")
            if status != 200:
                raise BackendError(f"generator server {url} refused the request: HTTP "
                                   f"{status}: {text[:300]}")
            try:
                data = json.loads(raw)
            except ValueError as exc:
                raise BackendError(f"generator server {url} answered non-JSON: "
                                   f"{text[:200]!r}") from exc
            if not isinstance(data, dict):
                raise BackendError(f"generator server {url} answered {type(data).__name__}, "
                                   "expected a JSON object")
            return data
        raise BackendError(f"generator server {url} is down or failing: {last} "
                           f"(after {self.retries + 1} attempts)")

    def _send(self, url: str, body: dict, cancelled) -> tuple[int, dict, bytes]:
        """One call: (status, headers, body bytes). It runs on its own thread and is waited
        for here, so ``timeout_s`` bounds the whole call (httpx's timeouts bound each read:
        a reply trickling in would never end) and a cancel returns at once, even before
        the server answers; the abandoned call stops at its next chunk or read timeout."""
        outcome: dict = {}
        stop = threading.Event()
        deadline = time.monotonic() + self.timeout_s
        while not self._calls.acquire(timeout=0.05):      # an abandoned call may hold one
            if cancelled():
                raise _Cancelled()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no free call slot within timeout_s={self.timeout_s:g} "
                                   f"({self.max_parallel} calls still running)")

        def call() -> None:
            try:
                outcome["reply"] = self._read_reply(url, body, stop)
            except BaseException as exc:   # noqa: BLE001 -- re-raised on the caller's thread
                outcome["error"] = exc
            finally:
                self._calls.release()

        thread = threading.Thread(target=call, name="openai-http-call", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(timeout=0.05)
            if thread.is_alive() and cancelled():
                stop.set()
                raise _Cancelled()
            if thread.is_alive() and time.monotonic() > deadline:
                stop.set()
                raise TimeoutError(f"no whole reply within timeout_s={self.timeout_s:g}")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["reply"]

    def _read_reply(self, url: str, body: dict, stop: threading.Event
                    ) -> tuple[int, dict, bytes]:
        import httpx

        try:
            with self._client.stream("POST", url, json=body) as response:
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    if stop.is_set():
                        raise _Cancelled()
                    size += len(chunk)
                    if size > MAX_REPLY_BYTES:
                        raise OSError(f"reply over {MAX_REPLY_BYTES >> 20} MiB")
                    chunks.append(chunk)
                return response.status_code, dict(response.headers), b"".join(chunks)
        except httpx.TimeoutException:
            raise TimeoutError("timed out") from None
        except httpx.TransportError as exc:
            raise OSError(f"not reachable ({exc.__class__.__name__}: {exc})") from None

    def _sleep(self, seconds: float, cancelled) -> None:
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            if cancelled():
                raise _Cancelled()
            time.sleep(min(left, 0.1))

    def _hide_key(self, text: str) -> str:
        """``text`` without the API key, as sent or as a JSON string or repr escapes it."""
        if not self._key:
            return text
        for form in {self._key, json.dumps(self._key)[1:-1], repr(self._key)[1:-1]}:
            text = text.replace(form, "***")
        return text

    def _find_tokenize_route(self) -> str:
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        for route in (f"{root}/tokenize", f"{root}/extras/tokenize"):
            url, body = self._tokenize_body(route, "probe")
            try:
                response = self._client.post(url, json=body)
                if response.status_code == 200 and "tokens" in response.json():
                    return route
            except Exception:   # any failure just means "not this route"
                continue
        return ""

    def _tokenize_body(self, route: str, text: str) -> tuple[str, dict]:
        if route.endswith("/extras/tokenize"):
            return route, {"input": text, "model": self.model}
        return route, {"prompt": text, "content": text, "model": self.model,
                       "add_special_tokens": False}
