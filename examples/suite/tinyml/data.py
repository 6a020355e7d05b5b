"""Datasets from JSONL/CSV files, deterministic splits and batching."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any, Iterator, Sequence

Record = dict[str, Any]


class DatasetError(Exception):
    """A dataset file is missing, malformed or lacks a required field."""


def load_jsonl(path: Path, required: Sequence[str] = ()) -> list[Record]:
    """One JSON object per non-blank line; errors name the file and line."""
    records: list[Record] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"{path}: {exc.strerror}") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from exc
        missing = [k for k in required if k not in record]
        if missing:
            raise DatasetError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        records.append(record)
    return records


def load_csv(path: Path, numeric: Sequence[str] = ()) -> list[Record]:
    """Rows as dicts; columns named in ``numeric`` are converted to float."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DatasetError(f"{path}: {exc.strerror}") from exc
    for lineno, row in enumerate(rows, start=2):
        for col in numeric:
            try:
                row[col] = float(row[col])
            except (KeyError, TypeError, ValueError) as exc:
                raise DatasetError(f"{path}:{lineno}: column {col!r} is not numeric") from exc
    return rows


def train_val_split(
    records: Sequence[Record], val_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Shuffle with ``seed`` and cut; the same seed always gives the same split."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = round(len(records) * val_fraction)
    val = [records[i] for i in order[:n_val]]
    train = [records[i] for i in order[n_val:]]
    return train, val


def batches(
    records: Sequence[Record], size: int, shuffle_seed: int | None = None, drop_last: bool = False
) -> Iterator[list[Record]]:
    """Consecutive batches of ``size``; optionally shuffled per ``shuffle_seed``."""
    if size <= 0:
        raise ValueError("batch size must be positive")
    order = list(range(len(records)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        if drop_last and len(chunk) < size:
            return
        yield [records[i] for i in chunk]
