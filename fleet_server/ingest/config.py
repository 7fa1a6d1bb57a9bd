"""Ingest worker settings (the broker address and DB URL come from fleet_server.settings.Settings)."""

from __future__ import annotations

import socket

from pydantic import BaseModel, ConfigDict, Field, model_validator

from telemetry.topics import shared_subscription

DEFAULT_GROUP = "tinyfleet-ingest"


def default_client_id() -> str:
    # Stable across restarts of the same worker on the same host: the broker keeps the session (and the
    # messages it delivered but we never acknowledged) under this id and hands them back on reconnect.
    return f"tinyfleet-ingest-{socket.gethostname()}"[:64]


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(default=DEFAULT_GROUP, description="Shared-subscription group name.")
    client_id: str = Field(default_factory=default_client_id, min_length=1, max_length=64)
    batch_size: int = Field(default=1000, ge=1, le=20_000, description="Flush when this many are pending.")
    batch_delay_s: float = Field(default=0.05, gt=0, le=60, description="Flush at most this late.")
    # MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may send us. Must exceed
    # the batch size, or a batch never fills and every flush waits for the timer.
    receive_maximum: int = Field(default=0, ge=0, le=65_535, description="0 = 2 x batch_size.")
    session_expiry_s: int = Field(
        default=7 * 86_400, ge=1, description="Broker keeps unacked messages this long for a dead worker."
    )
    retry_initial_s: float = Field(default=0.1, gt=0)
    retry_max_s: float = Field(default=5.0, gt=0)
    known_devices_refresh_s: float = Field(
        default=5.0, ge=0, description="An unknown device id re-reads the devices table at most this often."
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600)

    @model_validator(mode="after")
    def _check(self) -> IngestConfig:
        shared_subscription(self.group)  # raises TopicError naming the bad group
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("retry_initial_s must not exceed retry_max_s")
        return self

    @property
    def effective_receive_maximum(self) -> int:
        return self.receive_maximum or min(65_535, max(2 * self.batch_size, 20))
