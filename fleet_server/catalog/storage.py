"""Where the catalog keeps files in the artifact store (DB rows hold paths relative to it).

    models/<model>/<version>/upload/{model.keras, calibration.npz, evaluation.npz}   uploaded inputs
    models/<model>/<version>/converted/...                                           converter output
    models/<model>/.staging-<random>/                                                being received

``converted`` is written by ``converters.pipeline.convert_model`` under a hidden
``.converted.partial-*`` name and renamed into place, so a version's artifact_dir never points at a
half-written directory; partial directories left by a killed worker are removed before the next run.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from fleet_server.settings import Settings

MODELS_DIR = "models"
UPLOAD_DIR = "upload"
CONVERTED_DIR = "converted"
MODEL_FILE = "model.keras"
CALIBRATION_FILE = "calibration.npz"
EVALUATION_FILE = "evaluation.npz"
UPLOAD_FILES = (MODEL_FILE, CALIBRATION_FILE, EVALUATION_FILE)


def artifact_root(settings: Settings) -> Path:
    assert settings.artifact_dir is not None  # filled by Settings' validator
    return Path(settings.artifact_dir)


def version_rel(model: str, version: str) -> str:
    return f"{MODELS_DIR}/{model}/{version}"


def upload_rel(model: str, version: str) -> str:
    return f"{version_rel(model, version)}/{UPLOAD_DIR}"


def converted_rel(model: str, version: str) -> str:
    return f"{version_rel(model, version)}/{CONVERTED_DIR}"


def resolve(settings: Settings, rel: str) -> Path:
    """Absolute path of a stored relative path; refuses anything that would leave the store."""
    root = artifact_root(settings).resolve()
    path = (root / rel).resolve()
    if root != path and root not in path.parents:
        raise ValueError(f"stored path {rel!r} leaves the artifact store")
    return path


def new_staging_dir(settings: Settings, model: str) -> Path:
    path = artifact_root(settings) / MODELS_DIR / model / f".staging-{uuid.uuid4().hex[:16]}"
    for attempt in range(3):
        try:
            path.mkdir(parents=True)
            return path
        except FileNotFoundError:  # a concurrent discard_staging removed an empty parent meanwhile
            if attempt == 2:
                raise
    return path


def discard_staging(settings: Settings, staging: Path) -> None:
    """Remove a staging directory and the model/store directories it left empty (a refusal stores nothing)."""
    shutil.rmtree(staging, ignore_errors=True)
    root = artifact_root(settings)
    for parent in (staging.parent, staging.parent.parent):
        if parent in (root, root.parent):
            break
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_partial_outputs(version_dir: Path) -> list[Path]:
    """Delete what a killed conversion left next to ``converted`` (never ``converted`` itself)."""
    removed = []
    for pattern in (f".{CONVERTED_DIR}.partial-*", f".{CONVERTED_DIR}.old-*"):
        for path in version_dir.glob(pattern):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def place_version_dir(staging: Path, version_dir: Path, sub: str) -> None:
    """Make ``version_dir`` hold exactly the fully written ``staging`` directory as ``sub``.

    The caller holds the version's row (unique constraint, not yet committed), so a directory already at
    ``version_dir`` belongs to no row (left by a deleted version or a crash) and is replaced.
    """
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    staging.rename(version_dir / sub)
