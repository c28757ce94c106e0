"""Deployments an account creates at run time, their immutable versions, and a GPU quota per
account.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("gpu_quota", sa.Integer, nullable=True))
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("full_name", sa.String(300), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "deployment_versions",
        sa.Column("deploy_id", sa.String(40), primary_key=True),
        sa.Column(
            "deployment_id",
            sa.String(40),
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("config", sa.String(4000), nullable=False),
        sa.Column("settings", sa.String(1000), nullable=False),
        sa.Column("secret", sa.String(2000), nullable=True),
        sa.Column("desired", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fail_reason", sa.String(1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("deployment_id", "version"),
    )
    op.create_index("ix_deployment_versions_updated_at", "deployment_versions", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_deployment_versions_updated_at", table_name="deployment_versions")
    op.drop_table("deployment_versions")
    op.drop_table("deployments")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("gpu_quota")
