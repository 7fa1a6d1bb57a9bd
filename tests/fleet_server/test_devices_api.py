"""Device resource CRUD, filters and pagination, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fleet_api_support import assert_error, basic

H = dict[str, str]


def test_provision_returns_credential_once_and_device_can_use_it(
    client: TestClient, as_role: Callable[[str], H], snapshot: Callable[[], Any]
) -> None:
    r = client.post(
        "/api/v1/devices",
        json={"id": "kws-0001", "hardware_class": "cortex-m4f", "tags": {"site": "lab", "ring": "canary"}},
        headers=as_role("operator"),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    secret = body["credential"]["password"]
    assert body["credential"]["username"] == "kws-0001"
    assert len(secret) >= 40
    assert body["device"]["tags"] == {"site": "lab", "ring": "canary"}
    # Stored only as a Mosquitto $7$ hash; the secret itself is nowhere in the table.
    stored = snapshot()["devices"][0]
    assert stored["mqtt_password_hash"].startswith("$7$") and secret not in str(stored)
    # Later reads never show it again.
    for path in ("/api/v1/devices", "/api/v1/devices/kws-0001"):
        text = client.get(path, headers=as_role("viewer")).text
        assert secret not in text and "mqtt_password_hash" not in text and "$7$" not in text
    me = client.get("/api/v1/device/self", headers=basic("kws-0001", secret))
    assert me.status_code == 200 and me.json()["id"] == "kws-0001"
    assert_error(client.get("/api/v1/device/self", headers=basic("kws-0001", secret + "x")), 401)


def test_get_patch_rotate_delete(
    client: TestClient, as_role: Callable[[str], H], provision: Callable[..., dict[str, Any]]
) -> None:
    old_secret = provision("pi-07", "pi-4", site="lab", floor="2")["credential"]["password"]
    got = client.get("/api/v1/devices/pi-07", headers=as_role("viewer")).json()
    assert (got["hardware_class"], got["tags"]) == ("pi-4", {"site": "lab", "floor": "2"})
    assert got["last_seen_at"] is None and got["fallback_level"] is None

    r = client.patch(
        "/api/v1/devices/pi-07", json={"tags": {"floor": None, "ring": "b"}}, headers=as_role("operator")
    )
    assert r.status_code == 200 and r.json()["tags"] == {"site": "lab", "ring": "b"}
    assert client.get("/api/v1/devices/pi-07", headers=as_role("viewer")).json()["tags"] == {
        "site": "lab",
        "ring": "b",
    }

    r = client.post("/api/v1/devices/pi-07/credential", headers=as_role("operator"))
    assert r.status_code == 200
    new_secret = r.json()["password"]
    assert new_secret != old_secret
    assert client.get("/api/v1/device/self", headers=basic("pi-07", old_secret)).status_code == 401
    assert client.get("/api/v1/device/self", headers=basic("pi-07", new_secret)).status_code == 200

    assert client.delete("/api/v1/devices/pi-07", headers=as_role("operator")).status_code == 204
    assert_error(client.get("/api/v1/devices/pi-07", headers=as_role("viewer")), 404, "pi-07")
    assert_error(client.delete("/api/v1/devices/pi-07", headers=as_role("operator")), 404, "pi-07")
    # A deleted device's credential is dead too.
    assert client.get("/api/v1/device/self", headers=basic("pi-07", new_secret)).status_code == 401


def test_duplicate_provision_is_a_conflict_and_keeps_the_first_credential(
    client: TestClient,
    as_role: Callable[[str], H],
    provision: Callable[..., dict[str, Any]],
    snapshot: Callable[[], Any],
) -> None:
    first = provision("dup-1")["credential"]["password"]
    before = snapshot()
    r = client.post(
        "/api/v1/devices", json={"id": "dup-1", "hardware_class": "pi-4"}, headers=as_role("operator")
    )
    assert_error(r, 409, "already exists")
    assert snapshot() == before
    assert client.get("/api/v1/device/self", headers=basic("dup-1", first)).status_code == 200


def test_list_filters_by_hardware_class_and_tags(
    client: TestClient, as_role: Callable[[str], H], provision: Callable[..., dict[str, Any]]
) -> None:
    provision("a1", "esp32-s3", site="lab", ring="canary")
    provision("a2", "esp32-s3", site="field")
    provision("b1", "pi-4", site="lab")
    provision("b2", "pi-4", **{"site.zone": "x-1"})
    v = as_role("viewer")

    def ids(query: str) -> list[str]:
        r = client.get(f"/api/v1/devices{query}", headers=v)
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()["items"]]

    assert ids("") == ["a1", "a2", "b1", "b2"]
    assert ids("?hardware_class=pi-4") == ["b1", "b2"]
    assert ids("?tag=site=lab") == ["a1", "b1"]
    assert ids("?tag=site=lab&tag=ring=canary") == ["a1"]
    assert ids("?tag=site=lab&hardware_class=pi-4") == ["b1"]
    assert ids("?tag=site.zone=x-1") == ["b2"]  # dots in keys are not JSON path steps
    assert ids("?tag=site=") == []
    assert ids("?tag=nope=lab") == []
    assert ids("?hardware_class=cortex-m4f") == []


def test_pagination_walks_every_device_once(
    client: TestClient, as_role: Callable[[str], H], provision: Callable[..., dict[str, Any]]
) -> None:
    expected = [f"d{i:02d}" for i in range(7)]
    for device_id in reversed(expected):
        provision(device_id)
    seen: list[str] = []
    offset: int | None = 0
    pages = 0
    while offset is not None:
        page = client.get(f"/api/v1/devices?limit=3&offset={offset}", headers=as_role("viewer")).json()
        assert page["total"] == 7 and page["limit"] == 3 and len(page["items"]) <= 3
        seen += [d["id"] for d in page["items"]]
        offset = page["next_offset"]
        pages += 1
    assert seen == expected and pages == 3
    beyond = client.get("/api/v1/devices?limit=3&offset=50", headers=as_role("viewer")).json()
    assert beyond["items"] == [] and beyond["next_offset"] is None and beyond["total"] == 7


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=101", "exceeds the maximum page size 100"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=99999999999", "offset"),
        ("offset=x", "offset"),
        ("page=2", "page: Extra inputs are not permitted"),
    ],
)
def test_pagination_bounds(
    client: TestClient, as_role: Callable[[str], H], query: str, fragment: str
) -> None:
    assert_error(client.get(f"/api/v1/devices?{query}", headers=as_role("viewer")), 422, fragment)


def test_default_and_maximum_page_size(
    client: TestClient, as_role: Callable[[str], H], provision: Callable[..., dict[str, Any]]
) -> None:
    provision("only")
    assert client.get("/api/v1/devices", headers=as_role("viewer")).json()["limit"] == 50
    assert client.get("/api/v1/devices?limit=100", headers=as_role("viewer")).json()["limit"] == 100
