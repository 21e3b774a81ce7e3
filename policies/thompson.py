"""Linear Thompson sampling: theta_a ~ N(A_a^-1 b_a, v^2 A_a^-1), play the best sample.

Only x . theta_a matters for the choice, so the scalar N(x . mean_a, v^2 x^T A_a^-1 x) is
sampled directly: the same distribution as sampling theta, without a Cholesky per step.

``arm_probabilities`` is the exact probability that each arm's sample is the largest, by
quadrature rather than Monte Carlo: it is deterministic, draws nothing from ``self.rng``
(serving stays reproducible), and is never 0 for an arm that can be sampled -- a Monte
Carlo count can be, and a zero logging propensity breaks inverse propensity weighting.
"""

from __future__ import annotations

import math

import numpy as np

from policies.base import one_hot
from policies.ridge import RidgePolicy
from searchagent.errors import InputError

Z_LIMIT = 9.0                 # P(|z| > 9) ~ 2e-19: the integral over [-9, 9] is complete
SEGMENT = 0.5                 # longest quadrature segment, in standard deviations
NODES, WEIGHTS = np.polynomial.legendre.leggauss(16)
_erf = np.frompyfunc(math.erf, 1, 1)


class LinearThompson(RidgePolicy):
    algo = "thompson"

    def __init__(self, dim: int, n_arms: int = 3, seed: int = 0, reg: float = 1.0,
                 v: float = 0.3, intercept: bool = True):
        super().__init__(dim, n_arms, seed, reg, intercept)
        self.v = float(v)
        if not np.isfinite(self.v) or self.v < 0:
            raise InputError(f"thompson needs a finite v >= 0 (the sampling scale), got {v}",
                             field="params")

    def scores(self, x: np.ndarray, explore: bool = True, lam: float | None = None) -> np.ndarray:
        mean, width = self.mean_and_width(x, lam)
        if not explore:
            return mean
        return mean + self.v * width * self.rng.standard_normal(self.n_arms)

    def arm_probabilities(self, x: np.ndarray, explore: bool = True,
                          lam: float | None = None) -> np.ndarray:
        mean, width = self.mean_and_width(x, lam)
        if not explore:
            return one_hot(int(np.argmax(mean)), self.n_arms)
        return gaussian_argmax_probabilities(mean, self.v * width)

    def params(self):
        return {**super().params(), "v": self.v}


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.asarray(_erf(np.asarray(z, np.float64) / math.sqrt(2.0)), np.float64))


def gaussian_argmax_probabilities(mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """P(arm a has the largest of independent N(mean_b, scale_b^2) draws), for every a.

    For scale_a > 0 this is E_z[prod_{b != a} P(score_b < mean_a + scale_a z)], a 1-D
    integral done by Gauss-Legendre on segments of [-9, 9] split where another arm's
    mean lies (so a zero-scale arm's step sits on a segment edge). A zero-scale arm is a
    point mass; ties between point masses go to the lower index, as ``np.argmax`` does.
    """
    mean, scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
    n_arms = len(mean)
    probabilities = np.zeros(n_arms)
    for a in range(n_arms):
        others = [b for b in range(n_arms) if b != a]
        if scale[a] <= 0:
            p = 1.0
            for b in others:
                if scale[b] > 0:
                    p *= float(normal_cdf((mean[a] - mean[b]) / scale[b]))
                elif mean[b] > mean[a] or (mean[b] == mean[a] and b < a):
                    p = 0.0
            probabilities[a] = p
            continue
        cuts = (mean[others] - mean[a]) / scale[a]
        edges = np.unique(np.concatenate([
            np.linspace(-Z_LIMIT, Z_LIMIT, int(2 * Z_LIMIT / SEGMENT) + 1),
            cuts[np.abs(cuts) < Z_LIMIT]]))
        half, middle = np.diff(edges)[:, None] / 2, (edges[1:] + edges[:-1])[:, None] / 2
        z, weight = (middle + half * NODES).ravel(), (half * WEIGHTS).ravel()
        integrand = np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        value = mean[a] + scale[a] * z
        for b in others:
            integrand = integrand * (normal_cdf((value - mean[b]) / scale[b]) if scale[b] > 0
                                     else (value > mean[b]).astype(np.float64))
        probabilities[a] = float(weight @ integrand)
    return probabilities / probabilities.sum()
