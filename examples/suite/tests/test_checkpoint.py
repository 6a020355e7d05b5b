"""Checkpoint save/load on real files: atomicity, integrity, resume."""

from __future__ import annotations

import json

import pytest

from tinyml import checkpoint
from tinyml.checkpoint import CheckpointError
from tinyml.model import Linear, fit, synthetic
from tinyml.optim import SGD


@pytest.mark.hourly
@pytest.mark.integration
def test_save_load_roundtrip(tmp_path):
    """A saved state dict and step come back unchanged."""
    state = {"w": [0.25, -1.5], "b": [3.0], "meta": {"arch": "linear"}}
    path = checkpoint.save(tmp_path / "run" / "step-10.ckpt", state, step=10)
    assert checkpoint.load(path) == (state, 10)


@pytest.mark.daily
def test_corruption_is_detected(tmp_path):
    """A tampered body fails the checksum; garbage and absence raise CheckpointError too."""
    path = checkpoint.save(tmp_path / "c.ckpt", {"w": [1.0]}, step=1)
    envelope = json.loads(path.read_text())
    envelope["body"] = envelope["body"].replace("1.0", "2.0")
    path.write_text(json.dumps(envelope))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load(path)
    path.write_text("not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.ckpt")


@pytest.mark.daily
def test_save_leaves_no_temporary_files(tmp_path):
    """Overwriting a checkpoint leaves exactly one file behind."""
    for step in range(3):
        checkpoint.save(tmp_path / "model.ckpt", {"step": [float(step)]}, step=step)
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]
    assert checkpoint.load(tmp_path / "model.ckpt")[1] == 2


@pytest.mark.daily
def test_latest_picks_the_highest_step(tmp_path):
    """latest() orders by step number, not by string."""
    assert checkpoint.latest(tmp_path) is None
    for step in (2, 10, 9):
        checkpoint.save(tmp_path / f"step-{step}.ckpt", {}, step=step)
    assert checkpoint.latest(tmp_path).name == "step-10.ckpt"


@pytest.mark.integration
def test_resume_continues_training_from_a_checkpoint(tmp_path):
    """A model restored from a checkpoint predicts exactly like the one that was saved."""
    data = synthetic(64, [1.0, 2.0], 0.5, noise=0.0, seed=5)
    model = Linear(2)
    fit(model, data, SGD(lr=0.1), epochs=3)
    path = checkpoint.save(tmp_path / "step-3.ckpt", model.params, step=3)
    restored = Linear(2, seed=99)
    restored.params, step = checkpoint.load(path)
    assert step == 3
    assert [restored.predict(x) for x, _ in data] == [model.predict(x) for x, _ in data]
