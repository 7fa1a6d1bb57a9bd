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

    # --- dashboard (fleet_server/dashboard)
    dashboard_secret: SecretStr | None = Field(
        default=None,
        description="Signs dashboard session cookies; unset: generated once into <data_dir>/"
        "dashboard_secret. Set it (one value) when several server processes serve the dashboard.",
    )
    dashboard_session_max_age_s: int = Field(default=8 * 3600, ge=60, le=30 * 86400)
    dashboard_cookie_secure: bool = Field(
        default=False, description="Mark the session cookie Secure (serve the dashboard over HTTPS)."
    )
    dashboard_stale_after_s: int = Field(default=900, ge=1, description="Last seen older: device 'stale'.")
    dashboard_offline_after_s: int = Field(default=3600, ge=1, description="Older still: 'offline'.")
    dashboard_battery_lookback_s: int = Field(
        default=6 * 3600, ge=60, description="Battery/duty figures: each device's newest window this recent."
    )

    # --- drift, alerts, retraining (fleet_server/drift, fleet_server/telemetry_queries)
    retraining_webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=512,
        description="Retraining-trigger events are POSTed here as JSON; unset: they stay pending.",
    )
    retraining_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signs each POST: X-TinyFleet-Signature: sha256=<hex HMAC-SHA256 of the body>.",
    )
    retraining_webhook_timeout_s: float = Field(default=5.0, gt=0, le=120)
    retraining_webhook_attempts: int = Field(
        default=3, ge=1, le=10, description="Tries per delivery run, with backoff in between."
    )
    retraining_webhook_backoff_s: float = Field(default=0.5, ge=0, le=60, description="First in-run backoff.")
    retraining_webhook_max_backoff_s: float = Field(
        default=3600.0, ge=1, description="Cap of the backoff between delivery runs (never given up)."
    )
    drift_scheduler_enabled: bool = Field(
        default=False,
        description="Run the periodic drift evaluation thread in the app (`server run` turns it on).",
    )
    drift_eval_interval_s: float = Field(default=300.0, gt=0, description="Periodic drift evaluation.")
    drift_window_s: int = Field(
        default=86_400, ge=60, le=90 * 86_400, description="Telemetry range one drift evaluation sums."
    )
    drift_min_samples: int = Field(default=500, ge=1, description="Histogram counts needed per feature.")
    drift_battery_drain_spec_pct_per_h: float | None = Field(
        default=None, gt=0, description="Retraining trigger when a cohort drains faster; unset: no check."
    )
    drift_snapshot_retention_days: int = Field(default=30, ge=1, le=3650)
    telemetry_max_points: int = Field(default=2000, ge=10, le=100_000, description="Buckets per series.")
    telemetry_max_range_days: int = Field(default=92, ge=1, le=3660)
    telemetry_min_bucket_s: int = Field(default=60, ge=1, le=86_400)

    # --- rollouts (fleet_server/rollout_runner)
    rollout_runner_enabled: bool = Field(
        default=True, description="Run the rollout runner as a background thread of `tinyfleet server run`."
    )
    rollout_tick_s: float = Field(default=5.0, gt=0, le=3600, description="Seconds between runner ticks.")
    rollout_lock_key: int = Field(
        default=0x74666C74, ge=-(2**63), le=2**63 - 1, description="PostgreSQL advisory lock key (leader)."
    )
    rollout_public_base_url: str = Field(
        default="",
        description="Base URL devices download releases from (in update commands); empty: "
        "http://<api_host>:<api_port>.",
    )
    rollout_retarget_delay_s: float = Field(
        default=120.0,
        ge=0,
        description="Rapid-tier retarget (re-send the previous release) waits this long after the immediate "
        "revert and is skipped for devices that already report the previous version.",
    )
    rollout_shadow_sample_fraction: float = Field(default=0.25, gt=0, le=1)
    rollout_publish_timeout_s: float = Field(default=10.0, gt=0, le=600)
    rollout_battery_lookback_s: int = Field(
        default=1800, ge=0, description="Battery/charging for scheduling: newest window this recent."
    )

    # --- releases and signing keys (fleet_server/releases)
    keys_dir: Path | None = Field(
        default=None, description="Signing keys (PKCS#8, mode 0600); default <data_dir>/keys."
    )
    key_passphrase: SecretStr | None = Field(
        default=None, description="Encrypts the private key files; unset: stored unencrypted (mode 0600)."
    )
    release_key_valid_days: int = Field(default=365, ge=1, le=3650, description="Key certificate life.")
    release_expires_days_default: int = Field(default=30, ge=1, le=365, description="Manifest expiry.")
    release_max_deltas: int = Field(
        default=8, ge=0, le=32, description="Deltas per release at most (the newest versions in the field)."
    )

    # --- catalog: model upload and conversion jobs (fleet_server/catalog)
    job_queue: str = Field(
        default="local",
        pattern=r"^(local|rq)$",
        description="Who runs conversion jobs: 'local' (a worker process polling the database) or 'rq' "
        "(RQ workers on Redis, any machine sharing the database and the artifact store).",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis for job_queue=rq.")
    rq_queue_name: str = Field(default="tinyfleet-conversions", min_length=1, max_length=128)
    job_worker_autostart: bool = Field(
        default=False,
        description="With job_queue=local: the API process starts one local worker child process.",
    )
    job_poll_interval_s: float = Field(default=1.0, gt=0, le=60, description="Local worker idle poll.")
    job_heartbeat_interval_s: float = Field(default=5.0, gt=0, le=300)
    job_stale_after_s: float = Field(
        default=60.0, gt=0, le=86400, description="A running job without heartbeat this long is requeued."
    )
    job_max_attempts: int = Field(default=3, ge=1, le=20, description="Worker losses before a job fails.")
    job_timeout_s: int = Field(default=3600, ge=10, le=86400, description="RQ job timeout.")
    model_upload_max_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1024, description="Whole multipart upload of one model version."
    )

    # --- API serving: body limits, audit flood bound, workers (fleet_server/api/body_limit.py, audit_flood)
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body (413 above); see body_limit_overrides"
    )
    body_limit_overrides: dict[str, int] = Field(
        default_factory=dict,
        description='Per path prefix body limits as JSON, "*" = one path segment, e.g. '
        '{"/api/v1/models/*/versions": 209715200}; that upload route defaults to model_upload_max_bytes.',
    )
    audit_anonymous_per_minute: int = Field(
        default=60,
        ge=1,
        le=1_000_000,
        description="Audit rows per client IP and minute for anonymous refusals; the rest become one "
        "aggregated row with their count. Authenticated actors are never limited.",
    )
    api_workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes of `server run`.")

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
