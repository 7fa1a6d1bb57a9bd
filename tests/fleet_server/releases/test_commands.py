"""fleet_server.releases.commands.update_available: the cmd.update a rollout sends for a release."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.testclient import TestClient
from release_test_support import PI, basic_header, release_body

from fleet_server.db import Release
from fleet_server.releases.commands import UNADDRESSED, update_available
from fleet_server.releases.keystore import Keystore
from fleet_server.settings import Settings
from telemetry.codec import decode, encode


def _row(app: FastAPI, release_id: str) -> Release:
    with app.state.session_factory() as s:
        row = s.get(Release, release_id)
        assert row is not None
        _ = row.deltas
        return row


def test_update_available_points_at_the_download_routes(
    app: FastAPI,
    client: TestClient,
    as_role,
    settings: Settings,
    keystore: Keystore,
    digits: dict[str, Path],
    provision,
) -> None:
    r1 = client.post("/api/v1/releases", json=release_body("1.0.1"), headers=as_role("operator")).json()
    r2 = client.post("/api/v1/releases", json=release_body("1.0.2"), headers=as_role("operator")).json()
    row = _row(app, r2["id"])
    base = "https://fleet.example:8443/"
    cmd = update_available(row, from_counter=1, base_url=base, cmd_id="cmd-1", issued_at=1_700_000_000)
    assert (cmd.device_id, cmd.release_id, cmd.target_version, cmd.model_name) == (
        UNADDRESSED,
        r2["id"],
        2,
        "digits",
    )
    assert cmd.hardware_class == PI and cmd.ts == 1_700_000_000
    assert cmd.manifest.url == f"https://fleet.example:8443/api/v1/device/releases/{r2['id']}/manifest"
    assert (cmd.artifact.sha256, cmd.artifact.size_bytes) == (r2["artifact_sha256"], r2["artifact_length"])
    assert cmd.delta is not None and cmd.delta.from_version == 1
    assert cmd.delta.url.endswith(f"/patch-{r1['artifact_sha256']}")
    assert cmd.report is None and cmd.golden is None  # companions only with the artifact store at hand
    # No patch from that counter (or none given): no delta; the device downloads the full artifact.
    assert update_available(row, from_counter=7, base_url=base, cmd_id="c", issued_at=1).delta is None
    assert update_available(row, from_counter=None, base_url=base, cmd_id="c", issued_at=1).delta is None

    # Addressed, with companions; it survives the wire codec; every URL serves bytes with the given hash.
    secret = provision("dev-cmd-1", PI)["credential"]["password"]
    full = update_available(
        row,
        from_counter=1,
        base_url="http://testserver",
        cmd_id="cmd-2",
        issued_at=1_700_000_000,
        device_id="dev-cmd-1",
        artifact_dir=settings.artifact_dir,
    )
    assert decode(encode(full)) == full
    refs = [full.manifest, full.artifact, full.delta, full.report, full.golden]
    for ref in refs:
        assert ref is not None
        got = client.get(urlsplit(ref.url).path, headers=basic_header("dev-cmd-1", secret))
        assert got.status_code == 200, (ref.url, got.text)
        assert hashlib.sha256(got.content).hexdigest() == ref.sha256 and len(got.content) == ref.size_bytes
