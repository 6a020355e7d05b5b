"""How the results plugin writes its file: the shared mapping (:class:`MappedSink`), the
``write(2)`` fallback and the choice between them, on real files, a real FIFO and in a real
container."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runners.base import install_plugin
from runners.docker import DockerRunner
from runners.pytest_plugin import (
    MMAP_ENV,
    AppendSink,
    MappedSink,
    data_end,
    filesystem_type,
    open_sink,
)
from scheduler.run.results import parse_jsonl

pytest_plugins = ["pytester", "tests.runners.conftest_docker"]

PLUGIN_SOURCE = Path(__file__).resolve().parents[2] / "runners" / "pytest_plugin.py"
PAGE = 4096


def lines_of(count: int, width: int = 100, tag: str = "x") -> list[bytes]:
    return [f"{tag}{i:06d} ".encode().ljust(width - 1, b".") + b"\n" for i in range(count)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "results.jsonl"


@pytest.fixture
def open_mapped(path: Path) -> Iterator[Callable[..., MappedSink]]:
    """A MappedSink on ``path`` as the plugin opens it (an O_APPEND fd and an O_RDWR one)."""
    opened: list[MappedSink] = []

    def make(**kwargs: Any) -> MappedSink:
        append = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        sink = MappedSink(os.open(path, os.O_RDWR), append, **kwargs)
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close()


def live_lines(path: Path) -> bytes:
    """What a tailing reader takes: the bytes before the first NUL."""
    return path.read_bytes().split(b"\0", 1)[0]


class TestMappedSink:
    def test_lines_cross_windows_are_seen_at_once_and_the_padding_goes_at_close(
        self, path: Path, open_mapped: Callable[..., MappedSink]
    ) -> None:
        """With one-page windows, 500 lines of 100 bytes cross dozens of windows; a reader sees
        each line as soon as it is copied (no system call wrote it), the file is allocated ahead
        (zeros after the lines), and close leaves exactly the lines."""
        sink = open_mapped(chunk=PAGE)
        written = lines_of(500)
        for i, line in enumerate(written):
            sink.write(line)
            if i % 97 == 0:
                assert live_lines(path) == b"".join(written[: i + 1])
        size = path.stat().st_size
        assert size % PAGE == 0 and size > 50_000
        assert path.read_bytes()[50_000:] == bytes(size - 50_000)
        sink.close()
        assert path.read_bytes() == b"".join(written)

    def test_a_line_longer_than_a_window(
        self, path: Path, open_mapped: Callable[..., MappedSink]
    ) -> None:
        sink = open_mapped(chunk=PAGE)
        long = b"y" * (3 * PAGE + 17) + b"\n"
        sink.write(b"short\n")
        sink.write(long)
        sink.write(b"after\n")
        sink.close()
        assert path.read_bytes() == b"short\n" + long + b"after\n"

    def test_bytes_someone_else_appends_are_kept_below_the_lines(
        self, path: Path, open_mapped: Callable[..., MappedSink]
    ) -> None:
        """A test appending to the file writes past the allocation; the sink moves those bytes
        below its lines when it grows and at close (a line without its newline gets one), never
        overwriting them or leaving them behind zeros."""
        sink = open_mapped(chunk=PAGE)
        ours = lines_of(120, tag="o")
        foreign = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            for i, line in enumerate(ours):
                sink.write(line)
                if i == 10:
                    os.write(foreign, b"foreign one\n")
                if i == 90:
                    os.write(foreign, b"foreign two, no newline")
        finally:
            os.close(foreign)
        sink.close()
        data = path.read_bytes()
        assert b"\0" not in data
        got = data.splitlines(keepends=True)
        assert [line for line in got if line.startswith(b"o")] == ours
        assert b"foreign one\n" in got and b"foreign two, no newline\n" in got
        assert got.index(b"foreign one\n") > 10

    def test_a_failed_allocation_switches_to_write_and_keeps_every_line(
        self, path: Path, open_mapped: Callable[..., MappedSink]
    ) -> None:
        """The disk is full when the file must grow: the padding is truncated away and the
        lines go on with write(2), in order, none lost."""
        calls: list[int] = []

        def allocate(fd: int, offset: int, length: int) -> None:
            calls.append(length)
            if len(calls) > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            os.posix_fallocate(fd, offset, length)

        sink = open_mapped(chunk=PAGE, allocate=allocate)
        written = lines_of(200)
        for line in written:
            sink.write(line)
        assert sink.fallback_reason is not None and "No space" in sink.fallback_reason
        assert sink.error is None
        sink.close()
        assert path.read_bytes() == b"".join(written)

    def test_a_dead_sessions_padding_is_written_over(
        self, path: Path, open_mapped: Callable[..., MappedSink]
    ) -> None:
        """A session killed while mapped left zeros, maybe after a line cut short; the next one
        starts at the zeros, on a line of its own."""
        path.write_bytes(b'{"a": 1}\n{"cut' + bytes(5000))
        with path.open("rb") as fh:
            assert data_end(fh.fileno(), path.stat().st_size) == 14
        sink = open_mapped()
        sink.write(b'{"b": 2}\n')
        sink.close()
        assert path.read_bytes() == b'{"a": 1}\n{"cut\n{"b": 2}\n'

    def test_data_end(self, path: Path) -> None:
        for content, end in [(b"", 0), (b"\0" * 70_000, 0), (b"ab\n" + bytes(70_000), 3)]:
            path.write_bytes(content)
            with path.open("rb") as fh:
                assert data_end(fh.fileno(), len(content)) == end


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 0:40 / /mnt/nfs rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2
41 40 0:41 / /mnt/nfs/local\\040disk rw shared:21 - xfs /dev/vdb rw
42 22 0:42 / /mnt/over rw shared:22 - nfs server:/a rw
43 22 0:43 / /mnt/over rw shared:23 - tmpfs tmpfs rw
"""


class TestChoice:
    """Mapped only where it is sound; ``write(2)`` elsewhere."""

    @pytest.fixture
    def mountinfo(self, tmp_path: Path) -> str:
        path = tmp_path / "mountinfo"
        path.write_text(MOUNTINFO)
        return str(path)

    @pytest.mark.parametrize(
        ("where", "fstype"),
        [
            ("/home/u/run/results.jsonl", "ext4"),
            ("/mnt/nfs/run/results.jsonl", "nfs4"),
            ("/mnt/nfs/local disk/results.jsonl", "xfs"),
            ("/mnt/nfsx/results.jsonl", "ext4"),
            ("/mnt/over/results.jsonl", "tmpfs"),
        ],
    )
    def test_filesystem_type(self, mountinfo: str, where: str, fstype: str) -> None:
        """The longest mount point holding the path wins (escapes decoded, the last mount of a
        stacked point, no prefix match inside a name)."""
        assert filesystem_type(where, mountinfo) == fstype

    def test_unreadable_mountinfo_means_unknown(self, tmp_path: Path) -> None:
        assert filesystem_type("/x", str(tmp_path / "missing")) is None

    @pytest.fixture
    def fd(self, path: Path) -> Iterator[int]:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        yield fd
        with pytest.raises(OSError):  # the sink took it over and closed it
            os.fstat(fd)

    def test_a_local_regular_file_is_mapped(self, path: Path, fd: int, tmp_path: Path) -> None:
        local = tmp_path / "local-mountinfo"
        local.write_text(f"1 0 8:1 / {tmp_path} rw - ext4 /dev/x rw\n")
        sink = open_sink(str(path), fd, str(local))
        assert isinstance(sink, MappedSink)
        sink.close()

    def test_network_filesystem_is_written(self, path: Path, fd: int, tmp_path: Path) -> None:
        nfs = tmp_path / "nfs-mountinfo"
        nfs.write_text(f"1 0 0:9 / {tmp_path} rw - nfs4 server:/x rw\n")
        sink = open_sink(str(path), fd, str(nfs))
        assert isinstance(sink, AppendSink)
        sink.close()

    def test_the_env_turns_mapping_off(
        self, path: Path, fd: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(MMAP_ENV, "0")
        sink = open_sink(str(path), fd)
        assert isinstance(sink, AppendSink)
        sink.close()


def test_a_fifo_results_path_gets_every_line_by_write(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A results path that is a pipe cannot be mapped: the plugin writes, and a reader at the
    other end gets every line."""
    shutil.copyfile(PLUGIN_SOURCE, pytester.path / "schedctl_results.py")
    fifo = pytester.path / "results.fifo"
    os.mkfifo(fifo)
    monkeypatch.setenv("SCHEDCTL_RESULTS", str(fifo))
    monkeypatch.delenv(MMAP_ENV, raising=False)
    received: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as fh:  # blocks until pytest opens the write end
            received.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    pytester.makepyfile(test_two="def test_a():\n    pass\n\ndef test_b():\n    assert 0\n")
    result = pytester.runpytest_subprocess("-p", "schedctl_results", "-p", "no:cacheprovider")
    reader.join(timeout=60)
    assert not reader.is_alive()
    result.assert_outcomes(passed=1, failed=1)
    lines = [json.loads(line) for line in received[0].splitlines()]
    assert lines[0]["type"] == "start" and lines[0]["results_io"] == "write"
    assert [(x["nodeid"], x["outcome"]) for x in lines if x["type"] == "test"] == [
        ("test_two.py::test_a", "passed"),
        ("test_two.py::test_b", "failed"),
    ]
    assert lines[-1]["type"] == "session"


def test_parse_jsonl_reads_across_zero_padding(tmp_path: Path) -> None:
    """After a killed mapped session the file is lines, zeros, maybe more lines (appended by a
    later session or a test): every line is read, the zeros are neither lines nor ignored."""
    path = tmp_path / "results.jsonl"
    start = json.dumps({"type": "start"}).encode()
    test = json.dumps({"type": "test", "nodeid": "t::a", "outcome": "passed"}).encode()
    running = json.dumps({"type": "test_start", "nodeid": "t::b"}).encode()
    path.write_bytes(start + b"\n" + test + b"\n" + bytes(9000) + running + b"\n" + bytes(100))
    parsed = parse_jsonl(path)
    assert parsed.started and [t.nodeid for t in parsed.tests] == ["t::a"]
    assert parsed.running == "t::b" and parsed.ignored_lines == 0


CRASH_IN_CONTAINER = {
    "test_crash.py": (
        "import os\n\ndef test_1():\n    pass\n\ndef test_2_exits():\n    os._exit(3)\n\n"
        "def test_3_never_runs():\n    pass\n"
    )
}


@pytest.mark.docker
def test_a_container_maps_the_bind_mounted_file_and_a_crash_is_named(
    docker_runner: DockerRunner, make_project: Any, make_spec: Any, tmp_path: Path
) -> None:
    """In the test image the run dir is a bind mount of a local filesystem: the plugin maps the
    results file there, and the host reads a run whose test called ``os._exit`` -- the earlier
    result, the killed test named -- across the padding the container left."""
    from tests.runners.test_docker import _with_plugin

    plugin = install_plugin(tmp_path / "plugin")
    spec = _with_plugin(
        make_spec(make_project(CRASH_IN_CONTAINER), plugin_dir=plugin),
        "python3",
        {MMAP_ENV: "1"},
    )
    result = docker_runner.run(spec)
    assert result.exit_code == 3
    data = spec.results_path.read_bytes()
    assert json.loads(data.splitlines()[0])["results_io"] == "mmap"
    assert data.endswith(b"\0")
    parsed = parse_jsonl(spec.results_path)
    assert [(t.nodeid, t.outcome) for t in parsed.tests] == [("test_crash.py::test_1", "passed")]
    assert parsed.running == "test_crash.py::test_2_exits" and parsed.exitstatus is None


def test_a_second_writer_of_a_mapped_file_appends_and_both_keep_their_lines(path: Path) -> None:
    """Two sessions on one file at once (a nested pytest that inherited the environment): the
    second finds the first's lock and appends with write(2); the first keeps those bytes below
    its own lines at close, so neither overwrites the other."""
    fds = [os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for _ in range(2)]
    first = open_sink(str(path), fds[0])
    second = open_sink(str(path), fds[1])
    assert isinstance(first, MappedSink) and isinstance(second, AppendSink)
    outer, inner = lines_of(50, tag="outer"), lines_of(20, tag="inner")
    for i, line in enumerate(outer):
        first.write(line)
        if i < len(inner):
            second.write(inner[i])
    second.close()
    first.close()
    got = path.read_bytes().splitlines(keepends=True)
    assert [x for x in got if x.startswith(b"outer")] == outer
    assert [x for x in got if x.startswith(b"inner")] == inner
    assert len(got) == 70
