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
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
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


def _authenticate_bearer(session: Session, token: str) -> OperatorPrincipal:
    if not token.startswith(OPERATOR_TOKEN_PREFIX) or len(token) > 200:
        raise AuthError("invalid bearer token")
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        raise AuthError("invalid or revoked bearer token")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
        row.last_used_at = now
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
    if stored is None or not verify_device_secret(secret, stored):
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
