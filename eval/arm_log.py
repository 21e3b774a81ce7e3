"""The arm log: every arm (strategy) answers every question; outcomes and costs are
stored in ``arm_outcomes``, the table bandit policies learn from."""

from __future__ import annotations

from typing import Mapping, Sequence

from eval.examples import Example
from eval.executor import Summary
from eval.runner import System, answer_pending
from eval.store import RunStore


def log_arms(arms: Mapping[str, System], examples: Sequence[Example], store: RunStore,
             run: str, workers: int = 1, seed: int | None = None) -> Summary:
    """Run each arm on each example not yet logged under ``run``; one row per (question, arm)."""
    return answer_pending(
        arms, examples, store, "arm_outcomes", run,
        key=lambda ex, arm: (run, ex.dataset, ex.id, arm),
        columns=lambda arm, answer: {"arm": arm,
                                     "confidence": getattr(answer, "confidence", None)},
        desc=f"{run}/arms", workers=workers, seed=seed)
