"""Baselines: a fixed arm, an Adaptive-RAG-style supervised classifier, and the oracle.

The classifier's label for a question is the cheapest arm (in ``ARMS`` order) whose
quality reaches ``correct_at``; when no arm is correct it is the arm with the highest
reward (ties go to the cheaper arm). It is multinomial logistic regression with L2,
trained on full information; it does not learn from bandit feedback online.
The oracle is an evaluation device, not a servable policy: it needs every arm's reward.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.arms import ARMS, arm_index
from policies.base import Policy
from searchagent.errors import InputError


class FixedArm(Policy):
    algo = "fixed"
    learns_online = False

    def __init__(self, dim: int, n_arms: int = len(ARMS), seed: int = 0, arm: str = "single"):
        super().__init__(dim, n_arms, seed)
        self.arm = arm
        self.index = arm_index(arm)

    def scores(self, x: np.ndarray, explore: bool = True, lam: float | None = None) -> np.ndarray:
        scores = np.zeros(self.n_arms)
        scores[self.index] = 1.0
        return scores

    def update(self, x, arm, reward, quality=None, cost=None) -> None:
        self.updates += 1

    def params(self) -> dict[str, Any]:
        return {"arm": self.arm}


def cheapest_correct_labels(quality: np.ndarray, rewards: np.ndarray,
                            correct_at: float = 0.5) -> np.ndarray:
    """Adaptive-RAG labels over a (questions x arms) table, arms ordered cheapest first."""
    correct = quality >= correct_at
    labels = np.where(correct.any(axis=1), correct.argmax(axis=1), rewards.argmax(axis=1))
    return labels.astype(np.int64)


class SupervisedClassifier(Policy):
    algo = "supervised"
    learns_online = False

    def __init__(self, dim: int, n_arms: int = len(ARMS), seed: int = 0, l2: float = 1e-2,
                 correct_at: float = 0.5, epochs: int = 300, lr: float = 0.5):
        super().__init__(dim, n_arms, seed)
        self.l2, self.correct_at = float(l2), float(correct_at)
        self.epochs, self.lr = int(epochs), float(lr)
        if not (np.isfinite([self.l2, self.correct_at, self.lr]).all() and self.l2 >= 0
                and self.lr > 0 and self.epochs >= 1):
            raise InputError(f"supervised needs l2 >= 0, lr > 0, epochs >= 1 and a finite "
                             f"correct_at, got l2={l2}, lr={lr}, epochs={epochs}, "
                             f"correct_at={correct_at}", field="params")
        self.weights = np.zeros((dim, n_arms))

    def scores(self, x: np.ndarray, explore: bool = True, lam: float | None = None) -> np.ndarray:
        logits = self._check(x) @ self.weights
        exp = np.exp(logits - logits.max())
        return exp / exp.sum()

    def choose_batch(self, X: np.ndarray, lam: float | None = None) -> np.ndarray:
        return np.argmax(np.asarray(X, np.float64) @ self.weights, axis=1)

    def update(self, x, arm, reward, quality=None, cost=None) -> None:
        self.updates += 1          # recorded, not learned from: labels need every arm

    def fit_labels(self, X: np.ndarray, labels: np.ndarray) -> None:
        """Full-batch gradient descent with Nesterov momentum on the softmax loss."""
        X = np.asarray(X, np.float64)
        onehot = np.eye(self.n_arms)[labels]
        w, velocity = np.zeros_like(self.weights), np.zeros_like(self.weights)
        for _ in range(self.epochs):
            ahead = w + 0.9 * velocity
            logits = X @ ahead
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            grad = X.T @ (probs - onehot) / len(X) + self.l2 * ahead
            velocity = 0.9 * velocity - self.lr * grad
            w = w + velocity
        self.weights = w
        self.updates += len(X)

    def fit(self, X: np.ndarray, quality: np.ndarray, rewards: np.ndarray) -> None:
        self.fit_labels(X, cheapest_correct_labels(quality, rewards, self.correct_at))

    def params(self) -> dict[str, Any]:
        return {"l2": self.l2, "correct_at": self.correct_at, "epochs": self.epochs,
                "lr": self.lr}

    def state(self):
        values, arrays = super().state()
        arrays["weights"] = self.weights
        return values, arrays

    def load_state(self, values, arrays) -> None:
        super().load_state(values, arrays)
        self.weights = np.array(arrays["weights"], dtype=np.float64)


def oracle_arms(rewards: np.ndarray) -> np.ndarray:
    """Best arm per question (ties to the cheaper arm): the upper bound of any policy."""
    return np.asarray(rewards).argmax(axis=1)
