"""Signing keys over the API: generate / rotate / revoke / list, the device trust route, file modes,
roles, and secrets that never leave the server (responses, audit log, logs)."""

from __future__ import annotations

import base64
import logging
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fleet_api_support import assert_error
from release_test_support import PI, basic_header, release_body

from fleet_server.releases.keystore import Keystore
from fleet_server.settings import Settings
from ota import keys
from ota.errors import KeyFileError, RevokedKeyError
from ota.trust import DeviceTrust, accept_revocations, verify_manifest

PASSPHRASE = "correct horse battery staple 7f3a"


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # As the shared fixture, plus a key passphrase (the secret that must never leak).
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        page_size_max=100,
        device_credential_iterations=1000,
        key_passphrase=PASSPHRASE,
    )


def _keys_dir(settings: Settings) -> Path:
    return settings.data_dir / "keys"


def test_generate_writes_encrypted_0600_keys_and_lists_public_parts(
    client: TestClient, as_role, settings: Settings
) -> None:
    r = client.post("/api/v1/keys/generate", json={}, headers=as_role("admin"))
    assert r.status_code == 201, r.text
    body = r.json()
    (root,) = body["root_keys"]
    (release,) = body["release_keys"]
    assert release["current"] and body["current_release_key_id"] == release["key_id"]
    assert keys.key_id(bytes.fromhex(root["public_key"])) == root["key_id"]
    directory = _keys_dir(settings)
    private = sorted(directory.glob("*.key"))
    assert [p.name for p in private] == sorted(
        [f"release-{release['key_id']}.key", f"root-{root['key_id']}.key"]
    )
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
        with pytest.raises(KeyFileError):
            keys.load_private_key(path)  # useless without the passphrase
        keys.load_private_key(path, PASSPHRASE.encode())
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    # The published root public key is the one on disk, in a form OpenSSL reads.
    assert keys.load_public_key(directory / f"root-{root['key_id']}.pub") == bytes.fromhex(root["public_key"])
    listed = client.get("/api/v1/keys", headers=as_role("viewer")).json()
    assert listed == body


def test_generate_again_is_refused_unless_a_new_trust_anchor_is_asked_for(
    client: TestClient, as_role, settings: Settings
) -> None:
    first = client.post("/api/v1/keys/generate", json={}, headers=as_role("admin")).json()
    index_before = (_keys_dir(settings) / "keys.json").read_bytes()
    r = client.post("/api/v1/keys/generate", json={"new_trust_anchor": False}, headers=as_role("admin"))
    assert_error(r, 409, "new_trust_anchor")
    assert (_keys_dir(settings) / "keys.json").read_bytes() == index_before
    r = client.post("/api/v1/keys/generate", json={"new_trust_anchor": True}, headers=as_role("admin"))
    assert r.status_code == 201, r.text
    assert r.json()["root_keys"][0]["key_id"] != first["root_keys"][0]["key_id"]
    # The old set is kept aside, not deleted.
    retired = [p for p in _keys_dir(settings).iterdir() if p.name.startswith("retired-")]
    assert len(retired) == 1 and (retired[0] / f"root-{first['root_keys'][0]['key_id']}.key").is_file()
    # Again within the same second: each retired set gets its own directory.
    r = client.post("/api/v1/keys/generate", json={"new_trust_anchor": True}, headers=as_role("admin"))
    assert r.status_code == 201, r.text
    assert len([p for p in _keys_dir(settings).iterdir() if p.name.startswith("retired-")]) == 2


def test_rotate_and_revoke(client: TestClient, as_role, settings: Settings, digits, provision) -> None:
    admin = as_role("admin")
    gen = client.post("/api/v1/keys/generate", json={}, headers=admin).json()
    old_key = gen["current_release_key_id"]
    root = bytes.fromhex(gen["root_keys"][0]["public_key"])
    old_release = client.post(
        "/api/v1/releases", json=release_body("1.0.1"), headers=as_role("operator")
    ).json()
    assert old_release["key_id"] == old_key

    rotated = client.post("/api/v1/keys/rotate", headers=admin)
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["key_id"]
    assert new_key != old_key and rotated.json()["current"]
    new_release = client.post(
        "/api/v1/releases", json=release_body("1.0.2"), headers=as_role("operator")
    ).json()
    assert new_release["key_id"] == new_key
    device = DeviceTrust(root_public_keys=[root], hardware_class=PI, installed_counter=0)
    manifest_1 = (settings.artifact_dir / "releases" / old_release["id"] / "manifest.json").read_bytes()
    manifest_2 = (settings.artifact_dir / "releases" / new_release["id"] / "manifest.json").read_bytes()
    verify_manifest(manifest_1, device)  # old key: still valid until revoked
    verify_manifest(manifest_2, device)  # new key: no device change needed

    # The current key cannot be revoked (rotate first); unknown and root keys are refused too.
    assert_error(client.post("/api/v1/keys/revoke", json={"key_id": new_key}, headers=admin), 409, "rotate")
    assert_error(client.post("/api/v1/keys/revoke", json={"key_id": "ab" * 32}, headers=admin), 404)
    root_id = gen["root_keys"][0]["key_id"]
    assert_error(client.post("/api/v1/keys/revoke", json={"key_id": root_id}, headers=admin), 409, "root")
    assert_error(client.post("/api/v1/keys/revoke", json={"key_id": "XYZ"}, headers=admin), 422)

    r = client.post("/api/v1/keys/revoke", json={"key_id": old_key}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["revocation"]["serial"] == 1 and r.json()["revocation"]["revoked_key_ids"] == [old_key]
    assert r.json()["withdrawn_releases"] == [old_release["id"]]
    assert (
        client.get(f"/api/v1/releases/{old_release['id']}", headers=as_role("viewer")).json()["state"]
        == "withdrawn"
    )
    assert (
        client.get(f"/api/v1/releases/{new_release['id']}", headers=as_role("viewer")).json()["state"]
        == "active"
    )
    assert_error(client.post("/api/v1/keys/revoke", json={"key_id": old_key}, headers=admin), 409, "already")

    # The device fetches the list from its trust route, verifies it with its root key, and from then on
    # refuses the old key's manifests while the new key's still install.
    cred = provision("dev-keys-1", PI)["credential"]
    trust = client.get("/api/v1/device/trust", headers=basic_header("dev-keys-1", cred["password"]))
    assert trust.status_code == 200, trust.text
    assert trust.json()["root_public_keys"] == [root.hex()] and trust.json()["revocation_serial"] == 1
    device = accept_revocations(base64.b64decode(trust.json()["revocation_list_b64"]), device)
    with pytest.raises(RevokedKeyError):
        verify_manifest(manifest_1, device)
    verify_manifest(manifest_2, device)

    # A second rotation + revocation grows the serial; the list keeps the first key.
    client.post("/api/v1/keys/rotate", headers=admin)
    r = client.post("/api/v1/keys/revoke", json={"key_id": new_key}, headers=admin)
    assert r.json()["revocation"]["serial"] == 2
    assert sorted(r.json()["revocation"]["revoked_key_ids"]) == sorted([old_key, new_key])
    trust = client.get("/api/v1/device/trust", headers=basic_header("dev-keys-1", cred["password"])).json()
    device = accept_revocations(base64.b64decode(trust["revocation_list_b64"]), device)
    assert device.revocations is not None and device.revocations.serial == 2


def test_roles_and_credentials(client: TestClient, as_role, provision) -> None:
    for role in ("viewer", "operator"):
        assert_error(client.post("/api/v1/keys/generate", json={}, headers=as_role(role)), 403)
        assert_error(client.post("/api/v1/keys/rotate", headers=as_role(role)), 403)
        assert_error(
            client.post("/api/v1/keys/revoke", json={"key_id": "ab" * 32}, headers=as_role(role)), 403
        )
    cred = provision("dev-keys-2", PI)["credential"]
    device = basic_header("dev-keys-2", cred["password"])
    assert_error(client.get("/api/v1/keys", headers=device), 403)
    assert_error(client.get("/api/v1/device/trust", headers=as_role("admin")), 403)
    assert_error(client.get("/api/v1/device/trust", headers=basic_header("dev-keys-2", "wrong")), 401)
    # No keys yet: a clear 409, for operators and devices alike.
    assert_error(client.get("/api/v1/device/trust", headers=device), 409, "keys generate")
    assert_error(client.post("/api/v1/keys/rotate", headers=as_role("admin")), 409, "keys generate")
    assert client.get("/api/v1/keys", headers=as_role("viewer")).json()["root_keys"] == []
    r = client.post("/api/v1/keys/generate", json={"force": True}, headers=as_role("admin"))
    assert_error(r, 422)  # unknown field: not silently ignored


def test_no_secret_in_responses_audit_or_logs(
    client: TestClient, as_role, settings: Settings, audit_rows, provision, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = as_role("admin")
    bodies = [client.post("/api/v1/keys/generate", json={}, headers=admin).text]
    bodies.append(client.post("/api/v1/keys/rotate", headers=admin).text)
    listing = client.get("/api/v1/keys", headers=admin).json()
    old = next(k["key_id"] for k in listing["release_keys"] if not k["current"])
    bodies.append(client.post("/api/v1/keys/revoke", json={"key_id": old}, headers=admin).text)
    bodies.append(client.get("/api/v1/keys", headers=admin).text)
    cred = provision("dev-keys-3", PI)["credential"]
    bodies.append(
        client.get("/api/v1/device/trust", headers=basic_header("dev-keys-3", cred["password"])).text
    )
    secrets = [PASSPHRASE]
    for path in _keys_dir(settings).glob("*.key"):
        key = keys.load_private_key(path, PASSPHRASE.encode())
        from cryptography.hazmat.primitives import serialization

        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        secrets += [raw.hex(), base64.b64encode(raw).decode(), path.read_text()]
    audit = " ".join(f"{e.action} {e.target} {e.details}" for e in audit_rows())
    assert "keys.generate" in audit and "keys.rotate" in audit and "keys.revoke" in audit
    haystacks = [*bodies, audit, caplog.text, (_keys_dir(settings) / "keys.json").read_text()]
    for secret in secrets:
        for hay in haystacks:
            assert secret not in hay
    # A wrong passphrase is reported without the passphrase (nor the right one) in the message.
    wrong = Settings(
        data_dir=settings.data_dir, database_url=settings.database_url, key_passphrase="nope-nope"
    )
    with pytest.raises(Exception) as info:
        Keystore(wrong).signer()
    assert "nope-nope" not in str(info.value) and PASSPHRASE not in str(info.value)
