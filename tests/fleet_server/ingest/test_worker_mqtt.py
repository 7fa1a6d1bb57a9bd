"""The ingest worker against a real Mosquitto and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ingest_support import Publisher, cbor_window, count, provision_devices, wait_until, window
from mosquitto_broker import MosquittoBroker
from process_harness import IngestProcess
from sqlalchemy import Engine, select, text

from fleet_server.db import DeadLetter, Device, DeviceEvent, OtaStatusReport, TelemetryWindow
from fleet_server.ingest.config import IngestConfig
from fleet_server.ingest.worker import BrokerAddress, IngestWorker
from telemetry.codec import MAX_PAYLOAD_BYTES, encode_cbor, encode_json
from telemetry.schemas import ErrorEvent, OtaStatus, Status
from telemetry.topics import events_topic, ota_topic, status_topic, telemetry_topic

DEVICES = ["dev-a", "dev-b", "dev-c", "dev-d"]
REPO = Path(__file__).resolve().parents[3]


@contextmanager
def running_worker(
    engine: Engine, broker: MosquittoBroker, client_id: str, **cfg: object
) -> Iterator[IngestWorker]:
    config = IngestConfig(
        client_id=client_id, batch_size=50, batch_delay_s=0.05, retry_initial_s=0.05, retry_max_s=0.2, **cfg
    )  # type: ignore[arg-type]
    worker = IngestWorker(engine, BrokerAddress(broker.host, broker.port), config)
    worker.start()
    assert worker.wait_subscribed(15), "worker did not subscribe"
    try:
        yield worker
    finally:
        worker.stop()


def _windows(per_device: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [
        (telemetry_topic(d), cbor_window(d, s)) for s in range(start, start + per_device) for d in DEVICES
    ]


def test_windows_from_several_devices_stored_exactly_once(engine: Engine, broker: MosquittoBroker) -> None:
    provision_devices(engine, DEVICES)
    good = _windows(40)  # 160 distinct windows
    dupes = good[:25]  # redelivered / replayed by the devices
    status = Status(
        device_id="dev-b",
        ts=1_795_100_000,
        uptime_s=9,
        hardware_class="esp32-s3",
        agent_version="1.0",
        model=window("dev-b", 0, version=9).model,
        active_slot="b",
    )
    event = ErrorEvent(
        device_id="dev-c", ts=1_795_000_100, component="runtime", code="invoke_failed", message="boom"
    )
    ota = OtaStatus(
        device_id="dev-d", ts=1_795_000_200, release_id="r-1", target_version=9, state="committed"
    )
    extra = [
        (status_topic("dev-b"), encode_cbor(status)),
        (events_topic("dev-c"), encode_json(event)),
        (events_topic("dev-c"), encode_json(event)),  # exact redelivery: absorbed
        (ota_topic("dev-d"), encode_cbor(ota)),
    ]
    with running_worker(engine, broker, "ingest-t1") as worker:
        pub = Publisher(broker.host, broker.port, client_id="pub-t1")
        sent = pub.publish_all(good + dupes + extra)
        pub.close()
        assert wait_until(lambda: worker.stats.acked >= sent, 30), worker.stats
    assert count(engine, TelemetryWindow) == len(good)
    assert count(engine, DeviceEvent) == 1 and count(engine, OtaStatusReport) == 1
    assert count(engine, DeadLetter) == 0
    assert worker.stats.duplicates == len(dupes) + 1
    assert worker.metrics.value("tinyfleet_ingest_messages_total", outcome="duplicate") == len(dupes) + 1
    with engine.connect() as conn:
        seqs = conn.execute(select(TelemetryWindow.seq).where(TelemetryWindow.device_id == "dev-a")).scalars()
        assert sorted(seqs) == list(range(40))
        devs = {d.id: d for d in conn.execute(select(Device)).all()}
    assert all(devs[d].last_seen_at is not None for d in DEVICES)
    assert devs["dev-b"].current_version == "9" and devs["dev-b"].active_slot == "b"  # newest: the status
    assert devs["dev-a"].current_model == "kws-yesno" and devs["dev-a"].current_version == "7"


def test_malformed_messages_dead_lettered_and_counted_nothing_else_lost(
    engine: Engine, broker: MosquittoBroker
) -> None:
    provision_devices(engine, DEVICES)
    good = _windows(10)
    t = telemetry_topic("dev-a")
    bad = [
        (t, b"\xff\x00garbage"),  # malformed
        (t, cbor_window("dev-a", 3)[:-4]),  # truncated
        (t, cbor_window("dev-b", 99)),  # device mismatch: dev-a publishing as dev-b
        (telemetry_topic("ghost-1"), cbor_window("ghost-1", 1)),  # not provisioned
        (t, b"\xa0" * (MAX_PAYLOAD_BYTES + 100)),  # oversized
        (status_topic("dev-a"), cbor_window("dev-a", 4)),  # wrong channel
    ]
    # Interleave, so a bad message sits in the same batch as good ones.
    mixed = [m for pair in zip(good, bad + [None] * len(good), strict=False) for m in pair if m is not None]
    with running_worker(engine, broker, "ingest-t2") as worker:
        pub = Publisher(broker.host, broker.port, client_id="pub-t2")
        sent = pub.publish_all(mixed)
        pub.close()
        assert wait_until(lambda: worker.stats.acked >= sent, 30), worker.stats
    assert count(engine, TelemetryWindow) == len(good)
    with engine.connect() as conn:
        rows = conn.execute(
            select(DeadLetter.reason, DeadLetter.payload_size, DeadLetter.payload, DeadLetter.topic)
        ).all()
    reasons = sorted(r.reason for r in rows)
    assert reasons == sorted(
        ["malformed", "malformed", "device_mismatch", "unknown_device", "oversized", "wrong_channel"]
    )
    big = next(r for r in rows if r.reason == "oversized")
    assert big.payload_size == MAX_PAYLOAD_BYTES + 100 and len(big.payload) <= MAX_PAYLOAD_BYTES
    assert {r.topic for r in rows if r.reason == "unknown_device"} == {telemetry_topic("ghost-1")}
    m = worker.metrics
    assert m.value("tinyfleet_ingest_dead_letters_total", reason="malformed") == 2
    assert m.value("tinyfleet_ingest_messages_total", outcome="dead_lettered") == len(bad)
    assert m.value("tinyfleet_ingest_messages_total", outcome="stored") == len(good)


def test_two_workers_split_one_shared_subscription(engine: Engine, broker: MosquittoBroker) -> None:
    provision_devices(engine, DEVICES)
    good = _windows(60)
    with running_worker(engine, broker, "ingest-s1") as w1, running_worker(engine, broker, "ingest-s2") as w2:
        pub = Publisher(broker.host, broker.port, client_id="pub-t3")
        sent = pub.publish_all(good)
        pub.close()
        assert wait_until(lambda: w1.stats.acked + w2.stats.acked >= sent, 30), (w1.stats, w2.stats)
    assert w1.stats.received > 0 and w2.stats.received > 0  # each got a share
    assert w1.stats.acked + w2.stats.acked == sent  # and nobody got a message twice
    assert count(engine, TelemetryWindow) == len(good)


def test_database_outage_retries_without_acking(engine: Engine, broker: MosquittoBroker) -> None:
    """The windows table disappears for a while (a real DB error): nothing is acked, then all is stored."""
    provision_devices(engine, DEVICES)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE telemetry_windows RENAME TO telemetry_windows_away"))
    try:
        with running_worker(engine, broker, "ingest-t4") as worker:
            pub = Publisher(broker.host, broker.port, client_id="pub-t4")
            sent = pub.publish_all(_windows(5))
            assert wait_until(lambda: worker.stats.commit_failures >= 2, 20), worker.stats
            assert worker.stats.acked == 0 and worker.stats.stored == 0
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE telemetry_windows_away RENAME TO telemetry_windows"))
            assert wait_until(lambda: worker.stats.acked >= sent, 20), worker.stats
            pub.close()
    finally:
        with engine.begin() as conn:  # leave the schema as found if the test failed half-way
            names = conn.dialect.get_table_names(conn)
            if "telemetry_windows_away" in names:
                conn.execute(text("ALTER TABLE telemetry_windows_away RENAME TO telemetry_windows"))
    assert count(engine, TelemetryWindow) == sent
    assert worker.metrics.value("tinyfleet_ingest_commit_failures_total") >= 2


def test_worker_killed_mid_stream_loses_nothing(db_url: str, engine: Engine, broker: MosquittoBroker) -> None:
    """SIGKILL a worker process holding an uncommitted batch; the restarted one gets the unacked messages."""
    provision_devices(engine, DEVICES)
    # A long batch delay: what the child receives after its last full batch sits uncommitted.
    child = IngestProcess(
        db_url, broker.host, broker.port, client_id="ingest-k1", batch_size=100, batch_delay_s=30.0
    ).start()
    pub = Publisher(broker.host, broker.port, client_id="pub-t5")
    first = pub.publish_all(_windows(30))  # 120: one batch of 100 committed, 20 pending
    assert wait_until(lambda: count(engine, TelemetryWindow) >= 100, 60)
    child.kill()  # SIGKILL
    stored_at_kill = count(engine, TelemetryWindow)
    assert stored_at_kill < first  # the kill really hit uncommitted messages
    # Meanwhile the devices keep publishing; the broker queues for the dead worker's session.
    second = pub.publish_all(_windows(10, start=30))
    pub.close()
    # The restarted worker (same client id -> same session) gets every unacked / queued message.
    with running_worker(engine, broker, "ingest-k1") as worker:
        assert wait_until(lambda: count(engine, TelemetryWindow) >= first + second, 30), worker.stats
    assert count(engine, TelemetryWindow) == first + second  # lost = 0, no duplicates stored
