"""Root-signed revocation lists for release keys.

How revocation reaches a device: the server publishes the newest list beside every manifest (and on
its own topic/URL). A device accepts a list only if a root key it holds signed it and its ``serial``
is greater than the serial it has persisted (equal serial: only the byte-identical list), then
persists it; :func:`ota.trust.verify_manifest` refuses any manifest whose signing key id is on the
persisted list, whatever its certificate says. An attacker replaying an older list (to un-revoke a
key) is refused by the serial check. The decision itself lives in :func:`ota.trust.accept_revocations`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field, PrivateAttr

from ota import keys
from ota.canonical import canonical_bytes, encode_signed
from ota.fields import KeyIdHex, SignatureHex, SignedModel, Timestamp, format_timestamp

REVOCATION_SCHEMA_VERSION = "1.0"
MAX_SERIAL = 2**53 - 1
MAX_REVOKED = 1024


class RevocationList(SignedModel):
    schema_version: str = Field(pattern=r"^1\.\d{1,4}$")
    serial: int = Field(ge=1, le=MAX_SERIAL)
    issued_at: Timestamp
    revoked_key_ids: tuple[KeyIdHex, ...] = Field(max_length=MAX_REVOKED)
    issuer_key_id: KeyIdHex
    signature: SignatureHex

    _wire: bytes = PrivateAttr(default=b"")

    def is_revoked(self, key_id: str) -> bool:
        return key_id in self.revoked_key_ids

    def to_bytes(self) -> bytes:
        """The signed document exactly as accepted, for the device to persist and re-verify at boot."""
        return self._wire or encode_signed(self.model_dump(mode="json"))


def build_revocation_list(
    root_key: keys.Ed25519PrivateKey,
    *,
    serial: int,
    revoked_key_ids: list[str] | tuple[str, ...],
    issued_at: datetime | None = None,
) -> bytes:
    """Server side: a root-signed revocation list, wire bytes. ``serial`` must grow with every list."""
    doc: dict[str, Any] = {
        "schema_version": REVOCATION_SCHEMA_VERSION,
        "serial": serial,
        "issued_at": format_timestamp(issued_at or datetime.now(UTC)),
        "revoked_key_ids": sorted(set(revoked_key_ids)),
        "issuer_key_id": keys.key_id(root_key),
    }
    doc["signature"] = keys.sign(root_key, canonical_bytes(doc)).hex()
    return encode_signed(doc)
