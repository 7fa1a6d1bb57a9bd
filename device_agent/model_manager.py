"""Which model runs: the fallback chain, loading the right variant, and hot swapping the active model.

Hot swap contract: a replacement is loaded completely *before* the swap, and the swap is one reference
assignment under a lock. ``infer`` takes the active model under the same lock, so every sample runs
on exactly one model — the one active when the sample was taken — and a failed load leaves the current
model active. Only the loop thread invokes; commands (update, revert, shadow) may come from another
thread (the MQTT client's).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.report_reader import DeviceReport, ReportFieldError, _Record, parse_device_report
from device_agent.runtime.base import Invocation, ModelDoesNotFit, ModelLoadError, Runtime, read_model_bytes
from firmware_stubs.hardware_profiles import HardwareProfile

CHAIN_FILE = "chain.json"
REPORT_FILE = "report.json"
GOLDEN_FILE = "golden.npz"
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def numeric_version(version: str | int) -> int:
    """Telemetry carries an integer release version: ``"7"`` -> 7, ``"1.2.3"`` -> 1_002_003."""
    if isinstance(version, int) and not isinstance(version, bool) and version >= 0:
        return version
    text = str(version).strip()
    if text.isdigit():
        return int(text)
    m = _SEMVER.match(text)
    if m and all(int(p) < 1000 for p in m.groups()[1:]):
        major, minor, patch = (int(p) for p in m.groups())
        return major * 1_000_000 + minor * 1_000 + patch
    raise ModelLoadError(
        f"version {version!r} is neither an integer nor MAJOR.MINOR.PATCH (minor, patch < 1000)"
    )


# chain.json and report.json are read with device_agent.report_reader's explicit checks, not pydantic:
# the running agent cannot afford pydantic's ~15 MB.


@dataclass(frozen=True, kw_only=True)
class TaskRule(_Record):
    """How scores become a decision: positive when a positive class scores >= threshold."""

    class_names: list[str]
    positive_class_ids: list[int]
    score_threshold: float = 0.5
    suppression_s: float | None = None  # after a positive, ignore positives for this long (KWS)

    def __post_init__(self) -> None:
        # Lists as in chain.json (tuples from Python callers become lists); the ids index the scores.
        object.__setattr__(self, "class_names", list(self.class_names))
        object.__setattr__(self, "positive_class_ids", list(self.positive_class_ids))
        for i in self.positive_class_ids:
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise ReportFieldError("positive_class_ids", f"must be class indices >= 0, got {i!r}")
        if self.suppression_s is not None and self.suppression_s < 0:
            raise ReportFieldError("suppression_s", f"must be >= 0, got {self.suppression_s}")

    def model_copy(self, *, update: dict[str, Any] | None = None) -> TaskRule:
        """A changed copy, checked again (the name pydantic callers already use)."""
        return replace(self, **(update or {}))

    def positive_score(self, scores: np.ndarray) -> float:
        if not self.positive_class_ids:
            return float(scores.max())
        return float(scores[self.positive_class_ids].max())


@dataclass(frozen=True, kw_only=True)
class _ChainEntryFile(_Record):
    rank: int
    name: str
    artifact_dir: str
    threshold: float | None = None  # chain.json 1.1: calibrated per model; wins over the task threshold

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ReportFieldError("threshold", f"must be in (0, 1], got {self.threshold}")


@dataclass(frozen=True, kw_only=True)
class _ChainMetadataFile(_Record):
    task: str
    input_shape: list[int]
    class_names: list[str]
    positive_class_ids: list[int]
    score_threshold: float = 0.5
    suppression_s: float | None = None

    def rule(self) -> TaskRule:
        return TaskRule(class_names=self.class_names, positive_class_ids=self.positive_class_ids,
                        score_threshold=self.score_threshold, suppression_s=self.suppression_s)


@dataclass(frozen=True, kw_only=True)
class _ChainFile(_Record):
    """The fields of converters' chain.json the device needs (parsed without converters' builder)."""

    task: str
    version: str
    metadata: _ChainMetadataFile
    entries: list[_ChainEntryFile]


@dataclass(frozen=True)
class ModelArtifact:
    """One model ready to load on this hardware class: the chosen variant's bytes and what goes with them."""

    name: str
    version: int
    variant: str
    model_bytes: bytes
    report: DeviceReport  # the report.json fields the device reads (device_agent.report_reader)
    golden_path: Path | None
    source: str  # where it came from, for messages

    @classmethod
    def from_dir(
        cls,
        directory: str | Path,
        profile: HardwareProfile,
        *,
        variant: str | None = None,
        version: int | str | None = None,
        name: str | None = None,
    ) -> ModelArtifact:
        """Read a converter artifact directory; the variant defaults to report.hardware_fit's choice."""
        d = Path(directory)
        report = read_report(d)
        fit = report.hardware_fit.get(profile.name)
        if variant is None:
            if fit is None:
                raise ModelLoadError(f"{d}: report has no hardware_fit for {profile.name!r}")
            if fit.default_variant is None:
                raise ModelDoesNotFit(
                    f"{d}: no variant fits {profile.name}: {fit.default_reason or 'no reason given'}",
                    budget_bytes=profile.model_ram_budget_bytes,
                )
            variant = fit.default_variant
        if variant not in report.variants:
            raise ModelLoadError(f"{d}: report has no variant {variant!r}; has {sorted(report.variants)}")
        vr = report.variants[variant]
        path = d / vr.file
        data = read_model_bytes(path)
        digest = hashlib.sha256(data).hexdigest()
        if digest != vr.sha256:
            raise ModelLoadError(
                f"{path}: sha256 {digest[:12]}… does not match the report's {vr.sha256[:12]}…"
            )
        golden = d / report.golden.file
        return cls(
            name=name or report.name,
            version=numeric_version(report.version if version is None else version),
            variant=variant,
            model_bytes=data,
            report=report,
            golden_path=golden if golden.is_file() else None,
            source=str(path),
        )


def read_report(directory: Path) -> DeviceReport:
    """The report.json fields the device needs; ModelLoadError naming the file and the bad field."""
    path = directory / REPORT_FILE
    try:
        return parse_device_report(path.read_bytes())
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read report ({exc.strerror or exc})") from exc
    except ReportFieldError as exc:
        raise ModelLoadError(f"{path}: not a valid conversion report: {exc}") from exc


@dataclass(frozen=True)
class ChainLevel:
    level: int  # 0 = primary; fallback goes to higher levels
    name: str
    directory: Path
    threshold: float | None = None  # this model's calibrated detection threshold, if the chain has one


@dataclass(frozen=True)
class ModelChain:
    """The ordered fallback chain and the task rule every model of it shares."""

    task: str
    rule: TaskRule
    levels: tuple[ChainLevel, ...]

    @classmethod
    def from_dir(cls, directory: str | Path) -> ModelChain:
        d = Path(directory)
        path = d / CHAIN_FILE
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"{path}: cannot read chain ({exc.strerror or exc})") from exc
        try:
            chain = _ChainFile.from_obj(json.loads(raw))
        except ValueError as exc:  # JSON syntax or ReportFieldError (names the field)
            raise ModelLoadError(f"{path}: not a valid chain.json: {exc}") from exc
        if not chain.entries:
            raise ModelLoadError(f"{path}: chain has no entries")
        entries = sorted(chain.entries, key=lambda e: e.rank)
        levels = tuple(
            ChainLevel(i, e.name, d / e.artifact_dir, e.threshold) for i, e in enumerate(entries)
        )
        return cls(task=chain.task, rule=chain.metadata.rule(), levels=levels)

    def rule_for(self, level: int | None) -> TaskRule:
        """The task rule with the level's own calibrated threshold, when the chain gives one."""
        if level is None or not 0 <= level < len(self.levels) or self.levels[level].threshold is None:
            return self.rule
        return self.rule.model_copy(update={"score_threshold": self.levels[level].threshold})

    def __len__(self) -> int:
        return len(self.levels)


def make_runtime(profile: HardwareProfile) -> Runtime:
    """The runtime of a hardware class, its RAM capped at the profile's model budget."""
    if profile.runtime == "tflm":
        from device_agent.runtime.tflm import TflmRuntime

        return TflmRuntime(ram_budget_bytes=profile.model_ram_budget_bytes)
    from device_agent.runtime.litert import LiteRTRuntime

    return LiteRTRuntime(ram_budget_bytes=profile.model_ram_budget_bytes)


def load_runtime(artifact: ModelArtifact, profile: HardwareProfile) -> Runtime:
    """A runtime holding ``artifact``; checks fit first (ModelDoesNotFit) and loads (ModelLoadError)."""
    runtime = make_runtime(profile)
    if profile.runtime == "tflm":
        if artifact.variant != "full_int8":
            raise ModelDoesNotFit(f"{artifact.source}: TFLM runs only full_int8, not {artifact.variant}")
        tflm = artifact.report.tflm
        runtime.load(  # type: ignore[call-arg]
            artifact.model_bytes,
            arena_bytes=tflm.arena_bytes if tflm else None,
            io_bytes=tflm.io_bytes if tflm else 0,
        )
    else:
        runtime.load(artifact.model_bytes, ram_bytes=artifact.report.variants[artifact.variant].ram_bytes)  # type: ignore[call-arg]
    return runtime


@dataclass
class LoadedModel:
    """A model in an interpreter, ready to invoke; ``level`` is its place in the chain (None: not in it)."""

    artifact: ModelArtifact
    runtime: Runtime
    level: int | None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def label(self) -> str:
        return f"{self.artifact.name}@{self.artifact.version}/{self.artifact.variant}"

    def invoke(self, x: np.ndarray) -> Invocation:
        with self._lock:  # an interpreter is not re-entrant
            return self.runtime.invoke(x)


@dataclass(frozen=True)
class Inference:
    scores: np.ndarray
    invoke_ns: int
    model: LoadedModel
    generation: int  # increases by one at every swap; which activation served this sample


class ModelManager:
    """Keeps the active model and swaps it without dropping or repeating a sample."""

    def __init__(
        self,
        profile: HardwareProfile,
        chain: ModelChain,
        *,
        loader: Callable[[ModelArtifact, HardwareProfile], Runtime] = load_runtime,
    ) -> None:
        self.profile = profile
        self.chain = chain
        self._loader = loader
        self._lock = threading.Lock()
        self._active: LoadedModel | None = None
        self._generation = 0
        # An installed release (OTA) takes the chain's level 0: fallback steps down to the chain's cheaper
        # levels and back up to the release, not to the factory primary.
        self._primary: ModelArtifact | None = None

    # -- loading (no effect on the active model) -------------------------------------------------

    def artifact_for(self, level: int) -> ModelArtifact:
        if not 0 <= level < len(self.chain):
            raise ModelLoadError(f"chain level {level} does not exist (chain has {len(self.chain)} levels)")
        if level == 0 and self._primary is not None:
            return self._primary
        entry = self.chain.levels[level]
        return ModelArtifact.from_dir(entry.directory, self.profile)

    def set_primary(self, artifact: ModelArtifact | None) -> None:
        """Make ``artifact`` (an installed release) level 0; None gives level 0 back to the chain."""
        self._primary = artifact

    @property
    def primary_replaced(self) -> bool:
        return self._primary is not None

    def rule_for(self, level: int | None) -> TaskRule:
        """The detection rule at ``level``: a release at level 0 has no chain-calibrated threshold, so it
        runs on the task's own rule."""
        if level == 0 and self._primary is not None:
            return self.chain.rule
        return self.chain.rule_for(level)

    def load_level(self, level: int) -> LoadedModel:
        artifact = self.artifact_for(level)
        return LoadedModel(artifact, self._loader(artifact, self.profile), level)

    def load_artifact(self, artifact: ModelArtifact, level: int | None = None) -> LoadedModel:
        return LoadedModel(artifact, self._loader(artifact, self.profile), level)

    # -- the active model ---------------------------------------------------------------------------

    @property
    def active(self) -> LoadedModel | None:
        with self._lock:
            return self._active

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def snapshot(self) -> tuple[LoadedModel | None, int]:
        """The active model and its generation, read together."""
        with self._lock:
            return self._active, self._generation

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Make an already loaded model active; returns the one it replaced."""
        with self._lock:
            previous, self._active = self._active, model
            self._generation += 1
            return previous

    def activate(self, level: int) -> LoadedModel:
        """Load chain ``level`` and swap it in; on any load error the active model stays as it was."""
        model = self.load_level(level)  # raises before anything changes
        self.swap(model)
        return model

    def start(self, first_level: int = 0) -> tuple[LoadedModel, list[tuple[int, ModelLoadError]]]:
        """Activate the first level from ``first_level`` on that loads; returns it and the failures."""
        failures: list[tuple[int, ModelLoadError]] = []
        for level in range(first_level, len(self.chain)):
            try:
                return self.activate(level), failures
            except ModelLoadError as exc:
                failures.append((level, exc))
        detail = "; ".join(f"level {lv}: {exc}" for lv, exc in failures)
        raise ModelLoadError(f"no model of the chain loads on {self.profile.name}: {detail}")

    def infer(self, x: np.ndarray) -> Inference:
        """Run one sample on the model active now."""
        with self._lock:
            model, generation = self._active, self._generation
        if model is None:
            raise ModelLoadError("no active model")
        inv = model.invoke(x)
        return Inference(inv.scores, inv.invoke_ns, model, generation)
