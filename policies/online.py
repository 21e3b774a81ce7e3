"""Thread-safe online learning: record each served decision, apply feedback, persist.

A policy folder holds the trained policy (``policy.json`` + arrays) and a DuckDB journal
``online.duckdb`` with one row per served decision (features, arm, scores, what was
answered) and, once feedback arrives, its reward and a feedback sequence number. Feedback
is committed to the journal before the in-memory policy is updated, and the policy is
snapshotted every ``snapshot_every`` feedbacks with the last sequence number it includes;
on open, feedback newer than the snapshot is replayed. A restart loses nothing.

Each decision also journals its logging propensity: the probability with which the served
arm was drawn (``Policy.arm_probabilities`` under the exploration actually used; 1.0 for
a greedy choice and for a forced arm), so ``policies.ope`` can evaluate other policies
from the journal. A stepwise policy (the cascade) journals every answer it generated
(``answers``, JSON); feedback with a gold answer scores each one, and the policy learns from
all of them (``AnswerCascade.learn``). Journals written before these columns existed gain
them (NULL) on open.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from policies.arms import ARMS, arm_index
from policies.persistence import POLICY_FILE, PolicyBundle, load_policy, save_policy
from searchagent.errors import ConflictError, InputError

JOURNAL = "online.duckdb"
APPLIED_KEY = "online_applied_seq"
SCHEMA = """CREATE TABLE IF NOT EXISTS decisions (
    request_id VARCHAR PRIMARY KEY, created_at TIMESTAMP DEFAULT current_timestamp,
    fingerprint VARCHAR, question VARCHAR, features FLOAT[], arm VARCHAR, forced BOOLEAN,
    explored BOOLEAN, scores DOUBLE[], prediction VARCHAR, retrieval_calls DOUBLE,
    seconds DOUBLE, quality DOUBLE, reward DOUBLE, feedback_seq BIGINT,
    feedback_at TIMESTAMP, propensity DOUBLE)"""
MIGRATIONS = ("ALTER TABLE decisions ADD COLUMN IF NOT EXISTS propensity DOUBLE",
              # a cascade's generated answers (JSON), scored at feedback
              "ALTER TABLE decisions ADD COLUMN IF NOT EXISTS answers VARCHAR")


@dataclass
class Decision:
    request_id: str
    arm: str
    scores: list[float]
    fingerprint: str
    forced: bool = False
    explored: bool = False
    lam: float | None = None    # the lambda the scores are for (None: the trained one)
    propensity: float = 1.0     # P(this arm | features) under the policy's exploration

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Feedback:
    request_id: str
    reward: float
    quality: float | None
    applied: bool            # False when the policy could not learn from it


class OnlineLearner:
    """Serve decisions from a policy bundle and learn from feedback (one lock guards all)."""

    def __init__(self, folder: str | Path | None, bundle: PolicyBundle | None = None,
                 explore: bool = True, snapshot_every: int = 20):
        import duckdb

        self.folder = Path(folder) if folder else None
        self.explore, self.snapshot_every = explore, max(1, int(snapshot_every))
        self.lock = threading.RLock()
        if bundle is None:
            if self.folder is None:
                raise InputError("an online learner needs a policy folder or a policy")
            bundle = load_policy(self.folder)
        elif self.folder is not None and not (self.folder / POLICY_FILE).exists():
            save_policy(bundle, self.folder)
        self.bundle = bundle
        path = str(self.folder / JOURNAL) if self.folder else ":memory:"
        try:
            self.con = duckdb.connect(path)
        except duckdb.Error as exc:
            raise InputError(f"cannot open the decision journal: {exc}", path=path) from exc
        self.con.execute(SCHEMA)
        for migration in MIGRATIONS:
            self.con.execute(migration)
        self.pending = 0
        self._replay_unapplied()

    @property
    def fingerprint(self) -> str:
        return self.bundle.fingerprint

    # -- serving ------------------------------------------------------------------------
    def decide(self, features: np.ndarray | None, question: str,
               forced_arm: str | None = None, lam: float | None = None,
               request_id: str | None = None) -> Decision:
        """Choose an arm (or record a forced one) and journal the decision (under
        ``request_id``, a new one when None). ``lam`` asks for another accuracy/cost
        trade-off than the trained one; it is honoured when the policy supports it
        (``Decision.lam`` says which was used)."""
        if features is None and forced_arm is None:
            raise InputError("features are needed to choose an arm", field="features")
        if forced_arm is None and self.bundle.policy.stepwise:
            raise InputError("a stepwise policy (the cascade) is driven by the agent, not "
                             "decided once per question", field="algo")
        with self.lock:
            scores = [float("nan")] * len(ARMS)
            explored, propensity = False, 1.0      # a greedy choice is deterministic
            policy = self.bundle.policy
            lam = float(lam) if lam is not None and policy.supports_lam() else None
            if features is not None and not policy.stepwise:
                greedy, estimates = policy.choose(features, explore=False, lam=lam)
                arm_i = greedy
                if self.explore and policy.learns_online:
                    probabilities = policy.arm_probabilities(features, explore=True, lam=lam)
                    arm_i, _ = policy.choose(features, explore=True, lam=lam)
                    explored = arm_i != greedy
                    propensity = float(probabilities[arm_i])
                scores = [float(s) for s in estimates]   # greedy estimates, no bonus
                arm = ARMS[arm_i]
            if forced_arm is not None:
                arm, propensity = ARMS[arm_index(forced_arm)], 1.0
            return self.journal(features, question, arm, scores, forced_arm is not None,
                                explored, lam, propensity, request_id=request_id)

    def journal(self, features: np.ndarray | None, question: str, arm: str,
                scores: Sequence[float], forced: bool = False, explored: bool = False,
                lam: float | None = None, propensity: float = 1.0,
                answers: list[dict] | None = None, request_id: str | None = None
                ) -> Decision:
        """Journal a decision made here or by the caller (the agent runs a cascade's steps
        itself and journals the arm whose answer it served, and every answer generated:
        ``answers``, ``{"arm", "answer", "calls", "confidence"}`` in running order) under
        ``request_id`` (the server's id for the request; a new one when None)."""
        scores = [float(s) for s in scores]
        decision = Decision(request_id or uuid.uuid4().hex, ARMS[arm_index(arm)], scores,
                            self.fingerprint,
                            forced=forced, explored=explored, lam=lam, propensity=propensity)
        with self.lock:
            self.con.execute(
                "INSERT INTO decisions (request_id, fingerprint, question, features, arm, "
                "forced, explored, scores, propensity, answers) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [decision.request_id, decision.fingerprint, question,
                 None if features is None else np.asarray(features, np.float32).tolist(),
                 decision.arm, forced, explored, _finite(scores), propensity,
                 None if answers is None else json.dumps(answers)])
        return decision

    def record_served(self, request_id: str, prediction: str, retrieval_calls: float,
                      seconds: float) -> None:
        with self.lock:
            self.con.execute("UPDATE decisions SET prediction = ?, retrieval_calls = ?, "
                             "seconds = ? WHERE request_id = ?",
                             [prediction, float(retrieval_calls), float(seconds), request_id])

    # -- learning -----------------------------------------------------------------------
    def feedback(self, request_id: str, gold: str | Sequence[str] | None = None,
                 reward: float | None = None) -> Feedback:
        """Score a served decision (gold answer(s) or a reward) and update the policy."""
        if (gold is None) == (reward is None):
            raise InputError("give exactly one of gold or reward", field="feedback")
        with self.lock:
            row = self.con.execute(
                "SELECT features, arm, prediction, retrieval_calls, seconds, feedback_seq, "
                "fingerprint, question, answers FROM decisions WHERE request_id = ?",
                [request_id]).fetchone()
            if row is None:
                raise InputError(f"unknown request id {request_id!r}", field="request_id")
            features, arm, prediction, calls, seconds, seq, fingerprint, question, answers = row
            if seq is not None:
                raise InputError(f"request {request_id} already has feedback",
                                 field="request_id")
            quality = cost = None
            spec = self.bundle.reward
            if gold is not None:
                if prediction is None:   # still answering: valid, but too early (409)
                    raise ConflictError(f"request {request_id} has no served answer yet",
                                        field="request_id")
                quality = spec.quality(prediction, gold)
                cost = spec.cost_of(calls or 0.0, seconds or 0.0)
                reward = spec.reward(quality, calls or 0.0, seconds or 0.0)
                if answers:           # a cascade's answers: every one is scored
                    answers = json.dumps([{**r, "quality": spec.quality(r["answer"], gold)}
                                          for r in json.loads(answers)])
            reward = float(reward)
            if not np.isfinite(reward):
                raise InputError(f"reward must be a finite number, got {reward}", field="reward")
            next_seq = self.con.execute(
                "SELECT coalesce(max(feedback_seq), 0) + 1 FROM decisions").fetchone()[0]
            self.con.execute("UPDATE decisions SET quality = ?, reward = ?, feedback_seq = ?, "
                             "feedback_at = current_timestamp, answers = ? WHERE request_id = ?",
                             [quality, reward, next_seq, answers, request_id])
            applied = self._apply(features, fingerprint, arm, reward, quality, cost, question,
                                  answers)
            self.bundle.meta[APPLIED_KEY] = int(next_seq)
            self.pending += 1
            if self.pending >= self.snapshot_every:
                self.snapshot()
        return Feedback(request_id, reward, quality, applied)

    def snapshot(self) -> None:
        """Persist the policy now (feedback is already durable in the journal)."""
        with self.lock:
            if self.folder is not None:
                save_policy(self.bundle, self.folder)
            self.pending = 0

    def stats(self) -> dict:
        with self.lock:
            served, rewarded, mean = self.con.execute(
                "SELECT count(*), count(reward), avg(reward) FROM decisions").fetchone()
        return {"served": served, "feedback": rewarded, "mean_reward": mean,
                "fingerprint": self.fingerprint, "algo": self.bundle.policy.algo}

    def close(self) -> None:
        with self.lock:
            if self.pending:
                self.snapshot()
            self.con.close()

    def _replay_unapplied(self) -> None:
        applied = int(self.bundle.meta.get(APPLIED_KEY, 0))
        rows = self.con.execute(
            "SELECT features, arm, reward, feedback_seq, fingerprint, quality, "
            "retrieval_calls, seconds, question, answers FROM decisions WHERE feedback_seq > ? "
            "ORDER BY feedback_seq", [applied]).fetchall()
        spec = self.bundle.reward
        for features, arm, reward, seq, fingerprint, quality, calls, seconds, question, \
                answers in rows:
            cost = None if quality is None else spec.cost_of(calls or 0.0, seconds or 0.0)
            self._apply(features, fingerprint, arm, reward, quality, cost, question, answers)
            self.bundle.meta[APPLIED_KEY] = int(seq)
        if rows:
            self.snapshot()

    def _apply(self, features, fingerprint, arm, reward, quality, cost, question,
               answers) -> bool:
        """Update the policy from one journaled feedback; whether it could learn from it."""
        policy = self.bundle.policy
        if features is None or fingerprint != self.fingerprint:
            return False
        if policy.stepwise:           # learns from every scored answer it generated
            ran = json.loads(answers) if answers else []
            if not ran or any("quality" not in r for r in ran):
                return False
            policy.learn(np.asarray(features), question, ran, arm)
            return True
        if not policy.learns_online or quality is None and not policy.learns_from_bare_reward:
            return False
        policy.update(np.asarray(features), arm_index(arm), reward, quality, cost)
        return True


def check_journal_free(folder: str | Path, why: str) -> None:
    """An InputError (naming the journal and the holder's PID) when another process, a
    server, holds ``folder``'s decision journal; ``why`` says what that would break."""
    import re

    import duckdb

    path = Path(folder) / JOURNAL
    if not path.exists():
        return
    try:
        duckdb.connect(str(path)).close()
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():       # not a DuckDB file, unreadable: say so
            raise InputError(f"cannot open the policy's decision journal: {exc}; move it "
                             "away to start a new one (its feedback is lost to the policy)",
                             path=str(path)) from exc
        held = re.search(r"PID \d+", str(exc))
        raise InputError("the policy's decision journal is in use by another process"
                         + (f" ({held[0]})" if held else "") + f": {why}",
                         path=str(path)) from exc


def journal_feedback_seq(folder: str | Path) -> int:
    """The last feedback's sequence number in ``folder``'s decision journal (0: none).
    A policy saved with it as ``meta[APPLIED_KEY]`` does not replay older feedback."""
    import duckdb

    path = Path(folder) / JOURNAL
    if not path.exists():
        return 0
    con = duckdb.connect(str(path), read_only=True)
    try:
        return int(con.execute("SELECT coalesce(max(feedback_seq), 0) FROM decisions"
                               ).fetchone()[0])
    except duckdb.CatalogException:     # created, never written
        return 0
    finally:
        con.close()


def _finite(values: list[float]) -> list[float | None]:
    return [v if np.isfinite(v) else None for v in values]
