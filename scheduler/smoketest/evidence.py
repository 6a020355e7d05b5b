"""What one torchrun launch leaves behind, read after its runner is done with it.

The runner (local processes or a container, see :mod:`.launch`) supervised the launch and wrote
its console into ``output.log``; torchrun's ``--log-dir`` holds each rank's streams; the built-in
program writes JSON lines with a final summary. On a timeout or silence the runner sent ``SIGUSR1``
to the ranks first (:class:`runners.base.PreStop`), and the built-in program dumped every thread's
stack through faulthandler: :func:`dumped_stacks` finds those dumps.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.base import PRE_STOP_MARK
from scheduler.kernel.outcome import Termination

RANK_TAIL_LINES = 20
STACK_LIMIT_BYTES = 64 * 1024
_STACK_HEADER = re.compile(
    r"^(?:Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):", re.M
)


@dataclass(frozen=True)
class TorchrunResult:
    """What one torchrun launch left behind, for the comparison and as evidence."""

    nproc: int
    termination: Termination
    exit_code: int | None
    duration_s: float
    summary: dict[str, Any] | None
    rank_logs: dict[int, list[str]] = field(default_factory=dict)
    stacks: str = ""
    message: str = ""
    log_path: Path | None = None
    log_truncated: bool = False
    provenance: Mapping[str, Any] = field(default_factory=dict)
    """Where it ran: the runner's provenance (local: pid and run tag; docker: image, container)."""

    def to_json(self) -> dict[str, Any]:
        extra = {"provenance": dict(self.provenance)} if self.provenance else {}
        return {
            "nproc": self.nproc,
            "termination": self.termination.value,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "summary": self.summary,
            "rank_logs": {str(rank): lines for rank, lines in self.rank_logs.items()},
            "stacks": self.stacks,
            "message": self.message,
            "log_path": str(self.log_path) if self.log_path else None,
            "log_truncated": self.log_truncated,
            **extra,
        }


def exit_message(code: int) -> str:
    if code == 0:
        return "exited 0"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited {code}"


def read_summary(out_path: Path) -> dict[str, Any] | None:
    """The last ``{"type": "summary"}`` line of a JSON-lines file, or ``None``."""
    try:
        lines = out_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("type") == "summary":
            return record
    return None


def rank_tails(rank_log_dir: Path, lines: int = RANK_TAIL_LINES) -> dict[int, list[str]]:
    """Last ``lines`` lines of each rank's stdout and stderr (torchrun ``--log-dir`` layout)."""
    tails: dict[int, list[str]] = {}
    for stream in ("stdout", "stderr"):
        for rank, path in _rank_files(rank_log_dir, stream).items():
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()
            tails.setdefault(rank, []).extend(f"[{stream}] {line}" for line in text[-lines:])
    return dict(sorted(tails.items()))


def dumped_stacks(rank_dir: Path, log_path: Path | None = None) -> str:
    """Each rank's faulthandler dump, from the first stack header in its stderr log on; without
    rank logs, the dumps in the console after the runner's pre-stop line."""
    parts = []
    for rank, path in sorted(_rank_files(rank_dir, "stderr").items()):
        text = path.read_bytes()[-4 * STACK_LIMIT_BYTES :].decode("utf-8", "replace")
        found = _STACK_HEADER.search(text)
        if found:
            dump = text[found.start() :][:STACK_LIMIT_BYTES]
            parts.append(f"--- rank {rank} (stderr after SIGUSR1) ---\n{dump}")
    if not parts and log_path is not None:
        console = console_stacks(log_path)
        if console:
            parts.append(f"--- console after SIGUSR1 ---\n{console}")
    return "\n".join(parts)


def console_stacks(log_path: Path) -> str:
    """The faulthandler dumps in a console log after the last pre-stop line ('' without one)."""
    try:
        text = log_path.read_bytes()[-8 * STACK_LIMIT_BYTES :].decode("utf-8", "replace")
    except OSError:
        return ""
    _, mark, after = text.rpartition(PRE_STOP_MARK)
    found = _STACK_HEADER.search(after) if mark else None
    if found is None:
        return ""
    dumps = after[found.start() :]
    end = dumps.find("\n[schedctl:")  # the runner's next note
    return dumps[: end + 1 if end >= 0 else None][:STACK_LIMIT_BYTES]


def _rank_files(rank_log_dir: Path, stream: str) -> dict[int, Path]:
    """torchrun writes ``<log_dir>/<run_id>/attempt_<k>/<local_rank>/<stream>.log``."""
    found: dict[int, Path] = {}
    for path in sorted(rank_log_dir.glob(f"*/attempt_*/*/{stream}.log")):
        if path.parent.name.isdigit():
            found[int(path.parent.name)] = path  # the latest attempt sorts last
    return found
