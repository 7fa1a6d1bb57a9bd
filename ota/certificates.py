"""Root-signed certificates for release-signing keys.

Devices hold only root public keys. A release key is usable because a root key signed a
:class:`KeyCertificate` naming it (key id, public key, role, validity window). The certificate travels
inside every manifest the release key signs, so a new release key works on devices the moment root
certifies it: rotation needs no device change. Revocation is in :mod:`ota.revocation`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field, model_validator

from ota import keys
from ota.canonical import canonical_bytes
from ota.fields import KeyIdHex, PublicKeyHex, SignatureHex, SignedModel, Timestamp, format_timestamp

RELEASE_ROLE = "release"


class KeyCertificate(SignedModel):
    key_id: KeyIdHex
    public_key: PublicKeyHex  # raw 32-byte Ed25519 public key, hex
    role: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_-]*$")
    issuer_key_id: KeyIdHex  # the root key that signed this certificate
    not_before: Timestamp
    not_after: Timestamp
    signature: SignatureHex  # root's Ed25519 signature over the canonical form without this field

    @model_validator(mode="after")
    def _window(self) -> KeyCertificate:
        if self.not_after <= self.not_before:
            raise ValueError("not_after must be later than not_before")
        return self

    @property
    def public_key_bytes(self) -> bytes:
        return bytes.fromhex(self.public_key)


def certify_key(
    root_key: keys.Ed25519PrivateKey,
    subject: bytes | keys.Ed25519PublicKey | keys.Ed25519PrivateKey,
    *,
    role: str = RELEASE_ROLE,
    not_before: datetime | None = None,
    valid_for: timedelta = timedelta(days=365),
) -> dict[str, Any]:
    """Root signs a certificate for ``subject``'s public key; returns the JSON-ready document."""
    raw = subject if isinstance(subject, bytes) else keys.raw_public_key(subject)
    start = (not_before or datetime.now(UTC)).replace(microsecond=0)
    doc: dict[str, Any] = {
        "key_id": keys.key_id(raw),
        "public_key": raw.hex(),
        "role": role,
        "issuer_key_id": keys.key_id(root_key),
        "not_before": format_timestamp(start),
        "not_after": format_timestamp(start + valid_for),
    }
    doc["signature"] = keys.sign(root_key, canonical_bytes(doc)).hex()
    return doc
