"""The agent's one config object, loaded from ``device.toml`` (see docs/device-agent.md for an example).

Relative paths in the file are taken relative to the file's directory, so a config and its chain
can move together. Every error names the file and the offending key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from device_agent.energy_policy import EnergyThresholds
from device_agent.fallback import FallbackThresholds
from firmware_stubs.hardware_profiles import PROFILES, HardwareProfile
from telemetry.topics import DEVICE_ID_MAX_LEN, DEVICE_ID_PATTERN

BROKER_SCHEMES = ("mqtt", "mqtts", "tcp", "ssl", "ws", "wss")


class ConfigError(ValueError):
    """device.toml is missing, not TOML, or has a bad value; the message names the file and key."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BrokerConfig(_Section):
    url: str = "mqtt://localhost:1883"
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None  # preferred over an inline password: keep secrets out of the config
    client_id: str | None = None  # default: the device id
    keepalive_s: int = Field(30, ge=5, le=3600)
    tls_ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in BROKER_SCHEMES or not parts.hostname:
            raise ValueError(f"broker url must be <{'|'.join(BROKER_SCHEMES)}>://host[:port], got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_password(self) -> BrokerConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either password or password_file, not both")
        return self

    def read_password(self) -> str | None:
        if self.password_file is None:
            return self.password
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"broker.password_file {self.password_file}: {exc.strerror or exc}") from exc


class LoopConfig(_Section):
    sample_period_s: float = Field(1.0, gt=0, description="wake every this many seconds (duty cycle)")
    window_s: float = Field(60.0, gt=0, le=65_535, description="close a metrics window this often")
    input_feature: int | None = Field(
        None,
        ge=0,
        le=255,
        description="baseline feature counted per window; None: the one with the most baseline bins",
    )


class ShadowConfig(_Section):
    energy_budget_fraction: float | None = Field(
        0.25, gt=0, description="candidate active time at most this share of the active model's"
    )


class HealthConfig(_Section):
    max_latency_us: float | None = Field(None, gt=0, description="on-device median invoke budget")


class AgentConfig(_Section):
    device_id: Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN, max_length=DEVICE_ID_MAX_LEN)]
    hardware_class: str
    model_dir: Path  # the fallback chain (chain.json + one artifact directory per model)
    state_dir: Path = Path("state")  # agent state, telemetry buffer, OTA slots
    server_url: str = "http://localhost:8000"
    broker: BrokerConfig = BrokerConfig()
    loop: LoopConfig = LoopConfig()
    fallback: FallbackThresholds = FallbackThresholds()
    energy: EnergyThresholds = EnergyThresholds()
    shadow: ShadowConfig = ShadowConfig()
    health: HealthConfig = HealthConfig()

    @field_validator("hardware_class")
    @classmethod
    def _known_class(cls, v: str) -> str:
        if v not in PROFILES:
            raise ValueError(f"unknown hardware class {v!r}; known: {', '.join(sorted(PROFILES))}")
        return v

    @field_validator("server_url")
    @classmethod
    def _http(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server_url must be http(s)://host[:port], got {v!r}")
        return v

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
        return AgentConfig.model_validate(_resolve(data, p.parent.resolve()))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{p}: {problems}") from exc
