"""The single-retrieval arm: retrieve k passages once (hybrid by default) and answer
from them within a token budget."""

from __future__ import annotations

from searchagent import prompts
from searchagent.answers import extract_answer
from searchagent.strategies.base import Answer
from searchagent.strategies.tracking import Tracker


class SingleStrategy:
    name = "single"

    def __init__(self, retriever, generator, k: int = 5, context_budget_tokens: int = 1200,
                 max_new_tokens: int = 48, shots: int = 0):
        self.retriever, self.generator = retriever, generator
        self.k, self.budget_tokens = k, context_budget_tokens
        self.max_new_tokens, self.shots = max_new_tokens, shots

    def run(self, question: str, ctx: dict | None = None) -> Answer:
        track = Tracker(self.name, self.generator, ctx)
        k = int(track.ctx.get("k", self.k))
        hits = track.retrieve(self.retriever, question, k)
        if self.generator is None:              # retrieval-only ablation
            return track.answer("", hops=1, confidence=None)
        passages = track.pack(hits, self.budget_tokens,
                              per_passage=max(64, self.budget_tokens // max(k, 1)))
        messages = track.fit(lambda q, p: prompts.reading_messages(q, p, self.shots),
                             question, passages, self.max_new_tokens)
        result = track.generate(messages, self.max_new_tokens, stop=["\n"])
        return track.answer(extract_answer(result.text, question), hops=1,
                            confidence=result.mean_logprob)
