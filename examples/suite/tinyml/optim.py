"""Optimizers over named parameter vectors, and learning-rate schedules."""

from __future__ import annotations

import math
from typing import Dict, List

Params = Dict[str, List[float]]


def _check(params: Params, grads: Params) -> None:
    for name, values in params.items():
        grad = grads.get(name)
        if grad is None or len(grad) != len(values):
            raise ValueError(f"gradient for {name!r} missing or of the wrong length")


class SGD:
    """Stochastic gradient descent with optional momentum and weight decay."""

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError("lr must be positive")
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.velocity: Params = {}

    def step(self, params: Params, grads: Params) -> None:
        _check(params, grads)
        for name, values in params.items():
            vel = self.velocity.setdefault(name, [0.0] * len(values))
            for i, g in enumerate(grads[name]):
                g += self.weight_decay * values[i]
                vel[i] = self.momentum * vel[i] + g
                values[i] -= self.lr * vel[i]

    def state_dict(self) -> dict[str, object]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "velocity": {k: list(v) for k, v in self.velocity.items()},
        }


class Adam:
    """Adam (Kingma & Ba) with bias correction."""

    def __init__(
        self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.m: Params = {}
        self.v: Params = {}

    def step(self, params: Params, grads: Params) -> None:
        _check(params, grads)
        self.t += 1
        b1, b2 = self.betas
        for name, values in params.items():
            m = self.m.setdefault(name, [0.0] * len(values))
            v = self.v.setdefault(name, [0.0] * len(values))
            for i, g in enumerate(grads[name]):
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                m_hat = m[i] / (1 - b1**self.t)
                v_hat = v[i] / (1 - b2**self.t)
                values[i] -= self.lr * m_hat / (math.sqrt(v_hat) + self.eps)


def cosine_lr(
    step: int, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0
) -> float:
    """Linear warm-up to ``base_lr``, then cosine decay to ``min_lr`` at ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def clip_grad_norm(grads: Params, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``; return the norm."""
    norm = math.sqrt(math.fsum(g * g for values in grads.values() for g in values))
    if norm > max_norm > 0:
        scale = max_norm / norm
        for values in grads.values():
            values[:] = [g * scale for g in values]
    return norm
