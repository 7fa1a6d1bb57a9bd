"""The "update available" command for a release, pointing at the device download routes.

URLs: ``<base_url>/api/v1/device/releases/<release_id>/<file>`` with file = manifest | artifact | report |
golden | patch-<base_sha256> (served by fleet_server/api/routes/artifacts.py with device Basic auth).
Hashes and sizes in the command are hints; the device trusts only the signed manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet_server.db import Release
from fleet_server.releases.service import FILES_RECORD, RELEASES_DIR
from telemetry.schemas import ArtifactRef, DeltaRef, UpdateAvailable

DOWNLOAD_PREFIX = "/api/v1/device/releases"
# UpdateAvailable needs a device id; a command built without one must be re-addressed
# (``cmd.model_copy(update={"device_id": ...})``) before it is sent. A device refuses a command whose
# device_id is not its own, so a forgotten re-address fails safe.
UNADDRESSED = "unaddressed"


def file_url(base_url: str, release_id: str, name: str) -> str:
    return f"{base_url.rstrip('/')}{DOWNLOAD_PREFIX}/{release_id}/{name}"


def update_available(
    release: Release,
    *,
    from_counter: int | None,
    base_url: str,
    cmd_id: str,
    issued_at: int,
    device_id: str = UNADDRESSED,
    hardware_class: str | None = None,
    artifact_dir: Path | None = None,
) -> UpdateAvailable:
    """``cmd.update`` for ``release``; a delta is included when the release has a patch from the
    release numbered ``from_counter`` (what the device runs now). With ``artifact_dir`` (the artifact
    store) the report/golden companions are referenced too (their hashes are in the release's files.json).
    """

    def url(name: str) -> str:
        return file_url(base_url, release.id, name)

    def ref(name: str, entry: dict[str, Any]) -> ArtifactRef:
        return ArtifactRef(url=url(name), sha256=entry["sha256"], size_bytes=int(entry["length"]))

    delta = None
    if from_counter is not None:
        patch = next((d for d in release.deltas if d.from_counter == from_counter), None)
        if patch is not None:
            delta = DeltaRef(
                url=url(f"patch-{patch.base_sha256}"),
                sha256=patch.patch_sha256,
                size_bytes=patch.patch_length,
                from_version=patch.from_counter,
            )
    report = golden = None
    if artifact_dir is not None:
        record = json.loads((Path(artifact_dir) / RELEASES_DIR / release.id / FILES_RECORD).read_text())
        report = ref("report", record["report"]) if "report" in record else None
        golden = ref("golden", record["golden"]) if "golden" in record else None
    return UpdateAvailable(
        device_id=device_id,
        cmd_id=cmd_id,
        ts=issued_at,
        release_id=release.id,
        model_name=release.model_name,
        target_version=release.counter,
        hardware_class=hardware_class or release.hardware_classes[0],
        manifest=ref("manifest", {"sha256": release.manifest_sha256, "length": release.manifest_length}),
        artifact=ref("artifact", {"sha256": release.artifact_sha256, "length": release.artifact_length}),
        delta=delta,
        report=report,
        golden=golden,
    )
