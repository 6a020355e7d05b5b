"""Optimizer steps, gradient clipping and learning-rate schedules."""

from __future__ import annotations

import math

import pytest

from tinyml.optim import SGD, Adam, clip_grad_norm, cosine_lr


@pytest.mark.hourly
def test_sgd_step_moves_against_the_gradient():
    """One plain SGD step subtracts lr * grad."""
    params = {"w": [1.0, -2.0]}
    SGD(lr=0.5).step(params, {"w": [2.0, -4.0]})
    assert params["w"] == [0.0, 0.0]


@pytest.mark.hourly
def test_cosine_schedule_endpoints():
    """The cosine schedule starts at base_lr and ends at min_lr."""
    assert cosine_lr(0, 0.1, total_steps=100) == pytest.approx(0.1)
    assert cosine_lr(50, 0.1, total_steps=100) == pytest.approx(0.05)
    assert cosine_lr(100, 0.1, total_steps=100, min_lr=0.01) == pytest.approx(0.01)


@pytest.mark.daily
def test_momentum_accumulates_velocity():
    """With momentum 0.9 a constant gradient makes the second step 1.9x the first."""
    params = {"w": [0.0]}
    opt = SGD(lr=1.0, momentum=0.9)
    opt.step(params, {"w": [1.0]})
    first = -params["w"][0]
    opt.step(params, {"w": [1.0]})
    assert -params["w"][0] - first == pytest.approx(1.9 * first)


@pytest.mark.daily
def test_adam_first_step_is_lr_sized():
    """Adam's bias-corrected first step has magnitude lr whatever the gradient scale."""
    for scale in (1e-3, 1.0, 1e3):
        params = {"w": [0.0]}
        Adam(lr=0.01).step(params, {"w": [scale]})
        assert params["w"][0] == pytest.approx(-0.01, rel=1e-4)


@pytest.mark.daily
def test_clip_grad_norm_rescales_to_max():
    """Gradients above the limit are scaled down to exactly max_norm; small ones are untouched."""
    grads = {"a": [3.0], "b": [4.0]}
    assert clip_grad_norm(grads, max_norm=1.0) == pytest.approx(5.0)
    assert math.hypot(grads["a"][0], grads["b"][0]) == pytest.approx(1.0)
    small = {"a": [0.1]}
    clip_grad_norm(small, max_norm=1.0)
    assert small == {"a": [0.1]}


@pytest.mark.daily
def test_mismatched_gradient_is_rejected():
    """A gradient of the wrong length raises instead of updating part of the vector."""
    params = {"w": [1.0, 2.0]}
    with pytest.raises(ValueError, match="'w'"):
        SGD(lr=0.1).step(params, {"w": [1.0]})
    assert params == {"w": [1.0, 2.0]}


def test_warmup_is_linear():
    """During warm-up the learning rate grows linearly to base_lr."""
    rates = [cosine_lr(s, 1.0, total_steps=10, warmup_steps=4) for s in range(4)]
    assert rates == pytest.approx([0.25, 0.5, 0.75, 1.0])
