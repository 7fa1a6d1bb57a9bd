"""Rollouts, their stored decisions and the command outbox.

* ``rollouts``: one row per rollout; ``state`` is the controller's ``RolloutState`` as JSON (what a
  restarted runner resumes from). ``revision`` is an optimistic lock: every writer (runner tick, operator
  action) updates ``WHERE revision = <what it read>``, so a tick computed on a state an operator changed
  meanwhile is thrown away instead of overwriting the pause.
* ``rollout_decisions``: every ``DecisionRecord`` with its evidence; ``seq`` is unique per rollout.
* ``rollout_commands``: the outbox. A command decided is written in the same transaction as the decision,
  with its final ``cmd_id`` and encoded payload; the publisher sends unsent rows and then sets ``sent_at``.
  A crash between commit and publish leaves the row unsent (published after the restart); a crash between
  publish and ``sent_at`` republishes the *same bytes* (same ``cmd_id``), which agents drop as a duplicate.

Times decided by the runner (``at``, ``created_at``, ``sent_at``, ``not_before``) are Unix seconds of the
runner's clock, which may be simulated (the demo); row bookkeeping times are real UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.base import Base, BigId, JsonDict, UTCDateTime, utcnow
from telemetry.topics import DEVICE_ID_MAX_LEN

ROLLOUT_STATUSES = ("running", "paused", "rolled_back", "aborted", "completed")
COMMAND_KINDS = ("update", "shadow_on", "shadow_off", "retarget", "revert")


class RolloutRow(Base):
    __tablename__ = "rollouts"
    __table_args__ = (
        CheckConstraint(
            "status IN ('running', 'paused', 'rolled_back', 'aborted', 'completed')", name="status_known"
        ),
        Index("ix_rollouts_model_name_status", "model_name", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id", ondelete="RESTRICT"), index=True)
    previous_release_id: Mapped[str | None] = mapped_column(
        ForeignKey("releases.id", ondelete="RESTRICT"), default=None
    )
    model_name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="running")
    state: Mapped[dict[str, Any]] = mapped_column(JsonDict)  # RolloutState.model_dump(mode="json")
    revision: Mapped[int] = mapped_column(Integer, default=1)
    # Nothing left to do (completed and every eligible device commanded): the runner skips it.
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    # The runner's latest group sizes (eligible, control, target, commanded, reporting, pending, ...): what
    # the API shows without loading the fleet on every GET.
    summary: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RolloutDecision(Base):
    __tablename__ = "rollout_decisions"
    __table_args__ = (
        UniqueConstraint("rollout_id", "seq", name="uq_rollout_decisions_rollout_id_seq"),
        Index("ix_rollout_decisions_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(16), index=True)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    stage_name: Mapped[str] = mapped_column(String(64))
    status_after: Mapped[str] = mapped_column(String(16))
    record: Mapped[dict[str, Any]] = mapped_column(JsonDict)  # DecisionRecord.model_dump(mode="json")


class RolloutCommand(Base):
    __tablename__ = "rollout_commands"
    __table_args__ = (
        UniqueConstraint("cmd_id", name="uq_rollout_commands_cmd_id"),
        CheckConstraint(
            "kind IN ('update', 'shadow_on', 'shadow_off', 'retarget', 'revert')", name="kind_known"
        ),
        Index("ix_rollout_commands_rollout_id_device_id", "rollout_id", "device_id"),
        Index("ix_rollout_commands_sent_at", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    decision_seq: Mapped[int] = mapped_column(Integer)  # the rollout's decision_seq when it was decided
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_MAX_LEN))
    kind: Mapped[str] = mapped_column(String(16))
    release_id: Mapped[str] = mapped_column(String(64))  # the release the command is about
    cmd_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # encoded exactly as published
    created_at: Mapped[float] = mapped_column(Float)
    # Not published before this time (the rapid-tier retarget waits for the immediate revert first).
    not_before: Mapped[float | None] = mapped_column(Float, default=None)
    sent_at: Mapped[float | None] = mapped_column(Float, default=None)
    # Set instead of sent_at when the command became pointless (e.g. the device already recovered).
    skipped: Mapped[str | None] = mapped_column(String(128), default=None)
