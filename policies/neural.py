"""Epsilon-greedy neural reward model in the MBA-RAG manner.

A shared MLP trunk with one reward head per arm. Each update stores (x, arm, reward) in a
bounded replay buffer and takes a few SGD steps whose loss (MSE) is on the chosen arm's
head only. Exploration is epsilon-greedy with epsilon decaying per update. Weight decay
acts on the weight matrices only, never on the biases: a large decay leaves each head's
bias, i.e. that arm's mean reward, so tuning the decay can fall back to the best fixed arm.
Weights persist as safetensors tensors named ``net.*``; the buffer persists as arrays.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from policies.base import Policy, one_hot
from searchagent.errors import InputError


@contextmanager
def _one_thread():
    """A net this small runs fastest on one thread; torch's pool only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _RewardNet(nn.Module):
    def __init__(self, dim: int, hidden: int, n_arms: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.heads = nn.Linear(hidden, n_arms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(x))


class NeuralEpsGreedy(Policy):
    algo = "neural"

    def __init__(self, dim: int, n_arms: int = 3, seed: int = 0, hidden: int = 64,
                 lr: float = 3e-3, weight_decay: float = 1e-4, eps: float = 0.3,
                 eps_min: float = 0.02, eps_decay: float = 0.995, batch: int = 32,
                 steps_per_update: int = 2, buffer: int = 4096):
        super().__init__(dim, n_arms, seed)
        self.hidden, self.lr, self.weight_decay = int(hidden), float(lr), float(weight_decay)
        self.eps0, self.eps_min, self.eps_decay = float(eps), float(eps_min), float(eps_decay)
        self.batch, self.steps_per_update, self.capacity = int(batch), int(steps_per_update), int(buffer)
        if not (self.hidden >= 1 and self.lr > 0 and self.weight_decay >= 0
                and 0 <= self.eps0 <= 1 and 0 <= self.eps_min <= 1 and 0 < self.eps_decay <= 1
                and self.batch >= 1 and self.steps_per_update >= 1 and self.capacity >= 1) \
                or not all(np.isfinite([self.lr, self.weight_decay, self.eps0, self.eps_min,
                                        self.eps_decay])):
            raise InputError("neural needs hidden >= 1, lr > 0, weight_decay >= 0, 0 <= eps "
                             "<= 1, 0 <= eps_min <= 1, 0 < eps_decay <= 1, batch >= 1, "
                             "steps_per_update >= 1 and buffer >= 1, got "
                             + ", ".join(f"{k}={v}" for k, v in self.params().items()),
                             field="params")
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            self.net = _RewardNet(dim, self.hidden, n_arms)
        weights = [p for name, p in self.net.named_parameters() if name.endswith("weight")]
        biases = [p for name, p in self.net.named_parameters() if not name.endswith("weight")]
        self.optimizer = torch.optim.Adam(
            [{"params": weights, "weight_decay": self.weight_decay},
             {"params": biases, "weight_decay": 0.0}], lr=self.lr, foreach=True)
        self.buf_x = np.zeros((0, dim), dtype=np.float32)
        self.buf_arm = np.zeros(0, dtype=np.int64)
        self.buf_r = np.zeros(0, dtype=np.float32)

    @property
    def epsilon(self) -> float:
        return max(self.eps_min, self.eps0 * self.eps_decay ** self.updates)

    def scores(self, x: np.ndarray, explore: bool = True, lam: float | None = None) -> np.ndarray:
        x = self._check(x)
        with torch.no_grad(), _one_thread():
            predicted = self.net(torch.as_tensor(x, dtype=torch.float32)[None])[0].numpy()
        predicted = predicted.astype(np.float64)
        if explore and self.rng.random() < self.epsilon:
            predicted[self.rng.integers(self.n_arms)] = np.inf   # a uniformly random arm wins
        return predicted

    def arm_probabilities(self, x: np.ndarray, explore: bool = True,
                          lam: float | None = None) -> np.ndarray:
        """Exact epsilon-greedy mixture: 1 - eps + eps/K on the greedy arm, eps/K elsewhere."""
        greedy = one_hot(int(np.argmax(self.scores(x, explore=False))), self.n_arms)
        if not explore:
            return greedy
        return (1.0 - self.epsilon) * greedy + self.epsilon / self.n_arms

    def choose_batch(self, X: np.ndarray, lam: float | None = None) -> np.ndarray:
        with torch.no_grad(), _one_thread():
            return self.net(torch.as_tensor(np.asarray(X, np.float32))).argmax(1).numpy()

    def update(self, x: np.ndarray, arm: int, reward: float, quality: float | None = None,
               cost: float | None = None) -> None:
        x, arm = self._check(x), self._check_arm(arm)
        self.buf_x = np.vstack([self.buf_x, x[None].astype(np.float32)])[-self.capacity:]
        self.buf_arm = np.append(self.buf_arm, arm)[-self.capacity:]
        self.buf_r = np.append(self.buf_r, np.float32(reward))[-self.capacity:]
        with _one_thread():
            for _ in range(self.steps_per_update):
                self._sgd_step()
        self.updates += 1

    def _sgd_step(self) -> None:
        size = len(self.buf_r)
        rows = self.rng.choice(size, size=min(self.batch, size), replace=False)
        rows[-1] = size - 1                    # always learn from the newest sample
        x = torch.as_tensor(self.buf_x[rows])
        arm = torch.as_tensor(self.buf_arm[rows])
        target = torch.as_tensor(self.buf_r[rows])
        predicted = self.net(x).gather(1, arm[:, None])[:, 0]   # the chosen arm's head only
        loss = nn.functional.mse_loss(predicted, target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def params(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "lr": self.lr, "weight_decay": self.weight_decay,
                "eps": self.eps0, "eps_min": self.eps_min, "eps_decay": self.eps_decay,
                "batch": self.batch, "steps_per_update": self.steps_per_update,
                "buffer": self.capacity}

    def state(self):
        values, arrays = super().state()
        for name, tensor in self.net.state_dict().items():
            arrays[f"net.{name}"] = tensor.detach().numpy().copy()
        for name, tensor in _flat_optimizer_state(self.optimizer, self.net).items():
            arrays[f"net.adam.{name}"] = tensor
        arrays.update({"buf_x": self.buf_x, "buf_arm": self.buf_arm, "buf_r": self.buf_r})
        values["adam_step"] = _adam_step(self.optimizer)
        return values, arrays

    def load_state(self, values, arrays) -> None:
        super().load_state(values, arrays)
        weights = {k[4:]: torch.as_tensor(np.array(v)) for k, v in arrays.items()
                   if k.startswith("net.") and not k.startswith("net.adam.")}
        self.net.load_state_dict(weights)
        moments = {k[9:]: v for k, v in arrays.items() if k.startswith("net.adam.")}
        if moments:
            _load_optimizer_state(self.optimizer, self.net, moments,
                                  int(values.get("adam_step", 0)))
        self.buf_x = np.array(arrays["buf_x"], dtype=np.float32)
        self.buf_arm = np.array(arrays["buf_arm"], dtype=np.int64)
        self.buf_r = np.array(arrays["buf_r"], dtype=np.float32)


def _flat_optimizer_state(optimizer: torch.optim.Adam, net: nn.Module) -> dict[str, np.ndarray]:
    """Adam's moments keyed by the parameter's position in ``net.parameters()``."""
    out = {}
    for index, param in enumerate(net.parameters()):
        state = optimizer.state.get(param)
        if state:
            out[f"{index}.exp_avg"] = state["exp_avg"].numpy().copy()
            out[f"{index}.exp_avg_sq"] = state["exp_avg_sq"].numpy().copy()
    return out


def _adam_step(optimizer: torch.optim.Adam) -> int:
    for state in optimizer.state.values():
        return int(state["step"])
    return 0


def _load_optimizer_state(optimizer, net: nn.Module, moments: dict[str, np.ndarray],
                          step: int) -> None:
    for index, param in enumerate(net.parameters()):
        if f"{index}.exp_avg" in moments:
            optimizer.state[param] = {
                "step": torch.tensor(float(step)),
                "exp_avg": torch.as_tensor(np.array(moments[f"{index}.exp_avg"])),
                "exp_avg_sq": torch.as_tensor(np.array(moments[f"{index}.exp_avg_sq"]))}
