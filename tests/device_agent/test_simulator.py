"""`tinyfleet simulate`: ten real agents (LiteRT and TFLM devices) in one process against the real Mosquitto;
a plain subscriber must receive every device's windows, each exactly as many as the device says it sent,
in order."""

from __future__ import annotations

import json
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from mosquitto_broker import SYSTEM_BROKER, MosquittoBroker, MqttCollector, mosquitto_available, port_open

from fleet_server.cli.simulate_commands import simulate_command
from telemetry.codec import decode
from telemetry.topics import events_topic, ota_topic, parse_topic, telemetry_topic

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("other")(lambda: None)
    return app


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    if port_open(*SYSTEM_BROKER):
        yield SYSTEM_BROKER[1]
        return
    with MosquittoBroker(tmp_path / "broker") as b:
        yield b.port


def _windows(messages: list[Any]) -> list[Any]:
    return [m for m in messages if parse_topic(m.topic)[1] == "telemetry"]


def test_ten_simulated_devices_deliver_every_window_in_order(
    chain_dir: Path, broker: int, tmp_path: Path
) -> None:
    prefix = f"sim{uuid.uuid4().hex[:6]}"
    n = 10
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    # The collector stands in for the ingest worker: it takes every channel a device publishes on (on
    # MQTT 5 a device keeps re-sending what no subscriber took, and would never drain otherwise).
    col = MqttCollector(
        "127.0.0.1",
        broker,
        [t for d in ids for t in (telemetry_topic(d), events_topic(d), ota_topic(d))],
        client_id=f"col-{prefix}",
        clean_session=True,
    )
    results = tmp_path / "results.json"
    try:
        out = CliRunner().invoke(
            cli(),
            [
                "simulate",
                "--devices",
                str(n),
                "--profiles",
                "pi-zero-2w,esp32-s3,cortex-m4f",
                "--broker",
                f"mqtt://127.0.0.1:{broker}",
                "--chain-dir",
                str(chain_dir),
                "--duration",
                "300",
                "--window",
                "30",
                "--sample-period",
                "1",
                "--prefix",
                prefix,
                "--workdir",
                str(tmp_path / "fleet"),
                "--results",
                str(results),
            ],
        )
        assert out.exit_code == 0, out.output
        data = json.loads(results.read_text())
        sent = {d["device_id"]: d for d in data["devices"]}
        assert sorted(sent) == ids
        expected_total = sum(d["windows_sent"] for d in sent.values())
        assert col.wait_for(lambda ms: len(_windows(ms)) >= expected_total, 20)
    finally:
        col.close()

    got: dict[str, list[int]] = defaultdict(list)
    for m in _windows(col.snapshot()):
        w = decode(m.payload)
        assert parse_topic(m.topic)[0] == w.device_id
        got[w.device_id].append(w.seq)
    for dev, d in sent.items():
        assert d["drained"] is True
        # 300 simulated s at one wake a second, a window every 30 s: ten windows, each closed and sent
        assert d["windows_sent"] == 10 and d["sim_time_s"] >= 300
        assert got[dev] == list(range(d["windows_sent"])), f"{dev}: received {got[dev]}"
        # every wake inferred (the ESP32 running "wide" may take over a second a sample: fewer wakes)
        assert d["inferences"] == d["agent"]["steps"] > 0 and d["agent"]["step_errors"] == 0
        # a Pi idles at ~100 mA: 300 s cost it a visible share; an MCU asleep at µA shows none at 3 decimals
        assert d["battery_pct"] < 100 if d["hardware_class"] == "pi-zero-2w" else d["battery_pct"] <= 100
    # The MCU class could not fit the chain's primary ("wide"): it started one level down, saying so.
    mcu = [d for d in sent.values() if d["hardware_class"] == "cortex-m4f"]
    assert mcu and all(d["fallback_level"] >= 1 and d["model"].startswith("digits_mlp") for d in mcu)
    assert all(d["fallback_level"] == 0 for d in sent.values() if d["hardware_class"] == "pi-zero-2w")
    assert data["totals"]["windows_sent"] == expected_total == sum(len(v) for v in got.values())


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--devices", "0"], "--devices"),
        (["--profiles", "pi-zero-2w,commodore-64"], "commodore-64"),
        (["--duration", "-1"], "--duration"),
        (["--sim-speed", "0"], "--sim-speed"),
        (["--prefix", "bad/prefix"], "--prefix"),
        (["--chain-dir", "/nonexistent/chain"], "--chain-dir"),
    ],
)
def test_simulate_refuses_bad_options(tmp_path: Path, chain_dir: Path, args: list[str], named: str) -> None:
    base = [
        "simulate",
        "--chain-dir",
        str(chain_dir),
        "--workdir",
        str(tmp_path / "fleet"),
        "--results",
        str(tmp_path / "r.json"),
        "--duration",
        "10",
    ]
    out = CliRunner().invoke(cli(), base + args)
    assert out.exit_code == 2, out.output
    assert named in out.output
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "fleet").exists()
