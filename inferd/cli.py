"""`inferd serve`, `inferd keys create`, `inferd accounts create`."""

from __future__ import annotations

import argparse
import sys

from inferd.config import Settings, load_settings


def _services(settings: Settings):
    from inferd.auth.accounts import AccountService
    from inferd.auth.keys import load_or_create_secret
    from inferd.store.db import Database

    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.sqlalchemy_url)
    db.create_schema()
    return AccountService(db, load_or_create_secret(settings.home, settings.master_key))


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from inferd.api.app import create_app
    from inferd.logs import configure_logging

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = load_settings(overrides)
    configure_logging(settings.log_level)
    created = _services(settings).bootstrap_admin(settings.admin_key)
    if created is not None and not settings.admin_key:
        # Printed once, to the terminal only; the database holds a keyed hash.
        print(f"inferd: admin API key (shown once, store it now): {created.key}", flush=True)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
        backlog=4096,
    )


def keys_create(args: argparse.Namespace) -> None:
    service = _services(load_settings())
    account = service.get_account(args.account)
    if account is None:
        sys.exit(f"inferd: no account named {args.account!r}")
    created = service.create_key(account.id, args.name)
    print(created.key)


def accounts_create(args: argparse.Namespace) -> None:
    service = _services(load_settings())
    account = service.create_account(args.name, is_admin=args.admin)
    print(account.id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="inferd")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the API server and its model workers")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=serve)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="op", required=True)
    p = keys.add_parser("create", help="create an API key (printed once)")
    p.add_argument("--name", required=True)
    p.add_argument("--account", default="admin")
    p.set_defaults(func=keys_create)

    accounts = sub.add_parser("accounts", help="manage accounts").add_subparsers(
        dest="op", required=True
    )
    p = accounts.add_parser("create", help="create an account")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true")
    p.set_defaults(func=accounts_create)

    args = parser.parse_args(argv)
    args.func(args)
