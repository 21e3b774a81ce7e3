"""Test data for the policy tests: a synthetic arm log over the bundled sample questions,
written into a real DuckDB file with the evaluation harness's schema (``eval.store``).

Hidden rule (learnable from the features): every third bridge question is "known" (the
closed-book answer is right and confident); other bridge questions need one retrieval;
comparison questions need multi-hop. Steps: parametric 0, single 1, multi 3.
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path

from tests.conftest import sample_questions

STEPS = {"parametric": 0, "single": 1, "multi": 3}


def outcome(index: int, kind: str) -> tuple[str, dict[str, float], float]:
    """(class, per-arm F1, parametric confidence) for the index-th sample question."""
    if kind == "comparison":
        return "needs_multi", {"parametric": 0.0, "single": 0.2, "multi": 1.0}, -2.5
    if index % 3 == 0:
        return "known", {"parametric": 1.0, "single": 1.0, "multi": 1.0}, -0.05
    return "needs_single", {"parametric": 0.0, "single": 1.0, "multi": 1.0}, -2.5


def write_arm_log(path: Path, run: str = "synthetic", limit: int = 300,
                  skip_arm_for: set[int] = frozenset()) -> list[dict]:
    """Write one row per (question, arm); ``skip_arm_for`` leaves 'multi' out for those."""
    import duckdb

    from eval.store import ARM_COLUMNS, create_sql

    rows = []
    questions = sample_questions()[:limit]
    for i, q in enumerate(questions):
        _, f1, conf = outcome(i, q["type"])
        for arm, quality in f1.items():
            if arm == "multi" and i in skip_arm_for:
                continue
            rows.append({
                "run": run, "dataset": "sample", "qid": q["id"], "question": q["question"],
                "arm": arm, "prediction": q["answers"][0] if quality else "wrong",
                "golds": json.dumps(q["answers"]), "em": quality, "f1": quality, "acc": quality,
                "sup_recall": None, "retrieval_calls": STEPS[arm], "hops": STEPS[arm],
                "prompt_tokens": 100, "completion_tokens": 5, "seconds": 0.1 + STEPS[arm],
                "confidence": conf if arm == "parametric" else -1.0})
    names = [c for c in ARM_COLUMNS if c != "created_at"]
    con = duckdb.connect(str(path))
    try:
        con.execute(create_sql("arm_outcomes"))
        marks = f"({', '.join('?' * len(names))}, now())"
        con.execute(f"INSERT INTO arm_outcomes ({', '.join(names)}, created_at) VALUES "
                    + ", ".join([marks] * len(rows)), [row[n] for row in rows for n in names])
    finally:
        con.close()
    return questions


@lru_cache(maxsize=1)
def shared_encoder():
    """The real MiniLM encoder, loaded once per test process."""
    from retrievers.encoder import Encoder

    return Encoder("default")


@lru_cache(maxsize=1)
def shared_cache() -> Path:
    """One question-embedding cache per test process, so each question is encoded once."""
    return Path(tempfile.mkdtemp(prefix="policy-emb-")) / "emb.npz"


def replay_data(log: Path):
    from policies.replay import load_replay_data

    return load_replay_data(log, cache=shared_cache(), encoder=shared_encoder())


def retrieve_once_cascade(encoder, confidence: bool = False):
    """A cascade trained (on synthetic rows) so that, whatever the question, it retrieves
    once after the closed-book answer and serves the retrieved answer; with ``confidence``
    it also reads the answers' token log-probabilities."""
    import numpy as np

    from policies.cascade import AnswerCascade
    from policies.features import FeatureMap, FeatureSpec, embedder_identity
    from policies.persistence import PolicyBundle
    from policies.rewards import RewardSpec

    fmap = FeatureMap.fit(FeatureSpec(embedder=embedder_identity(encoder), embed_dim=encoder.dim,
                                      projection="random", proj_dim=16))
    n = 40
    questions = [f"who built bridge number {i}" for i in range(n)]
    emb = np.random.default_rng(0).standard_normal((n, encoder.dim))
    cascade = AnswerCascade(fmap.dim, lam=0.01, confidence=confidence)
    said = [[("Rome", -0.2 - i / n), ("Oslo", -0.4), ("Lima", None)] if confidence else
            ["Rome", "Oslo", "Lima"] for i in range(n)]
    cascade.fit_log(fmap.transform(emb, questions), questions, said,
                    np.tile([0.0, 1.0, 0.0], (n, 1)), np.tile([0.0, 1.0, 2.0], (n, 1)))
    return PolicyBundle(cascade, fmap, RewardSpec(lam=0.01))
