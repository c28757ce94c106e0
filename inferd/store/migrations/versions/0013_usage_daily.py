"""Daily usage rollups (`usage_daily`), backfilled from the raw `usage` rows.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# Frozen here rather than imported: a migration must keep doing what it did when it shipped.
UPTIME_ROUTES = "('deployment_uptime', 'container_uptime')"


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("account_id", sa.String(40), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("model", sa.String(300), primary_key=True),
        sa.Column("key_name", sa.String(200), primary_key=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("uptime_seconds", sa.Float(), nullable=False),
    )
    op.execute(backfill_sql(op.get_bind().dialect.name))


def backfill_sql(dialect: str) -> str:
    """One INSERT ... SELECT ... GROUP BY over every raw row (the same sums the ledger upserts).

    The day is the UTC date of started_at: SQLite holds it as naive UTC text ('YYYY-MM-DD
    HH:MM:SS...'), PostgreSQL as timestamptz, whose date depends on the session's time zone
    unless taken AT TIME ZONE 'UTC'."""
    day = (
        "date(started_at)" if dialect == "sqlite" else "CAST(started_at AT TIME ZONE 'UTC' AS DATE)"
    )
    request = f"route NOT IN {UPTIME_ROUTES}"
    return f"""
        INSERT INTO usage_daily (account_id, day, model, key_name, requests, errors,
            prompt_tokens, completion_tokens, cost, uptime_seconds)
        SELECT account_id, {day}, model, key_name,
            SUM(CASE WHEN {request} THEN 1 ELSE 0 END),
            SUM(CASE WHEN {request} AND status >= 400 THEN 1 ELSE 0 END),
            SUM(CASE WHEN {request} THEN prompt_tokens ELSE 0 END),
            SUM(CASE WHEN {request} THEN completion_tokens ELSE 0 END),
            SUM(cost),
            SUM(CASE WHEN {request} THEN 0 ELSE duration_ms END) / 1000.0
        FROM usage
        GROUP BY account_id, {day}, model, key_name
    """


def downgrade() -> None:
    op.drop_table("usage_daily")
