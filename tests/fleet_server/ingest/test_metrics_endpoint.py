"""`tinyfleet ingest run --metrics-port`: the worker process serves its Prometheus counters (ingest rate,
dead letters by reason) — issue 5's /metrics for ingest, one endpoint per worker process."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from ingest_support import Publisher, cbor_window, provision_devices, wait_until
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
from process_harness import IngestProcess

from telemetry.topics import telemetry_topic

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(text: str, name: str, label: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + (f"{{{label}}}" if label else " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {{{label}}} not in the metrics:\n{text[:2000]}")


def test_worker_serves_ingest_counters(db_url: str, engine: Engine, broker: object, tmp_path: Path) -> None:
    dev = f"m-{uuid.uuid4().hex[:8]}"
    provision_devices(engine, [dev])
    port = _free_port()
    worker = IngestProcess(
        db_url,
        broker.host,
        broker.port,
        client_id=f"ing-{dev}",
        extra_args=["--metrics-port", str(port)],  # type: ignore[attr-defined]
    ).start()
    pub = Publisher(broker.host, broker.port, client_id=f"pub-{dev}")  # type: ignore[attr-defined]
    try:
        good = [(telemetry_topic(dev), cbor_window(dev, seq)) for seq in range(5)]
        pub.publish_all([*good, (telemetry_topic(dev), b"\xff not cbor")])
        url = f"http://127.0.0.1:{port}/metrics"

        def scraped() -> str:
            return httpx.get(url, timeout=5).text

        assert wait_until(
            lambda: _sample(scraped(), "tinyfleet_ingest_messages_total", 'outcome="stored"') >= 5, 30
        )
        text = scraped()
        assert _sample(text, "tinyfleet_ingest_messages_total", 'outcome="dead_lettered"') == 1
        assert _sample(text, "tinyfleet_ingest_dead_letters_total", 'reason="malformed"') == 1
        assert _sample(text, "tinyfleet_ingest_batches_total") >= 1
    finally:
        pub.close()
        worker.terminate()


def test_metrics_port_in_use_is_a_clear_error(db_url: str, engine: Engine, broker: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fleet_server.cli.ingest_commands",
                "ingest",
                "run",
                "--metrics-port",
                str(port),
            ],
            env={
                **__import__("os").environ,
                "TINYFLEET_DATABASE_URL": db_url,
                "TINYFLEET_MQTT_HOST": broker.host,
                "TINYFLEET_MQTT_PORT": str(broker.port),
            },  # type: ignore[attr-defined]
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2, proc.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in proc.stderr
