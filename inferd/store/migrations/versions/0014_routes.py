"""Routes; accounts may be zero-retention; usage rows name the route target that served.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routes",
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("zero_retention", sa.Boolean(), nullable=False),
        sa.Column("deprecated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("targets", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_routes_account_id", "routes", ["account_id"])
    op.add_column(
        "accounts",
        sa.Column("zero_retention", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("usage", sa.Column("served_by", sa.String(400), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("served_by")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("zero_retention")
    op.drop_index("ix_routes_account_id", "routes")
    op.drop_table("routes")
