"""The converter's baseline input histograms of a release (what the PSI gate and drift alerts compare to).

Found through the release: its own copy of the converter report (``Release.report_path``) or the model
version's converter output (``ModelVersion.artifact_dir``/report.json), both relative to the artifact
store. Read as plain JSON (only ``baselines.features[*].counts`` is needed) and cached per release: a
release's files never change.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from sqlalchemy.orm import Session

from fleet_server.db.ml_models import ModelVersion
from fleet_server.db.releases import Release

log = logging.getLogger(__name__)

Baseline = dict[int, list[float]]


def baseline_from_report(report: dict) -> Baseline:
    features = report.get("baselines", {}).get("features", [])
    return {i: [float(c) for c in f["counts"]] for i, f in enumerate(features) if f.get("counts")}


class BaselineCache:
    def __init__(self, artifact_dir: Path) -> None:
        self.artifact_dir = Path(artifact_dir)
        self._cache: dict[str, Baseline | None] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, release: Release) -> Baseline | None:
        with self._lock:
            if release.id in self._cache:
                return self._cache[release.id]
        baseline = self._load(session, release)
        with self._lock:
            self._cache[release.id] = baseline
        return baseline

    def _candidates(self, session: Session, release: Release) -> list[Path]:
        paths = []
        if release.report_path:
            paths.append(self.artifact_dir / release.report_path)
        version = session.get(ModelVersion, release.model_version_id)
        if version is not None and version.artifact_dir:
            paths.append(self.artifact_dir / version.artifact_dir / "report.json")
        return paths

    def _load(self, session: Session, release: Release) -> Baseline | None:
        for path in self._candidates(session, release):
            try:
                report = json.loads(path.read_text())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                log.warning("release %s: converter report %s unreadable: %s", release.id, path, exc)
                continue
            try:
                return baseline_from_report(report) or None
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("release %s: no usable baselines in %s: %s", release.id, path, exc)
        return None
