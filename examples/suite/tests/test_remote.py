"""Dataset download against a real local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

from tinyml.data import DatasetError, load_jsonl
from tinyml.remote import fetch

PAYLOAD = b'{"text": "hello", "label": 1}\n{"text": "world", "label": 0}\n'


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on an ephemeral loopback port for the duration of a test."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "tiny.jsonl").write_bytes(PAYLOAD)

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - signature of the base class
            pass

    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.mark.hourly
@pytest.mark.integration
def test_fetch_downloads_verifies_and_caches(server, tmp_path):
    """A download with the right checksum lands in the cache and is not fetched twice."""
    cache = tmp_path / "cache"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    path = fetch(f"{server}/tiny.jsonl", cache, sha256=digest)
    assert [r["text"] for r in load_jsonl(path)] == ["hello", "world"]
    (tmp_path / "www" / "tiny.jsonl").unlink()
    assert fetch(f"{server}/tiny.jsonl", cache) == path


@pytest.mark.integration
def test_fetch_errors_are_dataset_errors(server, tmp_path):
    """A 404 and a checksum mismatch both raise DatasetError and cache nothing."""
    with pytest.raises(DatasetError, match="HTTP 404"):
        fetch(f"{server}/absent.jsonl", tmp_path / "cache")
    with pytest.raises(DatasetError, match="checksum mismatch"):
        fetch(f"{server}/tiny.jsonl", tmp_path / "cache", sha256="0" * 64)
    assert not (tmp_path / "cache").exists()
