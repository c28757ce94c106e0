"""Teams: users, roles, single sign-on, dashboard sessions, audit log; API keys carry the user
who created them.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _account() -> sa.Column:
    return sa.Column(
        "account_id",
        sa.String(40),
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        _at("created_at", nullable=False),
        _at("last_login_at"),
    )
    op.create_table(
        "team_members",
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "user_id",
            sa.String(40),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        _at("created_at", nullable=False),
    )
    op.create_index("ix_team_members_user", "team_members", ["user_id"])
    op.create_table(
        "team_sso",
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("client_id", sa.String(500), nullable=False),
        sa.Column("client_secret", sa.Text(), nullable=False),
        sa.Column("admin_email", sa.String(254), nullable=False),
        _at("created_at", nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _account(),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        _at("at", nullable=False),
    )
    op.create_index("ix_audit_log_account", "audit_log", ["account_id", "at"])
    op.create_table(
        "dash_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        _account(),
        sa.Column(
            "user_id",
            sa.String(40),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("key_name", sa.String(200), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        _at("created_at", nullable=False),
        _at("expires_at", nullable=False),
    )
    # The user who created a key (its role is theirs); none: the team's bootstrap key.
    op.add_column("api_keys", sa.Column("user_id", sa.String(40), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "user_id")
    for table in ("dash_sessions", "audit_log", "team_sso", "team_members", "users"):
        op.drop_table(table)
