"""Where the PostgreSQL password comes from: env, file, systemd credentials; never the URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.config import StoreConfig
from scheduler.kernel.errors import StoreConnectError
from scheduler.store.connect import store_password

URL = "postgresql://schedctl@db/schedctl"


def test_the_environment_comes_first(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    cfg = StoreConfig(url=URL, password_file=str(tmp_path / "pw"))
    assert store_password(cfg, {"SCHEDCTL_STORE_PASSWORD": "from-env"}) == "from-env"
    assert store_password(cfg, {}) == "from-file"


def test_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "SCHEDCTL_STORE_PASSWORD").write_text("cred\n")
    (tmp_path / "db-pw").write_text("named\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert store_password(StoreConfig(url=URL), env) == "cred"
    assert store_password(StoreConfig(url=URL, password_file="db-pw"), env) == "named"
    assert store_password(StoreConfig(url=URL), {}) is None  # trust / peer / ~/.pgpass


def test_an_empty_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(StoreConnectError, match="is empty"):
        store_password(StoreConfig(url=URL, password_file=str(tmp_path / "empty")), {})
    with pytest.raises(StoreConnectError, match="store.password_file: cannot read"):
        store_password(StoreConfig(url=URL, password_file=str(tmp_path / "nope")), {})
