"""Per-arm ridge regression statistics shared by LinUCB and linear Thompson sampling."""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.base import Policy
from searchagent.errors import InputError


INTERCEPT_REG = 1e-4     # prior precision of the intercept: unpenalized in effect


class RidgePolicy(Policy):
    """Keeps A^-1 = (P + sum x x^T)^-1 and b = sum r x per arm (Sherman-Morrison updates).

    With ``intercept`` (the default) each x is extended by a constant 1 whose weight is
    (in effect) not penalized: P = diag(reg, ..., reg, ~0). A large ``reg`` then shrinks
    the policy toward each arm's mean reward -- the best fixed arm -- instead of toward
    zero, so tuning ``reg`` can fall back to that arm when the features carry no signal.

    With reward parts it also keeps b_q = sum quality x and b_c = sum cost x: since the
    reward is quality - lambda cost and A does not depend on it, A^-1 (b_q - lam b_c) is
    exactly the ridge estimate for any other lambda.
    """

    def __init__(self, dim: int, n_arms: int = 3, seed: int = 0, reg: float = 1.0,
                 intercept: bool = True):
        super().__init__(dim, n_arms, seed)
        self.reg, self.intercept = float(reg), bool(intercept)
        if not np.isfinite(self.reg) or self.reg <= 0:
            raise InputError(f"{self.algo} needs a finite reg > 0 (the prior precision), "
                             f"got {reg}", field="params")
        prior = np.full(dim + self.intercept, self.reg)
        if self.intercept:
            prior[-1] = INTERCEPT_REG
        self.A_inv = np.repeat(np.diag(1.0 / prior)[None], n_arms, axis=0)
        self.b, self.theta = np.zeros((n_arms, len(prior))), np.zeros((n_arms, len(prior)))
        self.b_quality, self.b_cost = np.zeros_like(self.b), np.zeros_like(self.b)
        self.counts = np.zeros(n_arms, dtype=np.int64)
        self.parts_complete = True       # every update so far came with quality and cost

    def _extend(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        return np.append(x, 1.0) if self.intercept else x

    def update(self, x: np.ndarray, arm: int, reward: float, quality: float | None = None,
               cost: float | None = None) -> None:
        x, arm = self._extend(x), self._check_arm(arm)
        if quality is None or cost is None:
            self.parts_complete = False
        else:
            self.b_quality[arm] += float(quality) * x
            self.b_cost[arm] += float(cost) * x
        a_inv = self.A_inv[arm]
        ax = a_inv @ x
        a_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self.b[arm] += float(reward) * x
        self.counts[arm] += 1
        self.theta[arm] = a_inv @ self.b[arm]
        self.updates += 1

    def supports_lam(self) -> bool:
        return self.parts_complete

    def mean_and_width(self, x: np.ndarray,
                       lam: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predicted reward per arm (for ``lam`` when given and supported) and
        sqrt(x^T A^-1 x), its uncertainty."""
        x = self._extend(x)
        if lam is not None and self.parts_complete:
            mean = np.einsum("aij,aj->ai", self.A_inv,
                             self.b_quality - float(lam) * self.b_cost) @ x
        else:
            mean = self.theta @ x
        width = np.sqrt(np.maximum(np.einsum("i,aij,j->a", x, self.A_inv, x), 0.0))
        return mean, width

    def params(self) -> dict[str, Any]:
        return {"reg": self.reg, "intercept": self.intercept}

    def state(self):
        values, arrays = super().state()
        arrays.update({"A_inv": self.A_inv, "b": self.b, "counts": self.counts,
                       "b_quality": self.b_quality, "b_cost": self.b_cost})
        values["parts_complete"] = self.parts_complete
        return values, arrays

    def load_state(self, values, arrays) -> None:
        super().load_state(values, arrays)
        if np.shape(arrays["A_inv"])[-1] == self.dim:   # saved before the intercept existed
            self.intercept = False
        self.A_inv = np.array(arrays["A_inv"], dtype=np.float64)
        self.b = np.array(arrays["b"], dtype=np.float64)
        self.counts = np.array(arrays["counts"], dtype=np.int64)
        self.theta = np.einsum("aij,aj->ai", self.A_inv, self.b)
        self.b_quality = np.array(arrays["b_quality"], dtype=np.float64)
        self.b_cost = np.array(arrays["b_cost"], dtype=np.float64)
        self.parts_complete = bool(values.get("parts_complete", False))
