"""Live progress of a run, read from the results plugin's JSON lines as they are written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from runners.base import RESULTS_FILE
from scheduler.cli.output import console, line


class ResultsTail:
    """Incrementally reads ``results.jsonl``; keeps only counters."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.buffer = b""
        self.collected: int | None = None
        self.done = 0
        self.failed = 0

    def poll(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return
        # A NUL is the allocated, not yet written rest of a file the plugin writes through a
        # shared mapping: stop there and read it again next time.
        chunk = chunk.split(b"\0", 1)[0]
        self.offset += len(chunk)
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if record.get("type") == "collection":
                self.collected = int(record.get("selected", record.get("collected", 0)))
            elif record.get("type") == "test":
                self.done += 1
                if record.get("outcome") in ("failed", "error"):
                    self.failed += 1


class FedTail(ResultsTail):
    """The progress counters, fed from a daemon's streamed results lines instead of a file."""

    def __init__(self) -> None:
        super().__init__(Path(os.devnull))

    def poll(self) -> None:
        """Nothing to read: lines arrive through :meth:`feed`."""

    def feed(self, record: dict[str, Any]) -> None:
        if record.get("type") == "collection":
            self.collected = int(record.get("collected", 0))
        elif record.get("type") == "test":
            self.done += 1
            if record.get("outcome") in ("failed", "error"):
                self.failed += 1


class ProgressView:
    """A rich progress bar on stderr: tests done / collected, failures so far."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and console(stderr=True).is_terminal
        self.tail: ResultsTail | None = None
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def watch(self, run_dir: Path, run_id: int, tier: str) -> None:
        self.tail = ResultsTail(run_dir / RESULTS_FILE)
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn(line(f"run {run_id} ", (tier, "bold")).markup),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task(tier, total=None, failed=0)
        self.progress.start()

    def refresh(self) -> None:
        if self.tail is None or self.progress is None or self.task is None:
            return
        self.tail.poll()
        self.progress.update(
            self.task, total=self.tail.collected, completed=self.tail.done, failed=self.tail.failed
        )

    def close(self) -> None:
        if self.progress is not None:
            self.refresh()
            self.progress.stop()
