"""The converter's baseline of a released model version: Release -> ModelVersion -> report.json.

The one loader for drift alerts (:func:`load_baseline`) and the rollout runner's PSI gate
(``rollout_runner/baselines.py`` caches :func:`load_release_baseline` per release).

Devices report ``ModelRef.version`` = the release counter, so ``(model_name, counter)`` finds the
Release, its ``model_version_id`` the ModelVersion whose ``artifact_dir`` (relative to the artifact
store) holds the converter's ``report.json``; the release's own ``report_path`` copy is the fallback.
Feature ``i`` of the baseline is what a window with ``input_feature == i`` counts, bin for bin
(converters/baselines.py). Only the ``baselines`` part of the report is read and validated.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from converters.report import REPORT_FILE, Baselines
from fleet_server.db.ml_models import ModelVersion
from fleet_server.db.releases import Release


class BaselineUnavailable(Exception):
    """No release, no report, or a report without usable baselines; the message says which."""


@dataclass(frozen=True)
class LoadedBaseline:
    release_id: str
    model_version_name: str
    source: str  # path relative to the artifact store
    features: dict[int, list[int]]  # feature index -> baseline counts

    @property
    def bins(self) -> dict[int, int]:
        return {f: len(c) for f, c in self.features.items()}


@functools.lru_cache(maxsize=256)
def _read_baselines(path: str, mtime_ns: int, size: int) -> dict[int, list[int]]:
    # Keyed on mtime and size too: a rewritten report is read again, an unchanged one costs nothing.
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "baselines" not in data:
        raise BaselineUnavailable(f"{path} has no 'baselines' section")
    baselines = Baselines.model_validate(data["baselines"])
    features = {i: list(h.counts) for i, h in enumerate(baselines.features)}
    if not features or any(sum(c) <= 0 for c in features.values()):
        raise BaselineUnavailable(f"{path} has empty baseline histograms")
    return features


def _candidates(session: Session, release: Release) -> list[str]:
    paths: list[str] = []
    mv = session.get(ModelVersion, release.model_version_id)
    if mv is not None and mv.artifact_dir:
        paths.append(str(Path(mv.artifact_dir) / REPORT_FILE))
    if release.report_path:
        paths.append(release.report_path)
    return paths


def load_baseline(session: Session, artifact_dir: Path, model_name: str, counter: int) -> LoadedBaseline:
    """The baseline for the release ``(model_name, counter)``; raises :class:`BaselineUnavailable`."""
    release = session.scalar(
        select(Release).where(Release.model_name == model_name, Release.counter == counter)
    )
    if release is None:
        raise BaselineUnavailable(f"no release of {model_name!r} with counter {counter}")
    return load_release_baseline(session, artifact_dir, release)


def load_release_baseline(session: Session, artifact_dir: Path, release: Release) -> LoadedBaseline:
    """The converter baseline of ``release`` (drift alerts and the rollout runner's PSI gate both read it
    here); raises :class:`BaselineUnavailable` with every candidate's problem."""
    root = Path(artifact_dir).resolve()
    problems: list[str] = []
    for rel in _candidates(session, release):
        path = (root / rel).resolve()
        if not path.is_relative_to(root):  # a row must not point outside the store
            problems.append(f"{rel}: outside the artifact store")
            continue
        if path.is_dir():
            path = path / REPORT_FILE
        try:
            st = path.stat()
            features = _read_baselines(str(path), st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            problems.append(f"{rel}: missing")
            continue
        except (OSError, ValueError, BaselineUnavailable) as exc:
            problems.append(f"{rel}: {str(exc)[:200]}")
            continue
        mv = session.get(ModelVersion, release.model_version_id)
        return LoadedBaseline(
            release_id=release.id,
            model_version_name=mv.version if mv is not None else release.version,
            source=rel,
            features=features,
        )
    raise BaselineUnavailable(
        f"release {release.id} has no readable converter baseline"
        + (f" ({'; '.join(problems)})" if problems else " (no report path recorded)")
    )
