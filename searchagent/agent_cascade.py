"""Serve a question through a trained answer cascade (``policies.cascade``).

Closed book first; after each answer the cascade's next step says whether to stop, retrieve
once, or run multi-hop, and, once answers disagree, which one to serve (each step explores
a random action with the cascade's ``eps`` when the learner explores; the journaled
propensity is the product of the steps' probabilities). Every answer that
was generated is charged: the served Answer's retrieval calls, tokens and seconds are the
sums over the strategies that ran, and its trace holds all of their steps after one
``policy`` step listing the cascade's steps (action and per-action values). Every generated
answer is journaled, so feedback with a gold answer teaches each step (``policies.online``).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from searchagent.strategies.base import Answer, Step


def answer_by_cascade(agent, question: str, ctx: dict | None) -> Answer:
    """``agent``: a searchagent.agent.Agent whose policy is an AnswerCascade."""
    bundle = agent.learner.bundle
    cascade = bundle.policy
    started = time.perf_counter()
    ran = {"parametric": agent._strategy("parametric").run(question, ctx)}
    running = time.perf_counter() - started      # seconds inside strategies

    def answer_of(arm: str) -> tuple[str, float | None]:
        nonlocal running
        if arm not in ran:
            began = time.perf_counter()
            ran[arm] = agent._strategy(arm).run(question, ctx)
            running += time.perf_counter() - began
        return ran[arm].answer, ran[arm].confidence

    def on_step(step: dict) -> None:
        if (ctx or {}).get("on_step"):
            ctx["on_step"]("policy", **step, policy=cascade.algo)

    features = agent._features(question, ran["parametric"])
    requested_lam = (ctx or {}).get("lam")
    served, _, steps = cascade.walk(features, question, answer_of, on_step, requested_lam,
                                    explore=agent.learner.explore)
    seconds = time.perf_counter() - started
    answer = _combined(ran, served, seconds)
    decision = agent.learner.journal(
        features, question, served, [], explored=any(step["explored"] for step in steps),
        propensity=float(np.prod([step["probability"] for step in steps])),
        answers=[{"arm": name, "answer": a.answer, "calls": a.retrieval_calls,
                  "confidence": a.confidence} for name, a in ran.items()], request_id=(ctx or {}).get("request_id"))
    agent.learner.record_served(decision.request_id, answer.answer, answer.retrieval_calls,
                                answer.seconds)
    detail = {**decision.to_dict(), "policy": cascade.algo,
              "lam": bundle.reward.lam if requested_lam is None else float(requested_lam),
              "cascade": steps, "ran": list(ran), "closed_book_reused": served == "parametric",
              "features": True}
    if requested_lam is not None:
        detail["lam_requested"] = float(requested_lam)
    step = Step("policy", max(0.0, seconds - running), detail)
    return replace(answer, strategy=served, trace=[step, *answer.trace])


def _combined(ran: dict[str, Answer], served: str, seconds: float) -> Answer:
    """The served answer, charged with everything every strategy that ran spent."""
    answer = ran[served]
    trace = [step for part in ran.values() for step in part.trace]
    return replace(answer, retrieval_calls=sum(a.retrieval_calls for a in ran.values()),
                   hops=sum(a.hops for a in ran.values()),
                   prompt_tokens=sum(a.prompt_tokens for a in ran.values()),
                   completion_tokens=sum(a.completion_tokens for a in ran.values()),
                   seconds=seconds, trace=trace)
