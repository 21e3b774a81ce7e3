"""transformers backend: a local model folder, or a GGUF file via ``gguf_file=``.

Requests in one ``generate`` call are decoded together: prompts are left-padded into a
batch (grouped by max_new_tokens and temperature), stop strings are applied afterwards,
and token log-probabilities come from ``compute_transition_scores``. ``context_tokens``
(``generator.context_tokens``, capped at the model's own ``max_position_embeddings``) is
the window the strategies fit their prompts to; a longer prompt is refused.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Sequence

from searchagent.errors import BackendError, InputError
from searchagent.generators.base import (GenRequest, GenResult, check_request, cut_at_stop,
                                         split_prefill)
from searchagent.generators.prompt_pieces import marked, pieces
from searchagent.models import gguf_path


class TransformersGenerator:
    """Batched generation with padding on CPU or CUDA."""

    name = "transformers"

    def __init__(self, model: str = "default", threads: int = 0, device: str | None = None,
                 batch_size: int = 8, dtype: str = "auto", context_tokens: int = 2048):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        folder, gguf_file = _resolve(model)
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        torch_dtype = {"auto": torch.float16 if self.device == "cuda" else torch.float32,
                       "float32": torch.float32, "float16": torch.float16,
                       "bfloat16": torch.bfloat16}[dtype]
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype,
                                                              **kwargs).to(self.device)
        except (OSError, ValueError, ImportError) as exc:
            raise BackendError(f"cannot load transformers model {model!r}: {exc}") from exc
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        own = getattr(self.model.config, "max_position_embeddings", None)
        self.context_tokens = min(context_tokens, own) if isinstance(own, int) else context_tokens
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._torch = torch

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        """The prompt's tokens as ``generate`` feeds them (chat template, then any prefill):
        the template's control tokens, the messages' text as plain text."""
        conversation, prefill = split_prefill(messages)
        parts = pieces(self._render(marked(conversation)), conversation, prefill)
        if parts is None:        # a template that edits contents: render them in place
            parts = [(self._render(conversation) + prefill, False)]
        return [token for text, is_content in parts for token in self.tokenizer.encode(
            text, add_special_tokens=False, split_special_tokens=is_content)]

    def _render(self, conversation: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                  add_generation_prompt=True)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        for i, request in enumerate(requests):
            check_request(request, i)
        results: list[GenResult | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault((request.max_new_tokens, request.temperature), []).append(i)
        for (max_new, temperature), members in groups.items():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                for i, result in zip(chunk, self._batch([requests[i] for i in chunk],
                                                        max_new, temperature)):
                    results[i] = result
        return results  # type: ignore[return-value]

    def _batch(self, requests: list[GenRequest], max_new: int,
               temperature: float) -> list[GenResult]:
        torch = self._torch
        encoded = self.tokenizer.pad(
            {"input_ids": [self.prompt_tokens(request.messages) for request in requests]},
            padding=True, return_tensors="pt").to(self.device)
        for size in encoded["attention_mask"].sum(dim=1).tolist():
            if size + max_new > self.context_tokens:
                raise InputError(f"prompt has {size} tokens; with max_new_tokens={max_new} it "
                                 f"exceeds the context of {self.context_tokens} "
                                 "(generator.context_tokens)", field="messages")
        sample = temperature > 0
        with self._lock, torch.inference_mode():
            start = time.perf_counter()
            output = self.model.generate(
                **encoded, max_new_tokens=max_new, do_sample=sample,
                temperature=temperature if sample else None, top_p=None, top_k=None,
                pad_token_id=self.tokenizer.pad_token_id, return_dict_in_generate=True,
                output_scores=True, stopping_criteria=[_RowsCancelled(requests)])
            seconds = time.perf_counter() - start
            scores = self.model.compute_transition_scores(output.sequences, output.scores,
                                                          normalize_logits=True)
        width = encoded["input_ids"].shape[1]
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        results = []
        for row, request in enumerate(requests):
            generated = output.sequences[row, width:].tolist()
            n = next((j for j, tok in enumerate(generated) if tok in ends), len(generated))
            text, stopped = cut_at_stop(
                self.tokenizer.decode(generated[:n], skip_special_tokens=True), request.stop)
            if stopped:   # count only the tokens up to the stop string
                n = min(n, len(self.tokenizer.encode(text, add_special_tokens=False)) + 1)
            logprobs = [float(x) for x in scores[row, :n].tolist()]
            finish = "stop" if stopped or n < len(generated) else "length"
            if request.cancelled():
                finish = "cancelled"
            results.append(GenResult(text=text.strip(), prompt_tokens=int(prompt_lengths[row]),
                                     completion_tokens=n, seconds=seconds,
                                     token_logprobs=logprobs if request.logprobs else None,
                                     finish_reason=finish))
        return results


class _RowsCancelled:
    """A stopping criterion: a row whose request was cancelled stops decoding."""

    def __init__(self, requests: list[GenRequest]):
        self.requests = requests

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.tensor([r.cancelled() for r in self.requests], device=input_ids.device)


def _resolve(model: str) -> tuple[str, str | None]:
    """``(folder, gguf_file)``: a GGUF (bundled default or a path) or a model folder."""
    if model == "default" or model.endswith(".gguf"):
        path = Path(gguf_path(model))
        return str(path.parent), path.name
    if not Path(model).is_dir():
        raise BackendError(f"transformers model folder not found: {model} (models are never "
                           "downloaded; pass a local folder or a .gguf file)")
    return model, None
