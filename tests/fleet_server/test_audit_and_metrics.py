"""Audit log contents and filters; secrets stay out of logs and the audit log; /healthz and /metrics."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fleet_api_support import basic
from prometheus_client.parser import text_string_to_metric_families


def test_mutations_are_audited_with_who_what_where_outcome(
    client: TestClient, as_role: Callable[[str], dict[str, str]], audit_rows: Callable[[], list[Any]]
) -> None:
    op = as_role("operator")
    start = dt.datetime.now(dt.UTC)
    client.post(
        "/api/v1/devices", json={"id": "au-1", "hardware_class": "pi-4", "tags": {"a": "1"}}, headers=op
    )
    client.patch("/api/v1/devices/au-1", json={"tags": {"b": "2"}}, headers=op)
    client.post("/api/v1/devices/au-1/credential", headers=op)
    client.delete("/api/v1/devices/au-1", headers=op)
    client.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}, headers=as_role("admin"))
    client.get("/api/v1/devices", headers=op)  # a read: not audited
    rows = audit_rows()
    assert [(r.action, r.target, r.outcome, r.status_code) for r in rows] == [
        ("device.provision", "au-1", "ok", 201),
        ("device.update_tags", "au-1", "ok", 200),
        ("device.rotate_credential", "au-1", "ok", 200),
        ("device.delete", "au-1", "ok", 204),
        ("token.create", "ci", "ok", 201),
    ]
    assert {(r.actor, r.actor_kind, r.client_ip) for r in rows[:4]} == {
        ("operator-token", "operator", "testclient")
    }
    assert rows[4].actor == "admin-token" and rows[4].details["role"] == "viewer"
    assert rows[0].details["hardware_class"] == "pi-4" and rows[0].details["tags"] == {"a": "1"}
    assert all(start <= r.at <= dt.datetime.now(dt.UTC) for r in rows)


def test_audit_list_filters_and_pages(
    client: TestClient, as_role: Callable[[str], dict[str, str]], provision: Callable[..., dict[str, Any]]
) -> None:
    for i in range(5):
        provision(f"p-{i}")
    client.get("/api/v1/devices")  # one anonymous refusal
    admin = as_role("admin")

    def page(query: str) -> dict[str, Any]:
        r = client.get(f"/api/v1/audit?{query}", headers=admin)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    assert page("action=device.provision")["total"] == 5
    assert page("outcome=denied")["total"] == 1
    assert page("actor=anonymous")["items"][0]["status_code"] == 401
    assert page("target=p-3")["items"][0]["action"] == "device.provision"
    first, second = page("limit=4"), page("limit=4&offset=4")
    assert (
        first["total"] == second["total"] == 6 and first["next_offset"] == 4 and second["next_offset"] is None
    )
    ids = [e["id"] for e in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6  # newest first, no overlap
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert page(f"since={future}")["total"] == 0
    assert page(f"until={future}")["total"] == 6


def test_secrets_never_reach_logs_audit_or_later_responses(
    client: TestClient,
    as_role: Callable[[str], dict[str, str]],
    tokens: dict[str, str],
    audit_rows: Callable[[], list[Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    made = client.post(
        "/api/v1/devices", json={"id": "s-1", "hardware_class": "cortex-m4f"}, headers=as_role("operator")
    ).json()
    device_secret = made["credential"]["password"]
    rotated = client.post("/api/v1/devices/s-1/credential", headers=as_role("operator")).json()["password"]
    token_secret = client.post(
        "/api/v1/tokens", json={"name": "once", "role": "viewer"}, headers=as_role("admin")
    ).json()["secret"]
    client.get("/api/v1/devices", headers={"Authorization": f"Bearer {token_secret}x"})  # refused
    client.get("/api/v1/device/self", headers=basic("s-1", device_secret))  # old secret, refused
    secrets = [device_secret, rotated, token_secret, *tokens.values()]
    haystacks = [caplog.text, str([(r.action, r.target, r.details) for r in audit_rows()])]
    haystacks += [client.get(p, headers=as_role("admin")).text for p in ("/api/v1/audit", "/api/v1/tokens")]
    haystacks += [
        client.get("/api/v1/devices/s-1", headers=as_role("admin")).text,
        client.get("/metrics").text,
    ]
    for secret in secrets:
        for text in haystacks:
            assert secret not in text


def test_healthz_reports_database_and_revision(client: TestClient) -> None:
    body = client.get("/healthz").json()
    from fleet_server.db.migrate import head_revision

    assert body["status"] == "ok" and body["schema_revision"] == head_revision()
    assert body["database"] in ("sqlite", "postgresql")


def test_metrics_count_requests_and_latency_per_route_template(
    client: TestClient, as_role: Callable[[str], dict[str, str]], provision: Callable[..., dict[str, Any]]
) -> None:
    provision("m-1")
    for device_id in ("m-1", "m-1", "absent"):
        client.get(f"/api/v1/devices/{device_id}", headers=as_role("viewer"))
    client.get("/no/such/route")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in families["tinyfleet_http_requests"].samples
        if s.name == "tinyfleet_http_requests_total"
    }
    assert counts[("GET", "/api/v1/devices/{device_id}", "200")] == 2
    assert counts[("GET", "/api/v1/devices/{device_id}", "404")] == 1
    assert counts[("POST", "/api/v1/devices", "201")] == 1
    assert counts[("GET", "<unmatched>", "404")] == 1  # raw paths never become labels
    hist = families["tinyfleet_http_request_duration_seconds"].samples
    n = [
        s.value
        for s in hist
        if s.name.endswith("_count") and s.labels["route"] == "/api/v1/devices/{device_id}"
    ]
    assert n == [3]


def test_healthz_is_503_json_when_the_database_is_gone(tmp_path: Path) -> None:
    from fleet_server.api import create_app
    from fleet_server.settings import Settings

    url = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"
    app = create_app(Settings(data_dir=tmp_path, database_url=url, migrate_on_start=False))
    with TestClient(app) as client:
        r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"
