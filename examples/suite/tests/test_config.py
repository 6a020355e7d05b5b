"""Training configuration: defaults, file, environment overrides, validation."""

from __future__ import annotations

import json

import pytest

from tinyml.config import ConfigError, TrainConfig, load


@pytest.mark.hourly
def test_defaults_are_valid():
    """Loading with no file and no environment gives the defaults."""
    assert load(environ={}) == TrainConfig()


@pytest.mark.daily
def test_environment_overrides_file(tmp_path):
    """TINYML_* variables win over the file and are coerced to the field's type."""
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"lr": 0.1, "epochs": 5}))
    cfg = load(path, environ={"TINYML_EPOCHS": "7", "TINYML_OPTIMIZER": "adam"})
    assert (cfg.lr, cfg.epochs, cfg.optimizer) == (0.1, 7, "adam")


@pytest.mark.daily
def test_unknown_key_is_rejected(tmp_path):
    """A typo in the file is an error naming the key, not a silent default."""
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"learning_rate": 0.1}))
    with pytest.raises(ConfigError, match="learning_rate"):
        load(path, environ={})


@pytest.mark.daily
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TINYML_LR": "-1"}, "lr: must be positive"),
        ({"TINYML_EPOCHS": "many"}, "epochs: expected int"),
        ({"TINYML_OPTIMIZER": "lbfgs"}, "optimizer: expected"),
    ],
)
def test_bad_values_name_the_key(env, message):
    """Invalid values raise ConfigError naming the offending key."""
    with pytest.raises(ConfigError, match=message):
        load(environ=env)
