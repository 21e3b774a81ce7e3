"""What a strategy spends: every generation and retrieval goes through a ``Tracker``,
which times it, counts its tokens and calls, and records it as a trace ``Step``."""

from __future__ import annotations

import time

from searchagent.generators.base import GenRequest, GenResult, Generator
from searchagent.strategies.base import Answer, Step
from searchagent.strategies.context import fit_prompt, pack
from searchagent.types import Hit, budget_spent, search_with_stats


class Tracker:
    """One question's account; ``ctx`` carries the per-request overrides."""

    def __init__(self, strategy: str, generator: Generator, ctx: dict | None):
        self.strategy, self.generator = strategy, generator
        self.ctx = ctx or {}
        self.budget = self.ctx.get("budget")
        self.session = str(self.ctx.get("session", ""))
        self.started = time.perf_counter()
        self.trace: list[Step] = []
        self.prompt_tokens = self.completion_tokens = self.retrieval_calls = 0
        self.passages: dict[str, dict] = {}        # id -> {id, title, score}, first-seen order

    def generate(self, messages: list[dict], max_new_tokens: int, *, stop: list[str] | None = None,
                 logprobs: bool = True, purpose: str = "answer") -> GenResult:
        request = GenRequest(messages=messages, max_new_tokens=max_new_tokens, stop=stop or [],
                             logprobs=logprobs, session=self.session)
        start = time.perf_counter()
        result = self.generator.generate([request])[0]
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.trace.append(Step("generate", time.perf_counter() - start, {
            "purpose": purpose, "text": result.text, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "cached_tokens": result.cached_tokens, "generator_seconds": result.seconds,
            "mean_logprob": result.mean_logprob}))
        return result

    def fit(self, build, question: str, passages: list[tuple[str, str]],
            max_new_tokens: int) -> list[dict]:
        """``build(question, passages)`` fitted to the generator's context; when something
        had to be cut, a ``fit_context`` step says what (also to a streaming client)."""
        messages, note = fit_prompt(self.generator, build, question, passages, max_new_tokens)
        if note is not None:
            self.trace.append(Step("fit_context", 0.0, note))
            if self.ctx.get("on_step"):
                self.ctx["on_step"]("fit_context", **note)
        return messages

    def pack(self, hits: list[Hit], budget_tokens: int,
             per_passage: int | None = None) -> list[tuple[str, str]]:
        """``context.pack``; when passages had to be left out to stay within
        ``budget_tokens`` (``agent.context_budget_tokens``), a ``fit_budget`` step says how
        many (once per change: multi-hop packs again every hop)."""
        packed = pack(self.generator, hits, budget_tokens, per_passage)
        if len(packed) < len(hits):
            note = {"budget_tokens": budget_tokens, "per_passage_tokens": per_passage,
                    "passages_given": len(hits), "passages": len(packed),
                    "ids_left_out": [hit.id for hit in hits[len(packed):]]}
            last = next((s.detail for s in reversed(self.trace) if s.kind == "fit_budget"), None)
            if last != note:
                self.trace.append(Step("fit_budget", 0.0, note))
                if self.ctx.get("on_step"):
                    self.ctx["on_step"]("fit_budget", **note)
        return packed

    def retrieve(self, retriever, query: str, k: int, *, exclude=()) -> list[Hit]:
        start = time.perf_counter()
        hits, stats = search_with_stats(retriever, query, k, budget=self.budget,
                                        exclude=exclude)
        self.retrieval_calls += 1
        for hit in hits:
            self.passages.setdefault(hit.id, {"id": hit.id, "title": hit.title,
                                              "score": round(float(hit.score), 6)})
        self.trace.append(Step("retrieve", time.perf_counter() - start, {
            "query": query, "k": k, "ids": [h.id for h in hits],
            "titles": [h.title for h in hits], **stats}))
        return hits

    def stopped(self) -> bool:
        """The caller cancelled, or its deadline passed: finish with what we have."""
        return budget_spent(self.budget)

    def answer(self, text: str, *, hops: int, confidence: float | None) -> Answer:
        return Answer(answer=text, strategy=self.strategy, passages=list(self.passages.values()),
                      retrieval_calls=self.retrieval_calls, hops=hops,
                      prompt_tokens=self.prompt_tokens,
                      completion_tokens=self.completion_tokens,
                      seconds=time.perf_counter() - self.started, confidence=confidence,
                      trace=self.trace)
