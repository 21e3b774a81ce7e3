"""The Policy interface every bandit and baseline implements.

``scores(x, explore)`` returns one number per arm (higher is better) and ``choose`` takes
the argmax; ``explore=False`` is the greedy (serving / evaluation) choice. ``update`` learns
from one revealed reward and, when given, its parts (quality and cost): a policy whose
``supports_lam()`` is true can then score for another lambda at serve time (``lam=``). ``state()`` returns JSON-able values and numpy arrays that
``from_state`` turns back into the same policy (see ``persistence``).
``arm_probabilities(x, explore, lam)`` is the distribution ``choose`` draws its arm from:
the logging propensities that off-policy evaluation (``policies.ope``) needs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from policies.arms import ARMS
from searchagent.errors import InputError


class Policy:
    algo: ClassVar[str] = "base"
    learns_online: ClassVar[bool] = True
    stepwise: ClassVar[bool] = False    # decides after each answer (the agent drives it)
    learns_from_bare_reward: ClassVar[bool] = True   # False: update needs quality and cost

    def __init__(self, dim: int, n_arms: int = len(ARMS), seed: int = 0):
        if dim <= 0 or n_arms <= 0:
            raise InputError(f"policy needs dim > 0 and n_arms > 0, got {dim}, {n_arms}")
        self.dim, self.n_arms, self.seed = int(dim), int(n_arms), int(seed)
        self.rng = np.random.default_rng(seed)
        self.updates = 0

    # -- acting -------------------------------------------------------------------------
    def scores(self, x: np.ndarray, explore: bool = True,
               lam: float | None = None) -> np.ndarray:
        raise NotImplementedError

    def choose(self, x: np.ndarray, explore: bool = True,
               lam: float | None = None) -> tuple[int, np.ndarray]:
        scores = self.scores(self._check(x), explore, lam)
        return int(np.argmax(scores)), scores

    def arm_probabilities(self, x: np.ndarray, explore: bool = True,
                          lam: float | None = None) -> np.ndarray:
        """P(``choose(x, explore, lam)`` returns arm a), one value per arm; never touches
        ``self.rng``. This default, a one-hot on the argmax, is exact for policies whose
        scores are deterministic given their state (LinUCB, the baselines, any greedy
        choice); policies that randomize when exploring override it."""
        return one_hot(int(np.argmax(self.scores(self._check(x), explore, lam))), self.n_arms)

    def supports_lam(self) -> bool:
        """Whether ``scores(..., lam=...)`` honours a lambda other than the trained one."""
        return False

    def choose_batch(self, X: np.ndarray, lam: float | None = None) -> np.ndarray:
        """Greedy arms for many rows (evaluation); ``lam`` as in ``scores``."""
        return np.array([self.choose(x, explore=False, lam=lam)[0] for x in X],
                        dtype=np.int64)

    # -- learning -----------------------------------------------------------------------
    def update(self, x: np.ndarray, arm: int, reward: float, quality: float | None = None,
               cost: float | None = None) -> None:
        raise NotImplementedError

    # -- persistence --------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Hyperparameters (JSON-able) that ``__init__`` accepts besides dim/n_arms/seed."""
        return {}

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"updates": self.updates, "rng": self.rng.bit_generator.state}, {}

    def load_state(self, values: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.updates = int(values.get("updates", 0))
        if "rng" in values:
            self.rng.bit_generator.state = values["rng"]

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.dim:
            raise InputError(f"feature vector has {x.shape[0]} values, the policy expects "
                             f"{self.dim}", field="features")
        return x

    def _check_arm(self, arm: int) -> int:
        if not 0 <= int(arm) < self.n_arms:
            raise InputError(f"arm index {arm} out of range 0..{self.n_arms - 1}", field="arm")
        return int(arm)


def one_hot(arm: int, n_arms: int) -> np.ndarray:
    probabilities = np.zeros(n_arms)
    probabilities[arm] = 1.0
    return probabilities
