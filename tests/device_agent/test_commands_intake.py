"""CommandIntake without MQTT: every bad command is one counter and one log line; good ones dispatch once."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cbor2
import pytest

from device_agent.commands import COMMAND_TYPES, CommandIntake
from telemetry.codec import encode
from telemetry.schemas import Ping, Rollback, SetShadowMode

DEV = "dev-cmd-1"


def ping(cmd_id: str = "c-1", device_id: str = DEV) -> Ping:
    return Ping(device_id=device_id, cmd_id=cmd_id, ts=1_790_000_000)


@pytest.fixture
def intake() -> tuple[CommandIntake, list[Any]]:
    got: list[Any] = []
    it = CommandIntake(DEV)
    for t in COMMAND_TYPES:
        it.register(t, got.append)
    return it, got


@pytest.mark.parametrize("codec", ["json", "cbor"])
def test_valid_command_is_dispatched_once_even_if_delivered_twice(intake: Any, codec: str) -> None:
    it, got = intake
    payload = encode(Rollback(device_id=DEV, cmd_id="rb-7", ts=1, reason="canary failed"), codec)
    assert it.handle(payload) == "dispatched"
    assert it.handle(payload) == "duplicate"  # QoS 1 redelivery
    assert [c.cmd_id for c in got] == ["rb-7"]
    assert (it.counters.dispatched, it.counters.duplicate, it.counters.received) == (1, 1, 2)


BAD_CASES: list[tuple[str, bytes, str]] = [
    ("garbage bytes", b"\x00\xff\x13garbage", "malformed"),
    ("empty payload", b"", "malformed"),
    ("truncated JSON", encode(ping(), "json")[:-5], "malformed"),
    ("truncated CBOR", encode(ping(), "cbor")[:-3], "malformed"),
    ("oversized", b"{" + b" " * 5000 + b"}", "too_large"),
    ("another device", encode(ping(device_id="someone-else"), "json"), "wrong_device"),
    ("schema v2", json.dumps({**ping().model_dump(mode="json"), "v": 2}).encode(), "unsupported_version"),
    ("unknown type", json.dumps({**ping().model_dump(mode="json"), "type": "cmd.selfdestruct"}).encode(),
     "unknown_type"),
    ("missing cmd_id", cbor2.dumps({k: v for k, v in ping().model_dump(mode="json").items()
                                    if k != "cmd_id"}), "schema_violation"),
    ("shadow with fraction 0", json.dumps({**SetShadowMode(device_id=DEV, cmd_id="s", ts=1, enabled=False)
                                          .model_dump(mode="json"), "enabled": True}).encode(),
     "schema_violation"),
    ("telemetry on the cmd topic", json.dumps({"v": 1, "type": "status", "device_id": DEV, "ts": 1,
                                               "uptime_s": 1, "hardware_class": "pi4",
                                               "agent_version": "1"}).encode(), "wrong_channel"),
]


@pytest.mark.parametrize(("what", "payload", "outcome"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_commands_are_counted_logged_and_not_dispatched(
    intake: Any, caplog: pytest.LogCaptureFixture, what: str, payload: bytes, outcome: str
) -> None:
    it, got = intake
    with caplog.at_level(logging.WARNING, logger="device_agent.commands"):
        assert it.handle(payload) == outcome
    assert got == []
    assert getattr(it.counters, outcome) == 1
    assert it.counters.rejected == 1
    assert any(outcome in r.getMessage() for r in caplog.records), "one log line naming the problem"
    # ... and the intake still works afterwards
    assert it.handle(encode(ping("after-" + outcome))) == "dispatched"


def test_unregistered_type_and_crashing_handler_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    it = CommandIntake(DEV)
    assert it.handle(encode(ping("p1"))) == "no_handler"

    def boom(_: Any) -> None:
        raise RuntimeError("handler bug")

    it.register("cmd.ping", boom)
    with caplog.at_level(logging.ERROR):
        assert it.handle(encode(ping("p2"))) == "handler_error"
    assert "handler bug" in caplog.text
    assert it.handle(encode(ping("p2"))) == "duplicate", "a crashing command is not re-run on redelivery"
    assert (it.counters.no_handler, it.counters.handler_error) == (1, 1)
    with pytest.raises(ValueError, match="unknown command type"):
        it.register("cmd.nope", boom)


def test_seen_ids_survive_a_restart_and_a_corrupt_file_is_not_fatal(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    seen = tmp_path / "seen-commands.json"
    got: list[Any] = []
    it = CommandIntake(DEV, seen_path=seen)
    it.register("cmd.ping", got.append)
    assert it.handle(encode(ping("once"))) == "dispatched"

    again = CommandIntake(DEV, seen_path=seen)  # agent restarted; broker redelivers
    again.register("cmd.ping", got.append)
    assert again.handle(encode(ping("once"))) == "duplicate"
    assert len(got) == 1

    seen.write_text("{not json")
    with caplog.at_level(logging.ERROR):
        third = CommandIntake(DEV, seen_path=seen)
    assert "unreadable" in caplog.text
    third.register("cmd.ping", got.append)
    assert third.handle(encode(ping("fresh"))) == "dispatched"


def test_seen_ids_are_bounded() -> None:
    it = CommandIntake(DEV, seen_capacity=3)
    it.register("cmd.ping", lambda _: None)
    for i in range(5):
        it.handle(encode(ping(f"c{i}")))
    assert it.handle(encode(ping("c4"))) == "duplicate"
    assert it.handle(encode(ping("c0"))) == "dispatched"  # forgotten: capacity is a bound, not a leak


def test_invalid_own_device_id_is_refused() -> None:
    with pytest.raises(ValueError, match="device id"):
        CommandIntake("bad/id")
