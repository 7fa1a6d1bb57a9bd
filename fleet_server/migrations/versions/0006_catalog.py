"""catalog: upload inputs and report summary on model versions; heartbeat and retry link on jobs

Revision ID: 0006
Revises: 0005

Columns only (the models / model_versions / conversion_jobs tables exist since 0001). Plain
DateTime(timezone=True): a frozen migration does not import app code.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upload_dir", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("options", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("summary", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("created_by", sa.String(length=128), nullable=True))

    with op.batch_alter_table("conversion_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("worker", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("queue", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("retry_of_id", _BIG_ID, nullable=True))
        batch_op.add_column(sa.Column("created_by", sa.String(length=128), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_conversion_jobs_retry_of_id_conversion_jobs"),
            "conversion_jobs",
            ["retry_of_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("conversion_jobs", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_conversion_jobs_retry_of_id_conversion_jobs"), type_="foreignkey"
        )
        batch_op.drop_column("created_by")
        batch_op.drop_column("retry_of_id")
        batch_op.drop_column("queue")
        batch_op.drop_column("worker")
        batch_op.drop_column("heartbeat_at")

    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("created_by")
        batch_op.drop_column("summary")
        batch_op.drop_column("options")
        batch_op.drop_column("upload_dir")
