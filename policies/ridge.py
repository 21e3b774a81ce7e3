"""Per-arm ridge regression statistics shared by LinUCB and linear Thompson sampling."""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.base import Policy


class RidgePolicy(Policy):
    """Keeps A^-1 = (reg I + sum x x^T)^-1 and b = sum r x per arm (Sherman-Morrison updates)."""

    def __init__(self, dim: int, n_arms: int = 3, seed: int = 0, reg: float = 1.0):
        super().__init__(dim, n_arms, seed)
        self.reg = float(reg)
        self.A_inv = np.repeat(np.eye(dim)[None] / self.reg, n_arms, axis=0)
        self.b = np.zeros((n_arms, dim))
        self.counts = np.zeros(n_arms, dtype=np.int64)
        self.theta = np.zeros((n_arms, dim))

    def update(self, x: np.ndarray, arm: int, reward: float) -> None:
        x, arm = self._check(x), self._check_arm(arm)
        a_inv = self.A_inv[arm]
        ax = a_inv @ x
        a_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self.b[arm] += float(reward) * x
        self.counts[arm] += 1
        self.theta[arm] = a_inv @ self.b[arm]
        self.updates += 1

    def mean_and_width(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted reward per arm and sqrt(x^T A^-1 x), its uncertainty."""
        mean = self.theta @ x
        width = np.sqrt(np.maximum(np.einsum("i,aij,j->a", x, self.A_inv, x), 0.0))
        return mean, width

    def params(self) -> dict[str, Any]:
        return {"reg": self.reg}

    def state(self):
        values, arrays = super().state()
        arrays.update({"A_inv": self.A_inv, "b": self.b, "counts": self.counts})
        return values, arrays

    def load_state(self, values, arrays) -> None:
        super().load_state(values, arrays)
        self.A_inv = np.array(arrays["A_inv"], dtype=np.float64)
        self.b = np.array(arrays["b"], dtype=np.float64)
        self.counts = np.array(arrays["counts"], dtype=np.int64)
        self.theta = np.einsum("aij,aj->ai", self.A_inv, self.b)
