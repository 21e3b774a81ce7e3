"""OpenAI-compatible HTTP backend (vLLM, SGLang, llama.cpp server, llama_cpp.server).

A batch is sent as concurrent ``/chat/completions`` calls so a batching server can run
them together. Connection errors, timeouts, 429 and 5xx are retried with exponential
backoff (``retries`` times); anything else, or a reply that is not a chat completion,
raises ``BackendError`` naming the URL and what was wrong.

Stop strings are the server's to apply, but a model that opens its reply with a blank line
(SmolLM2-size models often do after a prefilled answer marker) is stopped there by a
``"\n"`` stop: an empty reply. Such a reply is asked again without the whitespace stops,
which are then applied here past the leading whitespace (``cut_at_stop``); the result
counts both calls' tokens and time.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from searchagent.errors import BackendError
from searchagent.generators.base import GenRequest, GenResult, check_request, cut_at_stop

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


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
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
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
        return list(self._pool.map(self._complete, requests))

    def count_tokens(self, text: str) -> int:
        """Ask the server's tokenizer (vLLM/SGLang ``/tokenize``, llama_cpp.server
        ``/extras/tokenize``, llama.cpp ``/tokenize``); estimate 4 chars/token if none."""
        with self._route_lock:
            if self._tokenize_route is None:
                self._tokenize_route = self._find_tokenize_route()
        if self._tokenize_route == "":
            return max(1, math.ceil(len(text) / 4))
        url, body = self._tokenize_body(self._tokenize_route, text)
        return len(self._post(url, body).get("tokens", []))

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
        reply = self._post(f"{self.base_url}/chat/completions", body)
        seconds = time.perf_counter() - start
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] or ""
            usage = reply.get("usage") or {}
            logprobs = _chat_logprobs(choice.get("logprobs")) if request.logprobs else None
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{self.base_url}/chat/completions answered something that is "
                               f"not a chat completion (missing {exc}): {str(reply)[:200]}") from exc
        text, _ = cut_at_stop(text, request.stop)
        details = usage.get("prompt_tokens_details") or {}
        result = GenResult(text=text.strip(), prompt_tokens=int(usage.get("prompt_tokens", 0)),
                           completion_tokens=int(usage.get("completion_tokens", 0)),
                           seconds=seconds, token_logprobs=logprobs,
                           cached_tokens=int(details.get("cached_tokens") or 0),
                           finish_reason=str(choice.get("finish_reason") or ""))
        if blank_retry and not result.text and result.finish_reason == "stop" \
                and any(s and not s.strip() for s in request.stop) and not request.cancelled():
            again = self._complete(request, blank_retry=False)   # stopped at a blank line
            again.prompt_tokens += result.prompt_tokens
            again.completion_tokens += result.completion_tokens
            again.seconds += result.seconds
            return again
        return result

    def _post(self, url: str, body: dict) -> dict:
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post(url, json=body)
            except httpx.TimeoutException:
                last = "timed out"
                continue
            except httpx.TransportError as exc:
                last = f"not reachable ({exc.__class__.__name__}: {exc})"
                continue
            if response.status_code in RETRYABLE_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                raise BackendError(f"generator server {url} refused the request: HTTP "
                                   f"{response.status_code}: {response.text[:300]}")
            try:
                data = response.json()
            except ValueError as exc:
                raise BackendError(f"generator server {url} answered non-JSON: "
                                   f"{response.text[:200]!r}") from exc
            if not isinstance(data, dict):
                raise BackendError(f"generator server {url} answered {type(data).__name__}, "
                                   "expected a JSON object")
            return data
        raise BackendError(f"generator server {url} is down or failing: {last} "
                           f"(after {self.retries + 1} attempts)")

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


def _chat_logprobs(block) -> list[float] | None:
    """``choices[0].logprobs`` in the chat format ({content: [{logprob}]}) or the older
    completions format ({token_logprobs: [...]})."""
    if not block:
        return None
    if isinstance(block.get("content"), list):
        return [float(item["logprob"]) for item in block["content"]]
    if isinstance(block.get("token_logprobs"), list):
        return [float(x) for x in block["token_logprobs"] if x is not None]
    return None
