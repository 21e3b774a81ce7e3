"""The agent: question -> features -> policy -> arm -> strategy -> Answer.

``Agent.answer(question, strategy="auto")`` lets the policy pick the arm; naming an arm
forces it. Every answer carries a ``policy`` trace step (first in ``Answer.trace``) with the
decision: request id, policy, feature-set fingerprint, per-arm scores, whether the arm was
explored or forced. ``Agent.feedback(request_id, gold=... | reward=...)`` scores a served
answer and updates the policy online (see ``policies.online``).

Confidence feature: when the policy uses it, the agent first runs the parametric arm (a
cheap closed-book answer) and reads its mean token log-probability. If the policy then
picks ``parametric``, that closed-book answer is returned as is (no second generation);
otherwise its tokens and seconds are added to the chosen arm's cost. A forced arm other
than parametric skips the probe: its decision is journaled without features, so feedback
on it is recorded but not learned from.

Cascade: a stepwise policy (``policies.cascade``, ``policy train --algo cascade``) is run by
``searchagent.agent_cascade``: closed book first, then, step by step, stop, retrieve once or
go multi-hop, and serve whichever generated answer the cascade trusts; every strategy that
ran is charged to the answer, and the ``policy`` step lists the cascade's steps.

Lambda: a policy is trained at one lambda (``searchagent policy train --lam``). A
per-request ``ctx["lam"]`` is honoured by the policies that keep quality and cost apart and
can rescore for any lambda (LinUCB, Thompson, outcome models, the cascade, whose first step
predicts retrieving once at each lambda of its grid); the decision's ``lam`` says which
lambda was used and ``lam_requested`` what was asked. Without a trained policy
(``agent.policy_dir`` empty), ``auto`` falls back to the fixed arm
``FALLBACK_ARM`` ("single": one retrieval is the cheap, robust default) and the decision
says ``policy: "fallback:single"``; feedback is still scored but nothing learns from it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np

from policies.arms import ARMS, arm_index
from policies.features import embedder_identity
from policies.online import OnlineLearner
from policies.persistence import POLICY_FILE, PolicyBundle
from policies.rewards import RewardSpec
from searchagent.config import Config
from searchagent.errors import ConflictError, InputError, SearchAgentError, require_text
from searchagent.strategies.base import Answer, Step

FALLBACK_ARM = "single"
MEMORY_DECISIONS = 10000     # decisions remembered for feedback when there is no policy


def decision_of(answer: Answer) -> dict | None:
    """The policy decision recorded in an answer's trace, if any."""
    for step in answer.trace:
        if step.kind == "policy":
            return step.detail
    return None


class Agent:
    """Thread-safe: strategies are built once under a lock; the learner has its own lock."""

    def __init__(self, searcher, generator, config: Config | None = None,
                 policy: PolicyBundle | OnlineLearner | str | Path | None = None,
                 explore: bool = True):
        self.searcher, self.generator = searcher, generator
        self.config = config or Config()
        self.lock = threading.Lock()
        self.encode_lock = threading.Lock()
        self.strategies: dict[str, object] = {}
        self.encoder = None          # question encoder, set when a policy is loaded
        self.learner = self._open_policy(policy, explore)
        self.memory: OrderedDict[str, dict] = OrderedDict()   # no-policy decisions
        if self.learner is not None:
            self._check_encoder()

    # -- public API ---------------------------------------------------------------------
    def answer(self, question: str, strategy: str | None = None,
               ctx: dict | None = None) -> Answer:
        """Answer ``question`` with ``strategy`` (an arm, or auto). ``ctx`` goes to the
        strategies; its ``request_id`` (the server's) names the decision for feedback."""
        require_text(question, "question")
        strategy = strategy or self.config.agent.strategy
        if strategy != "auto":
            strategy = ARMS[arm_index(strategy)]
        if self.learner is None:
            return self._answer_without_policy(question, strategy, ctx)
        return self._answer_with_policy(question, strategy, ctx)

    def run(self, question: str, ctx: dict | None = None) -> Answer:
        """The evaluation harness's system interface: ``answer`` with the configured strategy."""
        return self.answer(question, None, ctx)

    def feedback(self, request_id: str, gold=None, reward: float | None = None) -> dict:
        """Score a served answer by gold answer(s) or a given reward; learn from it."""
        if self.learner is not None:
            try:
                result = self.learner.feedback(request_id, gold=gold, reward=reward)
            except InputError as exc:
                if "already has feedback" in str(exc):
                    raise ConflictError(f"request {request_id} already has feedback",
                                        field="request_id") from exc
                raise
            return {"request_id": request_id, "reward": result.reward,
                    "quality": result.quality, "applied": result.applied}
        if (gold is None) == (reward is None):
            raise InputError("give exactly one of gold or reward", field="feedback")
        with self.lock:
            served = self.memory.get(request_id)
            if served is None:
                raise InputError(f"unknown request id {request_id!r}", field="request_id")
            if served.get("feedback"):
                raise ConflictError(f"request {request_id} already has feedback",
                                    field="request_id")
            spec = RewardSpec(lam=float(served["lam"]))
            quality = None
            if gold is not None:        # a gold it refuses leaves the feedback to come
                quality = spec.quality(served["prediction"], gold)
                reward = spec.reward(quality, served["retrieval_calls"], served["seconds"])
            served["feedback"] = True
        return {"request_id": request_id, "reward": float(reward), "quality": quality,
                "applied": False}

    def close(self) -> None:
        if self.learner is not None:
            self.learner.close()

    @property
    def policy_name(self) -> str:
        if self.learner is None:
            return f"fallback:{FALLBACK_ARM}"
        return self.learner.bundle.policy.algo

    # -- internals ----------------------------------------------------------------------
    def _answer_without_policy(self, question, strategy, ctx) -> Answer:
        arm = FALLBACK_ARM if strategy == "auto" else strategy
        runner = self._strategy(arm)      # built on first use: loading is not the policy's
        started = time.perf_counter()
        answer = runner.run(question, ctx)
        request_id = (ctx or {}).get("request_id") or uuid.uuid4().hex
        lam = (ctx or {}).get("lam")                      # what feedback is scored at
        lam = float(self.config.agent.lam if lam is None else lam)
        decision = {"request_id": request_id, "arm": arm, "forced": strategy != "auto",
                    "policy": "none" if strategy != "auto" else f"fallback:{arm}",
                    "fingerprint": None, "scores": None, "explored": False,
                    "lam": lam, "propensity": 1.0, "closed_book_reused": False}
        with self.lock:
            self.memory[request_id] = {"prediction": answer.answer,
                                       "retrieval_calls": answer.retrieval_calls,
                                       "seconds": answer.seconds, "lam": lam}
            while len(self.memory) > MEMORY_DECISIONS:
                self.memory.popitem(last=False)
        return _with_decision(answer, decision, time.perf_counter() - started - answer.seconds)

    def _answer_with_policy(self, question, strategy, ctx) -> Answer:
        bundle = self.learner.bundle
        if bundle.policy.stepwise and strategy == "auto":
            from searchagent.agent_cascade import answer_by_cascade

            return answer_by_cascade(self, question, ctx)
        started = time.perf_counter()
        closed_book = None
        needs_confidence = bundle.features.spec.confidence
        if needs_confidence and strategy in ("auto", "parametric"):
            closed_book = self._strategy("parametric").run(question, ctx)
        features = None
        choose_started = time.perf_counter()          # the policy step: features + choice
        if strategy == "auto" or not needs_confidence or closed_book is not None:
            features = self._features(question, closed_book)
        requested_lam = (ctx or {}).get("lam")
        decision = self.learner.decide(features, question,
                                       forced_arm=None if strategy == "auto" else strategy,
                                       lam=requested_lam,
                                       request_id=(ctx or {}).get("request_id"))
        overhead = time.perf_counter() - choose_started
        if (ctx or {}).get("on_step"):         # a streaming client sees the decision at once
            ctx["on_step"]("policy", **decision.to_dict(), policy=bundle.policy.algo)
        if decision.arm == "parametric" and closed_book is not None:
            answer, reused = closed_book, True
        else:
            answer, reused = self._strategy(decision.arm).run(question, ctx), False
            if closed_book is not None:
                answer = _add_cost(answer, closed_book)
        seconds = time.perf_counter() - started
        answer = replace(answer, seconds=seconds)
        self.learner.record_served(decision.request_id, answer.answer,
                                   answer.retrieval_calls, seconds)
        detail = {**decision.to_dict(), "policy": bundle.policy.algo,
                  "lam": decision.lam if decision.lam is not None else bundle.reward.lam,
                  "closed_book_reused": reused, "features": features is not None}
        if requested_lam is not None:
            detail["lam_requested"] = float(requested_lam)
        return _with_decision(answer, detail, overhead)

    def _features(self, question: str, closed_book: Answer | None) -> np.ndarray:
        with self.encode_lock:
            embedding = self.encoder.encode([question])
        confidence = [closed_book.confidence] if closed_book is not None else None
        return self.learner.bundle.features.transform(embedding, [question], confidence)[0]

    def _strategy(self, arm: str):
        with self.lock:
            if arm not in self.strategies:
                from searchagent.strategies.factory import make_strategy

                self.strategies[arm] = make_strategy(arm, self.searcher, self.generator,
                                                     self.config)
            return self.strategies[arm]

    def _open_policy(self, policy, explore: bool) -> OnlineLearner | None:
        if isinstance(policy, OnlineLearner):
            return policy
        if isinstance(policy, PolicyBundle):
            return OnlineLearner(None, policy, explore=explore)
        folder = policy or self.config.agent.policy_dir
        if not folder:
            return None
        if not (Path(folder) / POLICY_FILE).is_file():
            raise InputError("no trained policy in this folder (train one with `searchagent "
                             "policy train`, or leave agent.policy_dir empty to use the "
                             f"{FALLBACK_ARM!r} fallback)", path=str(folder),
                             field="agent.policy_dir")
        return OnlineLearner(folder, explore=explore)

    def _check_encoder(self) -> None:
        spec = self.learner.bundle.features.spec
        self.encoder = _question_encoder(self.searcher)
        encoder = self.encoder
        name, dim = embedder_identity(encoder), int(getattr(encoder, "dim", -1))
        if name != spec.embedder or dim != spec.embed_dim:
            raise InputError(f"policy was trained on {spec.embedder} embeddings ({spec.embed_dim}-d)"
                             f" but this index's encoder is {name} ({dim}-d); retrain the "
                             "policy on this feature set", field="features.embedder")


def _question_encoder(searcher):
    """The index's own encoder; for an index built without dense vectors (BM25 only), the
    bundled MiniLM encoder, loaded once for this agent."""
    try:
        return searcher.encoder
    except (SearchAgentError, AttributeError):
        from retrievers.encoder import Encoder

        return Encoder("default")


def make_agent(searcher, generator, config: Config | None = None) -> Agent:
    """For evaluation: greedy policy choices (no online exploration)."""
    return Agent(searcher, generator, config, explore=False)


def _add_cost(answer: Answer, closed_book: Answer) -> Answer:
    """Charge the closed-book confidence probe to the answer that was actually served."""
    probe = Step("generate", closed_book.seconds, {"purpose": "confidence_probe",
                                                  "answer": closed_book.answer,
                                                  "mean_logprob": closed_book.confidence})
    return replace(answer, prompt_tokens=answer.prompt_tokens + closed_book.prompt_tokens,
                   completion_tokens=answer.completion_tokens + closed_book.completion_tokens,
                   trace=[probe, *answer.trace])


def _with_decision(answer: Answer, decision: dict, seconds: float) -> Answer:
    step = Step("policy", max(0.0, seconds), decision)
    return replace(answer, strategy=decision["arm"], trace=[step, *answer.trace])
