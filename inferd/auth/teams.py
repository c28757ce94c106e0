"""Teams (accounts), their users and roles, single sign-on settings, dashboard sessions and the
audit log. Blocking (SQLAlchemy sessions): callers on the event loop use `asyncio.to_thread`.

Roles are enforced by the server for every credential: an API key acts with the role its
creator has in the team now (a key of a demoted admin loses admin rights at once, within the
credential cache's few seconds), and a key whose creator left the team stops working.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select

from inferd.auth.keys import KeyVault
from inferd.store.db import Database
from inferd.store.models import Account, ApiKey, as_utc
from inferd.store.team_tables import ROLES, AuditEntry, DashSession, TeamMember, TeamSso, User

ADMIN = "admin"
MEMBER = "member"


class TeamError(Exception):
    """A request the team service refuses: `status` is the HTTP status it maps to."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    email: str
    role: str
    joined_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class SsoConfig:
    account_id: str
    team: str  # the Team ID: the account's name
    issuer: str
    client_id: str
    client_secret: str  # decrypted in memory, for the token request only
    admin_email: str


@dataclass(frozen=True, slots=True)
class Session:
    account_id: str
    team: str
    user_id: str | None
    email: str | None
    key_name: str | None
    role: str
    csrf: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Audit:
    at: datetime
    actor: str
    action: str
    target: str
    detail: str


def normal_email(email: str) -> str:
    return email.strip().lower()


class TeamService:
    def __init__(self, db: Database, vault: KeyVault) -> None:
        self.db = db
        self.vault = vault

    # -- members --------------------------------------------------------------------------------

    def sign_in(self, account_id: str, email: str, admin_email: str | None) -> tuple[str, str]:
        """A verified email signing in to a team: the user is created on first sign-in, and
        joins the team (as admin when it is the team's admin email). (user id, role)."""
        email = normal_email(email)
        with self.db.session() as s, s.begin():
            user = s.scalar(select(User).where(User.email == email))
            if user is None:
                user = User(id="usr_" + secrets.token_hex(8), email=email)
                s.add(user)
                s.flush()
            user.last_login_at = datetime.now(UTC)
            member = s.get(TeamMember, (account_id, user.id))
            if member is None:
                first_admin = admin_email is not None and email == normal_email(admin_email)
                member = TeamMember(
                    account_id=account_id, user_id=user.id, role=ADMIN if first_admin else MEMBER
                )
                s.add(member)
            return user.id, member.role

    def add_member(self, account_id: str, email: str, role: str) -> str:
        """The operator's way to put a person in a team (`inferd teams add-member`)."""
        if role not in ROLES:
            raise TeamError(400, f"`role` must be one of {', '.join(ROLES)}.", "invalid_parameter")
        email = normal_email(email)
        with self.db.session() as s, s.begin():
            user = s.scalar(select(User).where(User.email == email))
            if user is None:
                user = User(id="usr_" + secrets.token_hex(8), email=email)
                s.add(user)
                s.flush()
            member = s.get(TeamMember, (account_id, user.id))
            if member is None:
                s.add(TeamMember(account_id=account_id, user_id=user.id, role=role))
            else:
                member.role = role
            return user.id

    def role(self, account_id: str, user_id: str) -> str | None:
        with self.db.session() as s:
            member = s.get(TeamMember, (account_id, user_id))
            return member.role if member is not None else None

    def members(self, account_id: str) -> list[Member]:
        with self.db.session() as s:
            rows = s.execute(
                select(TeamMember, User)
                .join(User, User.id == TeamMember.user_id)
                .where(TeamMember.account_id == account_id)
                .order_by(TeamMember.created_at, User.email)
            )
            return [
                Member(
                    user.id,
                    user.email,
                    member.role,
                    as_utc(member.created_at),
                    as_utc(user.last_login_at) if user.last_login_at else None,
                )
                for member, user in rows
            ]

    def set_role(self, account_id: str, user_id: str, role: str) -> Member:
        """Change a member's role; the team keeps at least one admin user."""
        if role not in ROLES:
            raise TeamError(
                400, f"`role` must be one of {', '.join(ROLES)}.", "invalid_parameter", "role"
            )
        with self.db.session() as s, s.begin():
            # Lock the team row so two admins demoting each other cannot both pass the check.
            s.execute(select(Account.id).where(Account.id == account_id).with_for_update())
            member = s.get(TeamMember, (account_id, user_id))
            if member is None:
                raise TeamError(404, f"No member `{user_id[:60]}`.", "not_found", "user_id")
            if member.role == ADMIN and role != ADMIN and self._admins(s, account_id) <= 1:
                raise TeamError(
                    409, "The team's last admin cannot become a member.", "last_admin", "role"
                )
            member.role = role
            user = s.get(User, user_id)
            assert user is not None
            return Member(
                user.id,
                user.email,
                role,
                as_utc(member.created_at),
                as_utc(user.last_login_at) if user.last_login_at else None,
            )

    def remove_member(self, account_id: str, user_id: str) -> Member:
        """Take a user out of the team: their keys stop working and their sessions end (both
        check membership on use); the team keeps at least one admin user."""
        with self.db.session() as s, s.begin():
            s.execute(select(Account.id).where(Account.id == account_id).with_for_update())
            member = s.get(TeamMember, (account_id, user_id))
            if member is None:
                raise TeamError(404, f"No member `{user_id[:60]}`.", "not_found", "user_id")
            if member.role == ADMIN and self._admins(s, account_id) <= 1:
                raise TeamError(409, "The team's last admin cannot leave.", "last_admin")
            user = s.get(User, user_id)
            assert user is not None
            gone = Member(
                user.id,
                user.email,
                member.role,
                as_utc(member.created_at),
                as_utc(user.last_login_at) if user.last_login_at else None,
            )
            s.delete(member)
            s.execute(
                delete(DashSession).where(
                    DashSession.account_id == account_id, DashSession.user_id == user_id
                )
            )
            return gone

    def _admins(self, s, account_id: str) -> int:
        return s.scalar(
            select(func.count())
            .select_from(TeamMember)
            .where(TeamMember.account_id == account_id, TeamMember.role == ADMIN)
        )

    def email_of(self, user_id: str) -> str | None:
        with self.db.session() as s:
            return s.scalar(select(User.email).where(User.id == user_id))

    # -- single sign-on ---------------------------------------------------------------------------

    def set_sso(
        self, team: str, issuer: str, client_id: str, client_secret: str, admin_email: str
    ) -> SsoConfig:
        with self.db.session() as s, s.begin():
            account = s.scalar(select(Account).where(Account.name == team))
            if account is None:
                raise TeamError(404, f"No team `{team[:100]}`.", "not_found", "team")
            row = s.get(TeamSso, account.id)
            if row is None:
                row = TeamSso(account_id=account.id)
                s.add(row)
            row.issuer = issuer.rstrip("/")
            row.client_id = client_id
            row.client_secret = self.vault.encrypt(client_secret)
            row.admin_email = normal_email(admin_email)
            return SsoConfig(
                account.id, team, row.issuer, client_id, client_secret, row.admin_email
            )

    def sso(self, team: str) -> SsoConfig | None:
        with self.db.session() as s:
            found = s.execute(
                select(TeamSso, Account.name)
                .join(Account, Account.id == TeamSso.account_id)
                .where(Account.name == team)
            ).first()
        if found is None:
            return None
        row, name = found
        return SsoConfig(
            row.account_id,
            name,
            row.issuer,
            row.client_id,
            self.vault.decrypt(row.client_secret),
            row.admin_email,
        )

    # -- audit log ------------------------------------------------------------------------------

    def audit(
        self, account_id: str, actor: str, action: str, target: str, detail: str = ""
    ) -> None:
        with self.db.session() as s, s.begin():
            s.add(
                AuditEntry(
                    account_id=account_id,
                    actor=actor[:300],
                    action=action[:64],
                    target=target[:300],
                    detail=detail[:500],
                )
            )

    def audit_log(self, account_id: str, limit: int = 100) -> list[Audit]:
        with self.db.session() as s:
            rows = s.scalars(
                select(AuditEntry)
                .where(AuditEntry.account_id == account_id)
                .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
                .limit(limit)
            )
            return [Audit(as_utc(r.at), r.actor, r.action, r.target, r.detail) for r in rows]

    # -- dashboard sessions ----------------------------------------------------------------------

    def open_session(
        self,
        account_id: str,
        role: str,
        ttl_s: float,
        *,
        user_id: str | None = None,
        key_name: str | None = None,
    ) -> str:
        """A new session; returns the cookie's token (the database keeps its keyed hash)."""
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self.db.session() as s, s.begin():
            s.execute(delete(DashSession).where(DashSession.expires_at <= now))  # housekeeping
            s.add(
                DashSession(
                    token_hash=self._hash(token),
                    account_id=account_id,
                    user_id=user_id,
                    key_name=key_name,
                    role=role,
                    csrf=secrets.token_urlsafe(24),
                    expires_at=datetime.now(UTC) + timedelta(seconds=ttl_s),
                )
            )
        return token

    def session(self, token: str) -> Session | None:
        """The live session of a cookie's token, with the role as it is now."""
        with self.db.session() as s:
            found = s.execute(
                select(DashSession, Account.name)
                .join(Account, Account.id == DashSession.account_id)
                .where(DashSession.token_hash == self._hash(token))
            ).first()
            if found is None:
                return None
            row, team = found
            if as_utc(row.expires_at) <= datetime.now(UTC):
                return None
            role, email = row.role, None
            if row.user_id is None and row.key_name is not None:
                key = s.scalar(
                    select(ApiKey.id).where(
                        ApiKey.account_id == row.account_id, ApiKey.name == row.key_name
                    )
                )
                if key is None:
                    return None  # signed in with a key since revoked
            if row.user_id is not None:
                member = s.get(TeamMember, (row.account_id, row.user_id))
                if member is None:
                    return None  # left the team
                role = member.role
                email = s.scalar(select(User.email).where(User.id == row.user_id))
            return Session(
                row.account_id,
                team,
                row.user_id,
                email,
                row.key_name,
                role,
                row.csrf,
                as_utc(row.expires_at),
            )

    def close_session(self, token: str) -> None:
        with self.db.session() as s, s.begin():
            row = s.get(DashSession, self._hash(token))
            if row is not None:
                s.delete(row)

    def _hash(self, token: str) -> str:
        return self.vault.digest("session:" + token)
