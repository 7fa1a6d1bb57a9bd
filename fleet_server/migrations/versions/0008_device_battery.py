"""devices: the newest reported battery state (written by the ingest worker, read by the rollout runner)

Revision ID: 0008
Revises: 0007

The rollout runner needs every device's newest battery level and charging flag on each tick; a
``DISTINCT ON`` over the recent metrics windows cost ~0.4 s at 100,000 devices, reading four columns of
``devices`` costs nothing extra (it reads that table anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("battery_pct", sa.Float(), nullable=True))
        batch.add_column(sa.Column("battery_charging", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("battery_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("battery_window_start_s", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("battery_window_start_s")
        batch.drop_column("battery_seq")
        batch.drop_column("battery_charging")
        batch.drop_column("battery_pct")
