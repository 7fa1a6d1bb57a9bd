"""Dashboard sessions: a signed cookie naming an operator token, and the CSRF token of that session.

The cookie never carries the API token itself. It holds the token's row id and stored SHA-256 hash, an
expiry, and a random per-session CSRF token, signed with HMAC-SHA256 under the dashboard secret. Each
request re-reads the token row, so revoking the token ends every dashboard session made with it at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from fleet_server.auth import OperatorPrincipal, Role
from fleet_server.db import ApiToken
from fleet_server.settings import Settings

COOKIE_NAME = "tinyfleet_session"
SECRET_FILE = "dashboard_secret"
_MAX_COOKIE_LEN = 1024  # a real cookie is ~200 bytes; anything larger is refused unread


@dataclass(frozen=True)
class DashboardSession:
    token_id: int
    token_hash: str
    csrf: str
    expires_at: int


def load_or_create_secret(settings: Settings) -> bytes:
    """The configured secret, else the one stored under data_dir (created 0600 on first use)."""
    if settings.dashboard_secret is not None:
        value = settings.dashboard_secret.get_secret_value().encode()
        if len(value) < 16:
            raise ValueError("TINYFLEET_DASHBOARD_SECRET must be at least 16 characters")
        return value
    path = Path(settings.data_dir) / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_urlsafe(32).encode()
    # O_EXCL: two processes starting together both end up with the one that won the race.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(fresh)
    return fresh


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())


def new_session(token: ApiToken, *, max_age_s: int, now: float | None = None) -> DashboardSession:
    now = time.time() if now is None else now
    return DashboardSession(
        token_id=token.id,
        token_hash=token.token_hash,
        csrf=secrets.token_urlsafe(24),
        expires_at=int(now) + max_age_s,
    )


def encode_cookie(session: DashboardSession, secret: bytes) -> str:
    payload = {"t": session.token_id, "h": session.token_hash, "c": session.csrf, "e": session.expires_at}
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_sign(secret, body)}"


def decode_cookie(value: str | None, secret: bytes, *, now: float | None = None) -> DashboardSession | None:
    """The session in a cookie whose signature checks out and that has not expired, else None."""
    if not value or len(value) > _MAX_COOKIE_LEN:
        return None
    body, sep, signature = value.partition(".")
    if not sep or not hmac.compare_digest(signature, _sign(secret, body)):
        return None
    try:
        payload = json.loads(_unb64(body))
        session = DashboardSession(
            token_id=int(payload["t"]),
            token_hash=str(payload["h"]),
            csrf=str(payload["c"]),
            expires_at=int(payload["e"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    if session.expires_at <= (time.time() if now is None else now):
        return None
    return session


def principal_for(db: Session, session: DashboardSession) -> OperatorPrincipal | None:
    """The operator behind a session, if its token still exists, matches and is not revoked."""
    row = db.get(ApiToken, session.token_id)
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.token_hash, session.token_hash):
        return None
    return OperatorPrincipal(name=row.name, role=Role[row.role], token_id=row.id)


def csrf_ok(session: DashboardSession, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf, presented or "")
