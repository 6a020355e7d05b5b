"""Checkpoints: JSON state dicts written atomically, with a SHA-256 checksum."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint is missing, corrupted or of an unknown format."""


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def save(path: Path, state: Dict[str, Any], step: int) -> Path:
    """Write ``state`` to ``path`` via a temporary file + rename, so readers never see half a file."""
    body = json.dumps({"step": step, "state": state}, sort_keys=True).encode()
    envelope = json.dumps({"format": FORMAT_VERSION, "sha256": _digest(body), "body": body.decode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(envelope)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: Path) -> tuple[Dict[str, Any], int]:
    """Return ``(state, step)``; raise :class:`CheckpointError` on any corruption."""
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no such checkpoint") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown checkpoint format")
    body = str(envelope.get("body", "")).encode()
    if _digest(body) != envelope.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch")
    data = json.loads(body)
    return data["state"], int(data["step"])


def latest(directory: Path, pattern: str = "step-*.ckpt") -> Optional[Path]:
    """The checkpoint with the highest step number in its name, if any."""

    def step_of(p: Path) -> int:
        digits = "".join(ch for ch in p.stem if ch.isdigit())
        return int(digits) if digits else -1

    found = sorted(directory.glob(pattern), key=step_of)
    return found[-1] if found else None
