"""Resumable HTTP downloads for the OTA client, on the standard library only (no httpx/requests on a device).

A :class:`HttpFetcher` turns a URL into an :data:`ota.installer.ChunkSource`: asked for the bytes from
``offset``, it sends ``Range: bytes=<offset>-`` and expects ``206 Partial Content`` whose
``Content-Range`` starts at that offset. Rules:

* a ``200`` to a ranged request means the server ignored the range: :class:`RangeIgnored` is raised so
  the caller can restart the write from byte 0 cleanly (never splice a full body onto a prefix);
* ``416`` means there is nothing past ``offset``: the source ends (the installer's length check then
  names the problem);
* connection errors, timeouts, short bodies and 5xx answers are retried with exponential backoff,
  resuming from the last byte received; after ``RetryPolicy.attempts`` consecutive failures without
  progress a :class:`DownloadError` (``code = "download_failed"``) is raised;
* 4xx answers other than 416 (401 bad token, 404) are not retried.

Authentication: the fleet server's device routes take HTTP Basic with the device id and the device
secret (the same credential as MQTT): ``HttpFetcher(credentials=(device_id, secret))``. A bearer
``token`` is still accepted for plain file servers in front of a CDN or a test server.

Trust is not decided here: whatever bytes arrive go through :mod:`ota.trust` before anything uses them.
"""

from __future__ import annotations

import base64
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse

from ota.installer import ChunkSource

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(Exception):
    """The transport gave up (retries exhausted, or an answer that retrying cannot fix)."""

    code = "download_failed"

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retriable = retriable

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class RangeIgnored(Exception):
    """The server answered a ranged request with the whole file (200): restart from byte 0."""


class _Retry(Exception):
    """Internal: one failed attempt that may be retried."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # consecutive failures without progress before giving up
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 15.0  # per socket operation (connect, each read)

    def delay(self, failure: int) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** (failure - 1))


class HttpFetcher:
    """HTTP(S) transport of one device: Basic credentials (or a bearer token), timeouts, retry with
    backoff, byte accounting."""

    def __init__(
        self,
        *,
        token: str | None = None,
        credentials: tuple[str, str] | None = None,
        retry: RetryPolicy | None = None,
        chunk_size: int = 16 * 1024,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if token is not None and credentials is not None:
            raise ValueError("give either a bearer token or Basic credentials, not both")
        self.token = token
        self._basic: str | None = None
        if credentials is not None:
            device_id, secret = credentials
            if not device_id or ":" in device_id or not secret:
                raise ValueError("Basic credentials need a device id without ':' and a non-empty secret")
            self._basic = base64.b64encode(f"{device_id}:{secret}".encode()).decode("ascii")
        self.retry = retry or RetryPolicy()
        self.chunk_size = chunk_size
        self.sleep = sleep
        self.bytes_received = 0  # body bytes over the wire, all requests (for tests and the bench)
        self.requests = 0
        # Direct connections: a device talks to its update server, not to an environment's proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _open(self, url: str, offset: int | None) -> HTTPResponse:
        headers = {"User-Agent": "tinyfleet-agent", "Accept-Encoding": "identity"}
        if self._basic is not None:
            headers["Authorization"] = f"Basic {self._basic}"
        elif self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if offset is not None:
            headers["Range"] = f"bytes={offset}-"
        self.requests += 1
        request = urllib.request.Request(url, headers=headers, method="GET")
        return self._opener.open(request, timeout=self.retry.timeout_s)  # type: ignore[no-any-return]

    def _with_retries(self, url: str, attempt: Callable[[], bool]) -> None:
        """Run ``attempt`` until it returns True; it raises _Retry for a failure worth retrying."""
        failures = 0
        while True:
            try:
                if attempt():
                    return
            except _Retry as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise DownloadError(f"{url}: gave up after {failures} failed attempts ({exc})") from None
                self.sleep(self.retry.delay(failures))

    def fetch(self, url: str, *, max_bytes: int) -> bytes:
        """A small whole file (a manifest), retried like a download; refused above ``max_bytes``."""
        body = bytearray()

        def attempt() -> bool:
            body.clear()
            for block in self._stream(url, None):
                body.extend(block)
                if len(body) > max_bytes:
                    raise DownloadError(f"{url}: larger than {max_bytes} bytes", retriable=False)
            return True

        self._with_retries(url, attempt)
        return bytes(body)

    def source(self, url: str) -> ChunkSource:
        """A resumable source over ``url`` for :class:`ota.installer.Installer`."""

        def chunks(offset: int) -> Iterator[bytes]:
            position = offset
            done = False
            while not done:
                failures = 0
                while True:
                    progressed = False
                    try:
                        for block in self._stream(url, position):
                            position += len(block)
                            progressed = True
                            yield block
                        done = True
                        break
                    except _Retry as exc:
                        if progressed:
                            failures = 0
                        failures += 1
                        if failures >= self.retry.attempts:
                            raise DownloadError(
                                f"{url}: gave up at byte {position} after {failures} failed attempts ({exc})"
                            ) from None
                        self.sleep(self.retry.delay(failures))

        return chunks

    def _stream(self, url: str, offset: int | None) -> Iterator[bytes]:
        """One request. Yields body blocks; raises _Retry for what a retry may fix."""
        try:
            response = self._open(url, offset)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset is not None:
                return  # nothing past offset
            if exc.code >= 500 or exc.code in (408, 429):
                raise _Retry(f"HTTP {exc.code}") from None
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}", retriable=False) from None
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        with response:
            expected = response.headers.get("Content-Length")
            if offset:  # a ranged request from a non-zero offset must come back as that range
                if response.status == 200:
                    raise RangeIgnored(f"{url}: server answered 200 to Range bytes={offset}-")
                m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if response.status != 206 or m is None:
                    raise _Retry(f"HTTP {response.status} without a usable Content-Range")
                if int(m.group(1)) != offset:
                    raise DownloadError(
                        f"{url}: Content-Range starts at {m.group(1)}, asked for {offset}", retriable=False
                    )
            received = 0
            while True:
                try:
                    block = response.read(self.chunk_size)
                except (OSError, HTTPException) as exc:
                    raise _Retry(f"read failed after {received} bytes: {type(exc).__name__}") from None
                if not block:
                    break
                received += len(block)
                self.bytes_received += len(block)
                yield block
            if expected is not None and received < int(expected):
                raise _Retry(f"connection closed after {received} of {expected} bytes")
