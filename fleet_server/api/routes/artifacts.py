"""/api/v1/device/releases/{release_id}/{file} and /api/v1/device/trust: what devices download.

Device HTTP Basic auth (device id + device secret, the MQTT credential). A release that does not target
the caller's hardware class, a withdrawn one and an unknown one all get the same 404, so a device cannot
learn what exists for other boards. Files stream from disk in blocks (never whole in memory) with
single-range support: ``Range: bytes=a-b | a- | -n`` → 206 + Content-Range, unsatisfiable → 416,
malformed or multi-range → 400; ``ETag`` is the file's sha256 and ``If-Range`` with another value gets
the whole file (200), so a client never splices bytes of two different files.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Header, Path
from fastapi.responses import StreamingResponse

from fleet_server.api.deps import DeviceCaller, SessionDep, SettingsDep
from fleet_server.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse, service_error
from fleet_server.api.schemas.keys import DeviceTrustOut
from fleet_server.db import Device, Release
from fleet_server.releases import service
from fleet_server.releases.errors import ArtifactStoreError, ReleaseServiceError
from fleet_server.releases.keystore import Keystore
from fleet_server.settings import Settings
from ota import keys

router = APIRouter(prefix="/api/v1/device", tags=["device"], responses=ERROR_RESPONSES)

FILE_PATTERN = r"^(manifest|artifact|report|golden|patch-[0-9a-f]{64})$"
_FILE = re.compile(FILE_PATTERN)
_RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
_RANGE_SPEC = re.compile(r"^(\d{0,19})-(\d{0,19})$")
BLOCK_BYTES = 256 * 1024


class RangeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_range(header: str, total: int) -> tuple[int, int]:
    """(first, last) byte positions, inclusive, of a single ``bytes`` range over ``total`` bytes."""
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise RangeError(400, "malformed Range header: only 'bytes=<first>-<last>' is supported")
    if "," in spec:
        raise RangeError(400, "only a single byte range is supported")
    m = _RANGE_SPEC.match(spec.strip())
    if m is None or (not m.group(1) and not m.group(2)):
        raise RangeError(400, "malformed Range header: expected bytes=<first>-[<last>] or bytes=-<suffix>")
    if not m.group(1):  # suffix: the last n bytes
        suffix = int(m.group(2))
        if suffix == 0 or total == 0:
            raise RangeError(416, f"range not satisfiable: the file has {total} bytes")
        return max(0, total - suffix), total - 1
    first = int(m.group(1))
    if m.group(2) and int(m.group(2)) < first:
        raise RangeError(400, "malformed Range header: last byte before first byte")
    last = int(m.group(2)) if m.group(2) else total - 1
    if first >= total:
        raise RangeError(416, f"range not satisfiable: starts at {first}, the file has {total} bytes")
    return first, min(last, total - 1)


def _blocks(fh: BinaryIO, first: int, length: int) -> Iterator[bytes]:
    try:
        fh.seek(first)
        remaining = length
        while remaining > 0:
            block = fh.read(min(BLOCK_BYTES, remaining))
            if not block:
                break  # file shrank under us: the client's length/hash check catches the short body
            remaining -= len(block)
            yield block
    finally:
        fh.close()


def _not_found() -> ApiError:
    # One message for every reason (unknown, withdrawn, another class's release, unknown file name).
    return ApiError(404, "not_found", "no such release file")


def _stored_file(settings: Settings, release: Release, name: str) -> service.StoredFile | None:
    if name == "manifest":
        return service.StoredFile(release.manifest_path, release.manifest_sha256, release.manifest_length)
    if name == "artifact":
        return service.StoredFile(release.artifact_path, release.artifact_sha256, release.artifact_length)
    if name.startswith("patch-"):
        base = name.removeprefix("patch-")
        delta = next((d for d in release.deltas if d.base_sha256 == base), None)
        return (
            None
            if delta is None
            else service.StoredFile(delta.patch_path, delta.patch_sha256, delta.patch_length)
        )
    return service.stored_files(settings, release).get(name)


@router.get(
    "/releases/{release_id}/{file}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The whole file"},
        206: {"content": {"application/octet-stream": {}}, "description": "The requested byte range"},
        400: {"model": ErrorResponse, "description": "Malformed or multi-range Range header"},
        404: {"model": ErrorResponse, "description": "No such release file for this device"},
        416: {"model": ErrorResponse, "description": "Range starts beyond the end of the file"},
    },
)
def download_release_file(
    release_id: Annotated[str, Path(max_length=64, description='"<model>-<counter>"')],
    file: Annotated[
        str, Path(max_length=80, description="manifest | artifact | report | golden | patch-<sha256>")
    ],
    session: SessionDep,
    settings: SettingsDep,
    caller: DeviceCaller,
    range_header: Annotated[str | None, Header(alias="range", max_length=200)] = None,
    if_range: Annotated[str | None, Header(max_length=200)] = None,
) -> StreamingResponse:
    if not _FILE.match(file) or not _RELEASE_ID.match(release_id):
        raise _not_found()
    release = session.get(Release, release_id)
    device = session.get(Device, caller.device_id)
    if (
        release is None
        or release.state != "active"
        or device is None
        or device.hardware_class not in (release.hardware_classes or ())
    ):
        raise _not_found()
    try:
        stored = _stored_file(settings, release, file)
        if stored is None:
            raise _not_found()
        path: FsPath = service.store_path(settings, stored.path)
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise ArtifactStoreError(f"release file {release_id}/{file} is missing from the store") from exc
    except ReleaseServiceError as exc:
        raise service_error(exc) from None
    session.close()  # give the connection back before a long transfer
    total = stored.length
    etag = f'"{stored.sha256}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Cache-Control": "private, max-age=0"}
    media = "application/json" if file == "manifest" else "application/octet-stream"
    use_range = range_header is not None and (if_range is None or if_range.strip() in (etag, stored.sha256))
    if not use_range:
        headers["Content-Length"] = str(total)
        return StreamingResponse(_blocks(fh, 0, total), status_code=200, headers=headers, media_type=media)
    try:
        first, last = parse_range(range_header or "", total)
    except RangeError as exc:
        fh.close()
        extra = {"Content-Range": f"bytes */{total}"} if exc.status == 416 else None
        code = "range_not_satisfiable" if exc.status == 416 else "bad_range"
        raise ApiError(exc.status, code, exc.message, headers=extra) from None
    headers["Content-Range"] = f"bytes {first}-{last}/{total}"
    headers["Content-Length"] = str(last - first + 1)
    return StreamingResponse(
        _blocks(fh, first, last - first + 1), status_code=206, headers=headers, media_type=media
    )


@router.get("/trust", response_model=DeviceTrustOut)
def device_trust(settings: SettingsDep, caller: DeviceCaller) -> DeviceTrustOut:
    """Root public keys and the newest root-signed revocation list, for the agent's trust store.

    Fetching root keys over the network only helps bootstrapping a device on a network it trusts;
    a device already holding a root key keeps its own (a revocation list it verifies itself)."""
    store = Keystore(settings)
    try:
        roots = store.root_public_keys()
    except ReleaseServiceError as exc:
        raise service_error(exc) from None
    listing = store.listing()
    data = store.revocation_list()
    return DeviceTrustOut(
        root_public_keys=[r.hex() for r in roots],
        root_key_ids=[keys.key_id(r) for r in roots],
        revocation_serial=listing.revocation.serial if listing.revocation else None,
        revocation_list_b64=base64.b64encode(data).decode() if data is not None else None,
    )
