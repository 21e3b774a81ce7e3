"""LinUCB (disjoint linear models): score = theta_a . x + alpha * sqrt(x^T A_a^-1 x)."""

from __future__ import annotations

import numpy as np

from policies.ridge import RidgePolicy
from searchagent.errors import InputError


class LinUCB(RidgePolicy):
    algo = "linucb"

    def __init__(self, dim: int, n_arms: int = 3, seed: int = 0, reg: float = 1.0,
                 alpha: float = 0.5, intercept: bool = True):
        super().__init__(dim, n_arms, seed, reg, intercept)
        self.alpha = float(alpha)
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise InputError(f"linucb needs a finite alpha >= 0 (the exploration bonus), "
                             f"got {alpha}", field="params")

    def scores(self, x: np.ndarray, explore: bool = True, lam: float | None = None) -> np.ndarray:
        mean, width = self.mean_and_width(x, lam)
        return mean + self.alpha * width if explore else mean

    def params(self):
        return {**super().params(), "alpha": self.alpha}
