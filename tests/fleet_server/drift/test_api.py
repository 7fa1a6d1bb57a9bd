"""REST routes: telemetry series and windows, drift status and evaluation, alerts, T*, retraining events."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from drift_support import NOW, T0, Fleet, Receiver, make_baseline, provision_devices, register_release
from fastapi.testclient import TestClient
from fleet_api_support import assert_error, bearer
from sqlalchemy import select

from fleet_server.api import create_app
from fleet_server.db import AlertRow, DriftSnapshot, RetrainingEvent
from fleet_server.drift import evaluate_all
from fleet_server.rollouts.retraining import fit_decay, optimal_interval

BASELINE = make_baseline()
ISO = "%Y-%m-%dT%H:%M:%SZ"
ALIGNED = T0 - T0 % 1800  # buckets are aligned to the epoch; the windows start 400 s into this one


def _t(s: int) -> str:
    return dt.datetime.fromtimestamp(s, dt.UTC).strftime(ISO)


@pytest.fixture
def fleet_db(app, settings) -> Fleet:
    """kws release 3 with a baseline; 4 Pi devices (tag site=north) undrifted, 4 MCUs drifted."""
    with app.state.session_factory() as s:
        register_release(s, settings.artifact_dir, BASELINE)
        provision_devices(s, [f"pi-{i}" for i in range(4)], hardware_class="pi-zero-2w", site="north")
        provision_devices(s, [f"mcu-{i}" for i in range(4)], hardware_class="esp32-s3", site="south")
        fleet = Fleet(BASELINE)
        fleet.add([f"pi-{i}" for i in range(4)], shift=0.0, false_positives=2, battery=(95.0, 1.0))
        fleet.add([f"mcu-{i}" for i in range(4)], shift=0.6, false_positives=30, battery=(80.0, 4.0))
        s.commit()
    fleet.stored = list(fleet.windows)  # type: ignore[attr-defined]
    assert fleet.ingest(app.state.engine) == len(fleet.stored)
    return fleet


def _series(client: TestClient, headers: dict[str, str], **params: Any) -> Any:
    return client.get("/api/v1/telemetry/series", params=params, headers=headers)


# ----------------------------------------------------------------------------- telemetry


def test_series_per_version_and_cohort_match_the_windows(client, as_role, fleet_db) -> None:
    windows = fleet_db.stored
    r = _series(
        client,
        as_role("viewer"),
        model="kws",
        version=3,
        since=_t(ALIGNED),
        until=_t(ALIGNED + 3600),
        bucket_s=1800,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["buckets"] == 2 and body["cohort"] == "all"
    [series] = body["series"]
    assert (series["model_name"], series["model_version"]) == ("kws", 3) and len(series["points"]) == 2
    assert sum(p["windows"] for p in series["points"]) == len(windows)
    for point in series["points"]:
        start = int(dt.datetime.fromisoformat(point["bucket_start"]).timestamp())
        ws = [w for w in windows if start <= w.window_start_s < start + 1800]
        inf = sum(w.inferences for w in ws)
        assert point["windows"] == len(ws) and point["devices"] == 8 and point["inferences"] == inf
        assert point["fp_rate"] == pytest.approx(sum(w.false_positives for w in ws) / inf)
        assert point["battery_pct_avg"] == pytest.approx(sum(w.battery_pct for w in ws) / len(ws))
        assert point["latency_p95_us"] == pytest.approx(
            sum(w.latency_p95_us * w.inferences for w in ws) / inf
        )
        assert point["duty_cycle"] == pytest.approx(0.1) and point["fallback_share"] == 0.0
        assert point["fallback_levels"] == {"0": 1.0}
    # Cohorts: hardware class, tag, explicit devices (a rollout group) -> only those windows.
    for params, ids in (
        ({"hardware_class": "esp32-s3"}, {f"mcu-{i}" for i in range(4)}),
        ({"tag": "site=north"}, {f"pi-{i}" for i in range(4)}),
        ({"device_id": ["pi-0", "mcu-1"]}, {"pi-0", "mcu-1"}),
    ):
        r = _series(client, as_role("viewer"), since=_t(T0), until=_t(T0 + 7200), bucket_s=7200, **params)
        assert r.status_code == 200, r.text
        [point] = r.json()["series"][0]["points"]
        ws = [w for w in windows if w.device_id in ids]
        assert point["devices"] == len(ids) and point["windows"] == len(ws)
        assert point["false_positives"] == sum(w.false_positives for w in ws)


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"since": _t(T0 + 3600), "until": _t(T0)}, 422, "reversed"),
        ({"since": _t(T0 - 200 * 86_400), "until": _t(T0)}, 422, "exceeds the maximum"),
        ({"since": _t(T0 - 2 * 86_400), "until": _t(T0), "bucket_s": 60}, 422, "at most 2000 points"),
        ({"since": _t(T0), "until": _t(T0 + 60), "bucket_s": 5}, 422, "below the minimum"),
        ({"model": "nope"}, 404, "no model named 'nope'"),
        ({"model": "kws", "version": 99}, 404, "no release with version (counter) 99"),
        ({"version": 3}, 422, "needs the model name"),
        ({"device_id": ["pi-0", "ghost-1"]}, 404, "ghost-1"),
        ({"tag": "no-equals-sign"}, 422, "tag"),
        ({"since": "2026-11-19T00:00:00"}, 422, "timezone"),
        ({"bucket_s": "abc"}, 422, "bucket_s"),
    ],
)
def test_series_bad_input(client, as_role, fleet_db, params, status: int, fragment: str) -> None:
    r = _series(client, as_role("viewer"), **params)
    error = assert_error(r, status)
    assert fragment in error["message"] or fragment in str(error["details"]), error


def test_device_windows_paginated_newest_first(client, as_role, fleet_db) -> None:
    r = client.get("/api/v1/telemetry/devices/mcu-1/windows", params={"limit": 4}, headers=as_role("viewer"))
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["total"] == 6 and page["next_offset"] == 4
    assert [w["seq"] for w in page["items"]] == [5, 4, 3, 2]
    mine = {w.seq: w for w in fleet_db.stored if w.device_id == "mcu-1"}
    assert page["items"][0]["input_hist"] == list(mine[5].input_hist)
    r = client.get(
        "/api/v1/telemetry/devices/mcu-1/windows",
        params={"since": _t(T0 + 600), "until": _t(T0 + 1800)},
        headers=as_role("viewer"),
    )
    assert [w["seq"] for w in r.json()["items"]] == [2, 1]
    assert_error(
        client.get("/api/v1/telemetry/devices/ghost/windows", headers=as_role("viewer")), 404, "ghost"
    )
    assert_error(
        client.get(
            "/api/v1/telemetry/devices/mcu-1/windows",
            params={"since": _t(T0 + 600), "until": _t(T0)},
            headers=as_role("viewer"),
        ),
        422,
        "reversed",
    )
    assert_error(client.get("/api/v1/telemetry/devices/mcu-1/windows"), 401)


# ----------------------------------------------------------------------------- drift + alerts


def test_drift_status_alerts_ack_and_resolve(client, as_role, fleet_db, app, settings) -> None:
    with app.state.session_factory() as s:
        evaluate_all(s, settings, NOW)
    r = client.get("/api/v1/drift", params={"model": "kws"}, headers=as_role("viewer"))
    assert r.status_code == 200, r.text
    status = {d["cohort"]: d for d in r.json()["items"]}
    assert status["hw:pi-zero-2w"]["status"] == "stable" and status["hw:esp32-s3"]["status"] == "significant"
    esp = status["hw:esp32-s3"]
    assert esp["alert"] and esp["max_psi"] > 0.2 and {"psi", "ks", "js"} <= set(esp["features"][0])
    r = client.get(
        "/api/v1/drift", params={"model": "kws", "status": "significant"}, headers=as_role("viewer")
    )
    assert {d["cohort"] for d in r.json()["items"]} == {"all", "hw:esp32-s3"}
    assert_error(client.get("/api/v1/drift", params={"model": "nope"}, headers=as_role("viewer")), 404)
    assert_error(
        client.get("/api/v1/drift", params={"model": "kws", "version": 9}, headers=as_role("viewer")), 404
    )

    r = client.get("/api/v1/alerts", params={"state": "open", "severity": "P2"}, headers=as_role("viewer"))
    alerts = r.json()["items"]
    assert {a["cohort"] for a in alerts} == {"all", "hw:esp32-s3"} and r.json()["total"] == 2
    assert all(a["code"] == "drift_moderate" and a["response_time"] == "4 hours" for a in alerts)
    alert_id = next(a["id"] for a in alerts if a["cohort"] == "hw:esp32-s3")

    def stored() -> list[tuple[Any, ...]]:
        with app.state.session_factory() as s:
            return [
                (a.id, a.state, a.acknowledged_by, a.note, a.resolved_at) for a in s.scalars(select(AlertRow))
            ]

    before = stored()
    assert_error(client.post(f"/api/v1/alerts/{alert_id}/ack", headers=as_role("viewer")), 403)
    assert_error(
        client.post("/api/v1/alerts/999999/ack", headers=as_role("operator")), 404, "no alert 999999"
    )
    assert_error(client.post("/api/v1/alerts/0/ack", headers=as_role("operator")), 422)
    assert_error(
        client.post(f"/api/v1/alerts/{alert_id}/ack", json={"note": "x\x00"}, headers=as_role("operator")),
        422,
    )
    assert_error(
        client.post(f"/api/v1/alerts/{alert_id}/ack", json={"nope": 1}, headers=as_role("operator")), 422
    )
    assert stored() == before

    r = client.post(f"/api/v1/alerts/{alert_id}/ack", json={"note": "looking"}, headers=as_role("operator"))
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "acknowledged" and r.json()["acknowledged_by"] == "operator-token"
    assert "looking" in r.json()["note"]
    assert_error(client.post(f"/api/v1/alerts/{alert_id}/ack", headers=as_role("operator")), 409, "already")
    # The condition persists: the next evaluation refreshes the acknowledged alert, no new row.
    with app.state.session_factory() as s:
        evaluate_all(s, settings, NOW + dt.timedelta(minutes=5))
        row = s.get(AlertRow, alert_id)
        assert row.state == "acknowledged" and row.count == 2
    r = client.post(f"/api/v1/alerts/{alert_id}/resolve", headers=as_role("operator"))
    assert r.json()["state"] == "resolved" and r.json()["resolved_at"]
    before = stored()
    assert_error(client.post(f"/api/v1/alerts/{alert_id}/resolve", headers=as_role("operator")), 409)
    assert_error(client.post(f"/api/v1/alerts/{alert_id}/ack", headers=as_role("operator")), 409, "resolved")
    assert stored() == before
    assert_error(client.get("/api/v1/alerts", params={"severity": "P9"}, headers=as_role("viewer")), 422)
    assert_error(client.get("/api/v1/alerts", params={"limit": 1000}, headers=as_role("viewer")), 422)


def test_evaluate_route_posts_to_webhook_and_lists_events(fleet_db, settings, tokens) -> None:
    with Receiver() as receiver:
        app = create_app(settings.model_copy(update={"retraining_webhook_url": receiver.url}))
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                assert_error(client.post("/api/v1/drift/evaluate", headers=bearer(tokens["viewer"])), 403)
                assert_error(
                    client.post(
                        "/api/v1/drift/evaluate", json={"model": "nope"}, headers=bearer(tokens["operator"])
                    ),
                    404,
                )
                assert_error(
                    client.post(
                        "/api/v1/drift/evaluate", json={"window_s": 5}, headers=bearer(tokens["operator"])
                    ),
                    422,
                )
                with app.state.session_factory() as s:
                    assert s.scalars(select(DriftSnapshot)).all() == []  # refused requests stored nothing
                # The telemetry is from T0; evaluate a range reaching back to it.
                window_s = int(dt.datetime.now(dt.UTC).timestamp()) - T0 + 3600
                r = client.post(
                    "/api/v1/drift/evaluate",
                    json={"model": "kws", "window_s": window_s},
                    headers=bearer(tokens["operator"]),
                )
                assert r.status_code == 200, r.text
                out = r.json()
                assert {g["cohort"]: g["status"] for g in out["groups"]}["hw:esp32-s3"] == "significant"
                assert out["deliveries"]["delivered"] == len(receiver.received) >= 2
                cohorts = {b["cohort"] for b in receiver.received}
                assert "hw:esp32-s3" in cohorts and "hw:pi-zero-2w" not in cohorts
                esp = next(b for b in receiver.received if b["cohort"] == "hw:esp32-s3")
                assert any("false-wake rate" in x for x in esp["reasons"]) and any(
                    "input drift" in x for x in esp["reasons"]
                )
                r = client.get(
                    "/api/v1/retraining-events", params={"model": "kws"}, headers=bearer(tokens["viewer"])
                )
                events = r.json()["items"]
                assert {e["delivery_state"] for e in events} == {"delivered"}
                assert {e["event_uid"] for e in events} == {b["event_id"] for b in receiver.received}
                r = client.get(
                    "/api/v1/retraining-events",
                    params={"delivery_state": "lost"},
                    headers=bearer(tokens["viewer"]),
                )
                assert_error(r, 422)
        finally:
            app.state.engine.dispose()


# ----------------------------------------------------------------------------- T*


def _decaying_release(app, settings, lam: float = 0.02, a0: float = 0.95, days: int = 10) -> list[Any]:
    """Windows whose precision decays as a0 * exp(-lam * t) since a release `days` days ago."""
    now = int(dt.datetime.now(dt.UTC).timestamp())
    created = now - days * 86_400 - 600
    with app.state.session_factory() as s:
        register_release(
            s,
            settings.artifact_dir,
            BASELINE,
            counter=5,
            created_at=dt.datetime.fromtimestamp(created, dt.UTC),
        )
        provision_devices(s, ["mcu-0"])
        fleet = Fleet(BASELINE, counter=5)
        for d in range(days):
            fps = round(1000 * (1 - a0 * math.exp(-lam * (d + 0.5))))
            fleet.add(
                ["mcu-0"],
                start_s=created + d * 86_400 + 3600,
                count=1,
                samples=10,
                positives=1000,
                false_positives=fps,
                inferences=50_000,
                first_seq=d,
            )
        windows = list(fleet.windows)
        fleet.store(s)
        s.commit()
    return windows


def test_retraining_interval_from_fitted_decay(client, as_role, app, settings) -> None:
    windows = _decaying_release(app, settings)
    r = client.get(
        "/api/v1/models/kws/retraining", params={"c": 500, "q": 100_000, "v": 0.01}, headers=as_role("viewer")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    points = [p for p in body["series"] if p["proxy"] is not None]
    assert len(points) == len(windows) == 10
    fit = fit_decay([d + 0.5 for d in range(10)], [1 - w.false_positives / w.positives for w in windows])
    assert body["fit"]["lam"] == pytest.approx(fit.lam, rel=1e-6) and body["fit"]["lam"] == pytest.approx(
        0.02, rel=0.1
    )
    assert body["t_star_days"] == pytest.approx(
        optimal_interval(500, 100_000, 0.01, fit.a0, fit.lam), rel=1e-6
    )
    assert body["half_life_days"] == pytest.approx(math.log(2) / fit.lam, rel=1e-6)
    assert body["q_source"] == "operator" and body["version"] == 5 and "T*" in body["symbols"]
    # Without C and V: the fit, no T*, and Q observed from the telemetry.
    body = client.get("/api/v1/models/kws/retraining", headers=as_role("viewer")).json()
    assert body["t_star_days"] is None and "give C and V" in body["note"] and body["q_source"] == "observed"
    end = dt.datetime.fromisoformat(body["range_end"])
    first = dt.datetime.fromisoformat(body["series"][0]["bucket_start"])
    assert body["q"] == pytest.approx(500_000 / ((end - first).total_seconds() / 86_400))


@pytest.mark.parametrize(
    "params",
    [
        {"c": 0},
        {"c": -1},
        {"q": "nan"},
        {"v": "inf"},
        {"v": "-inf"},
        {"c": "abc"},
        {"days": 0},
        {"proxy": "x"},
        {"bogus": 1},
    ],
)
def test_retraining_bad_economics(client, as_role, app, settings, params) -> None:
    with app.state.session_factory() as s:
        register_release(s, settings.artifact_dir, BASELINE)
        s.commit()
    assert_error(client.get("/api/v1/models/kws/retraining", params=params, headers=as_role("viewer")), 422)


def test_retraining_unknown_model_or_version(client, as_role, app, settings) -> None:
    assert_error(client.get("/api/v1/models/nope/retraining", headers=as_role("viewer")), 404, "nope")
    with app.state.session_factory() as s:
        register_release(s, settings.artifact_dir, BASELINE)
        s.commit()
    r = client.get("/api/v1/models/kws/retraining", params={"version": 42}, headers=as_role("viewer"))
    assert_error(r, 404, "42")
    body = client.get("/api/v1/models/kws/retraining", headers=as_role("viewer")).json()
    assert body["fit"] is None and "no fit" in body["note"]  # released, but no telemetry yet
    with app.state.session_factory() as s:
        assert s.scalars(select(RetrainingEvent)).all() == []


def test_series_extreme_timestamps_are_refused_cleanly(client, as_role) -> None:
    r = _series(client, as_role("viewer"), until="0001-01-01T00:00:00Z")
    assert_error(r, 422, "too early")
    r = _series(client, as_role("viewer"), since="0001-01-01T00:00:00Z", until="9999-12-31T00:00:00Z")
    assert_error(r, 422, "exceeds the maximum")
