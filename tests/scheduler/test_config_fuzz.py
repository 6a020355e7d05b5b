"""A corpus of malformed configs (issue 20, finding 7): each is refused with a message naming the
key, never a traceback, within a bounded amount of memory."""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.config import load_config
from scheduler.kernel.errors import ConfigError
from tests.conftest import SUITE

MEMORY_LIMIT = 100 * 1024 * 1024


def base() -> dict[str, Any]:
    return {
        "state_dir": "state",
        "runner": "local",
        "project": {"path": str(SUITE)},
        "tiers": {"hourly": {"schedule": "15 * * * *", "timeout": 60, "markers": "hourly"}},
    }


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


BAD_DURATIONS = [
    float("nan"), float("inf"), float("-inf"), "999999999999999999999999999d", "400d", -1, 0,
    "1y", "ten minutes", True, [], {}, "1e400", "-5m", "nan", "inf",
]  # fmt: skip
BAD_SIZES = [
    "lots", "-1g", "1.5g", "", "1e23", "0", "1k", -1, True, [], "99999999999999t", "4 gigs",
]  # fmt: skip
BAD_INTS = [1e23, -5, "many", 1.5, [], 10**30, "1e23"]
BAD_CRON = [
    "0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "* * *", "61 * * * *", "", "@hourly",
    "0 0 * * 8", "a b c d e", 5,
]  # fmt: skip
BAD_MOUNTS = [
    {"/data": "/work/src"}, {"/data": "/work"}, {"/data": "/work/out/x"},
    {"/var/run/docker.sock": "/docker.sock"}, {"/run/docker.sock": "/x"},
    {"/srv/docker.sock": "/x"}, {"/proc": "/hostproc"}, {"/data": "/proc/x"},
    {"/data": "/sys"}, {"/": "/host"}, {"/data": "/"}, {"relative": "/x"}, {"/data": "rel"},
    {"/data": "/work/../work/src"}, {"/dev/sda": "/disk"},
]  # fmt: skip
BAD_MARKERS = [
    "", "   ", "hourly and", "(hourly", "hourly)", "and", "not", "-p evil", "hourly; rm",
    "a or or b", "x" * 2000, "hourly $(id)", 5, [],
]  # fmt: skip
BAD_IMAGES = ["", " ", "has space:1", "-rm", "a" * 300, 7]
BAD_STATE_DIRS = ["/proc/schedctl", "/sys/fs/x", "/dev/shm/x", "/proc"]
BAD_SOCKETS = ["/tmp/" + "s" * 300, "/tmp/" + "x" * 90 + ".sock", "/" + "d" * 300 + "/a.sock"]


def mapping_cases() -> list[tuple[str, dict[str, Any], str]]:
    cases: list[tuple[str, dict[str, Any], str]] = []

    def add(key: str, values: list[Any], tag: str = "") -> None:
        for i, value in enumerate(values):
            cases.append((f"{key}{tag}[{i}]", _set(base(), key, value), key))

    for key in ("tiers.hourly.timeout", "tiers.hourly.misfire_grace", "daemon.grace",
                "gpu.wait", "retention.passed", "project.fetch_timeout"):  # fmt: skip
        add(key, BAD_DURATIONS)
    for key in ("tiers.hourly.timeout", "gpu.wait", "daemon.grace"):
        add(key, ["8d", "169h", 604801], tag="-over-a-week")
    for key in ("tiers.hourly.memory", "tiers.hourly.shm_size", "tiers.hourly.output_limit"):
        add(key, BAD_SIZES)
    add("state_min_free", ["lots", "-1g", 1.5, "1e23"])
    for key in ("tiers.hourly.pids_limit", "tiers.hourly.max_catchup", "log_limit_bytes"):
        add(key, BAD_INTS)
    add("tiers.hourly.schedule", BAD_CRON)
    add("tiers.hourly.mounts", BAD_MOUNTS)
    add("tiers.hourly.markers", BAD_MARKERS)
    add("tiers.hourly.image", BAD_IMAGES)
    add("image", BAD_IMAGES)
    add("state_dir", BAD_STATE_DIRS)
    add("daemon.api.socket", BAD_SOCKETS)
    add("tiers.hourly.gpus", [-1, "some", 10**6])
    add("tiers.hourly.runner", ["kubernetes", ""])
    add("tiers.hourly.unknown_key", [1])
    add("timezone", ["Mars/Olympus", ""])
    add("daemon.metrics_address", ["nope", ":99999", "host:port"])
    return cases


DEEP = "tiers:\n  hourly:\n    env:\n      a: " + "[" * 5000 + "]" * 5000 + "\n"
BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n"
        for p, n in zip("abcdefg", "bcdefgh", strict=True)
    )
    + "tiers: {hourly: {args: *h}}\n"
)
RAW_CASES: list[tuple[str, str, str]] = [
    ("duplicate-top", "runner: local\nrunner: docker\n", "duplicate key 'runner'"),
    ("duplicate-tier", "tiers:\n  a: {}\n  a: {}\n", "duplicate key 'a'"),
    ("duplicate-nested", "tiers:\n  a:\n    timeout: 5\n    timeout: 9\n", "duplicate key"),
    ("alias-bomb", BOMB, "alias"),
    ("deep-nesting", DEEP, "nesting"),
    ("deep-mapping", "a: " + "{b: " * 3000 + "1" + "}" * 3000, "nesting"),
    ("recursive-alias", "tiers: &t {x: *t}\n", "recursive alias"),
    ("non-string-key", "tiers: {1: {}}\n", "must be a string"),
    ("null-key", "~: 1\n", "must be a string"),
    ("python-tag", "tiers: !!python/object:os.system {}\n", "invalid YAML"),
    ("tabs", "tiers:\n\thourly: {}\n", "invalid YAML"),
    ("not-a-mapping", "- a\n- b\n", "expected a mapping"),
    ("scalar", "42\n", "expected a mapping"),
    ("empty", "", "expected a mapping"),
    ("binary", "\x00\x01\x02", "invalid YAML"),
    ("huge", "a: " + "x" * (2 * 1024 * 1024) + "\n", "larger than"),
    ("two-documents", "a: 1\n---\nb: 2\n", "invalid YAML"),
    ("unclosed", "tiers: {hourly: [\n", "invalid YAML"),
]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MAPPING_CASES = mapping_cases()


def test_corpus_is_large_enough() -> None:
    """The corpus holds at least 200 malformed configs, as the issue asks."""
    assert len(MAPPING_CASES) + len(RAW_CASES) >= 200


def _refused(path: Path) -> str:
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"{path.name}: peak {peak / 1e6:.0f} MB"
    return str(caught.value)


@pytest.mark.parametrize(("name", "data", "key"), MAPPING_CASES, ids=[c[0] for c in MAPPING_CASES])
def test_malformed_value_names_its_key(
    tmp_path: Path, name: str, data: dict[str, Any], key: str
) -> None:
    """Each bad value is a ConfigError whose message names the key, within 100 MB."""
    text = yaml.safe_dump(data, allow_unicode=True)
    message = _refused(write(tmp_path, "config", text))
    assert key in message, message


@pytest.mark.parametrize(("name", "text", "expected"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_malformed_yaml_is_refused(tmp_path: Path, name: str, text: str, expected: str) -> None:
    """Duplicate keys, alias bombs, deep nesting, tags and junk: a clear error, within 100 MB."""
    message = _refused(write(tmp_path, name, text))
    assert expected in message, message


@pytest.mark.parametrize(
    "case",
    [
        ("nan-timeout", yaml.safe_dump(_set(base(), "tiers.hourly.timeout", float("nan")))),
        ("cron-feb-31", yaml.safe_dump(_set(base(), "tiers.hourly.schedule", "0 0 31 2 *"))),
        ("docker-sock", yaml.safe_dump(_set(base(), "tiers.hourly.mounts", BAD_MOUNTS[3]))),
        ("alias-bomb", BOMB),
        ("deep-nesting", DEEP),
        ("duplicate", "runner: local\nrunner: docker\n"),
    ],
    ids=lambda case: case[0],
)
def test_config_check_exits_2_without_traceback(tmp_path: Path, case: tuple[str, str]) -> None:
    """`schedctl config check` on a malformed file: exit 2, a message, no traceback."""
    name, text = case
    path = write(tmp_path, name, text)
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr or str(path) in proc.stdout


def test_valid_sizes_and_durations_still_load(tmp_path: Path) -> None:
    """The bounds do not refuse what real configs say."""
    data = base()
    data["tiers"]["hourly"].update(
        {"memory": "512m", "shm_size": "2GB", "output_limit": "10g", "timeout": "7d",
         "schedule": "0 0 29 2 *", "markers": "(hourly or daily) and not slow",
         "mounts": {"/data": "/data"}, "pids_limit": 8192}
    )  # fmt: skip
    data["retention"] = {"failed": "90d"}
    config = load_config(write(tmp_path, "ok", yaml.safe_dump(data)), env={})
    hourly = config.tiers["hourly"]
    assert (hourly.memory, hourly.shm_size, hourly.output_limit) == ("512m", "2g", 10 * 2**30)
    assert hourly.timeout == 7 * 86400


def test_cases_cover_every_listed_finding() -> None:
    """Every config the audit found accepted is in the corpus."""
    names = {c[0] for c in MAPPING_CASES} | {c[0] for c in RAW_CASES}
    for expected in itertools.chain(
        ("tiers.hourly.timeout[0]", "tiers.hourly.timeout[1]", "tiers.hourly.timeout[3]"),
        ("tiers.hourly.schedule[0]", "tiers.hourly.memory[0]", "tiers.hourly.memory[1]"),
        ("tiers.hourly.shm_size[1]", "tiers.hourly.pids_limit[0]", "tiers.hourly.image[0]"),
        ("tiers.hourly.mounts[0]", "tiers.hourly.mounts[3]", "state_dir[0]"),
        ("daemon.api.socket[0]", "tiers.hourly.markers[0]", "duplicate-top", "alias-bomb"),
        ("deep-nesting",),
    ):
        assert expected in names
