"""Fetch a release's health-check companions (converter ``report.json``, ``golden.npz``) before an update.

An update command (telemetry 1.1) may carry ``report`` and ``golden`` references next to the artifact.
The trial health check (:class:`device_agent.ota_client.GoldenHealthCheck`) looks them up by the
artifact's sha256 under ``state_dir/releases/<release_id>/``
(:meth:`device_agent.agent.Agent.find_companions`).
This module puts them there: each file is downloaded with the device's own transport, checked against
the command's sha256 and size hints, and written atomically. It makes no trust decision: the health
check binds the report to the signed manifest's artifact sha256 and the golden file to the report.

:meth:`device_agent.agent.Agent._cmd_update` runs it before every update.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RELEASES_DIR = "releases"  # state_dir/releases/<release_id>/{report.json,golden.npz}
MAX_COMPANION_BYTES = 8 * 1024 * 1024
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class CompanionError(RuntimeError):
    """A companion file could not be fetched or does not match its reference."""


def fetch_companions(cmd: Any, state_dir: Path, transport: Any) -> Path | None:
    """Download ``cmd.report`` and ``cmd.golden`` into ``state_dir/releases/<release_id>/``.

    Returns the directory, or None when the command carries no companions. Files already present with
    the right sha256 are not fetched again (a redelivered command, a resumed update).
    """
    refs = {"report.json": getattr(cmd, "report", None), "golden.npz": getattr(cmd, "golden", None)}
    if all(r is None for r in refs.values()):
        return None
    release_id = str(cmd.release_id)
    if not _SAFE_ID.match(release_id) or release_id in (".", ".."):
        raise CompanionError(f"release id {release_id!r} is not a safe directory name")
    target = state_dir / RELEASES_DIR / release_id
    target.mkdir(parents=True, exist_ok=True)
    for name, ref in refs.items():
        if ref is None:
            continue
        path = target / name
        if path.is_file() and _sha256(path.read_bytes()) == ref.sha256:
            continue
        if ref.size_bytes > MAX_COMPANION_BYTES:
            raise CompanionError(f"{name} of {release_id}: {ref.size_bytes} bytes is over the limit")
        data = transport.fetch(ref.url, max_bytes=min(ref.size_bytes, MAX_COMPANION_BYTES))
        if len(data) != ref.size_bytes or _sha256(data) != ref.sha256:
            raise CompanionError(f"{name} of {release_id}: downloaded bytes do not match the command")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    # The golden file is named by the report; the converter writes golden.npz, which is what is kept here.
    return target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
