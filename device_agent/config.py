"""The agent's one config object, loaded from ``device.toml`` (see docs/device-agent.md for an example).

Relative paths in the file are taken relative to the file's directory, so a config and its chain
can move together. Every error names the file and the offending key. The sections are validated
dataclasses (:mod:`device_agent.sections`), not pydantic models: loading the config must not cost the
agent pydantic's ~15 MB.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from device_agent.energy_policy import EnergyThresholds
from device_agent.fallback import FallbackThresholds
from device_agent.sections import Section, SectionError, bounded
from firmware_stubs.hardware_profiles import PROFILES, HardwareProfile
from telemetry.topics import DEVICE_ID_MAX_LEN, DEVICE_ID_PATTERN

BROKER_SCHEMES = ("mqtt", "mqtts", "tcp", "ssl", "ws", "wss")
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


class ConfigError(ValueError):
    """device.toml is missing, not TOML, or has a bad value; the message names the file and key."""


@dataclass(frozen=True, kw_only=True)
class BrokerConfig(Section):
    url: str = "mqtt://localhost:1883"
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None  # preferred over an inline password: keep secrets out of the config
    client_id: str | None = None  # default: the device id
    keepalive_s: int = bounded(30, ge=5, le=3600)
    tls_ca_file: Path | None = None
    protocol: str = "5"  # "5" (retries windows no subscriber took) or "3.1.1" (brokers without MQTT 5)

    def _validate(self) -> None:
        if self.protocol not in ("5", "3.1.1"):
            raise SectionError(("protocol",), f"must be '5' or '3.1.1', got {self.protocol!r}")
        parts = urlsplit(self.url)
        if parts.scheme not in BROKER_SCHEMES or not parts.hostname:
            raise SectionError(
                ("url",), f"broker url must be <{'|'.join(BROKER_SCHEMES)}>://host[:port], got {self.url!r}"
            )
        if self.password is not None and self.password_file is not None:
            raise SectionError((), "give either password or password_file, not both")

    def read_password(self) -> str | None:
        if self.password_file is None:
            return self.password
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"broker.password_file {self.password_file}: {exc.strerror or exc}") from exc


@dataclass(frozen=True, kw_only=True)
class LoopConfig(Section):
    sample_period_s: float = bounded(1.0, gt=0)  # wake every this many seconds (duty cycle)
    window_s: float = bounded(60.0, gt=0, le=65_535)  # close a metrics window this often
    # baseline feature counted per window; None: the one with the most baseline bins
    input_feature: int | None = bounded(None, ge=0, le=255)


@dataclass(frozen=True, kw_only=True)
class ShadowConfig(Section):
    # candidate active time at most this share of the active model's
    energy_budget_fraction: float | None = bounded(0.25, gt=0)


@dataclass(frozen=True, kw_only=True)
class HealthConfig(Section):
    max_latency_us: float | None = bounded(None, gt=0)  # on-device median invoke budget


@dataclass(frozen=True, kw_only=True)
class AgentConfig(Section):
    device_id: str
    hardware_class: str
    model_dir: Path  # the fallback chain (chain.json + one artifact directory per model)
    state_dir: Path = Path("state")  # agent state, telemetry buffer, OTA slots
    server_url: str = "http://localhost:8000"
    # Before every update, fetch the fleet server's root-signed revocation list (server_url +
    # /api/v1/device/trust), verify it against the device's root keys and persist it.
    fetch_revocations: bool = False
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    fallback: FallbackThresholds = field(default_factory=FallbackThresholds)
    energy: EnergyThresholds = field(default_factory=EnergyThresholds)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    health: HealthConfig = field(default_factory=HealthConfig)

    def _validate(self) -> None:
        if len(self.device_id) > DEVICE_ID_MAX_LEN or _DEVICE_ID.fullmatch(self.device_id) is None:
            raise SectionError(
                ("device_id",),
                f"{self.device_id!r} is not a device id ({DEVICE_ID_PATTERN}, at most {DEVICE_ID_MAX_LEN})",
            )
        if self.hardware_class not in PROFILES:
            raise SectionError(
                ("hardware_class",),
                f"unknown hardware class {self.hardware_class!r}; known: {', '.join(sorted(PROFILES))}",
            )
        parts = urlsplit(self.server_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SectionError(
                ("server_url",), f"server_url must be http(s)://host[:port], got {self.server_url!r}"
            )

    @property
    def profile(self) -> HardwareProfile:
        return PROFILES[self.hardware_class]


def _resolve(data: dict, base: Path) -> dict:
    """Make the known path keys absolute relative to the config file's directory."""
    out = dict(data)
    out.setdefault("state_dir", "state")
    for key in ("model_dir", "state_dir"):
        if isinstance(out.get(key), str):
            out[key] = str((base / out[key]).resolve()) if not Path(out[key]).is_absolute() else out[key]
    broker = out.get("broker")
    if isinstance(broker, dict):
        broker = dict(broker)
        for key in ("password_file", "tls_ca_file"):
            if isinstance(broker.get(key), str) and not Path(broker[key]).is_absolute():
                broker[key] = str((base / broker[key]).resolve())
        out["broker"] = broker
    return out


def load_config(path: str | Path) -> AgentConfig:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config ({exc.strerror or exc})") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    try:
        return AgentConfig.from_dict(_resolve(data, p.parent.resolve()))
    except SectionError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
