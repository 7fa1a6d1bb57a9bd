"""Signing-key request/response models: public parts only, never a private key or a passphrase."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from fleet_server.api.schemas.common import StrictModel

KeyId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class RootKeyOut(BaseModel):
    key_id: str
    public_key: str = Field(description="Raw 32-byte Ed25519 public key, hex (what devices hold).")
    created_at: str


class ReleaseKeyOut(BaseModel):
    key_id: str
    public_key: str
    created_at: str
    not_after: str = Field(description="End of the root-signed certificate's validity.")
    revoked_at: str | None
    current: bool = Field(description="Signs new releases.")


class RevocationOut(BaseModel):
    serial: int
    issued_at: str
    revoked_key_ids: list[str]


class KeyListOut(BaseModel):
    root_keys: list[RootKeyOut]
    release_keys: list[ReleaseKeyOut]
    current_release_key_id: str | None
    revocation: RevocationOut | None


class KeyGenerate(StrictModel):
    new_trust_anchor: bool = Field(
        default=False,
        description="Replace existing keys with a new root: devices holding the old root refuse everything "
        "signed afterwards until they are re-provisioned. Refused (409) without this when keys exist.",
    )


class KeyRevoke(StrictModel):
    key_id: KeyId = Field(description="Release key id (sha256 of its raw public key, lowercase hex).")


class RevokeResult(BaseModel):
    revocation: RevocationOut
    withdrawn_releases: list[str] = Field(description="Active releases signed by the key, now withdrawn.")


class DeviceTrustOut(BaseModel):
    root_public_keys: list[str] = Field(description="Raw Ed25519 root public keys, hex.")
    root_key_ids: list[str]
    revocation_serial: int | None
    revocation_list_b64: str | None = Field(
        description="The root-signed revocation list, exact bytes, base64 (for ota.trust.accept_revocations)."
    )
