"""Generated passwd/ACL loaded by a REAL Mosquitto: devices are confined to their own subtree."""

from __future__ import annotations

import stat
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from ingest_support import Publisher, cbor_window, count, provision_devices, wait_until
from mosquitto_broker import MosquittoBroker, MqttCollector, mosquitto_available
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from fleet_server.broker_config import BrokerConfigError, write_broker_config
from fleet_server.cli.ingest_commands import broker_app
from fleet_server.db import DeadLetter, Device, TelemetryWindow, make_engine, make_session_factory
from fleet_server.ingest.config import IngestConfig
from fleet_server.ingest.worker import BrokerAddress, IngestWorker
from telemetry.topics import cmd_topic, telemetry_topic

SERVER_USER, SERVER_PW = "tinyfleet-server", "server-secret-1"


def _write(engine: Engine, out: Path) -> None:
    with make_session_factory(engine)() as s:
        write_broker_config(s, out, server_user=SERVER_USER, server_password=SERVER_PW, iterations=1000)


def _connect_reason(broker: MosquittoBroker, user: str, password: str) -> Any:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{user}", protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    got: list[Any] = []
    done = threading.Event()
    c.on_connect = lambda *a: (got.append(a[3]), done.set())
    c.connect(broker.host, broker.port)
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()
    return got[0]


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
def test_real_mosquitto_enforces_generated_acl(engine: Engine, tmp_path: Path) -> None:
    secrets = provision_devices(engine, ["dev-a", "dev-b"])
    out = tmp_path / "brokercfg"
    _write(engine, out)
    assert stat.S_IMODE((out / "passwd").stat().st_mode) == 0o600
    conf = (out / "mosquitto.conf").read_text()
    assert f"password_file {out.resolve() / 'passwd'}" in conf and "allow_anonymous false" in conf
    extra = [f"password_file {out / 'passwd'}", f"acl_file {out / 'acl'}"]
    with MosquittoBroker(tmp_path / "broker", allow_anonymous=False, extra_config=extra) as broker:
        # Wrong password and unknown users are refused; the right ones connect.
        assert _connect_reason(broker, "dev-a", "wrong").is_failure
        assert _connect_reason(broker, "ghost", secrets["dev-a"]).is_failure
        assert not _connect_reason(broker, "dev-a", secrets["dev-a"]).is_failure
        # Mosquitto 2.0 grants any SUBSCRIBE and applies the read ACL per delivered message: dev-a's
        # spy on dev-b's commands and on all telemetry must receive nothing (checked below).
        a_spy = MqttCollector(
            broker.host,
            broker.port,
            [cmd_topic("dev-b"), "tinyfleet/v1/+/telemetry"],
            client_id="dev-a-spy",
            username="dev-a",
            password=secrets["dev-a"],
        )

        worker = IngestWorker(
            engine,
            BrokerAddress(broker.host, broker.port, SERVER_USER, SERVER_PW),
            IngestConfig(client_id="ingest-acl", batch_size=10, batch_delay_s=0.05),
        )
        worker.start()
        try:
            assert worker.wait_subscribed(15)  # the server user may read all telemetry
            b_cmd = MqttCollector(
                broker.host,
                broker.port,
                [cmd_topic("dev-b")],
                client_id="dev-b",
                username="dev-b",
                password=secrets["dev-b"],
            )
            pub = Publisher(
                broker.host,
                broker.port,
                client_id="dev-a",
                username="dev-a",
                password=secrets["dev-a"],
                protocol=mqtt.MQTTv5,
            )
            pub.publish_all([(telemetry_topic("dev-a"), cbor_window("dev-a", s)) for s in range(5)])
            # dev-a impersonating dev-b, with a payload that claims dev-b too: refused by the broker.
            pub.publish_all([(telemetry_topic("dev-b"), cbor_window("dev-b", s)) for s in range(5)])
            # ...and dev-a cannot send commands (to itself or anyone).
            pub.publish_all([(cmd_topic("dev-b"), b"x")])
            assert pub.refused == 6  # MQTT 5 PUBACK "not authorized"
            pub.close()
            assert wait_until(lambda: worker.stats.acked >= 5, 15), worker.stats
            # The server user may command dev-b, and dev-b receives it.
            srv = Publisher(
                broker.host, broker.port, client_id="srv-cmd", username=SERVER_USER, password=SERVER_PW
            )
            srv.publish_all([(cmd_topic("dev-b"), b"cmd-for-b")])
            srv.close()
            assert b_cmd.wait_for(lambda msgs: len(msgs) >= 1, 10)
            assert [m.payload for m in b_cmd.snapshot()] == [b"cmd-for-b"]  # not dev-a's "x"
            b_cmd.close()
            assert a_spy.snapshot() == []  # neither dev-b's command nor anyone's telemetry
            a_spy.close()
        finally:
            worker.stop()
    with engine.connect() as conn:
        devices = set(conn.execute(select(TelemetryWindow.device_id)).scalars())
    assert devices == {"dev-a"} and count(engine, TelemetryWindow) == 5
    assert count(engine, DeadLetter) == 0  # refused at the broker, never reached ingest


def test_acl_and_passwd_content(engine: Engine, tmp_path: Path) -> None:
    provision_devices(engine, ["dev-b", "dev-a"])
    _write(engine, tmp_path)
    users = [line.split(":")[0] for line in (tmp_path / "passwd").read_text().splitlines()]
    assert users == [SERVER_USER, "dev-a", "dev-b"]
    assert all(
        line.split(":", 1)[1].startswith("$7$") for line in (tmp_path / "passwd").read_text().splitlines()
    )
    acl = (tmp_path / "acl").read_text()
    assert "pattern write tinyfleet/v1/%u/#" in acl and "pattern read tinyfleet/v1/%u/cmd" in acl
    assert f"user {SERVER_USER}\ntopic read tinyfleet/v1/+/telemetry" in acl


def test_bad_inputs_are_refused_and_write_nothing(engine: Engine, tmp_path: Path) -> None:
    provision_devices(engine, ["tinyfleet-server", "dev-a"])
    with make_session_factory(engine)() as s, pytest.raises(BrokerConfigError, match="server's MQTT user"):
        write_broker_config(s, tmp_path / "o1", server_user=SERVER_USER, server_password="x", iterations=10)
    assert not (tmp_path / "o1" / "passwd").exists()
    with make_session_factory(engine)() as s:
        with pytest.raises(BrokerConfigError, match="password is empty"):
            write_broker_config(s, tmp_path / "o2", server_user="srv", server_password="", iterations=10)
        with pytest.raises(BrokerConfigError, match="device-id rules"):
            write_broker_config(
                s, tmp_path / "o3", server_user="bad/user", server_password="x", iterations=10
            )
        s.execute(update(Device).where(Device.id == "dev-a").values(mqtt_password_hash="plain:text"))
        s.commit()
        with pytest.raises(BrokerConfigError, match="'dev-a' has no Mosquitto"):
            write_broker_config(s, tmp_path / "o4", server_user="srv", server_password="x", iterations=10)
    assert not any((tmp_path / d / "passwd").exists() for d in ("o2", "o3", "o4"))


def test_cli_broker_config(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(db_url)
    provision_devices(engine, ["dev-a"])
    engine.dispose()
    runner = CliRunner()
    monkeypatch.setenv("TINYFLEET_DATABASE_URL", db_url)
    monkeypatch.delenv("TINYFLEET_MQTT_PASSWORD", raising=False)
    r = runner.invoke(broker_app, ["--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "TINYFLEET_MQTT_PASSWORD" in r.output
    monkeypatch.setenv("TINYFLEET_MQTT_PASSWORD", "pw")
    (tmp_path / "file").write_text("x")
    r = runner.invoke(broker_app, ["--out", str(tmp_path / "file")])
    assert r.exit_code == 2 and "not a directory" in r.output
    r = runner.invoke(broker_app, ["--out", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 0, r.output
    assert '"devices": 1' in r.output and (tmp_path / "o" / "acl").exists()
    monkeypatch.setenv("TINYFLEET_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    r = runner.invoke(broker_app, ["--out", str(tmp_path / "o5")])
    assert r.exit_code == 1 and "tinyfleet server migrate" in r.output
    assert not (tmp_path / "o5").exists()


def test_cli_ingest_run_bad_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet_server.cli.ingest_commands import ingest_app

    runner = CliRunner()
    monkeypatch.setenv("TINYFLEET_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    r = runner.invoke(ingest_app, ["--group", "bad/group"])
    assert r.exit_code == 2 and "group" in r.output
    r = runner.invoke(ingest_app, ["--batch-size", "0"])
    assert r.exit_code == 2 and "batch_size" in r.output
    r = runner.invoke(ingest_app, [])
    assert r.exit_code == 1 and "tinyfleet server migrate" in r.output
