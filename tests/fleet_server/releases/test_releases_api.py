"""Releases over the API: create (signed manifest, files, deltas from the versions in the field), list,
show, withdraw; counters under concurrency; every refusal leaves rows and files as they were."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fleet_api_support import assert_error
from release_test_support import MODEL, PI, register_version, release_body
from sqlalchemy import update

from fleet_server.db import Device
from fleet_server.releases import service
from fleet_server.releases.keystore import Keystore
from fleet_server.settings import Settings
from ota.delta import apply_patch
from ota.trust import DeviceTrust, verify_manifest


def _create(client: TestClient, as_role, version: str, **changes: Any) -> dict[str, Any]:
    r = client.post("/api/v1/releases", json=release_body(version, **changes), headers=as_role("operator"))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_create_signs_stores_and_shows_a_release(
    client: TestClient, as_role, settings: Settings, keystore: Keystore, digits: dict[str, Path]
) -> None:
    first = _create(client, as_role, "1.0.1")
    assert (first["id"], first["counter"], first["deltas"], first["state"]) == (f"{MODEL}-1", 1, [], "active")
    v1 = (digits["1.0.1"] / "float32.tflite").read_bytes()
    assert (first["artifact_sha256"], first["artifact_length"]) == (hashlib.sha256(v1).hexdigest(), len(v1))
    # The manifest verifies on a device holding the root key, and is what the API shows.
    root = keystore.root_public_keys()
    manifest_bytes = (settings.artifact_dir / "releases" / first["id"] / "manifest.json").read_bytes()
    manifest = verify_manifest(manifest_bytes, DeviceTrust(root, PI, installed_counter=0))
    assert (manifest.counter, manifest.version, manifest.key_id) == (1, "1.0.1", first["key_id"])
    assert first["manifest"] == json.loads(manifest_bytes)
    assert first["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    names = {f["name"] for f in first["files"]}
    assert names == {"manifest", "artifact", "report", "golden"}

    # Release 2 (v2 = v1 with a fine-tuned head) gets a delta from release 1, the release it replaces.
    second = _create(client, as_role, "1.0.2")
    assert second["counter"] == 2
    (delta,) = second["deltas"]
    assert (delta["from_counter"], delta["base_sha256"]) == (1, first["artifact_sha256"])
    (decision,) = second["decisions"]
    assert decision["shipped"] and decision["patch_length"] == delta["patch_length"]
    patch_path = (
        settings.artifact_dir / "releases" / second["id"] / "patches" / f"{delta['base_sha256']}.patch"
    )
    patch = patch_path.read_bytes()
    assert hashlib.sha256(patch).hexdigest() == delta["patch_sha256"]
    v2 = (digits["1.0.2"] / "float32.tflite").read_bytes()
    rebuilt = apply_patch(
        v1,
        patch,
        base_sha256=first["artifact_sha256"],
        result_sha256=second["artifact_sha256"],
        result_length=len(v2),
    )
    assert rebuilt == v2
    assert {f["name"] for f in second["files"]} == names | {f"patch-{delta['base_sha256']}"}

    shown = client.get(f"/api/v1/releases/{second['id']}", headers=as_role("viewer"))
    assert shown.status_code == 200 and shown.json() == second
    page = client.get(
        "/api/v1/releases", params={"model": MODEL, "limit": 1}, headers=as_role("viewer")
    ).json()
    assert (page["total"], [i["id"] for i in page["items"]], page["next_offset"]) == (2, [second["id"]], 1)
    assert (
        client.get("/api/v1/releases", params={"model": "other"}, headers=as_role("viewer")).json()["total"]
        == 0
    )


def test_deltas_come_from_the_versions_devices_run(
    client: TestClient, as_role, app: FastAPI, keystore: Keystore, digits: dict[str, Path], provision
) -> None:
    r1 = _create(client, as_role, "1.0.1")
    r2 = _create(client, as_role, "1.0.2")
    # A device still on 1.0.1 and release 2 withdrawn: release 3 needs a delta from 1 (in the field) but
    # none from 2 (withdrawn, no device runs it, not the active release being replaced: release 1 is).
    provision("dev-field-1", PI)
    with app.state.session_factory() as s:
        s.execute(update(Device).values(current_model=MODEL, current_version="1.0.1"))
        s.commit()
    assert client.post(f"/api/v1/releases/{r2['id']}/withdraw", headers=as_role("admin")).status_code == 200
    r3 = _create(client, as_role, "1.0.3")
    assert {d["from_version"] for d in r3["decisions"]} == {"1.0.1"}
    # The device moves to 1.0.2: a further release considers 1.0.2 (in the field) and 1.0.3 (replaced).
    with app.state.session_factory() as s:
        s.execute(update(Device).values(current_version="1.0.2"))
        s.commit()
    register_version(app, app.state.settings, MODEL, "1.0.4", digits["1.0.1"])
    r4 = _create(client, as_role, "1.0.4")
    assert {d["from_version"] for d in r4["decisions"]} == {"1.0.2", "1.0.3"}
    assert r1["counter"] not in {d["from_counter"] for d in r4["deltas"]}


def test_withdraw(client: TestClient, as_role, keystore: Keystore, digits: dict[str, Path]) -> None:
    rel = _create(client, as_role, "1.0.1")
    assert_error(client.post(f"/api/v1/releases/{rel['id']}/withdraw", headers=as_role("operator")), 403)
    r = client.post(f"/api/v1/releases/{rel['id']}/withdraw", headers=as_role("admin"))
    assert r.status_code == 200 and r.json()["state"] == "withdrawn"
    assert_error(
        client.post(f"/api/v1/releases/{rel['id']}/withdraw", headers=as_role("admin")), 409, "already"
    )
    assert_error(client.post(f"/api/v1/releases/{MODEL}-99/withdraw", headers=as_role("admin")), 404)
    listed = client.get("/api/v1/releases", params={"state": "withdrawn"}, headers=as_role("viewer")).json()
    assert [i["id"] for i in listed["items"]] == [rel["id"]]
    # Counters never go back, even past a withdrawn release.
    assert _create(client, as_role, "1.0.2")["counter"] == 2


def test_concurrent_creates_never_share_a_counter(
    app: FastAPI,
    settings: Settings,
    keystore: Keystore,
    digits: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both creates compute the same max+1 (a barrier holds them until both did); the row insert decides
    and the loser re-signs with the next counter."""
    barrier = threading.Barrier(2, timeout=30)
    real_next = service.next_counter
    waited: set[int] = set()
    computed: list[int] = []

    def next_counter_in_lockstep(session: Any, model_name: str) -> int:
        value = real_next(session, model_name)
        computed.append(value)
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            barrier.wait()
        return value

    monkeypatch.setattr(service, "next_counter", next_counter_in_lockstep)
    results: dict[str, Any] = {}

    def create(version: str) -> None:
        try:
            with app.state.session_factory() as session:
                row = service.create_release(
                    session,
                    settings,
                    model_name=MODEL,
                    version=version,
                    variant="float32",
                    hardware_classes=[PI],
                    actor="test",
                )
                results[version] = (row.id, row.counter)
        except Exception as exc:  # surfaced by the assertion below
            results[version] = exc

    threads = [threading.Thread(target=create, args=(v,)) for v in ("1.0.1", "1.0.2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results.values()) == [(f"{MODEL}-1", 1), (f"{MODEL}-2", 2)], results
    # They did collide: both computed 1, the loser computed again (2).
    assert sorted(computed) == [1, 1, 2]
    # Each release's stored manifest carries its own counter (the loser re-signed).
    for version, (release_id, counter) in results.items():
        manifest = json.loads(
            (settings.artifact_dir / "releases" / release_id / "manifest.json").read_bytes()
        )
        assert (manifest["counter"], manifest["version"]) == (counter, version)
    leftovers = [p.name for p in (settings.artifact_dir / "releases").iterdir() if p.name.startswith(".")]
    assert leftovers == []


BAD_CREATES = [
    (release_body("9.9.9"), 404, "no version"),
    ({**release_body("1.0.1"), "model": "nosuchmodel"}, 404, "no model"),
    (release_body("1.0.1", variant="full_int8"), 422, "no 'full_int8' variant"),
    (release_body("1.0.1", hardware_classes=["esp32-s3"]), 422, "does not run float32"),
    (release_body("1.0.1", hardware_classes=["pi-9000"]), 422, "hardware"),
    (release_body("1.0.1", hardware_classes=[]), 422, "hardware_classes"),
    (release_body("1.0.1", variant="int4"), 422, "variant"),
    (release_body("1.0.1", expires_in_days=0), 422, "expires_in_days"),
    ({**release_body("1.0.1"), "counter": 7}, 422, "counter"),
    ({**release_body("1.0.1"), "model": "../../etc"}, 422, "model"),
    ({**release_body("1.0.1"), "version": "1.0.1\x00"}, 422, "version"),
]


def test_bad_create_requests_store_nothing(
    client: TestClient, as_role, keystore: Keystore, digits: dict[str, Path], store_state
) -> None:
    before = store_state()
    for body, status, fragment in BAD_CREATES:
        r = client.post("/api/v1/releases", json=body, headers=as_role("operator"))
        assert_error(r, status, fragment)
        assert store_state() == before, body


def test_flash_budget_and_not_semver_versions_are_refused(
    client: TestClient,
    as_role,
    app: FastAPI,
    settings: Settings,
    keystore: Keystore,
    oversized: Path,
    store_state,
) -> None:
    register_version(app, settings, "bigmodel", "1.0.0", oversized)
    register_version(app, settings, "bigmodel", "2", oversized)
    before = store_state()
    body = {
        "model": "bigmodel",
        "version": "1.0.0",
        "variant": "full_int8",
        "hardware_classes": ["cortex-m4f"],
    }
    assert_error(client.post("/api/v1/releases", json=body, headers=as_role("operator")), 422, "exceeds")
    # Several classes: one too small refuses the whole release.
    body["hardware_classes"] = ["esp32-s3", "cortex-m4f"]
    assert_error(client.post("/api/v1/releases", json=body, headers=as_role("operator")), 422, "cortex-m4f")
    body["version"] = "2"
    body["hardware_classes"] = ["esp32-s3"]
    assert_error(
        client.post("/api/v1/releases", json=body, headers=as_role("operator")), 422, "refused by devices"
    )
    assert store_state() == before
    # The same artifact fits an esp32-s3 slot (2 MiB): the refusal above was the budget, not the file.
    body["version"] = "1.0.0"
    r = client.post("/api/v1/releases", json=body, headers=as_role("operator"))
    assert r.status_code == 201, r.text


def test_roles_no_keys_and_device_credentials(
    client: TestClient, as_role, digits: dict[str, Path], provision, store_state
) -> None:
    from release_test_support import basic_header

    before = store_state()
    assert_error(client.post("/api/v1/releases", json=release_body("1.0.1"), headers=as_role("viewer")), 403)
    cred = provision("dev-rel-1", PI)["credential"]
    device = basic_header("dev-rel-1", cred["password"])
    assert_error(client.post("/api/v1/releases", json=release_body("1.0.1"), headers=device), 403)
    assert_error(client.get("/api/v1/releases", headers=device), 403)
    assert_error(client.post("/api/v1/releases", json=release_body("1.0.1")), 401)
    # No signing keys yet: refused with what to do, nothing stored.
    r = client.post("/api/v1/releases", json=release_body("1.0.1"), headers=as_role("operator"))
    assert_error(r, 409, "keys generate")
    assert store_state() == before
    assert_error(client.get(f"/api/v1/releases/{MODEL}-1", headers=as_role("viewer")), 404)
    assert_error(client.get("/api/v1/releases/..%2F..%2Fetc", headers=as_role("viewer")), 404)
    assert_error(client.get("/api/v1/releases", params={"limit": 0}, headers=as_role("viewer")), 422)


def test_root_key_file_damaged_is_a_clear_server_error(
    client: TestClient, as_role, settings: Settings, keystore: Keystore, digits: dict[str, Path], store_state
) -> None:
    kid = keystore.listing().current_release_key_id
    (keystore.directory / f"release-{kid}.key").write_bytes(b"not a key")
    before = store_state()
    r = client.post("/api/v1/releases", json=release_body("1.0.1"), headers=as_role("operator"))
    error = assert_error(r, 500, "cannot load signing key")
    assert error["code"] == "keystore_error"
    assert store_state() == before
