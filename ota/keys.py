"""Ed25519 keys: generate, save, load, sign, verify, key ids.

Key id = lowercase hex sha256 of the raw 32-byte public key. Private keys are stored as PEM PKCS#8,
encrypted with the passphrase when one is given, file mode 0600 (written to a temp file in the same
directory and renamed, so an interrupted save never leaves a half-written key behind). Public keys
are stored as PEM SubjectPublicKeyInfo, which ``openssl pkeyutl -pubin`` reads directly.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ota.errors import KeyFileError

# cryptography (~9 MB RSS) is imported by the functions that use it, not by importing this module: a
# device agent imports the OTA path at start but verifies a signature only when an update comes.
# ``keys.Ed25519PrivateKey`` / ``keys.Ed25519PublicKey`` still work (module __getattr__ below).
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_LAZY = ("Ed25519PrivateKey", "Ed25519PublicKey")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        return getattr(ed25519, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM Ed25519 key is < 300 bytes; refuse to read anything absurd

__all__ = [
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "generate_private_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_from_raw",
    "public_key_pem",
    "raw_public_key",
    "save_private_key",
    "save_public_key",
    "sign",
    "verify_signature",
]


def generate_private_key() -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def raw_public_key(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key (what devices store and what key ids hash)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: bytes | Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """sha256 of the raw 32-byte public key, lowercase hex."""
    raw = key if isinstance(key, bytes) else raw_public_key(key)
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    return hashlib.sha256(raw).hexdigest()


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_pem(key: bytes | Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """PEM SubjectPublicKeyInfo (``-----BEGIN PUBLIC KEY-----``), as OpenSSL expects with ``-pubin``."""
    from cryptography.hazmat.primitives import serialization

    raw = key if isinstance(key, bytes) else raw_public_key(key)
    return public_key_from_raw(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(private_key: Ed25519PrivateKey, message: bytes) -> bytes:
    """Raw (pure) Ed25519 signature, 64 bytes."""
    return private_key.sign(message)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` under the raw ``public_key``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    from cryptography.exceptions import InvalidSignature

    try:
        public_key_from_raw(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # before any secret byte is written
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_private_key(
    key: Ed25519PrivateKey, path: str | os.PathLike[str], passphrase: bytes | None = None
) -> None:
    """Write PEM PKCS#8 (encrypted with ``passphrase`` if given), file mode 0600."""
    from cryptography.hazmat.primitives import serialization

    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    _atomic_write(Path(path), pem, 0o600)


def save_public_key(key: bytes | Ed25519PrivateKey | Ed25519PublicKey, path: str | os.PathLike[str]) -> None:
    _atomic_write(Path(path), public_key_pem(key), 0o644)


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{p}: {p.stat().st_size} bytes is far too large for an Ed25519 key file")
        return p.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{p}: cannot read key file ({exc.strerror or exc})") from exc


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> Ed25519PrivateKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except TypeError as exc:  # encrypted without passphrase, or passphrase for an unencrypted key
        raise KeyFileError(f"{path}: {exc}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:  # not PEM, corrupt, or wrong passphrase
        raise KeyFileError(f"{path}: not a readable PEM private key or wrong passphrase ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """Read a PEM SubjectPublicKeyInfo file; return the raw 32-byte public key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path}: not a readable PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: expected an Ed25519 public key, got {type(key).__name__}")
    return raw_public_key(key)
