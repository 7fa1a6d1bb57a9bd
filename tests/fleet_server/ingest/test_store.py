"""write_batch on SQLite and PostgreSQL: duplicates absorbed, every message stored or dead-lettered."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import cbor_window, count, provision_devices, window
from sqlalchemy import Engine, func, select

from fleet_server.db import DeadLetter, Device, DeviceEvent, OtaStatusReport, TelemetryWindow
from fleet_server.ingest.batching import Pending, Received
from fleet_server.ingest.classify import Accepted, classify
from fleet_server.ingest.store import KnownDevices, write_batch
from telemetry.codec import encode_cbor
from telemetry.schemas import Status
from telemetry.topics import status_topic, telemetry_topic

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
DEVICES = ["dev-a", "dev-b"]


def _batch(engine: Engine, messages: list[tuple[bytes | str, bytes]]) -> list[Pending]:
    known = KnownDevices(engine, refresh_s=0)
    return [Pending(Received(i + 1, 1, t, p), classify(t, p, known)) for i, (t, p) in enumerate(messages)]


def test_duplicates_absorbed_and_totals_group_by(engine: Engine) -> None:
    provision_devices(engine, DEVICES)
    msgs: list[tuple[bytes | str, bytes]] = [
        (telemetry_topic(d), cbor_window(d, s)) for d in DEVICES for s in range(20)
    ]
    first = write_batch(engine, _batch(engine, msgs), NOW)
    assert (first.stored, first.duplicates, first.dead_lettered) == (40, 0, 0)
    again = write_batch(engine, _batch(engine, msgs[:10] + msgs[:3]), NOW)  # replay, with in-batch dupes
    assert (again.stored, again.duplicates) == (0, 13)
    assert count(engine, TelemetryWindow) == 40
    # The rollout gates' per-device totals: one GROUP BY over the stage's windows.
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                TelemetryWindow.device_id,
                func.sum(TelemetryWindow.inferences),
                func.sum(TelemetryWindow.false_positives),
                func.count(),
            )
            .where(TelemetryWindow.window_start_s >= window("x", 5).window_start_s)
            .group_by(TelemetryWindow.device_id)
            .order_by(TelemetryWindow.device_id)
        ).all()
    expected = [
        (
            d,
            sum(window(d, s).inferences for s in range(5, 20)),
            sum(window(d, s).false_positives for s in range(5, 20)),
            15,
        )
        for d in DEVICES
    ]
    assert [tuple(r) for r in rows] == expected


message_strategy = st.one_of(
    st.tuples(
        st.sampled_from(
            [
                telemetry_topic("dev-a"),
                telemetry_topic("dev-b"),
                status_topic("dev-a"),
                "tinyfleet/v1/ghost/telemetry",
                "junk",
            ]
        ),
        st.binary(max_size=300),
    ),
    st.builds(
        lambda d, s: (telemetry_topic(d), cbor_window(d, s)), st.sampled_from(DEVICES), st.integers(0, 30)
    ),
    st.builds(
        lambda t: (
            status_topic("dev-b"),
            encode_cbor(
                Status(device_id="dev-b", ts=t, uptime_s=1, hardware_class="esp32-s3", agent_version="1")
            ),
        ),
        st.integers(0, 2**32 - 1),
    ),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(message_strategy, max_size=30))
def test_fuzz_every_message_ends_stored_or_dead_lettered(engine: Engine, messages: list) -> None:
    _ensure_devices(engine)
    tables = (TelemetryWindow, DeadLetter, DeviceEvent, OtaStatusReport)
    before = {t: count(engine, t) for t in tables}
    batch = _batch(engine, messages)
    result = write_batch(engine, batch, NOW)
    grown = {t: count(engine, t) - before[t] for t in tables}
    statuses = sum(
        1 for p in batch if isinstance(p.outcome, Accepted) and isinstance(p.outcome.message, Status)
    )
    assert result.dead_lettered == grown[DeadLetter]
    assert result.stored == grown[TelemetryWindow] + grown[DeviceEvent] + grown[OtaStatusReport] + statuses
    assert result.stored + result.duplicates + result.dead_lettered == len(messages)


def _ensure_devices(engine: Engine) -> None:
    with engine.connect() as conn:
        have = set(conn.execute(select(Device.id)).scalars())
    if not set(DEVICES) <= have:
        provision_devices(engine, DEVICES)


def test_message_the_database_refuses_is_isolated_and_dead_lettered(engine: Engine) -> None:
    """One window the DB refuses for good (a trigger here) must not block the other 19 of its batch."""
    import pytest
    from sqlalchemy import text

    from fleet_server.ingest.worker import BrokerAddress, IngestWorker

    if engine.dialect.name != "sqlite":
        pytest.skip("the refusing trigger is written in SQLite's dialect")
    provision_devices(engine, DEVICES)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER refuse_13 BEFORE INSERT ON telemetry_windows WHEN NEW.seq = 13 "
                "BEGIN SELECT RAISE(ABORT, 'refused by policy'); END"
            )
        )
    worker = IngestWorker(engine, BrokerAddress())  # not connected: only its write path is used
    result = worker._write(
        _batch(engine, [(telemetry_topic("dev-a"), cbor_window("dev-a", s)) for s in range(20)])
    )
    assert (result.stored, result.dead_letters) == (19, {"store_rejected": 1})
    with engine.connect() as conn:
        assert conn.execute(select(DeadLetter.reason, DeadLetter.detail)).one() == (
            "store_rejected",
            "database refused the message: IntegrityError",
        )
        assert 13 not in set(conn.execute(select(TelemetryWindow.seq)).scalars())
