"""Request body limits (413 JSON, nothing stored, audited) and slow clients not stalling the others."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fleet_api_support import assert_error, bearer
from live_server import LiveServer, live_server_process

from fleet_server.api import create_app
from fleet_server.api.body_limit import MODEL_UPLOAD_PREFIX, BodyLimitMiddleware
from fleet_server.auth import Role, issue_token
from fleet_server.settings import Settings

LIMIT = 2048


@pytest.fixture
def limited_app(db_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        device_credential_iterations=1000,
        max_body_bytes=LIMIT,
        body_limit_overrides={"/api/v1/devices/*/credential": 64 * 1024},
    )
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def operator(limited_app: FastAPI) -> dict[str, str]:
    with limited_app.state.session_factory() as session:
        token = issue_token(session, name="op", role=Role.operator, created_by="test").secret
        session.commit()
    return bearer(token)


def _device(tags: int, value_len: int = 100) -> dict[str, Any]:
    return {"id": "big-1", "hardware_class": "pi-4", "tags": {f"k{i}": "v" * value_len for i in range(tags)}}


def test_declared_oversized_body_is_refused_before_the_app_runs(
    limited_app: FastAPI,
    operator: dict[str, str],
    snapshot: Callable[[], Any],
    audit_rows: Callable[[], list[Any]],
) -> None:
    with TestClient(limited_app) as client:
        before, n_audit = snapshot(), len(audit_rows())
        r = client.post("/api/v1/devices", json=_device(30), headers=operator)
        err = assert_error(r, 413, f"limit of {LIMIT} bytes")
        assert err["code"] == "payload_too_large" and err["details"] == {"limit_bytes": LIMIT}
        assert snapshot() == before
        entries = audit_rows()
        assert len(entries) == n_audit + 1
        assert (entries[-1].outcome, entries[-1].status_code) == ("rejected", 413)
        assert entries[-1].details["error"]["code"] == "payload_too_large"
        # Under the limit the same route works.
        assert client.post("/api/v1/devices", json=_device(2), headers=operator).status_code == 201


def test_streamed_body_is_refused_at_the_limit(
    limited_app: FastAPI, operator: dict[str, str], snapshot: Callable[[], Any]
) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: only counting can stop it
        for _ in range(8):
            yield b'{"id": "x", "pad": "' + b"a" * 1000 + b'"}'

    with TestClient(limited_app) as client:
        before = snapshot()
        r = client.post(
            "/api/v1/devices", content=chunks(), headers={**operator, "Content-Type": "application/json"}
        )
        err = assert_error(r, 413, f"limit of {LIMIT} bytes")
        assert err["code"] == "payload_too_large"
        assert snapshot() == before


def test_a_path_prefix_can_have_its_own_limit(limited_app: FastAPI, operator: dict[str, str]) -> None:
    with TestClient(limited_app) as client:
        assert client.post("/api/v1/devices", json=_device(1), headers=operator).status_code == 201
        big = {"padding": "x" * (LIMIT * 4)}
        # Over the default limit but under the override: the route gets it (and refuses the content).
        r = client.post("/api/v1/devices/big-1/credential", json=big, headers=operator)
        assert r.status_code != 413
        r = client.patch("/api/v1/devices/big-1", json=big, headers=operator)
        assert_error(r, 413)


def test_limit_lookup_by_prefix() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
        raise AssertionError

    mw = BodyLimitMiddleware(
        app, default_limit=1000, overrides={MODEL_UPLOAD_PREFIX: 10**8, "/api/v1/models/special": 5}
    )
    assert mw.limit_for("/api/v1/models/kws/versions") == 10**8
    assert mw.limit_for("/api/v1/models/kws/versions/3/files") == 10**8
    assert mw.limit_for("/api/v1/models/special") == 5  # the literal segment beats "*"
    assert mw.limit_for("/api/v1/models/kws") == 1000
    assert mw.limit_for("/api/v1/models") == 1000
    assert mw.limit_for("/api/v1/devices") == 1000


def test_upload_route_gets_the_model_upload_limit(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'u.db'}", model_upload_max_bytes=5 * 2**20
    )
    app = create_app(settings)
    try:
        stack = app.build_middleware_stack()
        layer: Any = stack
        while not isinstance(layer, BodyLimitMiddleware):
            layer = layer.app
        assert layer.limit_for("/api/v1/models/kws/versions") == 5 * 2**20
        assert layer.limit_for("/api/v1/devices") == settings.max_body_bytes
    finally:
        app.state.engine.dispose()


# ---------------------------------------------------------------- against a real uvicorn server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server_process(
        tmp_path_factory.mktemp("limits"), env={"TINYFLEET_MAX_BODY_BYTES": "4096"}
    ) as s:
        yield s


def _raw_request(port: int, head: bytes, body_part: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head + body_part)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_413_arrives_without_the_body_being_sent(server: LiveServer) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    token = server.tokens["operator"]
    head = (
        b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 50000000\r\n\r\n"
    )
    # 50 MB announced, 10 bytes sent: the answer comes anyway, so the server did not wait for the body.
    reply = _raw_request(port, head, b'{"id": "x"')
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"payload_too_large"' in reply and b"limit of 4096 bytes" in reply
    assert httpx.get(server.url("/api/v1/devices/x"), headers=server.bearer("viewer")).status_code == 404


def test_chunked_body_is_refused_once_past_the_limit(server: LiveServer) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    head = (
        b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + server.tokens["operator"].encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"a" * 2000
    # Three chunks (6,000 bytes > 4,096) and no final chunk: the answer must not wait for the end.
    reply = _raw_request(port, head, b"".join(b"7d0\r\n" + chunk + b"\r\n" for _ in range(3)))
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"payload_too_large"' in reply


def test_slow_and_stuck_clients_do_not_stall_the_others(server: LiveServer) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    token = server.tokens["operator"].encode()
    stuck: list[socket.socket] = []
    try:
        for i in range(10):
            sock = socket.create_connection(("127.0.0.1", port), timeout=20)
            if i % 2:  # headers only half sent
                sock.sendall(b"GET /api/v1/devices HTTP/1.1\r\nHost: x\r\nAuthoriz")
            else:  # a body that never finishes
                sock.sendall(
                    b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer " + token + b"\r\nContent-Length: 1000\r\n\r\n" + b'{"id": "s'
                )
            stuck.append(sock)

        # Everyone else is served meanwhile (bounded by the client timeout, so a stall fails the test).
        def call(i: int) -> int:
            if i % 3 == 0:
                return httpx.get(server.url("/healthz"), timeout=15).status_code
            body = {"id": f"slow-ok-{i}", "hardware_class": "pi-4"}
            return httpx.post(
                server.url("/api/v1/devices"), json=body, headers=server.bearer("operator"), timeout=15
            ).status_code

        with ThreadPoolExecutor(max_workers=20) as pool:
            codes = list(pool.map(call, range(40)))
        assert codes == [200 if i % 3 == 0 else 201 for i in range(40)]
    finally:
        for sock in stuck:
            sock.close()
