"""GPU containers.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "containers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("gpu_config", sa.String(64), nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("num_gpus", sa.Integer(), nullable=False),
        sa.Column("price_per_hour", sa.Float(), nullable=False),
        sa.Column("container_image", sa.String(200), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("fail_reason", sa.Text(), nullable=True),
        sa.Column("user_data", sa.Text(), nullable=True),
        _at("created_at", nullable=False),
        _at("start_ts"),
        _at("state_ts", nullable=False),
        _at("stop_ts"),
    )
    op.create_index("ix_containers_account", "containers", ["account_id", "created_at"])
    op.create_index("ix_containers_node_state", "containers", ["node", "state"])


def downgrade() -> None:
    op.drop_table("containers")
