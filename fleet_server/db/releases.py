"""Signed releases (one manifest = one artifact for one or more hardware classes) and their deltas.

Files live in the artifact store (``Settings.artifact_dir``); rows keep paths *relative* to it plus the
hash and length a device checks, so the store can move without a migration.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fleet_server.db.base import Base, BigId, JsonDict, UTCDateTime, utcnow

RELEASE_STATES = ("active", "withdrawn")


class Release(Base):
    __tablename__ = "releases"
    __table_args__ = (
        UniqueConstraint("model_name", "counter", name="uq_releases_model_name_counter"),
        CheckConstraint("state IN ('active', 'withdrawn')", name="state_known"),
        CheckConstraint("counter >= 0", name="counter_nonneg"),
    )

    # Readable id used on the wire (UpdateAvailable.release_id, OtaStatus.release_id): "<model>-<counter>".
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT"), index=True
    )
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(32))  # the model version's name, e.g. "1.2.0"
    counter: Mapped[int] = mapped_column(BigId)  # the manifest's monotonic counter (no downgrade)
    variant: Mapped[str] = mapped_column(String(16))  # float32 / float16 / dynamic_int8 / int8
    hardware_classes: Mapped[list[str]] = mapped_column(JsonDict)
    # Paths relative to the artifact store, with what a device verifies.
    artifact_path: Mapped[str] = mapped_column(String(512))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    artifact_length: Mapped[int] = mapped_column(BigId)
    manifest_path: Mapped[str] = mapped_column(String(512))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    manifest_length: Mapped[int] = mapped_column(Integer)
    report_path: Mapped[str | None] = mapped_column(String(512), default=None)
    golden_path: Mapped[str | None] = mapped_column(String(512), default=None)
    key_id: Mapped[str] = mapped_column(String(64))  # release key that signed the manifest
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")

    deltas: Mapped[list[ReleaseDelta]] = relationship(
        back_populates="release", cascade="all, delete-orphan", passive_deletes=True
    )


class ReleaseDelta(Base):
    """A BSDIFF4 patch from an older artifact still in the field to this release's artifact."""

    __tablename__ = "release_deltas"
    __table_args__ = (UniqueConstraint("release_id", "base_sha256", name="uq_release_deltas_release_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id", ondelete="CASCADE"), index=True)
    from_version: Mapped[str] = mapped_column(String(32))
    from_counter: Mapped[int] = mapped_column(BigId)
    base_sha256: Mapped[str] = mapped_column(String(64))
    patch_path: Mapped[str] = mapped_column(String(512))
    patch_sha256: Mapped[str] = mapped_column(String(64))
    patch_length: Mapped[int] = mapped_column(BigId)

    release: Mapped[Release] = relationship(back_populates="deltas")
