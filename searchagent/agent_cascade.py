"""Serve a question through a trained answer cascade (``policies.cascade``).

Closed book first; after each answer the cascade's next step says whether to stop, retrieve
once, or run multi-hop, and, once answers disagree, which one to serve. Every answer that
was generated is charged: the served Answer's retrieval calls, tokens and seconds are the
sums over the strategies that ran, and its trace holds all of their steps after one
``policy`` step listing the cascade's steps (action and per-action values). Every generated
answer is journaled, so feedback with a gold answer teaches each step (``policies.online``).
"""

from __future__ import annotations

import time
from dataclasses import replace

from policies.cascade import ACTIONS, STEPS
from searchagent.strategies.base import ARMS, Answer, Step


def answer_by_cascade(agent, question: str, ctx: dict | None) -> Answer:
    """``agent``: a searchagent.agent.Agent whose policy is an AnswerCascade."""
    bundle = agent.learner.bundle
    cascade = bundle.policy
    started = time.perf_counter()
    ran = {"parametric": agent._strategy("parametric").run(question, ctx)}
    choose_started = time.perf_counter()
    features = agent._features(question, ran["parametric"])
    overhead = time.perf_counter() - choose_started
    steps: list[dict] = []

    def decide(step: int) -> str:
        nonlocal overhead
        began = time.perf_counter()
        action, values = cascade.decide(step, features, question,
                                        [a.answer for a in ran.values()])
        overhead += time.perf_counter() - began
        steps.append({"step": STEPS[step], "action": action, "actions": list(ACTIONS[step]),
                      "values": [round(float(v), 4) for v in values]})
        if (ctx or {}).get("on_step"):
            ctx["on_step"]("policy", **steps[-1], policy=cascade.algo)
        return action

    action = decide(0)
    if action == "stop":
        served = "parametric"
    elif action == "multi":
        ran["multi"] = agent._strategy("multi").run(question, ctx)
        served = "multi"
    else:
        ran["single"] = agent._strategy("single").run(question, ctx)
        action = decide(1)
        if action == "escalate":
            ran["multi"] = agent._strategy("multi").run(question, ctx)
            served = ARMS[ACTIONS[2].index(decide(2))]
        else:
            served = "parametric" if action == "serve_closed_book" else "single"
    answer = _combined(ran, served, time.perf_counter() - started)
    decision = agent.learner.journal(
        features, question, served, [],
        answers=[{"arm": name, "answer": a.answer, "calls": a.retrieval_calls}
                 for name, a in ran.items()])
    agent.learner.record_served(decision.request_id, answer.answer, answer.retrieval_calls,
                                answer.seconds)
    detail = {**decision.to_dict(), "policy": cascade.algo, "lam": bundle.reward.lam,
              "cascade": steps, "ran": list(ran), "closed_book_reused": served == "parametric",
              "features": True}
    step = Step("policy", max(0.0, overhead), detail)
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
