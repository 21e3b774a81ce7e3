"""Per-arm outcome models: predict each arm's quality and cost for a question, serve
argmax_a E[quality | x, a] - lambda * E[cost | x, a].

Two estimators are blended (``blend`` is the weight of the first):

- **logistic**: per arm, L2-regularised logistic regression (scikit-learn) on the
  question's surface features (every column after the first ``embed_dims``). Quality is
  fractional (F1 in [0, 1]), so each row is fitted once as a success with weight q and
  once as a failure with weight 1 - q; the log-loss optimum is then the calibrated mean
  quality. Cost per arm is a ridge regression on the same columns.
- **neighbours**: the mean quality and cost of the ``neighbors`` most similar training
  questions that have this arm's outcome (cosine over the unit-normalised embedding plus
  ``cue_weight`` x the surface columns) -- a router that finds question types by itself.

Both learn from bandit feedback as they are: each arm's model sees only the rows where
that arm's outcome is known. Rows live in a bounded buffer (persisted as arrays); the
models are refitted every ``refit_every`` updates. Arms with fewer than ``min_rows``
outcomes score optimistically (quality 1) so they get tried. Exploration is
epsilon-greedy; ``arm_probabilities`` gives its exact distribution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.base import Policy, one_hot
from searchagent.errors import InputError


class OutcomeModels(Policy):
    algo = "outcome"
    learns_from_bare_reward = False

    def __init__(self, dim: int, n_arms: int = 3, seed: int = 0, lam: float = 0.0,
                 embed_dims: int = 0, l2: float = 100.0, neighbors: int = 100,
                 blend: float = 0.5, cue_weight: float = 0.15, eps: float = 0.1,
                 refit_every: int = 50, min_rows: int = 5, buffer: int = 50000):
        super().__init__(dim, n_arms, seed)
        if not 0 <= embed_dims <= dim or not 0.0 <= blend <= 1.0 or l2 <= 0 \
                or neighbors < 1 or not 0.0 <= eps <= 1.0:
            raise InputError("outcome model needs 0 <= embed_dims <= dim, 0 <= blend <= 1, "
                             "l2 > 0, neighbors >= 1 and 0 <= eps <= 1", field="params")
        self.lam, self.embed_dims, self.l2 = float(lam), int(embed_dims), float(l2)
        self.neighbors, self.blend, self.cue_weight = int(neighbors), float(blend), float(cue_weight)
        self.eps, self.refit_every, self.min_rows = float(eps), int(refit_every), int(min_rows)
        self.capacity = int(buffer)
        self.X = np.zeros((0, dim), np.float32)
        self.Q = np.zeros((0, n_arms), np.float32)      # NaN: outcome not observed
        self.C = np.zeros((0, n_arms), np.float32)
        self.stale = 0
        self._fit_models()

    # -- acting -------------------------------------------------------------------------
    def supports_lam(self) -> bool:
        return True

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected quality and cost, each (n, arms)."""
        X = np.asarray(X, np.float64).reshape(-1, self.dim)
        quality, cost = np.ones((len(X), self.n_arms)), np.zeros((len(X), self.n_arms))
        surface, unit = self._surface(X), self._unit(X)
        for a in range(self.n_arms):
            rows = self._rows[a]
            if len(rows) < self.min_rows:
                continue                                  # optimistic until tried
            lr_q, lr_c = self._linear[a]
            q_lr = lr_q.predict_proba(surface)[:, 1] if lr_q is not None else \
                np.full(len(X), np.nanmean(self.Q[rows, a]))
            c_lr = lr_c.predict(surface)
            k = min(self.neighbors, len(rows))
            sims = unit @ self._unit_rows[a].T
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            q_nn = self.Q[rows, a][top].mean(axis=1)
            c_nn = self.C[rows, a][top].mean(axis=1)
            quality[:, a] = self.blend * q_lr + (1.0 - self.blend) * q_nn
            cost[:, a] = self.blend * c_lr + (1.0 - self.blend) * c_nn
        return quality, cost

    def scores(self, x: np.ndarray, explore: bool = True, lam: float | None = None) -> np.ndarray:
        values = self._values(self._check(x)[None], lam)[0]
        if explore and self.rng.random() < self.eps:
            values[self.rng.integers(self.n_arms)] = np.inf   # a uniformly random arm wins
        return values

    def arm_probabilities(self, x: np.ndarray, explore: bool = True,
                          lam: float | None = None) -> np.ndarray:
        greedy = one_hot(int(np.argmax(self.scores(x, explore=False, lam=lam))), self.n_arms)
        return (1.0 - self.eps) * greedy + self.eps / self.n_arms if explore else greedy

    def choose_batch(self, X: np.ndarray, lam: float | None = None) -> np.ndarray:
        return np.argmax(self._values(X, lam), axis=1)

    def _values(self, X: np.ndarray, lam: float | None) -> np.ndarray:
        """E[quality] - lambda E[cost] per row and arm (the trained lambda when None)."""
        quality, cost = self.predict(X)
        return quality - (self.lam if lam is None else float(lam)) * cost

    # -- learning -----------------------------------------------------------------------
    def fit(self, X: np.ndarray, quality: np.ndarray, cost: np.ndarray,
            stale: int = 0) -> None:
        """Full information: every arm's quality and cost for every row (the last ``stale``
        rows buffered, not fitted yet: a reloaded model as it was saved)."""
        self.X = np.asarray(X, np.float32)[-self.capacity:]
        self.Q = np.asarray(quality, np.float32)[-self.capacity:]
        self.C = np.asarray(cost, np.float32)[-self.capacity:]
        self.updates += len(X)
        self._fit_models(stale)

    def update(self, x: np.ndarray, arm: int, reward: float, quality: float | None = None,
               cost: float | None = None) -> None:
        """Bandit feedback; needs the reward's parts (a bare reward is counted, not learned)."""
        x, arm = self._check(x), self._check_arm(arm)
        self.updates += 1
        if quality is not None and cost is not None:
            self.observe(x, {arm: (float(quality), float(cost))})

    def observe(self, x: np.ndarray, outcomes: dict[int, tuple[float, float]]) -> None:
        """One buffer row: the (quality, cost) of every arm in ``outcomes`` for ``x``."""
        q, c = np.full(self.n_arms, np.nan, np.float32), np.full(self.n_arms, np.nan, np.float32)
        for arm, (quality, cost) in outcomes.items():
            q[arm], c[arm] = quality, cost
        self.X = np.vstack([self.X, self._check(x)[None].astype(np.float32)])[-self.capacity:]
        self.Q = np.vstack([self.Q, q[None]])[-self.capacity:]
        self.C = np.vstack([self.C, c[None]])[-self.capacity:]
        self.stale += 1
        if self.stale >= self.refit_every or \
                min(len(self._rows[arm]) for arm in outcomes) <= self.min_rows:
            self._fit_models()

    def _fit_models(self, stale: int = 0) -> None:
        """Fit on the buffer but its last ``stale`` rows."""
        stale = min(int(stale), len(self.X))
        from sklearn.linear_model import LogisticRegression, Ridge

        self.stale, fitted = stale, len(self.X) - stale
        self._rows = [np.flatnonzero(~np.isnan(self.Q[:fitted, a])) for a in range(self.n_arms)]
        surface, unit = self._surface(self.X), self._unit(self.X)
        self._unit_rows = [unit[rows] for rows in self._rows]
        self._linear = []
        for a, rows in enumerate(self._rows):
            if len(rows) < self.min_rows:
                self._linear.append((None, None))
                continue
            q = np.clip(self.Q[rows, a].astype(np.float64), 0.0, 1.0)
            lr_q = None
            if 0.0 < q.mean() < 1.0:          # both outcomes seen: a model can be fitted
                lr_q = LogisticRegression(C=1.0 / self.l2, max_iter=2000).fit(
                    np.vstack([surface[rows]] * 2), np.r_[np.ones(len(q)), np.zeros(len(q))],
                    sample_weight=np.r_[q, 1.0 - q])
            lr_c = Ridge(alpha=10.0).fit(surface[rows], self.C[rows, a])
            self._linear.append((lr_q, lr_c))

    def _surface(self, X: np.ndarray) -> np.ndarray:
        surface = np.asarray(X, np.float64)[:, self.embed_dims:]
        return surface if surface.shape[1] else np.zeros((len(X), 1))

    def _unit(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float64)
        emb = X[:, :self.embed_dims]
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.where(norms > 0, norms, 1.0)
        return np.hstack([emb, self.cue_weight * X[:, self.embed_dims:]])

    # -- persistence --------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"lam": self.lam, "embed_dims": self.embed_dims, "l2": self.l2,
                "neighbors": self.neighbors, "blend": self.blend, "cue_weight": self.cue_weight,
                "eps": self.eps, "refit_every": self.refit_every, "min_rows": self.min_rows,
                "buffer": self.capacity}

    def state(self):
        values, arrays = super().state()
        arrays.update({"outcome.X": self.X, "outcome.Q": self.Q, "outcome.C": self.C})
        values["stale"] = self.stale
        return values, arrays

    def load_state(self, values, arrays) -> None:
        super().load_state(values, arrays)
        self.X = np.asarray(arrays["outcome.X"], np.float32)
        self.Q = np.asarray(arrays["outcome.Q"], np.float32)
        self.C = np.asarray(arrays["outcome.C"], np.float32)
        # deterministic: the same models as when saved (not on the rows they had not fitted)
        self._fit_models(values.get("stale", 0))
