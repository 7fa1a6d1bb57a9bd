"""device_agent.http_download.HttpFetcher against the real test HTTP server: Range, retries, auth, limits."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from device_agent.http_download import DownloadError, HttpFetcher, RangeIgnored, RetryPolicy

HERE = Path(__file__).parent


def _server_module():
    import importlib.util

    name = "tinyfleet_tests_http_range_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE.parent / "support" / "http_range_server.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


RS = _server_module()
DATA = os.urandom(50_000)


@pytest.fixture
def server():
    with RS.RangeServer() as srv:
        srv.add_token("t1", "dev-1")
        srv.put("/f.bin", DATA)
        yield srv


def _fetcher(token: str | None = "t1", attempts: int = 3) -> tuple[HttpFetcher, list[float]]:
    sleeps: list[float] = []
    fetcher = HttpFetcher(
        token=token,
        retry=RetryPolicy(attempts=attempts, backoff_s=0.01, max_backoff_s=0.04, timeout_s=5.0),
        chunk_size=4096,
        sleep=sleeps.append,
    )
    return fetcher, sleeps


def test_source_resumes_from_an_offset_with_a_range_request(server) -> None:
    fetcher, _ = _fetcher()
    assert b"".join(fetcher.source(server.url("/f.bin"))(12_345)) == DATA[12_345:]
    (request,) = server.requests("/f.bin")
    assert (request.range_start, request.status, request.device) == (12_345, 206, "dev-1")
    assert fetcher.bytes_received == len(DATA) - 12_345


def test_offset_at_end_yields_nothing(server) -> None:
    fetcher, _ = _fetcher()
    assert list(fetcher.source(server.url("/f.bin"))(len(DATA))) == []
    assert server.requests("/f.bin")[0].status == 416


def test_dropped_connections_resume_where_they_broke_with_backoff(server) -> None:
    server.set_fault("/f.bin", RS.Fault(drop_after=7000, times=4))
    fetcher, sleeps = _fetcher(attempts=2)  # each drop made progress, so 2 consecutive failures never happen
    assert b"".join(fetcher.source(server.url("/f.bin"))(0)) == DATA
    starts = [r.range_start for r in server.requests("/f.bin")]
    assert starts == [0, 7000, 14_000, 21_000, 28_000]
    assert fetcher.bytes_received == len(DATA) and len(sleeps) == 4


def test_no_progress_gives_up_after_the_limit_with_growing_backoff(server) -> None:
    server.set_fault("/f.bin", RS.Fault(status=503))
    fetcher, sleeps = _fetcher(attempts=4)
    with pytest.raises(DownloadError, match="gave up at byte 0 after 4 failed attempts") as info:
        list(fetcher.source(server.url("/f.bin"))(0))
    assert info.value.code == "download_failed"
    assert sleeps == [0.01, 0.02, 0.04]  # doubled, capped at max_backoff_s
    assert len(server.requests("/f.bin")) == 4


def test_bad_token_is_not_retried(server) -> None:
    fetcher, sleeps = _fetcher(token="stolen")
    with pytest.raises(DownloadError, match="HTTP 401") as info:
        list(fetcher.source(server.url("/f.bin"))(0))
    assert not info.value.retriable and sleeps == []
    assert [r.status for r in server.requests()] == [401]


def test_ignored_range_is_reported_not_spliced(server) -> None:
    server.set_fault("/f.bin", RS.Fault(ignore_range=True))
    fetcher, _ = _fetcher()
    with pytest.raises(RangeIgnored):
        list(fetcher.source(server.url("/f.bin"))(100))
    assert b"".join(fetcher.source(server.url("/f.bin"))(0)) == DATA  # from 0 a 200 is the answer


def test_server_down_is_a_download_error(server) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fetcher, sleeps = _fetcher(attempts=2)
    with pytest.raises(DownloadError, match=r"ConnectionRefused|URLError"):
        fetcher.fetch(f"http://127.0.0.1:{port}/m.json", max_bytes=1000)
    assert len(sleeps) == 1


def test_oversized_manifest_is_refused(server) -> None:
    fetcher, _ = _fetcher()
    with pytest.raises(DownloadError, match="larger than 1000 bytes"):
        fetcher.fetch(server.url("/f.bin"), max_bytes=1000)
    assert fetcher.fetch(server.url("/f.bin"), max_bytes=len(DATA)) == DATA


class _AuthRecorder:
    """A real HTTP server on a free port that records the Authorization header and answers 200."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen: list[str | None] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                seen.append(self.headers.get("Authorization"))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/m.json"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_basic_credentials_are_the_device_id_and_secret() -> None:
    import base64

    server = _AuthRecorder()
    try:
        fetcher = HttpFetcher(credentials=("dev-1", "s3cret:with-colon"), retry=RetryPolicy(attempts=1))
        assert fetcher.fetch(server.url, max_bytes=10) == b"ok"
        assert server.seen == ["Basic " + base64.b64encode(b"dev-1:s3cret:with-colon").decode()]
        assert HttpFetcher(retry=RetryPolicy(attempts=1)).fetch(server.url, max_bytes=10) == b"ok"
        assert server.seen[-1] is None  # no credential configured: no header
    finally:
        server.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"token": "t", "credentials": ("dev-1", "s")}, "not both"),
        ({"credentials": ("dev:1", "s")}, "without ':'"),
        ({"credentials": ("dev-1", "")}, "non-empty secret"),
        ({"credentials": ("", "s")}, "device id"),
    ],
)
def test_bad_credential_configuration_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpFetcher(**kwargs)
