"""The agent as a real process (``python -m device_agent.main``) against the real Mosquitto.

Real parts: the digits fallback chain converted by the real pipeline (conftest), LiteRT, the simulated
board on a paced simulated clock (``--sim-speed``), paho, the system broker on 127.0.0.1:1883 or a
private one, SIGTERM. Windows are decoded with the server's codec (telemetry.codec).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from mosquitto_broker import (
    SYSTEM_BROKER,
    MosquittoBroker,
    MqttCollector,
    Received,
    free_port,
    mosquitto_available,
    port_open,
)

from telemetry.codec import decode, encode
from telemetry.schemas import MetricsWindow, Ping
from telemetry.topics import cmd_topic, device_filter, status_topic, telemetry_topic

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")

SIM_SPEED = 20  # 5 simulated s per window -> a window every 0.25 s of wall time


def write_config(path: Path, device_id: str, chain: Path, port: int, **extra: str) -> Path:
    lines = [
        f'device_id = "{device_id}"',
        'hardware_class = "pi-zero-2w"',
        f'model_dir = "{chain}"',
        'state_dir = "state"',
        *extra.get("top", "").splitlines(),
        "[broker]",
        f'url = "mqtt://127.0.0.1:{port}"',
        "keepalive_s = 5",
        "[loop]",
        "sample_period_s = 0.5",
        "window_s = 5",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def spawn(config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "device_agent.main", "--config", str(config), "--sim-speed", str(SIM_SPEED)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def terminate(proc: subprocess.Popen[str], timeout: float = 15) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"agent did not stop within {timeout} s of SIGTERM:\n{err[-3000:]}")
    return proc.returncode, err


def windows_of(msgs: list[Received], device_id: str) -> list[MetricsWindow]:
    return [decode(m.payload) for m in msgs if m.topic == telemetry_topic(device_id)]


def statuses_of(msgs: list[Received], device_id: str) -> list[dict]:
    return [cbor2.loads(m.payload) for m in msgs if m.topic == status_topic(device_id)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    """The system broker's port, or a private broker's."""
    if port_open(*SYSTEM_BROKER):
        yield SYSTEM_BROKER[1]
        return
    with MosquittoBroker(tmp_path / "broker") as b:
        yield b.port


def clear_retained(port: int, device_id: str) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"clean-{device_id}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(status_topic(device_id), b"", qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_agent_process_publishes_answers_ping_survives_bad_command_and_stops_cleanly(
    chain_dir: Path, broker: int, tmp_path: Path
) -> None:
    dev = f"ap-{uuid.uuid4().hex[:10]}"
    config = write_config(tmp_path / "dev" / "device.toml", dev, chain_dir, broker)
    col = MqttCollector("127.0.0.1", broker, [device_filter(dev)], client_id=f"col-{dev}", clean_session=True)
    proc = spawn(config)
    try:
        assert col.wait_for(lambda ms: len(windows_of(ms, dev)) >= 3, 40), "no windows arrived"
        online = [s for s in statuses_of(col.snapshot(), dev) if s.get("online")]
        assert online, "no online status"
        assert online[-1]["tensorflow_imported"] is False
        assert online[-1]["hardware_class"] == "pi-zero-2w" and online[-1]["model"]["name"].startswith(
            "digits_"
        )

        # A Ping gets a status whose reply_to is its cmd_id.
        ping = Ping(device_id=dev, cmd_id="ping-1", ts=int(time.time()))
        col.client.publish(cmd_topic(dev), encode(ping), qos=1)
        assert col.wait_for(lambda ms: any(s.get("reply_to") == "ping-1" for s in statuses_of(ms, dev)), 10)

        # A malformed command is counted; the agent keeps publishing and still answers the next ping.
        n_before = len(windows_of(col.snapshot(), dev))
        col.client.publish(cmd_topic(dev), b"\xff\x00 not a command", qos=1)
        col.client.publish(cmd_topic(dev), encode(ping.model_copy(update={"cmd_id": "ping-2"})), qos=1)
        assert col.wait_for(lambda ms: any(s.get("reply_to") == "ping-2" for s in statuses_of(ms, dev)), 10)
        reply = next(s for s in statuses_of(col.snapshot(), dev) if s.get("reply_to") == "ping-2")
        assert reply["cmd_rejected"] == 1 and reply["cmd_received"] == 3
        assert col.wait_for(lambda ms: len(windows_of(ms, dev)) >= n_before + 2, 20)
        assert proc.poll() is None, "agent died after a malformed command"

        code, err = terminate(proc)
        assert code == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        # The last status is an explicit offline one (a clean disconnect suppresses the will).
        assert col.wait_for(lambda ms: statuses_of(ms, dev)[-1].get("online") is False, 10)

        windows = windows_of(col.snapshot(), dev)
        seqs = [w.seq for w in windows]
        assert seqs == list(range(len(seqs))), f"windows lost, duplicated or out of order: {seqs}"
        assert all(w.device_id == dev and w.model.name.startswith("digits_") for w in windows)
        # Every inference the agent made is in exactly one window (the last one closed at stop).
        offline = statuses_of(col.snapshot(), dev)[-1]
        assert sum(w.inferences for w in windows) == offline["inferences"] > 0
        assert offline["windows"] == len(windows)
        # sample_period 0.5 s, window 5 s: about ten wakes per full window
        assert all(9 <= w.inferences + w.nonfinite_inputs <= 11 for w in windows[:-1]), windows
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        col.close()
        clear_retained(broker, dev)


def test_broker_down_at_start_then_agent_restart_loses_no_window(chain_dir: Path, tmp_path: Path) -> None:
    """No broker at start: windows wait on disk; SIGTERM while still offline; a restarted agent on the same
    state dir continues the window numbering and, once the broker is up, delivers everything in order."""
    port = free_port()
    dev = f"ad-{uuid.uuid4().hex[:10]}"
    config = write_config(tmp_path / "dev" / "device.toml", dev, chain_dir, port)
    proc = spawn(config)
    # Wait for windows on disk (not a fixed sleep: under load the agent's start-up alone can take seconds,
    # and a SIGTERM before its handler is installed would kill it uncleanly).
    buffer_dir = config.parent / "state" / "telemetry-buffer"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        buffer_dir.is_dir() and sum(p.stat().st_size for p in buffer_dir.iterdir() if p.is_file()) > 1000
    ):
        time.sleep(0.2)
    time.sleep(1)  # a few more windows, nobody listening
    code, err = terminate(proc)
    assert code == 0, err[-3000:]
    assert "cannot connect" in err  # one clear line about the outage

    with MosquittoBroker(tmp_path / "broker", port=port) as broker:
        col = MqttCollector(broker.host, broker.port, [device_filter(dev)], client_id=f"col-{dev}")
        proc = spawn(config)
        try:
            assert col.wait_for(lambda ms: len(windows_of(ms, dev)) >= 20, 40)
            code, err = terminate(proc)
            assert code == 0, err[-3000:]
            seqs = [w.seq for w in windows_of(col.snapshot(), dev)]
            first = sorted(set(seqs))
            assert first == list(range(len(first))), f"a window was lost or renumbered: {first}"
            assert seqs == sorted(seqs), "windows arrived out of order"
            assert len(first) >= 20
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            col.close()
