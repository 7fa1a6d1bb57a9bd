"""The proof: the real device OTA client installs release 1, then release 2 through its delta, from the
real API served by uvicorn, with the device's Basic credential and the root key from /api/v1/device/trust.

Also: a download cut mid-way by a TCP proxy resumes with a Range request to the right sha256.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from release_test_support import MODEL, PI, CuttingProxy, release_body

from device_agent.http_download import HttpFetcher, RetryPolicy
from device_agent.ota_client import GoldenHealthCheck, OtaClient
from firmware_stubs.hardware_profiles import get_profile
from fleet_server.db import Release
from fleet_server.releases.commands import update_available
from fleet_server.releases.keystore import Keystore
from ota.slots import SlotStore
from ota.trust import DeviceTrust
from telemetry.device_codec import OtaStatus

DEVICE = "dev-e2e-1"


def _fetcher(device_id: str, secret: str) -> HttpFetcher:
    return HttpFetcher(
        credentials=(device_id, secret),
        retry=RetryPolicy(attempts=4, backoff_s=0.01, timeout_s=10.0),
        chunk_size=4096,
    )


def _release(app: FastAPI, release_id: str) -> Release:
    with app.state.session_factory() as s:
        row = s.get(Release, release_id)
        assert row is not None
        _ = row.deltas  # loaded while the session is open
        return row


@pytest.mark.slow
def test_device_installs_release_1_then_2_via_delta(
    app: FastAPI,
    client: TestClient,
    as_role,
    served: str,
    keystore: Keystore,
    digits: dict[str, Path],
    provision,
    tmp_path: Path,
) -> None:
    import json

    r1 = client.post("/api/v1/releases", json=release_body("1.0.1"), headers=as_role("operator")).json()
    r2 = client.post("/api/v1/releases", json=release_body("1.0.2"), headers=as_role("operator")).json()
    assert r2["deltas"][0]["from_counter"] == 1
    secret = provision(DEVICE, PI)["credential"]["password"]
    fetcher = _fetcher(DEVICE, secret)

    # The device learns its trust anchor from the server (bootstrap on a trusted network).
    trust_doc = json.loads(fetcher.fetch(f"{served}/api/v1/device/trust", max_bytes=64 * 1024))
    roots = [bytes.fromhex(k) for k in trust_doc["root_public_keys"]]
    assert roots == keystore.root_public_keys()

    # Factory state: v3's bytes at counter 0 (release 1 has no delta from it: a full download).
    profile = get_profile(PI)
    flash = tmp_path / "flash"
    SlotStore(flash, capacity=profile.model_flash_budget_bytes, checkpoint_bytes=4096).provision(
        (digits["1.0.3"] / "float32.tflite").read_bytes(), counter=0
    )
    companions_dir = tmp_path / "companions"

    def companions(manifest: Any) -> Path | None:
        """The health check's report + golden inputs, fetched from the release's own download routes."""
        directory = companions_dir / str(manifest.counter)
        directory.mkdir(parents=True, exist_ok=True)
        base = f"{served}/api/v1/device/releases/{manifest.model}-{manifest.counter}"
        (directory / "report.json").write_bytes(fetcher.fetch(f"{base}/report", max_bytes=1 << 20))
        (directory / "golden.npz").write_bytes(fetcher.fetch(f"{base}/golden", max_bytes=8 << 20))
        return directory

    reports: list[Any] = []
    trust = DeviceTrust(root_public_keys=roots, hardware_class=PI, installed_counter=0)
    store = SlotStore(flash, capacity=profile.model_flash_budget_bytes, checkpoint_bytes=4096)
    client_ = OtaClient(
        flash,
        store,
        trust,
        fetcher,
        GoldenHealthCheck(profile, companions),
        device_id=DEVICE,
        sink=reports.append,
    )
    client_.resume()
    now = int(datetime.now(UTC).timestamp())

    cmd1 = update_available(
        _release(app, r1["id"]),
        from_counter=0,
        base_url=served,
        cmd_id="c-1",
        issued_at=now,
        device_id=DEVICE,
    )
    assert cmd1.delta is None
    before = fetcher.bytes_received
    record = client_.handle_update(cmd1)
    assert record.state == "committed", (record.state, record.error_code, record.reason)
    assert record.kind == "full"
    assert store.active_image().sha256 == r1["artifact_sha256"] and store.active_image().counter == 1
    full_bytes = fetcher.bytes_received - before

    cmd2 = update_available(
        _release(app, r2["id"]),
        from_counter=1,
        base_url=served,
        cmd_id="c-2",
        issued_at=now,
        device_id=DEVICE,
    )
    assert cmd2.delta is not None and cmd2.delta.from_version == 1
    before = fetcher.bytes_received
    record = client_.handle_update(cmd2)
    assert record.state == "committed", (record.state, record.error_code, record.reason)
    assert record.kind == "delta"
    active = store.active_image()
    assert (active.sha256, active.counter) == (r2["artifact_sha256"], 2)
    v2 = (digits["1.0.2"] / "float32.tflite").read_bytes()
    assert (
        hashlib.sha256((flash / f"slot_{store.state.active}.bin").read_bytes()[: len(v2)]).hexdigest()
        == (r2["artifact_sha256"])
    )
    # The delta path moved the patch (plus manifest and companions), far less than the full artifact.
    assert fetcher.bytes_received - before < full_bytes
    statuses = [m for m in reports if isinstance(m, OtaStatus) and m.release_id == r2["id"]]
    assert statuses and statuses[-1].state == "committed" and statuses[-1].via_delta
    assert MODEL in r2["id"]


def test_an_interrupted_download_resumes_with_range_to_the_right_hash(
    client: TestClient, as_role, served: str, keystore: Keystore, digits: dict[str, Path], provision
) -> None:
    rel = client.post("/api/v1/releases", json=release_body("1.0.2"), headers=as_role("operator")).json()
    secret = provision(DEVICE, PI)["credential"]["password"]
    port = int(served.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cut_after=15_000, cuts=2)  # headers + ~15 kB, twice
    try:
        fetcher = _fetcher(DEVICE, secret)
        url = f"{proxy.url}/api/v1/device/releases/{rel['id']}/artifact"
        data = b"".join(fetcher.source(url)(0))
    finally:
        proxy.close()
    assert hashlib.sha256(data).hexdigest() == rel["artifact_sha256"] and len(data) == rel["artifact_length"]
    ranges = [
        line.split(":", 1)[1].strip()
        for head in proxy.request_heads
        for line in head.split("\r\n")
        if line.lower().startswith("range:")
    ]
    # Three requests: from 0, then from where each cut connection stopped (strictly growing offsets).
    assert len(proxy.request_heads) == 3 and len(ranges) == 3
    offsets = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges]
    assert offsets[0] == 0 and 0 < offsets[1] < offsets[2] < rel["artifact_length"]
    assert all("Authorization: Basic " in head for head in proxy.request_heads)
