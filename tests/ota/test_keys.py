"""Key files: round trips, permissions, passphrases, and every way a key file can be wrong."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ota import keys
from ota.errors import KeyFileError


def test_private_key_round_trip_mode_0600(tmp_path: Path) -> None:
    key = keys.generate_private_key()
    path = tmp_path / "release.pem"
    keys.save_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = keys.load_private_key(path)
    assert keys.raw_public_key(loaded) == keys.raw_public_key(key)
    assert not list(tmp_path.glob(".release.pem.*"))  # no temp file left behind


def test_passphrase_protected_key(tmp_path: Path) -> None:
    key = keys.generate_private_key()
    path = tmp_path / "root.pem"
    keys.save_private_key(key, path, passphrase=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert keys.key_id(keys.load_private_key(path, b"correct horse")) == keys.key_id(key)
    with pytest.raises(KeyFileError):
        keys.load_private_key(path, b"wrong")
    with pytest.raises(KeyFileError):
        keys.load_private_key(path)  # encrypted, no passphrase given


def test_key_id_matches_openssl_derived_public_key(tmp_path: Path) -> None:
    """key id = sha256(raw 32-byte public key), computed here from OpenSSL's own DER output."""
    key = keys.generate_private_key()
    path = tmp_path / "k.pem"
    keys.save_private_key(key, path)
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"], capture_output=True, check=True
    ).stdout
    assert len(der) == 44  # 12-byte SubjectPublicKeyInfo prefix for Ed25519 + 32-byte key
    assert keys.key_id(key) == hashlib.sha256(der[-32:]).hexdigest()


def test_public_key_file_round_trip(tmp_path: Path) -> None:
    key = keys.generate_private_key()
    keys.save_public_key(key, tmp_path / "pub.pem")
    assert (tmp_path / "pub.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert keys.load_public_key(tmp_path / "pub.pem") == keys.raw_public_key(key)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key at all", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
    ids=["empty", "garbage", "bad-pem-body"],
)
def test_unreadable_private_key_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=r"bad\.pem"):
        keys.load_private_key(path)
    with pytest.raises(KeyFileError, match=r"bad\.pem"):
        keys.load_public_key(path)


def test_missing_and_oversized_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        keys.load_private_key(tmp_path / "absent.pem")
    big = tmp_path / "big.pem"
    big.write_bytes(b"A" * (keys.MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(KeyFileError, match="too large"):
        keys.load_private_key(big)


def test_wrong_key_type_refused(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    priv = tmp_path / "ec.pem"
    priv.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub = tmp_path / "ec_pub.pem"
    pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="Ed25519"):
        keys.load_private_key(priv)
    with pytest.raises(KeyFileError, match="Ed25519"):
        keys.load_public_key(pub)


def test_verify_signature_rejects_wrong_sizes() -> None:
    key = keys.generate_private_key()
    sig = keys.sign(key, b"msg")
    assert keys.verify_signature(keys.raw_public_key(key), sig, b"msg")
    assert not keys.verify_signature(keys.raw_public_key(key), sig[:-1], b"msg")
    assert not keys.verify_signature(keys.raw_public_key(key)[:31], sig, b"msg")
    assert not keys.verify_signature(keys.raw_public_key(key), sig, b"msg2")
