"""Manifest signatures verify with the stock OpenSSL CLI (raw Ed25519 over the canonical bytes)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ota import keys
from ota.canonical import canonical_bytes
from ota.release import ReleaseSigner, build_release

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


def _openssl_verify(
    tmp: Path, pub_pem: bytes, message: bytes, signature: bytes
) -> subprocess.CompletedProcess:
    (tmp / "pub.pem").write_bytes(pub_pem)
    (tmp / "msg.bin").write_bytes(message)
    (tmp / "sig.bin").write_bytes(signature)
    cmd = [
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "pub.pem",
        "-rawin",
        "-in",
        "msg.bin",
        "-sigfile",
        "sig.bin",
    ]
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def signed() -> tuple[ReleaseSigner, keys.Ed25519PrivateKey, dict]:
    root = keys.generate_private_key()
    signer = ReleaseSigner.certified_by(root)
    rel = build_release(
        b"\x1c\x00TFL3" + bytes(range(256)) * 40,
        model="kws",
        version="2.0.0",
        counter=7,
        hardware_classes=["pi-4"],
        variant="float32",
        signer=signer,
    )
    return signer, root, json.loads(rel.manifest_bytes)


def test_openssl_verifies_manifest_signature(tmp_path: Path, signed: tuple) -> None:
    signer, _, doc = signed
    result = _openssl_verify(
        tmp_path,
        keys.public_key_pem(signer.private_key),
        canonical_bytes(doc),
        bytes.fromhex(doc["signature"]),
    )
    assert result.returncode == 0, result.stderr
    assert "Signature Verified Successfully" in result.stdout


def test_openssl_verifies_certificate_signature_with_root_key(tmp_path: Path, signed: tuple) -> None:
    _, root, doc = signed
    cert = doc["certificate"]
    result = _openssl_verify(
        tmp_path, keys.public_key_pem(root), canonical_bytes(cert), bytes.fromhex(cert["signature"])
    )
    assert result.returncode == 0, result.stderr


def test_openssl_rejects_tampered_manifest(tmp_path: Path, signed: tuple) -> None:
    signer, _, doc = signed
    message = bytearray(canonical_bytes(doc))
    message[message.index(b'"counter":7') + 10] = ord("8")
    result = _openssl_verify(
        tmp_path, keys.public_key_pem(signer.private_key), bytes(message), bytes.fromhex(doc["signature"])
    )
    assert result.returncode != 0
    assert "Signature Verification Failure" in result.stdout + result.stderr


def test_openssl_rejects_other_key(tmp_path: Path, signed: tuple) -> None:
    _, root, doc = signed  # the root key did not sign the manifest
    result = _openssl_verify(
        tmp_path, keys.public_key_pem(root), canonical_bytes(doc), bytes.fromhex(doc["signature"])
    )
    assert result.returncode != 0
