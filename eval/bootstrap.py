"""Percentile bootstrap confidence intervals for per-question scores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def fmt(self, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
        spec = f"{'+' if signed else ''}.{digits}f"
        return (f"{self.mean * scale:{spec}} "
                f"[{self.low * scale:{spec}}, {self.high * scale:{spec}}]")


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> Interval:
    """Mean of ``values`` with a percentile bootstrap interval (NaNs are dropped)."""
    data = np.asarray([v for v in values if v is not None], dtype=float)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 256):
        stop = min(resamples, start + 256)
        picks = rng.integers(0, data.size, size=(stop - start, data.size))
        means[start:stop] = data[picks].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(data.mean()), float(low), float(high))
