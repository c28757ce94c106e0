"""Files of the Files and Batch APIs (content in the encrypted blob store).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("wrapped_key", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("role", sa.String(16), nullable=True),
    )
    op.create_index("ix_batch_files_account", "batch_files", ["account_id", "created_at", "id"])
    op.create_index("ix_batch_files_batch", "batch_files", ["batch_id"])


def downgrade() -> None:
    op.drop_index("ix_batch_files_batch", table_name="batch_files")
    op.drop_index("ix_batch_files_account", table_name="batch_files")
    op.drop_table("batch_files")
