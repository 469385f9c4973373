"""API key lifecycle: scopes, platform and bootstrap keys, expiry, last use, rotation

Revision ID: 0004_keys
Revises: 0003_adapter_parent
Create Date: 2026-11-28 05:00:00

`is_admin` becomes the `admin` scope. Admin keys of the `default` tenant (the bootstrap key
and keys it made for the platform) become platform keys; admin keys of any other tenant
manage their own tenant only from now on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_keys"
down_revision: str | None = "0003_adapter_parent"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scopes", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("platform", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("bootstrap", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("created_by", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("previous_key_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("previous_valid_until", sa.DateTime(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_api_keys_previous_key_hash"), ["previous_key_hash"], unique=False
        )
    keys = sa.table(
        "api_keys",
        sa.column("tenant", sa.String),
        sa.column("name", sa.String),
        sa.column("is_admin", sa.Boolean),
        sa.column("scopes", sa.JSON),
        sa.column("platform", sa.Boolean),
        sa.column("bootstrap", sa.Boolean),
    )
    op.execute(
        keys.update()
        .where(keys.c.is_admin.is_(True))
        .values(scopes=["inference", "manage", "admin"])
    )
    op.execute(
        keys.update().where(keys.c.is_admin.is_(False)).values(scopes=["inference", "manage"])
    )
    platform = keys.c.is_admin.is_(True) & (keys.c.tenant == "default")
    op.execute(keys.update().where(platform).values(platform=True))
    op.execute(
        keys.update().where(platform & (keys.c.name == "bootstrap admin")).values(bootstrap=True)
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column("scopes", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column("is_admin")


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    keys = sa.table(
        "api_keys", sa.column("platform", sa.Boolean), sa.column("is_admin", sa.Boolean)
    )
    # Only platform keys were admins in the old sense (every tenant).
    op.execute(keys.update().where(keys.c.platform.is_(True)).values(is_admin=True))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_previous_key_hash"))
        for column in (
            "previous_valid_until",
            "previous_key_hash",
            "last_used_at",
            "expires_at",
            "created_by",
            "bootstrap",
            "platform",
            "scopes",
        ):
            batch_op.drop_column(column)
