"""/api/v1/rollouts over the real app (SQLite and PostgreSQL): start, list, detail, decisions, operator
actions with their roles, and every refusal leaving the stored rows unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fleet_api_support import assert_error
from runner_support import add_release
from sqlalchemy import select

from fleet_server.db import RolloutCommand, RolloutDecision, RolloutRow

URL = "/api/v1/rollouts"


@pytest.fixture
def releases(app: FastAPI) -> None:
    with app.state.session_factory() as s:
        add_release(s, 1)
        add_release(s, 2)
        add_release(s, 3, state="withdrawn")
        add_release(s, 1, model="digits")
        add_release(s, 2, model="digits")
        s.commit()


@pytest.fixture
def stored(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def _snap() -> dict[str, Any]:
        with app.state.session_factory() as s:
            return {
                "rollouts": [(r.id, r.status, r.revision, r.state) for r in s.scalars(select(RolloutRow))],
                "decisions": [(d.rollout_id, d.seq, d.record) for d in s.scalars(select(RolloutDecision))],
                "commands": [c.cmd_id for c in s.scalars(select(RolloutCommand))],
            }

    return _snap


def _start(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post(URL, json={"release_id": "kws-2", **body}, headers=headers)


def test_start_list_detail_decisions(client: TestClient, as_role: Callable, releases: None) -> None:
    r = _start(client, as_role("operator"), target={"hardware_classes": ["esp32-s3"]}, min_soak_s=0)
    assert r.status_code == 201, r.text
    ro = r.json()
    assert ro["status"] == "running" and ro["release_id"] == "kws-2"
    assert ro["previous_release_id"] == "kws-1"  # newest older active release by default
    assert [s["name"] for s in ro["plan"]] == ["canary", "10%", "50%", "100%"]
    assert all(s["min_soak_s"] == 0 for s in ro["plan"])
    assert ro["stage"]["name"] == "canary" and ro["exposure"]["ever_exposed"] == 0
    # Another model's rollout may run beside it.
    r2 = client.post(URL, json={"release_id": "digits-2", "shadow": True}, headers=as_role("admin"))
    assert r2.status_code == 201, r2.text
    assert r2.json()["plan"][0]["kind"] == "shadow"

    page = client.get(URL, params={"limit": 1}, headers=as_role("viewer")).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["next_offset"] == 1
    running = client.get(URL, params={"status": "running"}, headers=as_role("viewer")).json()
    assert {i["id"] for i in running["items"]} == {ro["id"], r2.json()["id"]}
    assert client.get(URL, params={"status": "paused"}, headers=as_role("viewer")).json()["total"] == 0

    detail = client.get(f"{URL}/{ro['id']}", headers=as_role("viewer")).json()
    assert detail["id"] == ro["id"] and detail["gates"] == [] and detail["required_sample_size"] is None
    decisions = client.get(f"{URL}/{ro['id']}/decisions", headers=as_role("viewer")).json()
    assert [d["action"] for d in decisions["items"]] == ["start"]
    assert decisions["items"][0]["actor"] == "controller"
    assert "kws-2" in decisions["items"][0]["record"]["reason"]


def test_operator_actions_and_transitions(
    client: TestClient, as_role: Callable, releases: None, stored: Callable
) -> None:
    rid = _start(client, as_role("operator")).json()["id"]
    op = as_role("operator")
    r = client.post(f"{URL}/{rid}/pause", json={"reason": "looking at battery"}, headers=op)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paused" and r.json()["paused_by"] == "operator-token"

    before = stored()
    assert_error(client.post(f"{URL}/{rid}/pause", headers=op), 409, "cannot pause a rollout that is paused")
    assert_error(
        client.post(f"{URL}/{rid}/abort", json={"override_soft_failures": True}, headers=op),
        422,
        "resume only",
    )
    assert stored() == before

    r = client.post(f"{URL}/{rid}/resume", json={"override_soft_failures": True}, headers=op)
    assert r.json()["status"] == "running"
    r = client.post(f"{URL}/{rid}/abort", headers=as_role("admin"))
    assert r.json()["status"] == "aborted" and r.json()["finished"] is True

    before = stored()
    for action in ("pause", "resume", "abort"):
        assert_error(client.post(f"{URL}/{rid}/{action}", headers=op), 409, "aborted")
    assert stored() == before
    # A rollback after an abort is allowed (devices that got the candidate go back) -- none exposed here.
    r = client.post(f"{URL}/{rid}/rollback", json={"reason": "bad"}, headers=op)
    assert r.json()["status"] == "rolled_back" and r.json()["finished"] is False  # watched until recovered
    assert_error(client.post(f"{URL}/{rid}/rollback", headers=op), 409, "already rolled back")

    decisions = client.get(f"{URL}/{rid}/decisions", headers=as_role("viewer")).json()["items"]
    assert [(d["action"], d["actor"]) for d in decisions] == [
        ("start", "controller"),
        ("pause", "operator-token"),
        ("resume", "operator-token"),
        ("abort", "admin-token"),
        ("rollback", "operator-token"),
    ]
    assert decisions[1]["record"]["reason"] == "looking at battery"


def test_roles(client: TestClient, as_role: Callable, releases: None, stored: Callable) -> None:
    before = stored()
    assert_error(_start(client, as_role("viewer")), 403, "operator")
    assert_error(client.post(URL, json={"release_id": "kws-2"}), 401)
    assert stored() == before
    rid = _start(client, as_role("operator")).json()["id"]
    before = stored()
    for action in ("pause", "resume", "abort", "rollback"):
        assert_error(client.post(f"{URL}/{rid}/{action}", headers=as_role("viewer")), 403)
    assert stored() == before


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"release_id": "nope-1"}, 422, "does not exist"),
        ({"release_id": "kws-3"}, 409, "withdrawn"),
        ({"release_id": "kws-2", "previous_release_id": "digits-1"}, 422, "older release of model"),
        ({"release_id": "kws-1", "previous_release_id": "kws-2"}, 422, "older release"),
        (
            {
                "release_id": "kws-2",
                "stages": [
                    {"name": "a", "fraction": 0.5},
                    {"name": "b", "fraction": 0.1},
                    {"name": "c", "fraction": 1.0},
                ],
            },
            422,
            "smaller than the stage before",
        ),
        ({"release_id": "kws-2", "stages": [{"name": "a", "fraction": 1.5}]}, 422, "less than or equal to 1"),
        ({"release_id": "kws-2", "stages": [{"name": "a", "fraction": 0.5}]}, 422, "fraction 1.0"),
        ({"release_id": "kws-2", "stages": []}, 422, "at least 1"),
        ({"release_id": "kws-2", "stages": [{"name": "a", "fraction": 1.0}], "shadow": True}, 422, "either"),
        ({"release_id": "kws-2", "bogus": 1}, 422, "bogus"),
        ({"release_id": "kws-2", "gates": {"install": {"error_threshold": 2}}}, 422, "error_threshold"),
        ({"release_id": "kws-2", "schedule": {"devices_per_minute": 0}}, 422, "devices_per_minute"),
        ({"release_id": ""}, 422, "release_id"),
        ({}, 422, "release_id"),
    ],
)
def test_bad_start_requests_store_nothing(
    client: TestClient,
    as_role: Callable,
    releases: None,
    stored: Callable,
    body: dict,
    status: int,
    fragment: str,
) -> None:
    before = stored()
    assert_error(client.post(URL, json=body, headers=as_role("operator")), status, fragment)
    assert stored() == before


def test_malformed_bodies_and_ids(
    client: TestClient, as_role: Callable, releases: None, stored: Callable
) -> None:
    op = as_role("operator")
    rid = _start(client, op).json()["id"]
    before = stored()
    for raw in (b"{", b"[]", b"null", b'{"release_id": 5}', '{"release_id": "kws-2\u0000"}'.encode()):
        r = client.post(URL, content=raw, headers={**op, "content-type": "application/json"})
        assert_error(r, 422)
    assert_error(
        client.post(f"{URL}/{rid}/pause", content=b"{", headers={**op, "content-type": "application/json"}),
        422,
    )
    assert_error(client.post(f"{URL}/{rid}/pause", json={"reason": "x" * 501}, headers=op), 422)
    assert_error(client.post(f"{URL}/{rid}/explode", headers=op), 404)
    assert_error(client.post(f"{URL}/ro-nothere/pause", headers=op), 404, "does not exist")
    assert_error(client.get(f"{URL}/ro-nothere", headers=op), 404, "does not exist")
    assert_error(client.get(f"{URL}/ro-nothere/decisions", headers=op), 404, "does not exist")
    assert_error(client.get(f"{URL}/bad%20id", headers=op), 422)
    assert_error(client.get(URL, params={"status": "exploded"}, headers=op), 422)
    assert_error(client.get(URL, params={"limit": 0}, headers=op), 422)
    assert stored() == before


def test_overlapping_running_rollout_is_refused(
    client: TestClient, as_role: Callable, releases: None, stored: Callable
) -> None:
    op = as_role("operator")
    first = _start(client, op, target={"hardware_classes": ["esp32-s3"], "tags": ["site=lab"]}).json()["id"]
    before = stored()
    for target in ({}, {"hardware_classes": ["esp32-s3", "rpi-zero-2w"]}, {"tags": ["site=lab", "beta"]}):
        err = assert_error(_start(client, op, target=target), 409, first)
        assert err["details"] == {"rollout_id": first}
    assert stored() == before
    # Disjoint targets are fine: another hardware class, or the same tag key with another value.
    assert _start(client, op, target={"hardware_classes": ["rpi-zero-2w"]}).status_code == 201
    assert (
        _start(client, op, target={"hardware_classes": ["esp32-s3"], "tags": ["site=field"]}).status_code
        == 201
    )
    # Once the first one is aborted, its target is free again.
    client.post(f"{URL}/{first}/abort", headers=op)
    assert (
        _start(client, op, target={"hardware_classes": ["esp32-s3"], "tags": ["site=lab"]}).status_code == 201
    )
