"""A linear regression model with hand-written gradients, and a training loop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

from tinyml.optim import SGD, Adam, Params

Example = Tuple[Sequence[float], float]


@dataclass
class Linear:
    """y = w . x + b."""

    n_features: int
    seed: int = 0
    params: Params = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.params = {"w": [rng.uniform(-0.1, 0.1) for _ in range(self.n_features)], "b": [0.0]}

    def predict(self, x: Sequence[float]) -> float:
        return sum(w * xi for w, xi in zip(self.params["w"], x)) + self.params["b"][0]

    def loss_and_grads(self, batch: Sequence[Example]) -> tuple[float, Params]:
        """Mean squared error over ``batch`` and its gradients."""
        gw = [0.0] * self.n_features
        gb = 0.0
        loss = 0.0
        for x, y in batch:
            err = self.predict(x) - y
            loss += err * err
            for i, xi in enumerate(x):
                gw[i] += 2 * err * xi
            gb += 2 * err
        n = len(batch)
        return loss / n, {"w": [g / n for g in gw], "b": [gb / n]}


def fit(
    model: Linear,
    data: Sequence[Example],
    optimizer: SGD | Adam,
    epochs: int,
    batch_size: int = 16,
    seed: int = 0,
) -> List[float]:
    """Train in shuffled mini-batches; returns the mean loss of each epoch."""
    rng = random.Random(seed)
    order = list(range(len(data)))
    history: List[float] = []
    for _ in range(epochs):
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), batch_size):
            batch = [data[i] for i in order[start : start + batch_size]]
            loss, grads = model.loss_and_grads(batch)
            optimizer.step(model.params, grads)
            losses.append(loss)
        history.append(sum(losses) / len(losses))
    return history


def synthetic(n: int, weights: Sequence[float], bias: float, noise: float, seed: int) -> list[Example]:
    """Samples of y = weights . x + bias + N(0, noise)."""
    rng = random.Random(seed)
    out: list[Example] = []
    for _ in range(n):
        x = [rng.uniform(-1, 1) for _ in weights]
        out.append((x, sum(w * xi for w, xi in zip(weights, x)) + bias + rng.gauss(0, noise)))
    return out
