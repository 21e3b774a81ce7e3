"""Evaluate systems on examples, one stored row per (system, question), resumable.

A *system* is anything with ``run(question, ctx) -> Answer`` (a strategy, or the agent
with its policy); ``Answer.strategy`` names the arm it used. Rows already in the store
for this run are skipped, so rerunning a killed command finishes the job without
duplicates.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, is_dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from eval.examples import Example
from eval.executor import Summary, execute
from eval.metrics import answer_scores, passage_recall
from eval.store import RunStore


class System(Protocol):
    def run(self, question: str, ctx: dict | None = None) -> Any:
        ...


def question_context(example: Example, seed: int | None, system: str) -> dict:
    """What a system sees besides the question; ``session`` lets hops reuse KV state."""
    return {"qid": example.id, "dataset": example.dataset, "seed": seed,
            "session": f"{system}/{example.dataset}/{example.id}"}


def score_answer(example: Example, answer: Any, seconds: float) -> dict:
    """The columns shared by ``results`` and ``arm_outcomes`` for one answered question."""
    prediction = str(getattr(answer, "answer", "") or "")
    passages = list(getattr(answer, "passages", None) or [])
    recall = None
    if example.supporting_titles:
        recall = passage_recall([p.get("title", "") for p in passages],
                                example.supporting_titles)
        recall = None if math.isnan(recall) else recall
    return {"dataset": example.dataset, "qid": example.id, "question": example.question,
            "prediction": prediction, "golds": json.dumps(example.answers, ensure_ascii=False),
            **answer_scores(prediction, example.answers), "sup_recall": recall,
            "retrieval_calls": int(getattr(answer, "retrieval_calls", 0) or 0),
            "hops": int(getattr(answer, "hops", 0) or 0),
            "prompt_tokens": int(getattr(answer, "prompt_tokens", 0) or 0),
            "completion_tokens": int(getattr(answer, "completion_tokens", 0) or 0),
            "seconds": float(seconds)}


def answer_trace(answer: Any) -> dict:
    steps = [asdict(s) if is_dataclass(s) else s for s in getattr(answer, "trace", None) or []]
    return {"passages": list(getattr(answer, "passages", None) or []), "steps": steps,
            "confidence": getattr(answer, "confidence", None)}


def answer_pending(systems: Mapping[str, System], examples: Sequence[Example],
                   store: RunStore, table: str, run: str, key: Callable[[Example, str], tuple],
                   columns: Callable[[str, Any], dict], desc: str, workers: int = 1,
                   seed: int | None = None) -> Summary:
    """Answer every (example, system) pair whose ``key`` is not yet in ``table``, question-
    major so a partial run compares the systems on the same questions; ``columns`` adds
    the table's own fields to the scored row."""
    done = store.done_keys(table, run=run)
    jobs = [(ex, name) for ex in examples for name in systems if key(ex, name) not in done]

    def work(job: tuple[Example, str]) -> dict:
        example, name = job
        start = time.perf_counter()
        answer = systems[name].run(example.question, question_context(example, seed, name))
        row = score_answer(example, answer, time.perf_counter() - start)
        return {**row, "run": run, **columns(name, answer)}

    return execute(jobs, work, lambda row: store.insert(table, row), workers=workers,
                   desc=desc, already_done=len(examples) * len(systems) - len(jobs),
                   label=lambda job: f"{job[0].dataset}/{job[0].id}/{job[1]}")


def evaluate(systems: Mapping[str, System], examples: Sequence[Example], store: RunStore,
             run: str, workers: int = 1, seed: int | None = None) -> Summary:
    """One ``results`` row per (question, system) not yet stored under ``run``."""
    return answer_pending(
        systems, examples, store, "results", run,
        key=lambda ex, name: (run, name, ex.dataset, ex.id),
        columns=lambda name, answer: {"system": name,
                                      "arm": getattr(answer, "strategy", None) or name,
                                      "trace": answer_trace(answer)},
        desc=run, workers=workers, seed=seed)
