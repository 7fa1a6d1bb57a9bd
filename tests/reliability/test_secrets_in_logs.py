"""Secrets never reach a log: the real server process at debug level with its access log, the ingest worker
refused by the broker, `broker config`, and a device whose MQTT password is wrong.

Every secret made or used in the run (device secrets before and after rotation, API tokens, the server's
MQTT password, a wrong password) is searched for in everything the processes wrote.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from device_fleet import FaultCounts, provision_devices
from mosquitto_broker import MosquittoBroker, free_port, mosquitto_available
from process_harness import REPO, wait_until
from reliability_results import record

from device_agent.disk_buffer import BufferSettings, DiskBuffer
from device_agent.mqtt_link import MqttLink, MqttSettings
from fleet_server.db import make_engine
from fleet_server.db.migrate import upgrade_to_head

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not mosquitto_available(), reason="no mosquitto")]

CLI = [sys.executable, "-m", "fleet_server.cli.main"]


def _env(db_url: str, **extra: str) -> dict[str, str]:
    return dict(os.environ, TINYFLEET_DATABASE_URL=db_url, **extra)


def test_secrets_never_appear_in_any_log(
    request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    engine = make_engine(db_url)
    upgrade_to_head(engine)
    server_password = f"srv-{uuid.uuid4().hex}"
    wrong_password = f"wrong-{uuid.uuid4().hex}"
    secrets: list[str] = [server_password, wrong_password]
    logs: dict[str, str] = {}
    refused = 0

    made = subprocess.run(
        [*CLI, "server", "create-token", "--name", "ops", "--role", "admin", "--json"],
        env=_env(db_url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    admin = json.loads(made.stdout)["token"]
    secrets.append(admin)
    logs["create-token stderr"] = made.stderr  # (stdout is the one place the token is shown)

    # --- the API server as a real process, debug logging and access log on
    port = free_port()
    log_file = tmp_path / "server.log"
    with log_file.open("w") as out:
        server = subprocess.Popen(
            [*CLI, "server", "run", "--port", str(port), "--log-level", "debug", "--access-log"],
            env=_env(db_url),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(up, 60, every=0.2), log_file.read_text()[-2000:]
        ops = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=base, timeout=10) as http:
            dev_id = f"sec-{uuid.uuid4().hex[:6]}"
            r = http.post("/api/v1/devices", json={"id": dev_id, "hardware_class": "esp32-s3"}, headers=ops)
            assert r.status_code == 201, r.text
            first = r.json()["credential"]["password"]
            rotated = http.post(f"/api/v1/devices/{dev_id}/credential", headers=ops).json()["password"]
            viewer = http.post("/api/v1/tokens", json={"name": "v1", "role": "viewer"}, headers=ops).json()
            secrets += [first, rotated, viewer["secret"]]
            for headers in (
                {"Authorization": f"Bearer {admin}x"},
                {"Authorization": f"Bearer {first}"},
                {"Authorization": f"Bearer {viewer['secret']}"},
            ):
                status = http.post("/api/v1/tokens", json={"name": "x2", "role": "admin"}, headers=headers)
                assert status.status_code in (401, 403)
                refused += 1
            for user, pw in ((dev_id, first), (dev_id, wrong_password), (dev_id, rotated[:-2])):
                assert http.get("/api/v1/device/self", auth=(user, pw)).status_code == 401
                refused += 1
            assert http.get("/api/v1/device/self", auth=(dev_id, rotated)).status_code == 200
    finally:
        server.terminate()
        server.wait(30)
    logs["server"] = log_file.read_text()
    assert "GET /api/v1/device/self" in logs["server"], "the access log was on"

    # --- the broker with generated credentials; the ingest worker with a wrong password is refused
    devices = provision_devices(engine, ["sec-mqtt-1"])
    secrets += list(devices.values())
    conf_dir = tmp_path / "broker-conf"
    cfg = subprocess.run(
        [*CLI, "broker", "config", "--out", str(conf_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(db_url, TINYFLEET_MQTT_PASSWORD=server_password),
    )
    assert cfg.returncode == 0, cfg.stderr
    logs["broker config"] = cfg.stdout + cfg.stderr
    logs["passwd file"] = (conf_dir / "passwd").read_text()
    broker = MosquittoBroker(
        tmp_path / "broker", users={"tinyfleet-server": server_password, "sec-mqtt-1": devices["sec-mqtt-1"]}
    )
    with broker:
        ingest = subprocess.run(
            [*CLI, "ingest", "run", "--client-id", "ing-sec", "--stats-interval", "0"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(
                db_url,
                TINYFLEET_MQTT_HOST=broker.host,
                TINYFLEET_MQTT_PORT=str(broker.port),
                TINYFLEET_MQTT_USERNAME="tinyfleet-server",
                TINYFLEET_MQTT_PASSWORD=wrong_password,
            ),
        )
        assert ingest.returncode != 0 and "refused" in (ingest.stdout + ingest.stderr).lower(), ingest.stderr
        refused += 1
        logs["ingest worker"] = ingest.stdout + ingest.stderr
        # A device with a wrong password: refused, counted, and its logs (paho's too) stay clean.
        caplog.set_level(logging.DEBUG)
        buf = DiskBuffer(tmp_path / "buf", BufferSettings(fsync=False))
        settings = MqttSettings(
            device_id="sec-mqtt-1",
            port=broker.port,
            password=wrong_password,
            reconnect_min_s=0.05,
            reconnect_max_s=0.2,
        )
        link = MqttLink(settings, buf, lambda: None)  # type: ignore[arg-type,return-value]
        link.start()
        try:
            assert wait_until(lambda: link.counters.refused >= 2, 20), link.counters
        finally:
            link.stop()
            buf.close()
        refused += 1
        logs["device agent"] = caplog.text + repr(settings)
    logs["broker"] = broker.log_path.read_text()
    engine.dispose()

    leaks = [(name, s[:6] + "…") for s in secrets for name, text in logs.items() if s in text]
    record(
        FaultCounts(fault="secrets in logs", refused=refused),
        request.node.nodeid,
        secrets_checked=len(secrets),
        log_bytes=sum(len(t) for t in logs.values()),
        leaks=len(leaks),
    )
    assert leaks == []
