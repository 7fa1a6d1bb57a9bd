"""Faults under ingest load: broker restarts, an ingest worker SIGKILLed, PostgreSQL connections killed.

Real parts: a private Mosquitto with persistence, ingest workers as child processes
(``python -m fleet_server.cli.ingest_commands ingest run``), the agent's own delivery stack per device
(DiskBuffer + MqttLink, QoS 1, persistent session), SQLite and PostgreSQL. Each test counts windows
sent (queued by the devices) / stored (rows in telemetry_windows) / lost (seqs missing per device) and
asserts lost == 0 and no duplicate rows; the counts are printed as one ``RELIABILITY {json}`` line.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from device_fleet import DeviceFleet, count_windows, provision_devices, tally
from mosquitto_broker import MosquittoBroker
from process_harness import IngestProcess, pg_backends, pg_terminate_backends, wait_until
from reliability_results import record
from sqlalchemy import Engine

pytestmark = pytest.mark.slow


def _ids(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"rel-{tag}-{i:02d}" for i in range(n)]


def _settle(fleet: DeviceFleet, engine: Engine, timeout: float = 90.0) -> None:
    fleet.stop_producing()
    assert fleet.wait_drained(timeout), f"devices still hold unacknowledged windows: {fleet.link_counters()}"
    sent = fleet.sent
    wait_until(lambda: count_windows(engine) >= sent, timeout, every=0.1)


def test_broker_restarted_twice_under_ingest_load_loses_nothing(
    request: pytest.FixtureRequest,
    pg_only: str,
    engine: Engine,
    persistent_broker: MosquittoBroker,
    tmp_path: Path,
) -> None:
    ids = _ids(8)
    provision_devices(engine, ids)
    worker = IngestProcess(
        pg_only, persistent_broker.host, persistent_broker.port, client_id=f"ing-{uuid.uuid4().hex[:8]}"
    ).start()
    fleet = DeviceFleet(ids, tmp_path / "devices", persistent_broker.host, persistent_broker.port)
    try:
        fleet.start()
        fleet.produce()
        restarts = 0
        for _ in range(2):
            floor = 200 * (restarts + 1)
            assert wait_until(lambda: count_windows(engine) > 0 and fleet.sent > floor, 30)  # noqa: B023
            # every device is back on the broker before the next outage (else two outages look like one)
            assert wait_until(lambda: fleet.link_counters()["connects"] >= (restarts + 1) * len(ids), 30)  # noqa: B023
            persistent_broker.stop()  # SIGTERM: mosquitto writes its persistence file on the way out
            time.sleep(1.0)  # devices keep producing into their disk buffers meanwhile
            persistent_broker.start()
            restarts += 1
        time.sleep(0.5)
        _settle(fleet, engine, timeout=20)
        stats = worker.terminate()
    finally:
        fleet.close()
        if worker.alive:
            worker.kill()
    counts = record(
        tally("broker restarted under ingest load", fleet.sent_by_device(), engine),
        request.node.nodeid,
        restarts=restarts,
        unrouted_resent=fleet.link_counters()["unrouted"],
        worker=stats,
        links=fleet.link_counters(),
    )
    assert counts.lost == 0 and counts.duplicates_stored == 0
    assert counts.stored == counts.sent
    # Every device came back after both outages (initial connect + two reconnects), and windows published
    # before the workers' shared subscriptions were back were kept and re-sent (MQTT 5 PUBACK 0x10).
    assert fleet.link_counters()["connects"] >= 3 * len(ids), "every device saw both outages"


def test_one_of_two_ingest_workers_sigkilled_the_other_keeps_consuming(
    request: pytest.FixtureRequest,
    pg_only: str,
    engine: Engine,
    persistent_broker: MosquittoBroker,
    tmp_path: Path,
) -> None:
    """SIGKILL one of two workers of the shared subscription; the survivor keeps storing.

    Mosquitto keeps giving the dead worker's persistent session its round-robin share of new messages
    (it does not re-route them to the survivor, which MQTT 5 allows but does not require): those are
    parked in the broker, acknowledged to the devices, and delivered when a worker with the dead one's
    client id comes back -- so a supervisor must restart a killed worker under the same client id.
    The test measures what was parked, restarts the worker and asserts that then stored == sent.
    """
    ids = _ids(8)
    provision_devices(engine, ids)
    b = persistent_broker
    victim_id, survivor_id = f"ing-v-{uuid.uuid4().hex[:6]}", f"ing-s-{uuid.uuid4().hex[:6]}"
    # A long batch delay on the victim: what it received after its last full batch sits uncommitted.
    victim = IngestProcess(pg_only, b.host, b.port, client_id=victim_id, batch_size=100, batch_delay_s=30)
    survivor = IngestProcess(pg_only, b.host, b.port, client_id=survivor_id)
    fleet = DeviceFleet(ids, tmp_path / "devices", b.host, b.port)
    restarted: IngestProcess | None = None
    try:
        victim.start()
        survivor.start()
        fleet.start()
        fleet.produce()
        assert wait_until(lambda: count_windows(engine) >= 400, 60)
        victim.kill()
        at_kill = count_windows(engine)
        # The survivor alone keeps the windows flowing into the database.
        assert wait_until(lambda: count_windows(engine) >= at_kill + 400, 60), "survivor stopped consuming"
        _settle(fleet, engine, timeout=15)
        parked = fleet.sent - count_windows(engine)
        restarted = IngestProcess(pg_only, b.host, b.port, client_id=victim_id).start()
        assert wait_until(lambda: count_windows(engine) >= fleet.sent, 60), "parked windows not delivered"
        survivor_stats = survivor.terminate()
        restarted_stats = restarted.terminate()
    finally:
        fleet.close()
        for proc in (victim, survivor, restarted):
            if proc is not None and proc.alive:
                proc.kill()
    counts = record(
        tally("one of two ingest workers SIGKILLed", fleet.sent_by_device(), engine),
        request.node.nodeid,
        stored_at_kill=at_kill,
        parked_for_dead_worker=parked,
        survivor=survivor_stats,
        restarted=restarted_stats,
    )
    assert counts.lost == 0 and counts.duplicates_stored == 0 and counts.stored == counts.sent
    assert survivor_stats["stored"] > 0 and restarted_stats["received"] >= parked


def test_postgres_connections_killed_under_ingest_load_worker_retries(
    request: pytest.FixtureRequest,
    pg_only: str,
    engine: Engine,
    persistent_broker: MosquittoBroker,
    tmp_path: Path,
) -> None:
    """pg_terminate_backend on every connection of the worker, 25 times, while windows stream in.

    (CI variant: the shared PostgreSQL is not restarted; bench/reliability_long.py restarts it for real.)
    """
    ids = _ids(8)
    provision_devices(engine, ids)
    b = persistent_broker
    worker = IngestProcess(pg_only, b.host, b.port, client_id=f"ing-{uuid.uuid4().hex[:8]}").start()
    fleet = DeviceFleet(ids, tmp_path / "devices", b.host, b.port)
    killed = rounds = 0
    try:
        fleet.start()
        fleet.produce()
        assert wait_until(lambda: count_windows(engine) > 0, 30)
        while rounds < 25:
            if pg_backends(worker.application_name):
                killed += pg_terminate_backends(worker.application_name)
                rounds += 1
            time.sleep(0.05)
        _settle(fleet, engine)
        stats = worker.terminate()
    finally:
        fleet.close()
        if worker.alive:
            worker.kill()
    counts = record(
        tally("PostgreSQL connections killed under ingest load", fleet.sent_by_device(), engine),
        request.node.nodeid,
        backends_terminated=killed,
        worker=stats,
    )
    assert killed >= 25
    assert counts.lost == 0 and counts.duplicates_stored == 0 and counts.stored == counts.sent
    assert stats["acked"] >= counts.sent, "everything stored was acknowledged, nothing acked twice short"
