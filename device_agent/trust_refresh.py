"""Keep the device's root-signed revocation list current: fetch it from the fleet server, verify, persist.

The server publishes its root public keys and the newest revocation list at ``/api/v1/device/trust``
(device HTTP Basic). The agent fetches it before every update (and at start when configured), and
hands the bytes to :func:`ota.trust.accept_revocations`, which is the one place that decides whether a list
is genuine (signed by a root the device already holds) and newer than the one persisted. The root keys
themselves are never taken from the server: they are the device's trust anchor.

The verified list is persisted as its exact bytes (``state_dir/trust/revocations.json``, atomic replace) and
re-verified when the agent starts, so a power cut never leaves an unverified list in use.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRUST_DIR = "trust"
REVOCATIONS_FILE = "revocations.json"
MAX_TRUST_DOCUMENT_BYTES = 256 * 1024


class TrustRefreshError(RuntimeError):
    """The trust document could not be fetched or its revocation list was refused; the held list stays."""


def revocations_path(state_dir: Path) -> Path:
    return state_dir / TRUST_DIR / REVOCATIONS_FILE


def load_persisted(state_dir: Path, trust: Any) -> Any:
    """``trust`` with the persisted revocation list, verified again; unchanged when there is none.

    A persisted list that no longer verifies (tampered on disk, roots changed) is refused loudly and
    ignored: the device then knows of no revocation until the next refresh, as before it had one."""
    from ota.trust import accept_revocations

    path = revocations_path(state_dir)
    if not path.is_file():
        return trust
    try:
        return accept_revocations(path.read_bytes(), replace(trust, revocations=None))
    except Exception as exc:
        log.error("persisted revocation list %s refused: %s", path, exc)
        return trust


def refresh(trust: Any, *, url: str, transport: Any, state_dir: Path) -> Any:
    """Fetch the trust document at ``url``; return ``trust`` with a newer verified list (persisted), or
    ``trust`` itself when the server has none or the same one. Raises :class:`TrustRefreshError`."""
    from ota.trust import accept_revocations

    try:
        body = transport.fetch(url, max_bytes=MAX_TRUST_DOCUMENT_BYTES)
    except Exception as exc:
        raise TrustRefreshError(f"trust document {url}: {exc}") from exc
    try:
        doc = json.loads(body)
        encoded = doc.get("revocation_list_b64") if isinstance(doc, dict) else None
        if encoded is None:
            return trust
        if not isinstance(encoded, str):
            raise ValueError("revocation_list_b64 is not a string")
        data = base64.b64decode(encoded, validate=True)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrustRefreshError(f"trust document {url} is malformed: {exc}") from None
    try:
        updated = accept_revocations(data, trust)
    except Exception as exc:  # ota.trust.RevocationListError: forged, older, or conflicting
        raise TrustRefreshError(f"revocation list from {url} refused: {exc}") from None
    if trust.revocations is not None and updated.revocations.serial == trust.revocations.serial:
        return trust
    path = revocations_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    log.info("revocation list serial %d accepted", updated.revocations.serial)
    return updated
