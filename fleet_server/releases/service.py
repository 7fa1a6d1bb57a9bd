"""Create, list, show and withdraw signed releases (plain functions over a Session; no HTTP here).

``create_release`` signs a manifest for one variant of a converted model version with the keystore's
current release key (``ota.release.build_release``), with bsdiff4 deltas from the versions still in the
field (:mod:`fleet_server.releases.field_versions`), and stores the files under
``<artifact_dir>/releases/<release_id>/``:

    manifest.json  <variant>.tflite  report.json  golden.npz  patches/<base_sha256>.patch
    files.json (name -> path, sha256, length of every servable file)  decisions.json (delta decisions)

The counter is max + 1 per model; two concurrent creates may compute the same one, so the row insert
(UNIQUE(model_name, counter), and the primary key "<model>-<counter>") decides, and the loser re-signs
with the next counter. Files are built in a hidden temporary directory and renamed into place only after
the row insert succeeded, so a refused or failed create leaves no directory and no row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, selectinload

from fleet_server.db import MlModel, ModelVersion, Release, ReleaseDelta
from fleet_server.releases.errors import ArtifactStoreError, Conflict, InvalidRequest, NotFound
from fleet_server.releases.field_versions import releases_in_field
from fleet_server.releases.keystore import Keystore
from fleet_server.settings import Settings
from ota.errors import OtaError
from ota.release import PreviousArtifact, SignedRelease, build_release
from telemetry.wire import IDENT_PATTERN

log = logging.getLogger(__name__)

RELEASES_DIR = "releases"
FILES_RECORD = "files.json"
DECISIONS_RECORD = "decisions.json"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.json"
_CREATE_ATTEMPTS = 6
_IDENT = re.compile(IDENT_PATTERN)


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the artifact store
    sha256: str
    length: int


def artifact_root(settings: Settings) -> Path:
    assert settings.artifact_dir is not None
    return Path(settings.artifact_dir).resolve()


def store_path(settings: Settings, relative: str) -> Path:
    """Absolute path of a stored file; refuses anything that would leave the artifact store."""
    root = artifact_root(settings)
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ArtifactStoreError(f"stored path {relative!r} leaves the artifact store")
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- reading the converted model version


@dataclass(frozen=True)
class _Source:
    version: ModelVersion
    directory: Path
    artifact: bytes
    artifact_file: str
    golden_file: str | None


def _model_version(session: Session, model_name: str, version: str) -> ModelVersion:
    row = session.scalar(
        select(ModelVersion)
        .join(MlModel, ModelVersion.model_id == MlModel.id)
        .where(MlModel.name == model_name, ModelVersion.version == version)
    )
    if row is None:
        if session.scalar(select(MlModel.id).where(MlModel.name == model_name)) is None:
            raise NotFound(f"no model named {model_name!r}")
        raise NotFound(f"model {model_name!r} has no version {version!r}")
    return row


def _read_source(settings: Settings, mv: ModelVersion, variant: str) -> _Source:
    from converters.report import ConversionReport  # pydantic only; keeps the CLI import light

    label = f"{mv.model.name} {mv.version}"
    if not mv.artifact_dir:
        raise InvalidRequest(f"{label} has no converted artifacts yet (conversion not finished)")
    directory = store_path(settings, mv.artifact_dir)
    try:
        report = ConversionReport.read(directory)
    except (OSError, ValueError) as exc:
        raise ArtifactStoreError(f"{label}: converter report unreadable: {exc}") from None
    entry = report.variants.get(variant)
    if entry is None:
        known = ", ".join(sorted(report.variants)) or "none"
        raise InvalidRequest(f"{label} has no {variant!r} variant (converted: {known})")
    if entry.status != "accepted":
        raise InvalidRequest(
            f"the converter rejected the {variant} variant of {label}: {entry.rejection_reason}"
        )
    try:
        artifact = store_path(settings, f"{mv.artifact_dir}/{entry.file}").read_bytes()
    except OSError as exc:
        raise ArtifactStoreError(f"{label}: {entry.file} unreadable: {exc.strerror or exc}") from None
    if _sha256(artifact) != entry.sha256 or len(artifact) != entry.bytes:
        raise ArtifactStoreError(f"{label}: {entry.file} does not match its converter report")
    golden = report.golden.file if (directory / report.golden.file).is_file() else None
    return _Source(mv, directory, artifact, entry.file, golden)


def _previous_artifacts(settings: Settings, releases: list[Release]) -> list[PreviousArtifact]:
    out: list[PreviousArtifact] = []
    for r in releases:
        try:
            data = store_path(settings, r.artifact_path).read_bytes()
        except OSError as exc:
            raise ArtifactStoreError(
                f"artifact of release {r.id} unreadable: {exc.strerror or exc}"
            ) from None
        if _sha256(data) != r.artifact_sha256:
            raise ArtifactStoreError(f"artifact of release {r.id} does not match its recorded sha256")
        out.append(PreviousArtifact(version=r.version, counter=r.counter, data=data))
    return out


# ---------------------------------------------------------------- create


def next_counter(session: Session, model_name: str) -> int:
    """max + 1 over every release of the model (withdrawn ones too: a counter is never reused)."""
    return (
        int(session.scalar(select(func.max(Release.counter)).where(Release.model_name == model_name)) or 0)
        + 1
    )


def _write(path: Path, data: bytes) -> StoredFile:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return StoredFile("", _sha256(data), len(data))


def _stage_files(
    tmp: Path, prefix: str, signed: SignedRelease, source: _Source, variant: str
) -> dict[str, StoredFile]:
    """Write the release's files into ``tmp``; return name -> StoredFile with final relative paths."""
    files: dict[str, StoredFile] = {}

    def put(name: str, relative: str, data: bytes) -> None:
        written = _write(tmp / relative, data)
        files[name] = StoredFile(f"{prefix}/{relative}", written.sha256, written.length)

    put("manifest", MANIFEST_FILE, signed.manifest_bytes)
    put("artifact", f"{variant}.tflite", source.artifact)
    put("report", REPORT_FILE, (source.directory / REPORT_FILE).read_bytes())
    if source.golden_file is not None:
        put("golden", "golden.npz", (source.directory / source.golden_file).read_bytes())
    for base_sha, patch in signed.patches.items():
        put(f"patch-{base_sha}", f"patches/{base_sha}.patch", patch)
    record = {name: {"path": f.path, "sha256": f.sha256, "length": f.length} for name, f in files.items()}
    (tmp / FILES_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    decisions = [
        {
            "from_version": d.from_version,
            "patch_length": d.patch_length,
            "full_compressed_length": d.full_compressed_length,
            "ratio": round(d.ratio, 4),
            "shipped": d.shipped,
        }
        for d in signed.decisions
    ]
    (tmp / DECISIONS_RECORD).write_text(json.dumps(decisions, indent=2))
    return files


def _row(
    release_id: str,
    signed: SignedRelease,
    source: _Source,
    files: dict[str, StoredFile],
    *,
    variant: str,
    hardware_classes: list[str],
    actor: str,
) -> Release:
    m = signed.manifest
    row = Release(
        id=release_id,
        model_version_id=source.version.id,
        model_name=m.model,
        version=m.version,
        counter=m.counter,
        variant=variant,
        hardware_classes=list(hardware_classes),
        artifact_path=files["artifact"].path,
        artifact_sha256=m.artifact_sha256,
        artifact_length=m.artifact_length,
        manifest_path=files["manifest"].path,
        manifest_sha256=files["manifest"].sha256,
        manifest_length=files["manifest"].length,
        report_path=files["report"].path,
        golden_path=files["golden"].path if "golden" in files else None,
        key_id=m.key_id,
        expires_at=m.expires,
        state="active",
        created_by=actor[:128],
    )
    row.deltas = [
        ReleaseDelta(
            from_version=d.from_version,
            from_counter=d.from_counter,
            base_sha256=d.base_sha256,
            patch_path=files[f"patch-{d.base_sha256}"].path,
            patch_sha256=d.patch_sha256,
            patch_length=d.patch_length,
        )
        for d in m.deltas
    ]
    return row


def create_release(
    session: Session,
    settings: Settings,
    *,
    model_name: str,
    version: str,
    variant: str,
    hardware_classes: list[str],
    actor: str,
    expires_in: timedelta | None = None,
    keystore: Keystore | None = None,
) -> Release:
    """Sign and store a release of ``model_name`` ``version`` (its ``variant``) for ``hardware_classes``.

    Commits. Raises :class:`fleet_server.releases.errors.ReleaseServiceError` subclasses: NotFound
    (model/version), InvalidRequest (variant, class, flash budget, version not semver, ...),
    NoSigningKeys, ArtifactStoreError.
    """
    classes = list(dict.fromkeys(hardware_classes))
    if not classes:
        raise InvalidRequest("hardware_classes must name at least one hardware class")
    mv = _model_version(session, model_name, version)
    source = _read_source(settings, mv, variant)
    signer = (keystore or Keystore(settings)).signer()
    expires = expires_in or timedelta(days=settings.release_expires_days_default)
    previous = _previous_artifacts(
        settings, releases_in_field(session, model_name, classes, limit=settings.release_max_deltas)
    )
    releases_dir = artifact_root(settings) / RELEASES_DIR
    releases_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(_CREATE_ATTEMPTS):
        counter = next_counter(session, model_name)
        release_id = f"{model_name}-{counter}"
        if not _IDENT.match(release_id):
            raise InvalidRequest(f"release id {release_id!r} is not a valid wire id (letters, digits, _.:-)")
        try:
            signed = build_release(
                source.artifact,
                model=model_name,
                version=version,
                counter=counter,
                hardware_classes=classes,
                variant=variant,
                signer=signer,
                previous=previous,
                expires_in=expires,
            )
        except ValueError as exc:  # unknown class, variant the class cannot run, over the flash budget
            raise InvalidRequest(str(exc)) from None
        except OtaError as exc:  # e.g. a version that is not semver: devices would refuse the manifest
            raise InvalidRequest(f"the manifest would be refused by devices: {exc.message}") from None
        tmp = releases_dir / f".tmp-{release_id}-{uuid.uuid4().hex[:12]}"
        try:
            files = _stage_files(tmp, f"{RELEASES_DIR}/{release_id}", signed, source, variant)
            row = _row(
                release_id, signed, source, files, variant=variant, hardware_classes=classes, actor=actor
            )
            session.add(row)
            try:
                session.flush()
            except (IntegrityError, OperationalError) as exc:
                # Another create took this counter (or SQLite's writer lock): re-sign with the next one.
                session.rollback()
                log.info(
                    "release counter %s of %s taken (%s); retrying", counter, model_name, type(exc).__name__
                )
                time.sleep(0.05 * (attempt + 1))
                continue
            final = releases_dir / release_id
            if final.exists():  # leftover of a crashed create whose row never committed: the row is ours
                shutil.rmtree(final)
            tmp.rename(final)
            try:
                session.commit()
            except BaseException:
                session.rollback()
                shutil.rmtree(final, ignore_errors=True)
                raise
            return row
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise Conflict(f"could not allocate a release counter for {model_name} after {_CREATE_ATTEMPTS} attempts")


# ---------------------------------------------------------------- read / withdraw


def get_release(session: Session, release_id: str) -> Release:
    row = session.scalar(
        select(Release).where(Release.id == release_id).options(selectinload(Release.deltas))
    )
    if row is None:
        raise NotFound(f"no release {release_id!r}")
    return row


def list_releases(
    session: Session, *, model_name: str | None, state: str | None, limit: int, offset: int
) -> tuple[list[Release], int]:
    query = select(Release)
    if model_name is not None:
        query = query.where(Release.model_name == model_name)
    if state is not None:
        query = query.where(Release.state == state)
    total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
    rows = session.scalars(
        query.options(selectinload(Release.deltas))
        .order_by(Release.model_name, Release.counter.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total


def withdraw_release(session: Session, release_id: str) -> Release:
    """Mark a release withdrawn (devices can no longer download it). Caller commits."""
    row = get_release(session, release_id)
    if row.state == "withdrawn":
        raise Conflict(f"release {release_id} is already withdrawn")
    row.state = "withdrawn"
    session.flush()
    return row


def withdraw_signed_by(session: Session, key_id: str) -> list[str]:
    """Withdraw every active release whose manifest ``key_id`` signed (after that key's revocation:
    devices refuse them anyway). Returns their ids; caller commits."""
    ids = list(
        session.scalars(
            select(Release.id).where(Release.key_id == key_id, Release.state == "active").order_by(Release.id)
        )
    )
    if ids:
        session.execute(update(Release).where(Release.id.in_(ids)).values(state="withdrawn"))
    return ids


def stored_files(settings: Settings, release: Release) -> dict[str, StoredFile]:
    """name -> StoredFile for every servable file of ``release`` (from its files.json record)."""
    record_path = store_path(settings, f"{RELEASES_DIR}/{release.id}/{FILES_RECORD}")
    try:
        record: dict[str, Any] = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactStoreError(f"file record of release {release.id} unreadable: {exc}") from None
    return {name: StoredFile(v["path"], v["sha256"], int(v["length"])) for name, v in record.items()}


def delta_decisions(settings: Settings, release: Release) -> list[dict[str, Any]]:
    path = store_path(settings, f"{RELEASES_DIR}/{release.id}/{DECISIONS_RECORD}")
    try:
        decisions: list[dict[str, Any]] = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return decisions


def manifest_document(settings: Settings, release: Release) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(store_path(settings, release.manifest_path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ArtifactStoreError(f"manifest of release {release.id} unreadable: {exc}") from None
    return doc
