"""Device-side faults: cut off from the broker for 30 simulated minutes; a disk too full for the OTA slot;
a revoked release key. Real Mosquitto, a real ingest worker process, real HTTP downloads, real LiteRT.

(The agent SIGKILLed at random points of an OTA update: tests/device_agent/test_ota_client_power_loss.py
and tests/ota/test_power_loss.py; the disk buffer on a failing disk: tests/device_agent/test_buffer_disk.py.)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from device_fleet import DeviceFleet, FaultCounts, count_windows, provision_devices, stored_seqs, tally
from mosquitto_broker import MosquittoBroker
from process_harness import IngestProcess, wait_until
from reliability_results import record
from sqlalchemy import Engine
from tcp_proxy import TcpProxy

TESTS = Path(__file__).resolve().parents[1]
DEVICE_AGENT_TESTS = TESTS / "device_agent"
if str(DEVICE_AGENT_TESTS) not in sys.path:
    sys.path.insert(0, str(DEVICE_AGENT_TESTS))  # ota_support_loader (the OTA client tests' kit)

pytestmark = pytest.mark.slow

OFFLINE_WINDOWS = 30  # one window per simulated minute: 30 simulated minutes cut off


def test_devices_cut_off_for_30_simulated_minutes_replay_in_order(
    request: pytest.FixtureRequest,
    pg_only: str,
    engine: Engine,
    persistent_broker: MosquittoBroker,
    tmp_path: Path,
) -> None:
    """A network partition between devices and broker (the broker and the ingest worker stay up)."""
    ids = [f"off-{uuid.uuid4().hex[:6]}-{i}" for i in range(8)]
    provision_devices(engine, ids)
    b = persistent_broker
    worker = IngestProcess(pg_only, b.host, b.port, client_id=f"ing-{uuid.uuid4().hex[:8]}").start()
    with TcpProxy(b.host, b.port) as uplink:
        fleet = DeviceFleet(ids, tmp_path / "devices", uplink.host, uplink.port, period_s=0.005)
        try:
            fleet.start()
            fleet.produce(10)
            assert fleet.wait_produced(30)
            assert wait_until(lambda: count_windows(engine) == fleet.sent, 30)
            online = count_windows(engine)
            uplink.cut()
            fleet.produce(OFFLINE_WINDOWS)  # 30 simulated minutes of windows, each device offline
            assert fleet.wait_produced(60)
            pending = [d.buffer.stats().pending for d in fleet.devices]
            assert min(pending) >= OFFLINE_WINDOWS - 1, pending  # (one may sit in paho's socket buffer)
            assert count_windows(engine) == online, "nothing can arrive while cut off"
            uplink.restore()
            fleet.produce(5)
            assert fleet.wait_produced(30)
            assert fleet.wait_drained(60)
            assert wait_until(lambda: count_windows(engine) >= fleet.sent, 60)
            stats = worker.terminate()
        finally:
            fleet.close()
            if worker.alive:
                worker.kill()
    counts = record(
        tally("agent cut off from the broker (30 simulated min)", fleet.sent_by_device(), engine),
        request.node.nodeid,
        buffered_per_device=min(pending),
        refused_connects=uplink.refused,
        worker=stats,
    )
    assert counts.lost == 0 and counts.duplicates_stored == 0 and counts.stored == counts.sent
    for device_id, seqs in stored_seqs(engine).items():
        # Rows in insertion order: the replay arrived in seq order (one worker, batches in order).
        assert seqs == sorted(seqs), f"{device_id} replayed out of order"


# ------------------------------------------------------------------------------------------- OTA


@pytest.fixture(scope="module")
def ota_kit(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from ota_support_loader import ota_client_support

    s = ota_client_support()
    models = s.session_models(tmp_path_factory)
    return s, s.make_kit(models)


@pytest.fixture
def http_server(ota_kit) -> Iterator[object]:  # type: ignore[no-untyped-def]
    s, _ = ota_kit
    with s.range_server_module().RangeServer() as srv:
        srv.add_token(s.TOKEN, s.DEVICE_ID)
        yield srv


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bricked(s, flash: Path, expect: bytes) -> int:  # type: ignore[no-untyped-def]
    """0 when the slot the device boots holds ``expect`` and the real LiteRT interpreter runs it."""
    from ota.slot_state import read_copies

    if s.active_sha(flash) != _sha(expect):
        return 1
    s.run_litert(flash / f"slot_{read_copies(flash)[0].active}.bin")
    return 0


def test_ota_refuses_cleanly_when_the_slot_cannot_be_written(
    request: pytest.FixtureRequest, ota_kit: Any, http_server: Any, tmp_path: Path
) -> None:
    from ota import keys

    s, kit = ota_kit
    flash = tmp_path / "flash"
    s.provision(flash, kit.models)
    v1, v2 = s.model_bytes(kit.models, "v1"), s.model_bytes(kit.models, "v2")
    fields = s.publish(http_server, kit.release("v2", 2), name="v2", artifact=v2)
    command = tmp_path / "cmd.json"
    command.write_text(s.update_command(fields, "cmd-full").model_dump_json())
    key_file = tmp_path / "root.pem"
    keys.save_private_key(kit.root_private, key_file)
    from ota.slot_state import read_copies

    running = flash / f"slot_{read_copies(flash)[0].active}.bin"
    running_before = running.read_bytes()
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "_ota_disk_full_child.py"),
            "--support",
            str(DEVICE_AGENT_TESTS),
            "--models",
            str(kit.models),
            "--flash",
            str(flash),
            "--root-key",
            str(key_file),
            "--command",
            str(command),
            "--fsize",
            str(len(v2) // 2),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["state"] == "failed" and result["error_code"] == "io_error", result
    assert "File too large" in result["reason"] or "No space" in result["reason"], result
    bricked = _bricked(s, flash, v1)
    assert running.read_bytes() == running_before, "the running slot was never written"
    # Room again: the same device takes the next command and commits.
    client = s.make_client(flash, kit)
    assert client.resume().state == "failed"
    again = s.publish(http_server, kit.release("v2", 3), name="v2b", artifact=v2)
    assert client.handle_update(s.update_command(again, "cmd-room")).state == "committed"
    bricked += _bricked(s, flash, v2)
    record(
        FaultCounts(fault="device disk full during OTA", bricked=bricked, refused=1),
        request.node.nodeid,
        error=result["error_code"],
    )
    assert bricked == 0


def test_release_signed_with_a_revoked_key_is_refused_through_the_ota_client(
    request: pytest.FixtureRequest, ota_kit: Any, http_server: Any, tmp_path: Path
) -> None:
    from device_agent.http_download import HttpFetcher, RetryPolicy
    from device_agent.ota_client import GoldenHealthCheck, OtaClient
    from firmware_stubs.hardware_profiles import get_profile
    from ota.release import ReleaseSigner
    from ota.revocation import build_revocation_list
    from ota.slots import SlotStore
    from ota.trust import accept_revocations

    s, kit = ota_kit
    flash = tmp_path / "flash"
    s.provision(flash, kit.models)
    v1, v2 = s.model_bytes(kit.models, "v1"), s.model_bytes(kit.models, "v2")
    compromised = ReleaseSigner.certified_by(
        kit.root_private, not_before=datetime.now(UTC) - timedelta(days=1)
    )
    revocations = build_revocation_list(kit.root_private, serial=1, revoked_key_ids=[compromised.key_id])
    trust = accept_revocations(revocations, kit.device())
    profile = get_profile(s.HARDWARE_CLASS)

    def client() -> OtaClient:
        return OtaClient(
            flash,
            SlotStore(flash, capacity=profile.model_flash_budget_bytes, checkpoint_bytes=4096),
            trust,
            HttpFetcher(token=s.TOKEN, retry=RetryPolicy(attempts=2, backoff_s=0.01, timeout_s=5.0)),
            GoldenHealthCheck(profile, kit.companions),
            device_id=s.DEVICE_ID,
        )

    c = client()
    c.resume()
    bad = s.publish(http_server, kit.release("v2", 2, signer=compromised), name="bad", artifact=v2)
    rec = c.handle_update(s.update_command(bad, "cmd-revoked"))
    assert (rec.state, rec.error_code) == ("failed", "revoked_key"), rec
    assert http_server.body_bytes("/releases/bad/model.tflite") == 0, "refused before any artifact byte"
    bricked = _bricked(s, flash, v1)
    good = s.publish(http_server, kit.release("v2", 2), name="good", artifact=v2)  # the uncompromised key
    assert client().handle_update(s.update_command(good, "cmd-good")).state == "committed"
    bricked += _bricked(s, flash, v2)
    record(
        FaultCounts(fault="release signed with a revoked key", bricked=bricked, refused=1),
        request.node.nodeid,
        error=rec.error_code,
    )
    assert bricked == 0
