"""llama.cpp backend (llama-cpp-python): one model instance, a lock, greedy or sampled decoding.

Token log-probabilities come from the logits row that produced each token
(``llama_get_logits_ith(ctx, -1)`` right after sampling), so the model is opened without
``logits_all`` (which would keep n_ctx x vocab floats). KV reuse: llama-cpp-python's
``generate`` skips the longest prefix shared with the tokens already in the context; on
top of that this class snapshots the last few sessions' llama.cpp states (KV cells only,
via ``llama_state_get_data``; ``Llama.save_state`` would also copy n_batch x vocab logits)
and, before each call, loads the snapshot sharing the longest prefix with the prompt: a
session's next hop reuses its own prefix even when other sessions ran in between, and a
new session reuses the system prompt and demonstrations another session already decoded.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections import OrderedDict
from typing import Sequence

import numpy as np

from searchagent.errors import BackendError, InputError
from searchagent.generators.base import (GenRequest, GenResult, check_request, cut_at_stop,
                                         split_prefill)
from searchagent.generators.prompt_pieces import marked, pieces
from searchagent.models import gguf_path

PREFILL_CHUNK = 128      # prompt tokens evaluated between two looks at the request's cancel


class LlamaCppGenerator:
    """Thread-safe, batched (sequentially decoded) generator over one GGUF model."""

    name = "llama_cpp"

    def __init__(self, model: str = "default", threads: int = 0, context_tokens: int = 2048,
                 session_states: int = 4, n_gpu_layers: int = 0, seed: int = 0):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BackendError("the llama_cpp backend needs llama-cpp-python") from exc
        self.path = gguf_path(model)
        threads = threads or os.cpu_count() or 1
        try:
            self.llm = Llama(model_path=self.path, n_ctx=context_tokens, n_threads=threads,
                             n_threads_batch=threads, n_gpu_layers=n_gpu_layers,
                             logits_all=False, seed=seed, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"cannot load GGUF model {self.path}: {exc}") from exc
        self.context_tokens = context_tokens
        self.session_states = session_states
        self._sessions: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.RLock()
        self._format = _chat_formatter(self.llm)

    # -- protocol ---------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        for i, request in enumerate(requests):
            check_request(request, i)
        return [self._generate_one(request, i) for i, request in enumerate(requests)]

    # -- internals --------------------------------------------------------------------
    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        """The chat template's control tokens, the messages' text as plain text."""
        conversation, prefill = split_prefill(messages)
        rendered, add_bos = self._format(marked(conversation))
        parts = pieces(rendered, conversation, prefill)
        if parts is None:        # a template that edits contents: render them in place
            prompt, add_bos = self._format(conversation)
            parts = [(prompt + prefill, False)]
        tokens: list[int] = []
        for i, (text, is_content) in enumerate(parts):    # BOS, when wanted, leads piece 0
            tokens += self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos and i == 0,
                                        special=not is_content)
        return tokens

    def _generate_one(self, request: GenRequest, index: int) -> GenResult:
        tokens = self.prompt_tokens(request.messages)
        if len(tokens) + request.max_new_tokens > self.context_tokens:
            raise InputError(f"prompt has {len(tokens)} tokens; with max_new_tokens="
                             f"{request.max_new_tokens} it exceeds the context of "
                             f"{self.context_tokens} (generator.context_tokens)",
                             field=f"requests[{index}].messages")
        with self._lock:
            start = time.perf_counter()
            self._restore_longest_prefix(tokens)
            cached = _common_prefix(self.llm._input_ids, tokens)
            cached = min(cached, len(tokens) - 1)   # the last prompt token is always re-run
            text, n_out, logprobs, finish = self._decode(tokens, cached, request)
            if request.session:
                self._save_session(request.session)
            seconds = time.perf_counter() - start
        return GenResult(text=text.strip(), prompt_tokens=len(tokens), completion_tokens=n_out,
                         seconds=seconds, token_logprobs=logprobs if request.logprobs else None,
                         cached_tokens=max(cached, 0), finish_reason=finish)

    def _decode(self, tokens: list[int], cached: int, request: GenRequest):
        llm = self.llm
        out: list[int] = []
        logprobs: list[float] = []
        text, finish = "", "length"
        if request.cancelled() or self._prefill(tokens, cached, request):
            return text, 0, logprobs, "cancelled"
        for token in llm.generate(tokens, temp=request.temperature, top_k=40, top_p=0.95,
                                  repeat_penalty=1.0, reset=True):
            if request.cancelled():
                finish = "cancelled"
                break
            if llm.token_eos() == token or _is_end_of_generation(llm, token):
                finish = "stop"
                break
            logprobs.append(_token_logprob(self._last_logits(), token))
            out.append(token)
            text, stopped = cut_at_stop(
                llm.detokenize(out).decode("utf-8", errors="ignore"), request.stop)
            if stopped:
                finish = "stop"
                break
            if len(out) >= request.max_new_tokens:
                break
        return text, len(out), logprobs, finish

    def _prefill(self, tokens: list[int], keep: int, request: GenRequest) -> bool:
        """Evaluate the prompt but its last token in chunks of ``PREFILL_CHUNK``, the
        cancel checked between them (``Llama.generate`` evaluates a whole prompt before
        its first token: a 1,500-token prompt kept a cancelled request for 29 s). The
        ``keep`` tokens already in the context are kept; ``generate`` then runs the last
        one. True when the request was cancelled."""
        llm = self.llm
        if keep < llm.n_tokens and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            llm.reset()     # a recurrent model's memory cannot be cut back: start over
            keep = 0
        llm.n_tokens = keep
        for start in range(llm.n_tokens, len(tokens) - 1, PREFILL_CHUNK):
            if request.cancelled():
                return True
            llm.eval(tokens[start:min(start + PREFILL_CHUNK, len(tokens) - 1)])
        return False

    def _last_logits(self) -> np.ndarray:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),))

    def _restore_longest_prefix(self, tokens: list[int]) -> None:
        """Load the saved state that shares the most leading tokens with ``tokens``, when
        it shares more than the context already holds (newest state first on ties)."""
        import llama_cpp

        in_context = _common_prefix(self.llm._input_ids, tokens)
        shared, saved = max(((_common_prefix(ids, tokens), (ids, blob))
                             for ids, blob in reversed(self._sessions.values())),
                            key=lambda item: item[0], default=(0, None))
        if saved is None or shared <= in_context:
            return
        input_ids, blob = saved
        buffer = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
        if llama_cpp.llama_state_set_data(self.llm._ctx.ctx, buffer, len(blob)) != len(blob):
            self.llm.reset()     # could not restore: decode the whole prompt instead
            return
        self.llm.input_ids[:len(input_ids)] = input_ids
        self.llm.n_tokens = len(input_ids)
        self.llm._requires_eval = True

    def _save_session(self, session: str) -> None:
        import llama_cpp

        if self.session_states <= 0:
            return
        ctx = self.llm._ctx.ctx
        size = llama_cpp.llama_state_get_size(ctx)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(ctx, buffer, size)
        # string_at copies in C; bytes(buffer[:written]) built a list of ints under the
        # GIL (~0.1 s for a 5 MB state), stalling the server's event loop (slow 429s)
        self._sessions[session] = (np.array(self.llm._input_ids, dtype=np.intc),
                                   ctypes.string_at(buffer, written))
        self._sessions.move_to_end(session)
        while len(self._sessions) > self.session_states:
            self._sessions.popitem(last=False)


def _chat_formatter(llm):
    """``messages -> (prompt, add_bos)`` using the GGUF's own chat template."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        def plain(messages: list[dict]) -> tuple[str, bool]:
            lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
            return "\n".join(lines) + "\nAssistant:", True
        return plain
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text_of(token_id: int) -> str:
        return llm._model.token_get_text(token_id) if token_id != -1 else ""

    formatter = Jinja2ChatFormatter(template=template, eos_token=text_of(llm.token_eos()),
                                    bos_token=text_of(llm.token_bos()))

    def render(messages: list[dict]) -> tuple[str, bool]:
        result = formatter(messages=messages)
        return result.prompt, not getattr(result, "added_special", False)
    return render


def _is_end_of_generation(llm, token: int) -> bool:
    import llama_cpp

    vocab = getattr(llm._model, "vocab", None)
    check = getattr(llama_cpp, "llama_vocab_is_eog", None)
    if check is not None and vocab is not None:
        return bool(check(vocab, token))
    check = getattr(llama_cpp, "llama_token_is_eog", None)
    return bool(check(llm._model.model, token)) if check is not None else False


def _token_logprob(logits: np.ndarray, token: int) -> float:
    row = np.asarray(logits, dtype=np.float64)
    top = row.max()
    return float(row[token] - top - np.log(np.exp(row - top).sum()))


def _common_prefix(a, b) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n
