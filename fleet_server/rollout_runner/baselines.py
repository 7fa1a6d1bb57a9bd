"""The converter's baseline input histograms of a release (what the PSI gate compares to), cached per release.

Loading and validation are drift's (:func:`fleet_server.drift.baselines.load_release_baseline`: the model
version's converter report, then the release's own copy, both relative to the artifact store). Cached per
release id: a release's files never change, and a tick must not re-read them for every rollout.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy.orm import Session

from fleet_server.db.releases import Release
from fleet_server.drift.baselines import BaselineUnavailable, load_release_baseline

log = logging.getLogger(__name__)

Baseline = dict[int, list[float]]


class BaselineCache:
    def __init__(self, artifact_dir: Path) -> None:
        self.artifact_dir = Path(artifact_dir)
        self._cache: dict[str, Baseline | None] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, release: Release) -> Baseline | None:
        """The release's baseline, or None (logged) when it has no usable converter report."""
        with self._lock:
            if release.id in self._cache:
                return self._cache[release.id]
        baseline = self._load(session, release)
        with self._lock:
            self._cache[release.id] = baseline
        return baseline

    def _load(self, session: Session, release: Release) -> Baseline | None:
        try:
            loaded = load_release_baseline(session, self.artifact_dir, release)
        except BaselineUnavailable as exc:
            log.warning("release %s: no usable converter baseline: %s", release.id, exc)
            return None
        return {i: [float(c) for c in counts] for i, counts in loaded.features.items()}
