"""All fleet-server configuration in one pydantic-settings object (env prefix ``TINYFLEET_``).

Nested values are not used on purpose: every knob is one flat environment variable, e.g.
``TINYFLEET_DATABASE_URL=postgresql+psycopg://fleet@db/fleet`` or ``TINYFLEET_API_PORT=9000``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Hard ceiling for any page; settings may lower it, never raise it (bounds memory per request).
HARD_MAX_PAGE_SIZE = 1000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TINYFLEET_", extra="forbid", validate_default=True)

    # Storage
    data_dir: Path = Field(
        default=Path("var/tinyfleet"), description="Root for the SQLite file and artifacts."
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means a SQLite file <data_dir>/tinyfleet.db. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db",
    )
    artifact_dir: Path | None = Field(
        default=None, description="Artifact store; default <data_dir>/artifacts."
    )
    migrate_on_start: bool = Field(
        default=True, description="Run `alembic upgrade head` when the app starts."
    )
    db_echo: bool = False

    # MQTT broker the server talks to (ingest worker, commands)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None

    # HTTP API
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    trust_forwarded_for: bool = Field(
        default=False, description="Take the client IP from X-Forwarded-For (only behind a trusted proxy)."
    )

    # Secrets
    token_bytes: int = Field(
        default=32, ge=16, le=64, description="Random bytes in API tokens and device secrets."
    )
    # Device secrets are random (256 bit), so the KDF only slows down a thief of the DB; Mosquitto's
    # PBKDF2-SHA512 ($7$) format is used so the broker password file can be generated from the DB.
    device_credential_iterations: int = Field(default=10_000, ge=1, le=10_000_000)

    # Limits
    page_size_default: int = Field(default=50, ge=1, le=HARD_MAX_PAGE_SIZE)
    page_size_max: int = Field(default=500, ge=1, le=HARD_MAX_PAGE_SIZE)
    max_tags_per_device: int = Field(default=32, ge=0, le=1000)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'tinyfleet.db').resolve()}"
        if self.artifact_dir is None:
            self.artifact_dir = self.data_dir / "artifacts"
        if self.page_size_default > self.page_size_max:
            raise ValueError("page_size_default must not exceed page_size_max")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        """Create the data and artifact directories (for the SQLite default)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        assert self.artifact_dir is not None
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
