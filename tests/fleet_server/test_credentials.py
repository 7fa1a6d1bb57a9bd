"""Device credential hashes are Mosquitto's own $7$ format: checked against the real tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from fleet_server.auth import hash_device_secret, new_secret, verify_device_secret
from fleet_server.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from mosquitto_broker import MosquittoBroker, mosquitto_available

needs_mosquitto = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")


@needs_mosquitto
def test_hash_made_by_mosquitto_passwd_verifies(tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run(
        ["mosquitto_passwd", "-b", str(pw), "dev-1", "s3cret-value"], check=True, capture_output=True
    )
    user, stored = pw.read_text().strip().split(":", 1)
    assert user == "dev-1" and stored.startswith("$7$")
    assert verify_device_secret("s3cret-value", stored)
    assert not verify_device_secret("s3cret-valuf", stored)


def _connect(port: int, user: str, password: str) -> int:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    try:
        client.connect("127.0.0.1", port, keepalive=5)
        result: list[int] = []
        client.on_connect = lambda c, u, f, rc, p: result.append(rc.value)
        deadline = 100
        while not result and deadline:
            client.loop(timeout=0.05)
            deadline -= 1
        return result[0] if result else -1
    finally:
        client.disconnect()


@needs_mosquitto
def test_real_mosquitto_accepts_our_hash_and_rejects_a_wrong_secret(tmp_path: Path) -> None:
    """A password file written straight from the devices table works on the real broker."""
    iterations = Settings().device_credential_iterations  # the production default, not the test one
    secret = new_secret()
    pw = tmp_path / "passwd"
    pw.write_text(f"dev-1:{hash_device_secret(secret, iterations=iterations)}\n")
    broker = MosquittoBroker(tmp_path / "broker", allow_anonymous=False, extra_config=[f"password_file {pw}"])
    broker.start()
    try:
        assert _connect(broker.port, "dev-1", secret) == 0
        assert _connect(broker.port, "dev-1", secret + "x") != 0
        assert _connect(broker.port, "dev-2", secret) != 0
    finally:
        broker.stop()


@pytest.mark.parametrize(
    "stored",
    ["", "plain", "$6$1$abc$def", "$7$x$AAAA$AAAA", "$7$10$not base64!$AAAA", "$7$10$AAAA"],
)
def test_malformed_stored_hashes_never_verify(stored: str) -> None:
    assert verify_device_secret("anything", stored) is False
