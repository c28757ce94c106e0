"""Teams: people (users), their role in a team, the team's single sign-on, dashboard sessions and
the audit log of admin actions.

A team is an account (its name is the Team ID and the owner prefix of its models): it owns
the API keys, deployments, containers, usage and spending limit. A user belongs to teams
with a role, `admin` or `member`; an API key acts with the role of the user who created it
(`api_keys.user_id`; none: the team's bootstrap key, an admin's).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from inferd.store.models import Base, utcnow

ROLES = ("admin", "member")


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # lower-cased
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TeamMember(Base):
    __tablename__ = "team_members"
    __table_args__ = (Index("ix_team_members_user", "user_id"),)

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))  # admin | member
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TeamSso(Base):
    """A team's OpenID Connect provider (Okta or any other), registered by the operator."""

    __tablename__ = "team_sso"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    issuer: Mapped[str] = mapped_column(String(500))
    client_id: Mapped[str] = mapped_column(String(500))
    client_secret: Mapped[str] = mapped_column(Text)  # vault-encrypted, write-only
    admin_email: Mapped[str] = mapped_column(String(254))  # admin on first sign-in
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """One admin action: who, what, on what. Metadata only, never a secret or a prompt."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_account", "account_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(300))  # `user:<email>` or `key:<name>`
    action: Mapped[str] = mapped_column(String(64))  # e.g. member.role, billing.spending_limit
    target: Mapped[str] = mapped_column(String(300))
    detail: Mapped[str] = mapped_column(String(500), default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DashSession(Base):
    """A signed-in browser: the cookie holds the token, the row only its keyed hash."""

    __tablename__ = "dash_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    key_name: Mapped[str | None] = mapped_column(String(200), nullable=True)  # API-key login
    role: Mapped[str] = mapped_column(String(16))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
