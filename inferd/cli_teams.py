"""`inferd teams ...`: the operator's side of teams, on the server's database (like `inferd
accounts`): members and roles, a key for a member, and a team's single sign-on provider. The
OIDC client secret is read from an environment variable (never the command line, which other
users of the machine can read)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from inferd.config import load_settings


def add_parser(sub: Any) -> None:
    teams = sub.add_parser("teams", help="team members, roles and single sign-on")
    ops = teams.add_subparsers(dest="op", required=True)

    p = ops.add_parser("add-member", help="put a person (by email) in a team with a role")
    p.add_argument("team")
    p.add_argument("email")
    p.add_argument("--role", choices=("admin", "member"), default="member")
    p.set_defaults(func=add_member)

    p = ops.add_parser("remove-member", help="take a person out of a team")
    p.add_argument("team")
    p.add_argument("email")
    p.set_defaults(func=remove_member)

    p = ops.add_parser("members", help="a team's members and roles")
    p.add_argument("team")
    p.set_defaults(func=members)

    p = ops.add_parser("key", help="create an API key for a member (acts with their role)")
    p.add_argument("team")
    p.add_argument("email")
    p.add_argument("--name", required=True)
    p.set_defaults(func=member_key)

    p = ops.add_parser("sso", help="register a team's OpenID Connect provider")
    p.add_argument("team", help="the Team ID (the account's name)")
    p.add_argument("--issuer", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument(
        "--client-secret-env", required=True, help="environment variable holding the secret"
    )
    p.add_argument("--admin-email", required=True, help="becomes admin on first sign-in")
    p.set_defaults(func=sso)


def _services():
    from inferd.auth.teams import TeamService
    from inferd.cli_common import account_services

    service = account_services(load_settings())
    return service, TeamService(service.db, service.vault)


def _team(service: Any, name: str) -> Any:
    account = service.get_account(name)
    if account is None:
        sys.exit(f"inferd: no team named {name!r}")
    return account


def add_member(args: argparse.Namespace) -> None:
    service, teams = _services()
    account = _team(service, args.team)
    user_id = teams.add_member(account.id, args.email, args.role)
    teams.audit(account.id, "operator", "member.add", args.email.lower(), args.role)
    print(user_id)


def remove_member(args: argparse.Namespace) -> None:
    from inferd.auth.teams import TeamError

    service, teams = _services()
    account = _team(service, args.team)
    email = args.email.strip().lower()
    found = [m for m in teams.members(account.id) if m.email == email]
    if not found:
        sys.exit(f"inferd: {args.email!r} is not a member of {args.team!r}")
    try:
        teams.remove_member(account.id, found[0].user_id)
    except TeamError as exc:
        sys.exit(f"inferd: {exc.message}")
    teams.audit(account.id, "operator", "member.remove", email)
    print(f"removed {email}")


def members(args: argparse.Namespace) -> None:
    service, teams = _services()
    for m in teams.members(_team(service, args.team).id):
        print(f"{m.user_id}\t{m.email}\t{m.role}")


def member_key(args: argparse.Namespace) -> None:
    from sqlalchemy import select

    from inferd.store.team_tables import User

    service, teams = _services()
    account = _team(service, args.team)
    with service.db.session() as s:
        user_id = s.scalar(select(User.id).where(User.email == args.email.strip().lower()))
    if user_id is None or teams.role(account.id, user_id) is None:
        sys.exit(f"inferd: {args.email!r} is not a member of {args.team!r}")
    print(service.create_key(account.id, args.name, None, user_id).key)


def sso(args: argparse.Namespace) -> None:
    secret = os.environ.get(args.client_secret_env)
    if not secret:
        sys.exit(f"inferd: ${args.client_secret_env} is empty")
    from inferd.auth.teams import TeamError

    _, teams = _services()
    try:
        config = teams.set_sso(args.team, args.issuer, args.client_id, secret, args.admin_email)
    except TeamError as exc:
        sys.exit(f"inferd: {exc.message}")
    teams.audit(config.account_id, "operator", "sso.configure", config.issuer)
    print(f"{args.team}: sign-in at /login_sso; provider-initiated: /sso/{args.team}/login")
