"""/api/v1/keys: the server's signing keys (public parts only), generate, rotate, revoke.

No response, log line or audit detail ever carries a private key or the key passphrase.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from fleet_server.api.deps import Admin, SessionDep, SettingsDep, Viewer, set_audit
from fleet_server.api.errors import ERROR_RESPONSES, ErrorResponse, service_error
from fleet_server.api.schemas.keys import (
    KeyGenerate,
    KeyListOut,
    KeyRevoke,
    ReleaseKeyOut,
    RevocationOut,
    RevokeResult,
    RootKeyOut,
)
from fleet_server.releases.errors import ReleaseServiceError
from fleet_server.releases.keystore import KeyListing, Keystore, ReleaseKeyRecord
from fleet_server.releases.service import withdraw_signed_by

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)
_CONFLICT = {409: {"model": ErrorResponse, "description": "Conflicts with the current key set"}}


def _release_key(record: ReleaseKeyRecord, current: str | None) -> ReleaseKeyOut:
    return ReleaseKeyOut(
        key_id=record.key_id,
        public_key=record.public_key,
        created_at=record.created_at,
        not_after=record.not_after,
        revoked_at=record.revoked_at,
        current=record.key_id == current,
    )


def _listing(listing: KeyListing) -> KeyListOut:
    rev = listing.revocation
    return KeyListOut(
        root_keys=[
            RootKeyOut(key_id=r.key_id, public_key=r.public_key, created_at=r.created_at)
            for r in listing.root_keys
        ],
        release_keys=[_release_key(r, listing.current_release_key_id) for r in listing.release_keys],
        current_release_key_id=listing.current_release_key_id,
        revocation=None
        if rev is None
        else RevocationOut(
            serial=rev.serial, issued_at=rev.issued_at, revoked_key_ids=list(rev.revoked_key_ids)
        ),
    )


@router.get("", response_model=KeyListOut)
def list_keys(settings: SettingsDep, caller: Viewer) -> KeyListOut:
    """Root and release keys (public parts), the current release key and the newest revocation list."""
    try:
        return _listing(Keystore(settings).listing())
    except ReleaseServiceError as exc:
        raise service_error(exc) from None


@router.post("/generate", status_code=201, response_model=KeyListOut, responses=_CONFLICT)
def generate_keys(body: KeyGenerate, request: Request, settings: SettingsDep, caller: Admin) -> KeyListOut:
    """Create the root key and a first release key (refused when keys exist, unless a new trust anchor
    is asked for explicitly)."""
    set_audit(request, "keys.generate", None, new_trust_anchor=body.new_trust_anchor)
    try:
        listing = Keystore(settings).generate(new_trust_anchor=body.new_trust_anchor)
    except ReleaseServiceError as exc:
        raise service_error(exc) from None
    set_audit(
        request,
        "keys.generate",
        listing.root_keys[0].key_id,
        new_trust_anchor=body.new_trust_anchor,
        release_key_id=listing.current_release_key_id,
    )
    return _listing(listing)


@router.post("/rotate", response_model=ReleaseKeyOut, responses=_CONFLICT)
def rotate_key(request: Request, settings: SettingsDep, caller: Admin) -> ReleaseKeyOut:
    """A new release key, certified by root, signs from now on; the old one stays valid until revoked."""
    set_audit(request, "keys.rotate", None)
    try:
        record = Keystore(settings).rotate()
    except ReleaseServiceError as exc:
        raise service_error(exc) from None
    set_audit(request, "keys.rotate", record.key_id)
    return _release_key(record, record.key_id)


@router.post(
    "/revoke",
    response_model=RevokeResult,
    responses={404: {"model": ErrorResponse, "description": "No such release key"}, **_CONFLICT},
)
def revoke_key(
    body: KeyRevoke, request: Request, session: SessionDep, settings: SettingsDep, caller: Admin
) -> RevokeResult:
    """Root signs a new revocation list (serial + 1) naming the key; releases it signed are withdrawn."""
    set_audit(request, "keys.revoke", body.key_id)
    try:
        revocation = Keystore(settings).revoke(body.key_id)
    except ReleaseServiceError as exc:
        raise service_error(exc) from None
    # The list is signed and on disk first: if this commit fails, the revocation still reaches devices
    # (they refuse those releases anyway) and a retry of withdraw_signed_by is idempotent.
    withdrawn = withdraw_signed_by(session, body.key_id)
    session.commit()
    set_audit(request, "keys.revoke", body.key_id, serial=revocation.serial, withdrawn_releases=withdrawn)
    return RevokeResult(
        revocation=RevocationOut(
            serial=revocation.serial,
            issued_at=revocation.issued_at,
            revoked_key_ids=list(revocation.revoked_key_ids),
        ),
        withdrawn_releases=withdrawn,
    )
