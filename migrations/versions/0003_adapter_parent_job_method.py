"""adapters.parent (the adapter a model was trained on top of), fine_tuning_jobs.method

Revision ID: 0003_adapter_parent
Revises: 0002_output_constraint
Create Date: 2026-11-28 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_adapter_parent"
down_revision: str | None = "0002_output_constraint"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent", sa.String(length=255), nullable=True))
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("method", sa.String(length=16), nullable=False, server_default="supervised")
        )


def downgrade() -> None:
    with op.batch_alter_table("fine_tuning_jobs", schema=None) as batch_op:
        batch_op.drop_column("method")
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_column("parent")
