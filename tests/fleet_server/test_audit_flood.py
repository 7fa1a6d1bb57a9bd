"""Audit rows: anonymous refusal floods are bounded (with the count kept); nothing else is ever dropped."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fleet_api_support import bearer
from live_server import live_server_process, stop
from sqlalchemy import select

from fleet_server.api import create_app
from fleet_server.audit_flood import (
    MAX_KEYS_PER_WINDOW,
    OVERFLOW_KEY,
    SUPPRESSED_ACTION,
    AnonymousFloodLimiter,
)
from fleet_server.auth import Role, issue_token
from fleet_server.db import AuditEntry, make_engine
from fleet_server.settings import Settings

PER_MINUTE = 20


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_limiter_admits_the_first_n_per_ip_and_minute_then_aggregates() -> None:
    clock = FakeClock()
    limiter = AnonymousFloodLimiter(3, clock=clock)
    admitted = [limiter.admit("10.0.0.1", 401, "GET /api/v1/devices") for _ in range(10)]
    assert admitted == [True] * 3 + [False] * 7
    assert limiter.admit("10.0.0.2", 401, "GET /api/v1/devices")  # another IP has its own budget
    assert limiter.closed_aggregates() == []  # the window is still open

    clock.now += 60
    assert limiter.admit("10.0.0.1", 401, "GET /api/v1/devices")  # a new minute, a new budget
    (row,) = limiter.closed_aggregates()
    assert (row["action"], row["client_ip"], row["outcome"], row["status_code"]) == (
        SUPPRESSED_ACTION,
        "10.0.0.1",
        "denied",
        401,
    )
    assert row["details"]["suppressed"] == 7 and row["details"]["written"] == 3
    assert row["details"]["actions"] == {"GET /api/v1/devices": 7}
    assert dt.datetime.fromisoformat(row["details"]["window_start"]).timestamp() == clock.now // 60 * 60 - 60
    assert limiter.closed_aggregates() == []  # reported once
    assert limiter.has_open_windows()
    assert limiter.closed_aggregates(all_windows=True) == []  # the open window suppressed nothing


def test_limiter_memory_is_bounded_under_many_ips() -> None:
    limiter = AnonymousFloodLimiter(1, clock=FakeClock())
    for i in range(MAX_KEYS_PER_WINDOW + 50):
        limiter.admit(f"ip-{i}", 401, "GET /x")
    extra = [limiter.admit(f"more-{i}", 401, "GET /x") for i in range(5)]
    assert extra == [False] * 5  # beyond the key bound new IPs share one (exhausted) bucket
    rows = limiter.closed_aggregates(all_windows=True)
    (shared,) = [r for r in rows if r["details"]["many_ips"]]
    assert shared["client_ip"] is None and shared["details"]["suppressed"] == 49 + 5
    assert OVERFLOW_KEY not in str([r["client_ip"] for r in rows])


@pytest.fixture
def flood_app(db_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        device_credential_iterations=1000,
        audit_anonymous_per_minute=PER_MINUTE,
    )
    application = create_app(settings)
    yield application
    application.state.engine.dispose()


def _audit(app: FastAPI) -> list[AuditEntry]:
    with app.state.session_factory() as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))


@pytest.mark.slow
def test_a_thousand_bad_tokens_leave_bounded_rows_and_the_count(flood_app: FastAPI) -> None:
    with flood_app.state.session_factory() as session:
        viewer = issue_token(session, name="v", role=Role.viewer, created_by="test").secret
        session.commit()
    with TestClient(flood_app) as client:
        for i in range(1000):
            r = client.get("/api/v1/devices", headers={"Authorization": f"Bearer tfo_wrong{i}"})
            assert r.status_code == 401
        # Authenticated refusals are never limited: each one is a row.
        for i in range(PER_MINUTE * 2):
            body = {"id": f"v-{i}", "hardware_class": "pi-4"}
            assert client.post("/api/v1/devices", json=body, headers=bearer(viewer)).status_code == 403
    # The client's exit ran the app's shutdown, which wrote the open window's aggregate.
    rows = _audit(flood_app)
    single = [r for r in rows if r.actor_kind == "anonymous" and r.action != SUPPRESSED_ACTION]
    aggregated = [r for r in rows if r.action == SUPPRESSED_ACTION]
    # At most two windows if the run crossed a minute boundary.
    assert 1 <= len(aggregated) <= 2 and PER_MINUTE <= len(single) <= 2 * PER_MINUTE
    assert len(single) + sum(r.details["suppressed"] for r in aggregated) == 1000
    assert all(r.status_code == 401 and r.client_ip == "testclient" for r in single + aggregated)
    assert aggregated[0].details["actions"] == {"GET /api/v1/devices": aggregated[0].details["suppressed"]}
    denied = [r for r in rows if r.actor == "v"]
    assert len(denied) == PER_MINUTE * 2 and {r.status_code for r in denied} == {403}


@pytest.mark.slow
def test_every_mutating_request_is_audited_under_load_and_at_shutdown(tmp_path: Path) -> None:
    with live_server_process(tmp_path) as server:

        def call(i: int) -> int:
            kind = i % 3
            body: dict[str, Any] = {"id": f"load-{i}", "hardware_class": "pi-4"}
            if kind == 1:  # refused for the role
                return httpx.post(
                    server.url("/api/v1/devices"), json=body, headers=server.bearer("viewer")
                ).status_code
            if kind == 2:  # refused for the content
                body["hardware_class"] = "toaster"
            return httpx.post(
                server.url("/api/v1/devices"), json=body, headers=server.bearer("operator"), timeout=30
            ).status_code

        with ThreadPoolExecutor(max_workers=20) as pool:
            codes = list(pool.map(call, range(90)))
        assert sorted(set(codes)) == [201, 403, 422]
        # Stop at once: rows whose responses already went out must still be written (shutdown drains).
        stop(server)
    engine = make_engine(server.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditEntry.action, AuditEntry.actor, AuditEntry.status_code).where(
                    AuditEntry.actor != "test"
                )
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == 90
    assert sorted(r.status_code for r in rows) == sorted(codes)
    assert {r.actor for r in rows if r.status_code == 403} == {"live-viewer"}
    assert {r.action for r in rows if r.status_code == 201} == {"device.provision"}
    assert server.tokens["operator"] not in server.log


def test_writer_close_drains_the_queue_and_the_open_windows(flood_app: FastAPI) -> None:
    from fleet_server.api.audit_writer import AuditWriter

    limiter = AnonymousFloodLimiter(2, clock=FakeClock())
    writer = AuditWriter(flood_app.state.session_factory, limiter, tick_s=5.0)
    base = {"target": None, "client_ip": "10.1.1.1", "details": {}}
    for i in range(30):
        writer.write_nowait(
            {
                **base,
                "actor": f"op-{i}",
                "actor_kind": "operator",
                "action": "x.y",
                "outcome": "ok",
                "status_code": 200,
            }
        )
    for _ in range(5):
        if limiter.admit("10.1.1.1", 401, "GET /z"):
            writer.write_nowait(
                {
                    **base,
                    "actor": "anonymous",
                    "actor_kind": "anonymous",
                    "action": "GET /z",
                    "outcome": "denied",
                    "status_code": 401,
                }
            )
    writer.close()
    rows = _audit(flood_app)
    assert sorted(r.actor for r in rows if r.actor_kind == "operator") == sorted(f"op-{i}" for i in range(30))
    assert [r.details["suppressed"] for r in rows if r.action == SUPPRESSED_ACTION] == [3]
    assert len([r for r in rows if r.action == "GET /z"]) == 2
