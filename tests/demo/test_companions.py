"""device_agent.companions.fetch_companions: what an update command's report/golden references may do to
the device's disk (nothing, unless the bytes match the command's hashes) — with a real HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from device_agent.companions import CompanionError, fetch_companions
from device_agent.http_download import HttpFetcher, RetryPolicy
from telemetry.device_codec import ArtifactRef, UpdateAvailable

REPORT = b'{"name": "m", "version": "1.0.0"}'
GOLDEN = b"\x93NUMPY golden bytes"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    files = {"/report": REPORT, "/golden": GOLDEN, "/evil": b"not what was promised"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _ref(url: str, data: bytes, size: int | None = None) -> ArtifactRef:
    return ArtifactRef(url=url, sha256=hashlib.sha256(data).hexdigest(), size_bytes=size or len(data))


def _cmd(
    base: str,
    *,
    release_id: str = "m-1",
    report: ArtifactRef | None = None,
    golden: ArtifactRef | None = None,
):
    sha = "0" * 64
    return UpdateAvailable(
        device_id="dev-1",
        cmd_id="c1",
        ts=1,
        release_id=release_id,
        model_name="m",
        target_version=1,
        hardware_class="esp32-s3",
        manifest=ArtifactRef(url=f"{base}/manifest", sha256=sha, size_bytes=1),
        artifact=ArtifactRef(url=f"{base}/artifact", sha256=sha, size_bytes=1),
        report=report,
        golden=golden,
    )


def _fetcher() -> HttpFetcher:
    return HttpFetcher(retry=RetryPolicy(attempts=1, backoff_s=0.0))


def test_matching_companions_are_written_once(tmp_path: Path, server: str) -> None:
    cmd = _cmd(server, report=_ref(f"{server}/report", REPORT), golden=_ref(f"{server}/golden", GOLDEN))
    fetcher = _fetcher()
    target = fetch_companions(cmd, tmp_path, fetcher)
    assert target == tmp_path / "releases" / "m-1"
    assert (target / "report.json").read_bytes() == REPORT
    assert (target / "golden.npz").read_bytes() == GOLDEN
    requests = fetcher.requests
    fetch_companions(cmd, tmp_path, fetcher)  # a redelivered command: already there, nothing fetched
    assert fetcher.requests == requests


def test_no_companions_no_directory(tmp_path: Path, server: str) -> None:
    assert fetch_companions(_cmd(server), tmp_path, _fetcher()) is None
    assert not (tmp_path / "releases").exists()


def test_bytes_not_matching_the_command_are_refused(tmp_path: Path, server: str) -> None:
    cmd = _cmd(server, report=_ref(f"{server}/evil", REPORT, size=len(b"not what was promised")))
    with pytest.raises(CompanionError, match="do not match"):
        fetch_companions(cmd, tmp_path, _fetcher())
    assert not (tmp_path / "releases" / "m-1" / "report.json").exists()


@pytest.mark.parametrize("release_id", ["..", "a/b", "-x", "../../etc"])
def test_unsafe_release_ids_are_refused(tmp_path: Path, server: str, release_id: str) -> None:
    # Not through the command codec (which may refuse some of these itself): the function's own check.
    cmd = SimpleNamespace(release_id=release_id, report=_ref(f"{server}/report", REPORT), golden=None)
    with pytest.raises(CompanionError, match="not a safe directory name"):
        fetch_companions(cmd, tmp_path, _fetcher())
    assert list(tmp_path.iterdir()) == []


def test_oversized_companion_is_refused_before_download(tmp_path: Path, server: str) -> None:
    cmd = _cmd(server, report=_ref(f"{server}/report", REPORT, size=9 * 1024 * 1024))
    fetcher = _fetcher()
    with pytest.raises(CompanionError, match="over the limit"):
        fetch_companions(cmd, tmp_path, fetcher)
    assert fetcher.requests == 0
