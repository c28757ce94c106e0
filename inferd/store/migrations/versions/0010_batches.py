"""Batches and their lines (sealed with each batch's own key).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(40), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("final_status", sa.String(16), nullable=True),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("metadata_json", sa.Text, nullable=True),
        sa.Column("errors_json", sa.Text, nullable=True),
        sa.Column("model", sa.String(300), nullable=True),
        sa.Column("line_key", sa.String(200), nullable=True),
        sa.Column("pause_reason", sa.String(500), nullable=True),
        sa.Column("output_expires_s", sa.Float, nullable=True),
        sa.Column("output_file_id", sa.String(40), nullable=True),
        sa.Column("error_file_id", sa.String(40), nullable=True),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("completed", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        _at("created_at", nullable=False),
        _at("expires_at", nullable=False),
        _at("in_progress_at"),
        _at("finalizing_at"),
        _at("completed_at"),
        _at("failed_at"),
        _at("expired_at"),
        _at("cancelling_at"),
        _at("cancelled_at"),
    )
    op.create_index("ix_batches_account", "batches", ["account_id", "created_at", "id"])
    op.create_table(
        "batch_lines",
        sa.Column(
            "batch_id",
            sa.String(64),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("custom_id", sa.String(256), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("request", sa.LargeBinary, nullable=True),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.Column("ok", sa.Boolean, nullable=True),
        sa.UniqueConstraint("batch_id", "custom_id"),
    )


def downgrade() -> None:
    op.drop_table("batch_lines")
    op.drop_index("ix_batches_account", table_name="batches")
    op.drop_table("batches")
