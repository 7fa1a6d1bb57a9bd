"""The agent's revocation-list refresh (device_agent/trust_refresh.py) against the real server's trust route:
a key revoked on the server reaches the device before its next update, verified with the device's own root;
forged, foreign-root, older and malformed documents are refused and nothing held or persisted changes."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from release_test_support import PI

from device_agent.http_download import HttpFetcher, RetryPolicy
from device_agent.trust_refresh import TrustRefreshError, load_persisted, refresh, revocations_path
from ota import keys
from ota.trust import DeviceTrust

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
from http_range_server import RangeServer

DEVICE = "dev-rl-1"


def _fetcher(secret: str | None = None) -> HttpFetcher:
    return HttpFetcher(
        credentials=(DEVICE, secret) if secret else None,
        retry=RetryPolicy(attempts=2, backoff_s=0.01, timeout_s=10.0),
    )


def _revoke_one(client: TestClient, as_role: Any) -> tuple[bytes, str]:
    admin = as_role("admin")
    gen = client.post("/api/v1/keys/generate", json={}, headers=admin).json()
    old_key = gen["current_release_key_id"]
    assert client.post("/api/v1/keys/rotate", headers=admin).status_code == 200
    assert client.post("/api/v1/keys/revoke", json={"key_id": old_key}, headers=admin).status_code == 200
    return bytes.fromhex(gen["root_keys"][0]["public_key"]), old_key


def test_revocation_reaches_the_device_verified_and_persisted(
    client: TestClient, as_role: Any, served: str, provision: Any, tmp_path: Path
) -> None:
    root, revoked = _revoke_one(client, as_role)
    secret = provision(DEVICE, PI)["credential"]["password"]
    device = DeviceTrust(root_public_keys=[root], hardware_class=PI, installed_counter=0)
    url = f"{served}/api/v1/device/trust"

    updated = refresh(device, url=url, transport=_fetcher(secret), state_dir=tmp_path)
    assert updated.revocations is not None and updated.revocations.serial == 1
    assert updated.revocations.is_revoked(revoked)
    persisted = revocations_path(tmp_path).read_bytes()
    # After a restart the persisted list is verified again and used.
    assert load_persisted(tmp_path, device).revocations == updated.revocations
    # The same list again: nothing to do, nothing rewritten.
    assert refresh(updated, url=url, transport=_fetcher(secret), state_dir=tmp_path) is updated
    assert revocations_path(tmp_path).read_bytes() == persisted

    # A wrong device credential: refused by the server, the held list stays.
    with pytest.raises(TrustRefreshError):
        refresh(updated, url=url, transport=_fetcher("wrong-secret"), state_dir=tmp_path)
    assert revocations_path(tmp_path).read_bytes() == persisted


def _doc(revocation: bytes | str | None) -> bytes:
    encoded = base64.b64encode(revocation).decode() if isinstance(revocation, bytes) else revocation
    return json.dumps({"root_public_keys": [], "root_key_ids": [], "revocation_serial": 1,
                       "revocation_list_b64": encoded}).encode()  # fmt: skip


def test_forged_foreign_older_and_malformed_documents_are_refused(
    client: TestClient, as_role: Any, served: str, provision: Any, tmp_path: Path
) -> None:
    root, _ = _revoke_one(client, as_role)
    secret = provision(DEVICE, PI)["credential"]["password"]
    device = DeviceTrust(root_public_keys=[root], hardware_class=PI, installed_counter=0)
    good = refresh(
        device, url=f"{served}/api/v1/device/trust", transport=_fetcher(secret), state_dir=tmp_path
    )
    assert good.revocations is not None
    genuine = revocations_path(tmp_path).read_bytes()
    doc = json.loads(genuine)
    forged = dict(doc, revoked_key_ids=[])  # "un-revoke" the key, signature left as it was
    stranger = keys.generate_private_key()
    foreign_root = DeviceTrust(
        root_public_keys=[keys.raw_public_key(stranger)], hardware_class=PI, installed_counter=0
    )

    with RangeServer() as fake:
        cases: list[tuple[str, bytes, DeviceTrust]] = [
            ("forged", _doc(json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()), good),
            ("foreign root", _doc(genuine), foreign_root),
            ("not base64", _doc("%%%"), good),
            ("not json", b"<html>", good),
            ("not a list", _doc(b"[1, 2]"), good),
        ]
        for name, body, held in cases:
            url = fake.put(f"/{name.replace(' ', '-')}", body)
            with pytest.raises(TrustRefreshError):
                refresh(held, url=url, transport=_fetcher(), state_dir=tmp_path)
            assert revocations_path(tmp_path).read_bytes() == genuine, name
        # A server without a list yet: nothing changes.
        url = fake.put("/none", _doc(None))
        assert refresh(good, url=url, transport=_fetcher(), state_dir=tmp_path) is good
    # A tampered file on disk is refused at start (the device then holds no list until the next refresh).
    revocations_path(tmp_path).write_bytes(genuine.replace(b'"serial":1', b'"serial":9'))
    assert load_persisted(tmp_path, device).revocations is None
