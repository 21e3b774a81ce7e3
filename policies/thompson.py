"""Linear Thompson sampling: theta_a ~ N(A_a^-1 b_a, v^2 A_a^-1), play the best sample.

Only x . theta_a matters for the choice, so the scalar N(x . mean_a, v^2 x^T A_a^-1 x) is
sampled directly: the same distribution as sampling theta, without a Cholesky per step.
"""

from __future__ import annotations

import numpy as np

from policies.ridge import RidgePolicy


class LinearThompson(RidgePolicy):
    algo = "thompson"

    def __init__(self, dim: int, n_arms: int = 3, seed: int = 0, reg: float = 1.0,
                 v: float = 0.3, intercept: bool = True):
        super().__init__(dim, n_arms, seed, reg, intercept)
        self.v = float(v)

    def scores(self, x: np.ndarray, explore: bool = True, lam: float | None = None) -> np.ndarray:
        mean, width = self.mean_and_width(x, lam)
        if not explore:
            return mean
        return mean + self.v * width * self.rng.standard_normal(self.n_arms)

    def params(self):
        return {**super().params(), "v": self.v}
