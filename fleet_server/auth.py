"""Credentials and roles: operator API tokens and per-device secrets. No HTTP in here.

* Operator tokens: ``tfo_`` + 256 random bits (urlsafe base64). Only SHA-256 of the token is stored,
  and lookup is by that hash. Roles are ordered viewer < operator < admin.
* Device credentials: the device id is the username (HTTP Basic here, MQTT username on the broker),
  the secret is random and stored as a Mosquitto ``$7$`` PBKDF2-SHA512 hash, so the broker's password
  file can be written straight from the ``devices`` table and the same secret works for MQTT and HTTP.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fleet_server.db import ApiToken, Device
from fleet_server.db.base import utcnow
from telemetry.topics import is_valid_device_id

OPERATOR_TOKEN_PREFIX = "tfo_"
MOSQUITTO_PBKDF2_ID = "7"  # mosquitto_passwd's id for PBKDF2-HMAC-SHA512
_SALT_BYTES = 12  # what mosquitto_passwd uses
# last_used_at is a convenience, not an audit trail: write it at most this often per token.
_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


class Role(enum.IntEnum):
    """Operator roles, ordered so that ``role >= Role.operator`` reads as "at least operator"."""

    viewer = 1
    operator = 2
    admin = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown role {name!r}; choose one of: viewer, operator, admin") from None


@dataclass(frozen=True)
class OperatorPrincipal:
    name: str
    role: Role
    token_id: int
    kind: Literal["operator"] = "operator"


@dataclass(frozen=True)
class DevicePrincipal:
    device_id: str
    kind: Literal["device"] = "device"

    @property
    def name(self) -> str:
        return self.device_id


Principal = OperatorPrincipal | DevicePrincipal


class AuthError(Exception):
    """Authentication failed (HTTP 401). The message never contains the presented secret."""


# ---------------------------------------------------------------- device secrets (Mosquitto $7$ format)


def new_secret(n_bytes: int = 32) -> str:
    return secrets.token_urlsafe(n_bytes)


def hash_device_secret(secret: str, *, iterations: int, salt: bytes | None = None) -> str:
    """``$7$<iterations>$<b64 salt>$<b64 PBKDF2-HMAC-SHA512>`` as written by ``mosquitto_passwd``."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"${MOSQUITTO_PBKDF2_ID}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


class _VerifiedSecrets:
    """Remembers which (device, stored hash, presented secret) triples passed PBKDF2 in this process.

    PBKDF2 with 10,000 SHA-512 rounds costs ~10 ms of CPU, paid on *every* device HTTP request (and it
    holds the GIL the event loop needs). The key includes the stored hash, so a rotated or deleted
    credential (the caller still reads the stored hash from the database per request) never matches an
    old entry; the presented secret is kept only as an HMAC under a per-process random key. Only
    successes are cached: a wrong secret costs the full KDF every time.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._key = secrets.token_bytes(32)
        self._max = max_entries
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def _fingerprint(self, device_id: str, stored: str, secret: str) -> bytes:
        message = b"\0".join((device_id.encode(), stored.encode(), secret.encode()))
        return hmac.digest(self._key, message, "sha256")

    def check(self, device_id: str, stored: str, secret: str) -> bool:
        fingerprint = self._fingerprint(device_id, stored, secret)
        with self._lock:
            if fingerprint in self._seen:
                self._seen.move_to_end(fingerprint)
                return True
        if not verify_device_secret(secret, stored):
            return False
        with self._lock:
            self._seen[fingerprint] = None
            if len(self._seen) > self._max:
                self._seen.popitem(last=False)
        return True


_verified_secrets = _VerifiedSecrets()


def verify_device_secret(secret: str, stored: str) -> bool:
    try:
        _, ident, iterations_s, salt_b64, digest_b64 = stored.split("$")
        if ident != MOSQUITTO_PBKDF2_ID:
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        iterations = int(iterations_s)
    except (ValueError, binascii.Error):
        return False
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)


# ---------------------------------------------------------------- operator tokens


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_operator_token(n_bytes: int = 32) -> str:
    return OPERATOR_TOKEN_PREFIX + secrets.token_urlsafe(n_bytes)


@dataclass(frozen=True)
class IssuedToken:
    """A freshly created token: ``secret`` is shown once and never stored."""

    row: ApiToken
    secret: str


def issue_token(
    session: Session, *, name: str, role: Role, created_by: str, n_bytes: int = 32
) -> IssuedToken:
    """Create an API token row (caller commits). Raises ValueError if the name is taken."""
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise ValueError(f"a token named {name!r} already exists")
    secret = new_operator_token(n_bytes)
    row = ApiToken(
        name=name,
        role=role.name,
        token_hash=hash_token(secret),
        prefix=secret[: len(OPERATOR_TOKEN_PREFIX) + 6],
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return IssuedToken(row=row, secret=secret)


# ---------------------------------------------------------------- resolving an Authorization header


# token hash -> when this process last wrote its last_used_at: 50 concurrent requests with one token
# would otherwise all see the stale value at the minute boundary and all write (SQLite: lock waits).
# Keyed by hash, not id: one process (tests) may serve several databases.
_last_used_written: dict[str, dt.datetime] = {}


def _authenticate_bearer(session: Session, token: str) -> OperatorPrincipal:
    if not token.startswith(OPERATOR_TOKEN_PREFIX) or len(token) > 200:
        raise AuthError("invalid bearer token")
    # Columns, not the ORM entity: this runs on every operator request (no identity map work).
    token_hash = hash_token(token)
    row = session.execute(
        select(ApiToken.id, ApiToken.name, ApiToken.role, ApiToken.revoked_at, ApiToken.last_used_at).where(
            ApiToken.token_hash == token_hash
        )
    ).one_or_none()
    if row is None or row.revoked_at is not None:
        raise AuthError("invalid or revoked bearer token")
    now = utcnow()
    last = max(filter(None, (row.last_used_at, _last_used_written.get(token_hash))), default=None)
    if last is None or now - last > _LAST_USED_RESOLUTION:
        _last_used_written[token_hash] = now
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
        session.commit()
    return OperatorPrincipal(name=row.name, role=Role[row.role], token_id=row.id)


def _authenticate_basic(session: Session, encoded: str) -> DevicePrincipal:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("malformed Basic credentials") from None
    device_id, sep, secret = decoded.partition(":")
    if not sep or not is_valid_device_id(device_id) or not secret or len(secret) > 200:
        raise AuthError("malformed Basic credentials")
    stored = session.scalar(select(Device.mqtt_password_hash).where(Device.id == device_id))
    # Unknown device and wrong secret look the same to the caller.
    if stored is None or not _verified_secrets.check(device_id, stored, secret):
        raise AuthError("invalid device credentials")
    return DevicePrincipal(device_id=device_id)


def authenticate(session: Session, authorization: str | None) -> Principal:
    """Resolve an ``Authorization`` header to a principal or raise :class:`AuthError`."""
    if not authorization:
        raise AuthError("missing Authorization header (Bearer token for operators, Basic for devices)")
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return _authenticate_bearer(session, value)
    if scheme.lower() == "basic" and value:
        return _authenticate_basic(session, value)
    raise AuthError("unsupported Authorization scheme; use 'Bearer <token>' or 'Basic <device credentials>'")
