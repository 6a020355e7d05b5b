"""Fetch a JSONL dataset over HTTP(S) into a local cache, verifying its checksum."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from tinyml.data import DatasetError


def fetch(url: str, cache_dir: Path, sha256: Optional[str] = None, timeout: float = 5.0) -> Path:
    """Download ``url`` once into ``cache_dir``; later calls return the cached file."""
    target = cache_dir / url.rstrip("/").rsplit("/", 1)[-1]
    if target.exists():
        return target
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - caller picks the URL
            payload = resp.read()
    except urllib.error.HTTPError as exc:
        raise DatasetError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DatasetError(f"{url}: {exc}") from exc
    if sha256 is not None and hashlib.sha256(payload).hexdigest() != sha256:
        raise DatasetError(f"{url}: checksum mismatch")
    cache_dir.mkdir(parents=True, exist_ok=True)
    target.write_bytes(payload)
    return target
