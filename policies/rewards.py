"""Reward = quality - lambda x cost. Quality is EM, F1 or accuracy against the gold
answers; cost is retrieval steps or seconds; lambda is the user's accuracy/cost dial.
Quality uses ``eval.metrics`` (HotpotQA-style normalisation), like the arm log."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from eval.metrics import accuracy, exact_match, f1_score, normalize_answer
from searchagent.errors import InputError

METRICS = ("f1", "em", "acc")
COSTS = ("steps", "seconds")
# the evaluation harness's metrics, so online rewards match the arm log's columns
QUALITY = {"em": exact_match, "f1": f1_score, "acc": accuracy}


@dataclass(frozen=True)
class RewardSpec:
    """How a served answer is scored; stored with every policy so online feedback
    computes the same reward the policy was trained on."""

    lam: float = 0.1
    metric: str = "f1"
    cost: str = "steps"

    def __post_init__(self):
        if self.metric not in METRICS:
            raise InputError(f"unknown quality metric {self.metric!r} (choose from "
                             f"{', '.join(METRICS)})", field="metric")
        if self.cost not in COSTS:
            raise InputError(f"unknown cost {self.cost!r} (choose from {', '.join(COSTS)})",
                             field="cost")
        if self.lam < 0:
            raise InputError(f"lambda must be >= 0, got {self.lam}", field="lam")

    def to_dict(self) -> dict:
        return asdict(self)

    def quality(self, prediction: str, golds: Sequence[str]) -> float:
        """``prediction`` scored against the golds that keep a word once normalized (case,
        articles, punctuation): a gold such as 'The.' would score an empty answer right."""
        if isinstance(golds, str):
            golds = [golds]
        kept = [gold for gold in golds if normalize_answer(gold)]
        if not kept:
            raise InputError(f"no gold answer with a word in it (got {list(golds)!r}; case, "
                             "articles and punctuation do not count)", field="gold")
        return QUALITY[self.metric](prediction, kept)

    def cost_of(self, retrieval_calls: float, seconds: float) -> float:
        return float(retrieval_calls if self.cost == "steps" else seconds)

    def reward(self, quality: float, retrieval_calls: float, seconds: float) -> float:
        return float(quality) - self.lam * self.cost_of(retrieval_calls, seconds)

    def reward_matrix(self, quality: np.ndarray, steps: np.ndarray,
                      seconds: np.ndarray) -> np.ndarray:
        """Vectorised reward over a (questions x arms) table."""
        return quality - self.lam * (steps if self.cost == "steps" else seconds)
