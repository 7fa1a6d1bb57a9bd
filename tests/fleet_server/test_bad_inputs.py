"""Bad input on every route: a 4xx JSON error naming the problem, and nothing stored changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fleet_api_support import assert_error

DEV = "/api/v1/devices"
OK_DEVICE = {"id": "new-1", "hardware_class": "pi-4"}
TOO_MANY_TAGS = {f"k{i}": "v" for i in range(9)}  # settings fixture allows 8


def _case(
    method: str,
    path: str,
    status: int,
    *fragments: str,
    json: Any = None,
    content: bytes | None = None,
    role: str = "admin",
) -> tuple[Any, ...]:
    return (method, path, json, content, role, status, fragments)


CASES = {
    # --- provisioning: device id rules from telemetry.topics
    "id with slash": _case("POST", DEV, 422, "topic level separator", json={**OK_DEVICE, "id": "a/b"}),
    "id with plus": _case("POST", DEV, 422, "MQTT wildcard", json={**OK_DEVICE, "id": "a+b"}),
    "id with hash": _case("POST", DEV, 422, "MQTT wildcard", json={**OK_DEVICE, "id": "a#"}),
    "id starting with $": _case(
        "POST", DEV, 422, "must start with a letter or digit", json={**OK_DEVICE, "id": "$SYS"}
    ),
    "id too long": _case("POST", DEV, 422, "37 characters, at most 36", json={**OK_DEVICE, "id": "x" * 37}),
    "id empty": _case("POST", DEV, 422, "device id is empty", json={**OK_DEVICE, "id": ""}),
    "id with NUL": _case("POST", DEV, 422, "device id", json={**OK_DEVICE, "id": "a\x00b"}),
    "id not a string": _case("POST", DEV, 422, "body.id", json={**OK_DEVICE, "id": 5}),
    "unknown hardware class": _case(
        "POST", DEV, 422, "unknown hardware class 'esp8266'", json={**OK_DEVICE, "hardware_class": "esp8266"}
    ),
    "too many tags": _case(
        "POST", DEV, 422, "9 tags given, at most 8", json={**OK_DEVICE, "tags": TOO_MANY_TAGS}
    ),
    "tag value too long": _case(
        "POST", DEV, 422, "body.tags.site", json={**OK_DEVICE, "tags": {"site": "x" * 129}}
    ),
    "tag key with slash": _case("POST", DEV, 422, "body.tags.a/b", json={**OK_DEVICE, "tags": {"a/b": "x"}}),
    "tag value not a string": _case("POST", DEV, 422, "body.tags.n", json={**OK_DEVICE, "tags": {"n": 3}}),
    "tags a list": _case("POST", DEV, 422, "body.tags", json={**OK_DEVICE, "tags": ["a"]}),
    "unknown field": _case(
        "POST", DEV, 422, "body.slot: Extra inputs are not permitted", json={**OK_DEVICE, "slot": "a"}
    ),
    "missing field": _case("POST", DEV, 422, "body.hardware_class: Field required", json={"id": "x1"}),
    "body not JSON": _case("POST", DEV, 422, "JSON", content=b"{not json"),
    "body a list": _case("POST", DEV, 422, "body", json=[OK_DEVICE]),
    "duplicate id": _case("POST", DEV, 409, "'base-1' already exists", json={**OK_DEVICE, "id": "base-1"}),
    # --- patch
    "patch unknown field": _case(
        "PATCH", f"{DEV}/base-1", 422, "body.hardware_class", json={"hardware_class": "pi-4"}
    ),
    "patch tags wrong type": _case("PATCH", f"{DEV}/base-1", 422, "body.tags", json={"tags": "site=lab"}),
    "patch pushes over tag limit": _case(
        "PATCH",
        f"{DEV}/base-1",
        422,
        "10 tags given, at most 8",
        json={"tags": {f"n{i}": "v" for i in range(8)}},
    ),
    "patch bad key": _case("PATCH", f"{DEV}/base-1", 422, "body.tags.-x", json={"tags": {"-x": "v"}}),
    "patch missing device": _case("PATCH", f"{DEV}/ghost", 404, "'ghost' not found", json={"tags": {}}),
    "patch bad id": _case("PATCH", f"{DEV}/a+b", 422, "MQTT wildcard", json={"tags": {}}),
    # --- get / delete / rotate
    "get bad id": _case("GET", f"{DEV}/{'y' * 40}", 422, "at most 36"),
    "get missing": _case("GET", f"{DEV}/ghost", 404, "'ghost' not found"),
    "delete missing": _case("DELETE", f"{DEV}/ghost", 404, "'ghost' not found"),
    "delete bad id": _case("DELETE", f"{DEV}/$bad", 422, "must start with a letter or digit"),
    "rotate missing": _case("POST", f"{DEV}/ghost/credential", 404, "'ghost' not found"),
    # --- list filters
    "list unknown hardware class": _case(
        "GET", f"{DEV}?hardware_class=vax", 422, "unknown hardware class 'vax'"
    ),
    "list tag filter without =": _case(
        "GET", f"{DEV}?tag=site", 422, "tag filter 'site' must look like key=value"
    ),
    "list limit too large": _case("GET", f"{DEV}?limit=5000", 422, "query.limit"),
    "list unknown query field": _case(
        "GET", f"{DEV}?hw=pi-4", 422, "query.hw: Extra inputs are not permitted"
    ),
    # --- tokens
    "token bad role": _case("POST", "/api/v1/tokens", 422, "body.role", json={"name": "t1", "role": "root"}),
    "token bad name": _case(
        "POST", "/api/v1/tokens", 422, "body.name", json={"name": "has space", "role": "viewer"}
    ),
    "token unknown field": _case(
        "POST", "/api/v1/tokens", 422, "body.secret", json={"name": "t1", "role": "viewer", "secret": "mine"}
    ),
    "token duplicate": _case(
        "POST",
        "/api/v1/tokens",
        409,
        "'viewer-token' already exists",
        json={"name": "viewer-token", "role": "viewer"},
    ),
    "token revoke id 0": _case("DELETE", "/api/v1/tokens/0", 422, "path.token_id"),
    "token revoke id huge": _case("DELETE", "/api/v1/tokens/99999999999999999999", 422, "path.token_id"),
    "token revoke id text": _case("DELETE", "/api/v1/tokens/abc", 422, "path.token_id"),
    "token revoke missing": _case("DELETE", "/api/v1/tokens/4242", 404, "token 4242 not found"),
    "tokens limit 0": _case("GET", "/api/v1/tokens?limit=0", 422, "query.limit"),
    # --- audit
    "audit bad outcome": _case("GET", "/api/v1/audit?outcome=maybe", 422, "query.outcome"),
    "audit naive since": _case("GET", "/api/v1/audit?since=2026-01-01T00:00:00", 422, "query.since"),
    "audit bad since": _case("GET", "/api/v1/audit?since=yesterday", 422, "query.since"),
    "audit extreme since": _case("GET", "/api/v1/audit?since=9999-12-31T23:59:59-23:00", 422, "out of range"),
    "audit control chars": _case("GET", "/api/v1/audit?actor=a%00b", 422, "query.actor"),
    "audit offset negative": _case("GET", "/api/v1/audit?offset=-5", 422, "query.offset"),
    # --- routing
    "unknown route": _case("GET", "/api/v1/nothing", 404, "Not Found"),
    "wrong method": _case("PUT", f"{DEV}/base-1", 405, "Method Not Allowed", json={}),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_rejected_and_changes_nothing(
    client: TestClient,
    as_role: Callable[[str], dict[str, str]],
    provision: Callable[..., dict[str, Any]],
    snapshot: Callable[[], Any],
    audit_rows: Callable[[], list[Any]],
    case: tuple[Any, ...],
) -> None:
    method, path, body, content, role, status, fragments = case
    provision("base-1", site="lab", ring="a")
    before, n_audit = snapshot(), len(audit_rows())
    kwargs: dict[str, Any] = {"headers": as_role(role)}
    if content is not None:
        kwargs["content"] = content
        kwargs["headers"] = {**kwargs["headers"], "Content-Type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    r = client.request(method, path, **kwargs)
    assert_error(r, status, *fragments)
    assert snapshot() == before
    entries = audit_rows()
    if method in ("GET",):
        assert len(entries) == n_audit  # reads are not audited unless refused for auth
    else:
        # A refused mutation is still on record, with the reason.
        assert len(entries) == n_audit + 1
        assert entries[-1].outcome == "rejected" and entries[-1].status_code == status
        assert entries[-1].details["error"]["message"] == r.json()["error"]["message"]
