"""The parametric arm: a closed-book answer; its mean token log-probability is the
confidence the policy reads."""

from __future__ import annotations

from searchagent import prompts
from searchagent.answers import extract_answer
from searchagent.strategies.base import Answer
from searchagent.strategies.tracking import Tracker


class ParametricStrategy:
    name = "parametric"

    def __init__(self, generator, max_new_tokens: int = 32, shots: int = 0):
        self.generator, self.max_new_tokens, self.shots = generator, max_new_tokens, shots

    def run(self, question: str, ctx: dict | None = None) -> Answer:
        track = Tracker(self.name, self.generator, ctx)
        messages = track.fit(lambda q, _: prompts.parametric_messages(q, self.shots),
                             question, [], self.max_new_tokens)
        result = track.generate(messages, self.max_new_tokens, stop=["\n"])
        return track.answer(extract_answer(result.text, question), hops=0,
                            confidence=result.mean_logprob)
