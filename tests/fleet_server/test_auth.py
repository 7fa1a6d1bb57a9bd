"""Auth matrix: who may call what. Missing/invalid credentials 401, wrong kind or too low a role 403."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fleet_api_support import assert_error, basic, bearer

# (method, path, json body, who may call it)
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/api/v1/devices", None, "viewer"),
    ("GET", "/api/v1/devices/target-1", None, "viewer"),
    ("POST", "/api/v1/devices", {"id": "new-1", "hardware_class": "pi-4"}, "operator"),
    ("PATCH", "/api/v1/devices/target-1", {"tags": {"k": "v"}}, "operator"),
    ("POST", "/api/v1/devices/target-1/credential", None, "operator"),
    ("DELETE", "/api/v1/devices/target-1", None, "operator"),
    ("GET", "/api/v1/tokens", None, "admin"),
    ("POST", "/api/v1/tokens", {"name": "made-in-test", "role": "viewer"}, "admin"),
    ("GET", "/api/v1/audit", None, "admin"),
    ("GET", "/api/v1/device/self", None, "device"),
]
CALLERS = ["none", "garbage", "revoked", "viewer", "operator", "admin", "device", "device-wrong-secret"]
RANK = {"viewer": 1, "operator": 2, "admin": 3}


def expected_status(caller: str, needs: str) -> int | None:
    """None = allowed (any non-auth status is fine)."""
    if caller in ("none", "garbage", "revoked", "device-wrong-secret"):
        return 401
    if needs == "device":
        return None if caller == "device" else 403
    if caller == "device":
        return 403
    return None if RANK[caller] >= RANK[needs] else 403


@pytest.mark.parametrize(
    ("method", "path", "body", "needs"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
def test_auth_matrix(
    client: TestClient,
    tokens: dict[str, str],
    provision: Callable[..., dict[str, Any]],
    snapshot: Callable[[], Any],
    audit_rows: Callable[[], list[Any]],
    method: str,
    path: str,
    body: Any,
    needs: str,
) -> None:
    secret = provision("target-1")["credential"]["password"]
    headers = {
        "none": {},
        "garbage": {"Authorization": "Bearer tfo_not-a-real-token"},
        "revoked": bearer(tokens["revoked"]),
        "viewer": bearer(tokens["viewer"]),
        "operator": bearer(tokens["operator"]),
        "admin": bearer(tokens["admin"]),
        "device": basic("target-1", secret),
        "device-wrong-secret": basic("target-1", secret[:-1] + ("A" if secret[-1] != "A" else "B")),
    }
    for caller in CALLERS:
        expected = expected_status(caller, needs)
        if expected is None:
            continue  # allowed callers are exercised by the resource tests
        before, n_audit = snapshot(), len(audit_rows())
        r = client.request(method, path, json=body, headers=headers[caller])
        err = assert_error(r, expected)
        assert err["code"] == ("unauthenticated" if expected == 401 else "forbidden"), (caller, err)
        assert snapshot() == before, f"{caller} changed stored data via {method} {path}"
        # Every refusal is audited: who, what, where, outcome.
        entries = audit_rows()
        assert len(entries) == n_audit + 1, caller
        last = entries[-1]
        assert (last.outcome, last.status_code, last.client_ip) == ("denied", expected, "testclient")
        assert method in last.action or last.action.startswith(("device.", "token."))
        if caller == "device":
            assert (last.actor, last.actor_kind) == ("target-1", "device")
        elif caller in ("viewer", "operator", "admin"):
            assert (last.actor, last.actor_kind) == (f"{caller}-token", "operator")
        else:
            assert last.actor_kind == "anonymous"
        assert secret not in str(last.details) and tokens["revoked"] not in str(last.details)
    if needs == "device":
        assert client.get(path, headers=headers["device"]).status_code == 200


def test_viewer_cannot_provision(
    client: TestClient, tokens: dict[str, str], snapshot: Callable[[], Any]
) -> None:
    before = snapshot()
    r = client.post(
        "/api/v1/devices", json={"id": "v-1", "hardware_class": "pi-4"}, headers=bearer(tokens["viewer"])
    )
    assert_error(r, 403, "'viewer'", "'operator'")
    assert snapshot() == before


def test_device_credential_is_refused_on_operator_routes(
    client: TestClient, provision: Callable[..., dict[str, Any]]
) -> None:
    secret = provision("dev-x")["credential"]["password"]
    r = client.get("/api/v1/devices/dev-x", headers=basic("dev-x", secret))
    assert_error(r, 403, "device credentials cannot call operator routes")


def test_operator_token_is_refused_on_device_routes(client: TestClient, tokens: dict[str, str]) -> None:
    assert_error(
        client.get("/api/v1/device/self", headers=bearer(tokens["admin"])), 403, "device credentials only"
    )


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("", "missing Authorization"),
        ("Bearer", "unsupported Authorization scheme"),
        ("Token abc", "unsupported Authorization scheme"),
        ("Bearer abc", "invalid bearer token"),
        ("Bearer tfo_" + "A" * 300, "invalid bearer token"),
        ("Basic !!!notbase64", "malformed Basic"),
        ("Basic " + "bm9jb2xvbg==", "malformed Basic"),  # "nocolon"
        ("Basic " + "Ym9ndXMvaWQ6c2VjcmV0", "malformed Basic"),  # "bogus/id:secret" (not a device id)
        ("Basic " + "dW5rbm93bjpzZWNyZXQ=", "invalid device credentials"),  # "unknown:secret"
    ],
)
def test_malformed_credentials_are_401(client: TestClient, header: str, fragment: str) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.get("/api/v1/devices", headers=headers)
    assert_error(r, 401, fragment)
    assert r.headers.get("www-authenticate") == "Bearer"


def test_revoked_token_stops_working(client: TestClient, tokens: dict[str, str]) -> None:
    admin = bearer(tokens["admin"])
    made = client.post(
        "/api/v1/tokens", json={"name": "short-lived", "role": "operator"}, headers=admin
    ).json()
    assert client.get("/api/v1/devices", headers=bearer(made["secret"])).status_code == 200
    assert client.delete(f"/api/v1/tokens/{made['token']['id']}", headers=admin).status_code == 204
    assert_error(client.get("/api/v1/devices", headers=bearer(made["secret"])), 401, "revoked")
    listed = client.get("/api/v1/tokens", headers=admin).json()["items"]
    row = next(t for t in listed if t["name"] == "short-lived")
    assert row["revoked_at"] is not None and "secret" not in row and made["secret"] not in str(listed)
    # An admin cannot lock itself out by revoking the token it is using.
    me = next(t for t in listed if t["name"] == "admin-token")
    assert_error(client.delete(f"/api/v1/tokens/{me['id']}", headers=admin), 409, "making this request")
