"""The linear model's gradients and end-to-end training."""

from __future__ import annotations

import pytest

from tinyml.model import Linear, fit, synthetic
from tinyml.optim import SGD, Adam

TRUE_W = [2.0, -3.0, 0.5]
TRUE_B = 1.0


@pytest.mark.hourly
def test_gradients_match_finite_differences():
    """Analytic gradients agree with central finite differences."""
    model = Linear(3, seed=1)
    batch = synthetic(8, TRUE_W, TRUE_B, noise=0.1, seed=2)
    _, grads = model.loss_and_grads(batch)
    eps = 1e-6
    for name, values in model.params.items():
        for i in range(len(values)):
            values[i] += eps
            up, _ = model.loss_and_grads(batch)
            values[i] -= 2 * eps
            down, _ = model.loss_and_grads(batch)
            values[i] += eps
            assert grads[name][i] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-6)


@pytest.mark.daily
def test_fit_reports_one_decreasing_loss_per_epoch():
    """fit() returns one mean loss per epoch, and training lowers it."""
    history = fit(Linear(3), synthetic(64, TRUE_W, TRUE_B, 0.0, seed=3), SGD(lr=0.1), epochs=5)
    assert len(history) == 5
    assert history[-1] < history[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "optimizer",
    [lambda: SGD(lr=0.1, momentum=0.5), lambda: Adam(lr=0.05)],
    ids=["sgd-momentum", "adam"],
)
def test_training_recovers_true_weights(optimizer):
    """Training on 5000 noisy samples recovers the generating weights to 0.05."""
    model = Linear(3, seed=0)
    data = synthetic(5000, TRUE_W, TRUE_B, noise=0.05, seed=4)
    fit(model, data, optimizer(), epochs=30, batch_size=32)
    assert model.params["w"] == pytest.approx(TRUE_W, abs=0.05)
    assert model.params["b"][0] == pytest.approx(TRUE_B, abs=0.05)
