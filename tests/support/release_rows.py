"""Release rows without a converted model (hashes and paths made up), for tests and benchmarks that only
need a release to point a rollout at: the rollout runner's tests, the dashboard's, bench/bench_rollout_*.

Import with ``tests/support`` on ``sys.path``: ``from release_rows import add_release``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from sqlalchemy.orm import Session

from fleet_server.db import MlModel, ModelVersion, Release

MODEL = "kws"


def add_release(
    session: Session,
    counter: int,
    *,
    state: str = "active",
    model: str = MODEL,
    hardware_classes: Sequence[str] = ("esp32-s3",),
    artifact_dir: str | None = None,
) -> Release:
    """Release ``<model>-<counter>`` of model version ``1.<counter>.0`` (the model row made if missing);
    ``artifact_dir``: the version's converter directory in the artifact store (for its baselines)."""
    m = session.query(MlModel).filter_by(name=model).one_or_none()
    if m is None:
        m = MlModel(name=model)
        session.add(m)
        session.flush()
    mv = ModelVersion(model_id=m.id, version=f"1.{counter}.0", artifact_dir=artifact_dir)
    session.add(mv)
    session.flush()
    sha = hashlib.sha256(f"{model}-{counter}".encode()).hexdigest()
    rel = Release(
        id=f"{model}-{counter}",
        model_version_id=mv.id,
        model_name=model,
        version=mv.version,
        counter=counter,
        variant="full_int8",
        hardware_classes=list(hardware_classes),
        artifact_path=f"releases/{model}-{counter}/model.tflite",
        artifact_sha256=sha,
        artifact_length=1000 + counter,
        manifest_path=f"releases/{model}-{counter}/manifest.json",
        manifest_sha256=sha,
        manifest_length=500,
        key_id="k1",
        expires_at=dt.datetime(2099, 1, 1, tzinfo=dt.UTC),
        state=state,
        created_by="test",
    )
    session.add(rel)
    session.flush()
    return rel
