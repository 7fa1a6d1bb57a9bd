"""A small real HTTP file server for OTA tests: stdlib ThreadingHTTPServer with ``Range: bytes=N-``.

Serves in-memory files by path. Knobs (set per path, changeable while the server runs):

* ``tokens``: per-device bearer tokens; when set, a request without a valid ``Authorization: Bearer``
  header gets 401 (and the request is logged with ``device=None``);
* ``Fault(drop_after=K)``: close the connection after K body bytes of a response (``times`` = how many
  responses misbehave before the path is served normally again; None = always);
* ``Fault(status=500)``: answer with that status instead of the file;
* ``Fault(corrupt_at=i)``: flip one bit of byte ``i`` of the file (the server holds wrong bytes);
* ``Fault(cut_at=N)``: never send a byte at file offset N or beyond: every response is cut there and
  the connection closed (a download that can never complete, however often it resumes);
* ``Fault(ignore_range=True)``: answer 200 with the whole file even when a range was asked for.

Every request is logged (path, device, range start, status, body bytes actually sent) so a test can
count the bytes a client transferred.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d+)-$")
_WRITE_BLOCK = 4096


@dataclass
class Fault:
    drop_after: int | None = None
    cut_at: int | None = None
    status: int | None = None
    corrupt_at: int | None = None
    ignore_range: bool = False
    times: int | None = None  # None: every response; n: the next n responses, then served normally


@dataclass(frozen=True)
class RequestLog:
    path: str
    device: str | None
    range_start: int | None
    status: int
    body_bytes: int


@dataclass
class _State:
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> device id
    log: list[RequestLog] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Handlers still running: a client can finish reading a body before its handler logs it.
    in_flight: int = 0
    idle: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.idle = threading.Condition(self.lock)


class _Handler(BaseHTTPRequestHandler):
    server: RangeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _device(self) -> tuple[bool, str | None]:
        st = self.server.state
        if not st.tokens:
            return True, None
        header = self.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        device = st.tokens.get(token)
        return device is not None, device

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        st = self.server.state
        with st.lock:
            st.in_flight += 1
        try:
            self._get(st)
        finally:
            with st.lock:
                st.in_flight -= 1
                st.idle.notify_all()

    def _get(self, st: _State) -> None:
        path = self.path.split("?", 1)[0]
        allowed, device = self._device()
        m = _RANGE.match(self.headers.get("Range", ""))
        start = int(m.group(1)) if m else None
        with st.lock:
            data = st.files.get(path)
            fault = st.faults.get(path)
            if fault is not None and fault.times is not None:
                fault.times -= 1
                if fault.times < 0:
                    st.faults.pop(path)
                    fault = None

        def record(status: int, sent: int) -> None:
            with st.lock:
                st.log.append(RequestLog(path, device, start, status, sent))

        if not allowed:
            record(401, 0)
            return self._reply(401, b"unauthorized", {"WWW-Authenticate": "Bearer"})
        if data is None:
            record(404, 0)
            return self._reply(404, b"not found")
        if fault is not None and fault.status is not None:
            record(fault.status, 0)
            return self._reply(fault.status, b"injected failure")
        if fault is not None and fault.corrupt_at is not None and fault.corrupt_at < len(data):
            flipped = bytearray(data)
            flipped[fault.corrupt_at] ^= 0x01
            data = bytes(flipped)
        total = len(data)
        if start is not None and not (fault is not None and fault.ignore_range):
            if start >= total:
                record(416, 0)
                return self._reply(416, b"", {"Content-Range": f"bytes */{total}"})
            status, body = 206, data[start:]
            headers = {"Content-Range": f"bytes {start}-{total - 1}/{total}"}
        else:
            status, body, headers = 200, data, {}
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        limit = fault.drop_after if fault is not None and fault.drop_after is not None else len(body)
        if fault is not None and fault.cut_at is not None:
            limit = min(limit, max(0, fault.cut_at - (total - len(body))))
        sent = 0
        try:
            while sent < min(limit, len(body)):
                block = body[sent : min(sent + _WRITE_BLOCK, limit)]
                self.wfile.write(block)
                sent += len(block)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        record(status, sent)
        if sent < len(body):
            self.close_connection = True  # the client sees a short body: a dropped connection


class RangeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = _State()
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def put(self, path: str, data: bytes) -> str:
        with self.state.lock:
            self.state.files[path] = data
        return self.url(path)

    def set_fault(self, path: str, fault: Fault | None) -> None:
        with self.state.lock:
            if fault is None:
                self.state.faults.pop(path, None)
            else:
                self.state.faults[path] = fault

    def add_token(self, token: str, device_id: str) -> None:
        with self.state.lock:
            self.state.tokens[token] = device_id

    def requests(self, path: str | None = None, *, settle_s: float = 5.0) -> list[RequestLog]:
        """The logged requests, once every handler still running has logged its own."""
        with self.state.lock:
            self.state.idle.wait_for(lambda: self.state.in_flight == 0, timeout=settle_s)
            return [r for r in self.state.log if path is None or r.path == path]

    def body_bytes(self, path: str | None = None) -> int:
        return sum(r.body_bytes for r in self.requests(path))

    def start(self) -> RangeServer:
        self._thread = threading.Thread(target=self.serve_forever, name="range-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
