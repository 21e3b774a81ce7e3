"""The arm log: every arm (strategy) answers every question; outcomes and costs are
stored in ``arm_outcomes``, the table bandit policies learn from."""

from __future__ import annotations

import time
from typing import Mapping, Sequence

from eval.examples import Example
from eval.executor import Summary, execute
from eval.runner import System, question_context, score_answer
from eval.store import RunStore


def log_arms(arms: Mapping[str, System], examples: Sequence[Example], store: RunStore,
             run: str, workers: int = 1, seed: int | None = None) -> Summary:
    """Run each arm on each example not yet logged under ``run``; one row per (question, arm)."""
    done = store.done_keys("arm_outcomes", run=run)
    jobs = [(ex, arm) for ex in examples for arm in arms
            if (run, ex.dataset, ex.id, arm) not in done]

    def work(job: tuple[Example, str]) -> dict:
        example, arm = job
        start = time.perf_counter()
        answer = arms[arm].run(example.question, question_context(example, seed, arm))
        row = score_answer(example, answer, time.perf_counter() - start)
        return {**row, "run": run, "arm": arm,
                "confidence": getattr(answer, "confidence", None)}

    return execute(jobs, work, lambda row: store.insert("arm_outcomes", row), workers=workers,
                   desc=f"{run}/arms", already_done=len(examples) * len(arms) - len(jobs),
                   label=lambda job: f"{job[0].dataset}/{job[0].id}/{job[1]}")
