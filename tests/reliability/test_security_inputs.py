"""Hostile input: injection strings in API parameters and in telemetry fields, wrong device credentials.

Each attempt must be refused (4xx JSON error, or a filter that matches nothing), be in the audit log when
it is a mutation that passed the API, and change nothing stored. Telemetry with hostile fields goes to
the dead letters, never into telemetry_windows, and never touches the device row.
Both database backends (the ``db_url`` fixtures of tests/fleet_server/conftest.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cbor2
import pytest
from device_fleet import FaultCounts, count_windows, metrics_window, provision_devices
from fastapi.testclient import TestClient
from mosquitto_broker import MosquittoBroker, mosquitto_available
from process_harness import wait_until
from reliability_results import record
from sqlalchemy import Engine, select

from fleet_server.db import DeadLetter, Device
from fleet_server.ingest.config import IngestConfig
from fleet_server.ingest.worker import BrokerAddress, IngestWorker
from telemetry.codec import encode_cbor, encode_json
from telemetry.topics import telemetry_topic

INJECTIONS = [
    "x' OR '1'='1",
    "1; DROP TABLE devices;--",
    "base-1' --",
    "../../../../etc/passwd",
    "..\\..\\windows\\system32",
    '{"$gt": ""}',
    '"}, "role": "admin", "x": {"',
    "<script>alert(1)</script>",
    "%00",
    "a\x00b",
    "\u202e\u0000\ufeff",
    "x" * 5000,
]


def _json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@pytest.fixture
def seeded(provision: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return provision("base-1", "esp32-s3", site="lab")


def test_injection_strings_in_api_parameters_are_refused_and_change_nothing(
    request: pytest.FixtureRequest,
    db_url: str,
    client: TestClient,
    as_role: Callable[[str], dict[str, str]],
    seeded: dict[str, Any],
    snapshot: Callable[[], dict[str, list[dict[str, Any]]]],
    audit_rows: Callable[[], list[Any]],
) -> None:
    before = snapshot()
    audited_before = len(audit_rows())
    admin = as_role("admin")
    refused = mutations = 0
    unaudited: list[tuple[str, str, bool]] = []
    for evil in INJECTIONS:
        seg = quote(evil, safe="")
        attempts: list[tuple[str, str, Any]] = [
            ("GET", f"/api/v1/devices/{seg}", None),
            ("PATCH", f"/api/v1/devices/{seg}", {"tags": {"site": "x"}}),
            ("PATCH", "/api/v1/devices/base-1", {"tags": {evil: "x"}}),
            ("POST", "/api/v1/devices", {"id": evil, "hardware_class": "pi-4"}),
            ("POST", "/api/v1/devices", {"id": "inj-1", "hardware_class": evil}),
            ("POST", f"/api/v1/devices/{seg}/credential", None),
            ("DELETE", f"/api/v1/devices/{seg}", None),
            ("POST", "/api/v1/tokens", {"name": evil, "role": "admin' OR '1'='1"}),
            ("GET", f"/api/v1/devices?tag={quote('site=' + evil, safe='')}", None),
            ("GET", f"/api/v1/devices?tag={seg}", None),
            ("GET", f"/api/v1/devices?limit={seg}", None),
            ("GET", f"/api/v1/devices?offset={seg}", None),
            ("GET", f"/api/v1/audit?actor={seg}&target={seg}", None),
            ("GET", f"/api/v1/audit?since={seg}", None),
        ]
        for method, url, body in attempts:
            seen = len(audit_rows())
            r = client.request(method, url, json=body, headers=admin)
            assert r.status_code < 500, (method, url, r.status_code, r.text[:300])
            payload = _json_or_none(r)
            assert payload is not None, f"{method} {url}: not JSON"
            if r.status_code >= 400:
                refused += 1
                assert set(payload) == {"error"} and payload["error"]["message"], payload
            else:
                # Only a read may succeed, and only as an inert filter: nothing matched, nothing leaked.
                assert method == "GET", (method, url, r.status_code)
                assert payload.get("items") == [] or payload.get("total") == 0, (url, payload)
            if method != "GET":
                mutations += 1
                # The audit writer commits off-thread: give it a moment for this request's row.
                if not wait_until(lambda: len(audit_rows()) > seen, 1.0):  # noqa: B023
                    unaudited.append((method, url[:60], "\x00" in evil or "%00" in evil))
    assert snapshot() == before, "an injection attempt changed stored rows"
    # A tag *value* is free text: an injection string there is data, stored verbatim and inert.
    for evil in INJECTIONS:
        r = client.patch("/api/v1/devices/base-1", json={"tags": {"site": evil}}, headers=admin)
        if r.status_code == 200:
            got = client.get("/api/v1/devices/base-1", headers=admin).json()["tags"]["site"]
            assert got == evil, "stored verbatim"
        else:
            assert 400 <= r.status_code < 500 and set(r.json()) == {"error"}, r.text
            refused += 1
    assert client.patch("/api/v1/devices/base-1", json={"tags": {"site": "lab"}}, headers=admin).is_success
    after = snapshot()
    for rows in (before, after):
        for row in rows["devices"]:
            row.pop("updated_at", None)
    assert after == before, "only base-1's tag was touched, and it is back"
    assert len(client.get("/api/v1/devices", headers=admin).json()["items"]) == 1  # the table is intact
    ok = [a for a in audit_rows()[audited_before:] if a.outcome == "ok"]
    assert {a.action for a in ok} <= {"device.update_tags"}, "only the verbatim tag-value updates succeeded"
    record(
        FaultCounts(fault="injection strings in API parameters", refused=refused),
        request.node.nodeid,
        attempts=len(INJECTIONS) * 14,
        refused_mutations=mutations,
        not_audited=len(unaudited),
    )
    assert unaudited == [], f"refused mutations missing from the audit log: {unaudited}"


def test_wrong_device_credential_over_http_is_refused_and_audited(
    client: TestClient,
    seeded: dict[str, Any],
    snapshot: Callable[[], dict[str, list[dict[str, Any]]]],
    audit_rows: Callable[[], list[Any]],
) -> None:
    from fleet_api_support import basic

    secret = seeded["credential"]["password"]
    before = snapshot()
    ok = client.get("/api/v1/device/self", headers=basic("base-1", secret))
    assert ok.status_code == 200, ok.text
    for user, password in [
        ("base-1", secret[:-1] + "x"),
        ("base-1", ""),
        ("other-dev", secret),
        ("base-1' OR '1'='1", secret),
    ]:
        r = client.get("/api/v1/device/self", headers=basic(user, password))
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"]
    assert snapshot() == before
    denied = [a for a in audit_rows() if a.status_code == 401]
    assert denied and secret not in str([(a.actor, a.details) for a in denied])


# ----------------------------------------------------------------------------------- telemetry fields


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    with MosquittoBroker(tmp_path / "broker") as b:
        yield b


def _cbor_with_model_name(device_id: str, seq: int, name: Any) -> bytes:
    # The compact CBOR layout is an array; element "model" is [name, version, variant_code].
    doc = cbor2.loads(encode_cbor(metrics_window(device_id, seq)))
    for i, item in enumerate(doc):
        if isinstance(item, list) and len(item) == 3 and item[0] == "kws-yesno":
            doc[i] = [name, *item[1:]]
            return bytes(cbor2.dumps(doc))
    raise AssertionError("model element not found in the CBOR window")


def _json_with(dev: str, n: int, changes: dict[str, Any]) -> bytes:
    doc = json.loads(encode_json(metrics_window(dev, n)))
    for key, value in changes.items():
        if key == "model_name":
            doc["model"]["name"] = value
        else:
            doc[key] = value
    return json.dumps(doc).encode()


HOSTILE_NAMES = [
    "kws'; DROP TABLE telemetry_windows;--",
    'kws"quoted"',
    "kws\x00nul",
    "k" * 10_000,
    "../../etc/passwd",
    "kws\u202e",
]


def test_hostile_telemetry_fields_are_dead_lettered_not_stored(
    request: pytest.FixtureRequest, engine: Engine, broker: MosquittoBroker
) -> None:
    import paho.mqtt.client as mqtt

    good_dev, evil_dev = f"good-{uuid.uuid4().hex[:6]}", f"evil-{uuid.uuid4().hex[:6]}"
    provision_devices(engine, [good_dev, evil_dev])
    with engine.connect() as conn:
        evil_row_before = conn.execute(select(Device).where(Device.id == evil_dev)).one()._asdict()
    t = telemetry_topic(evil_dev)
    hostile: list[tuple[str, bytes]] = []
    for i, name in enumerate(HOSTILE_NAMES):
        hostile.append((t, _cbor_with_model_name(evil_dev, i, name)))
        hostile.append((t, _json_with(evil_dev, 100 + i, {"model_name": name})))
    hostile += [
        (t, _json_with(evil_dev, 200, {"device_id": f"{evil_dev}' OR '1'='1"})),
        (t, _json_with(evil_dev, 201, {"seq": "1 OR 1=1"})),
        (t, _json_with(evil_dev, 202, {"input_hist": ["' OR 1=1"] * 10})),
        (t, _json_with(evil_dev, 204, {"seq": -1})),
        (t, _json_with(evil_dev, 205, {"seq": 2**80})),
    ]
    good = [(telemetry_topic(good_dev), encode_cbor(metrics_window(good_dev, s))) for s in range(20)]
    config = IngestConfig(client_id=f"ing-{uuid.uuid4().hex[:6]}", batch_size=20, batch_delay_s=0.05)
    worker = IngestWorker(engine, BrokerAddress(broker.host, broker.port), config)
    worker.start()
    assert worker.wait_subscribed(15)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        mixed = [m for pair in zip(good, hostile + [None] * len(good), strict=False) for m in pair if m]
        for topic, payload in mixed:
            pub.publish(topic, payload, qos=1).wait_for_publish(10)
        assert wait_until(lambda: worker.stats.acked >= len(mixed), 30), worker.stats
    finally:
        pub.disconnect()
        pub.loop_stop()
        worker.stop()
    assert count_windows(engine) == len(good), "only the good device's windows are stored"
    with engine.connect() as conn:
        dead = conn.execute(select(DeadLetter.reason, DeadLetter.topic)).all()
        evil_row_after = conn.execute(select(Device).where(Device.id == evil_dev)).one()._asdict()
    assert len(dead) == len(hostile) and {d.topic for d in dead} == {t}
    assert evil_row_after == evil_row_before, "a dead-lettered message must not touch the device row"
    record(
        FaultCounts(
            fault="hostile telemetry fields", sent=len(mixed), stored=count_windows(engine), refused=len(dead)
        ),
        request.node.nodeid,
        reasons=sorted({d.reason for d in dead}),
    )
