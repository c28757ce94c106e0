"""`inferd serve`, `inferd keys create`, `inferd accounts create`."""

from __future__ import annotations

import argparse
import sys

from inferd.cli_common import account_services as _services
from inferd.cli_common import database as _database
from inferd.config import load_settings


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from inferd.api.app import create_app
    from inferd.logs import configure_logging

    given = (
        ("host", args.host),
        ("port", args.port),
        ("backend", args.backend),
        ("ray_address", args.ray_address),
    )
    overrides = {k: v for k, v in given if v is not None}
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
        # X-Forwarded-Proto/-For only from the operator's TLS proxy: the sign-in's redirect URI
        # and the Secure cookie flag follow the scheme the browser used.
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
        # Longer than clients' pools keep idle connections (uvicorn's 5 s default closes them
        # under a client that is about to reuse one: a broken request for no reason).
        timeout_keep_alive=75,
        backlog=4096,
    )


def keys_create(args: argparse.Namespace) -> None:
    service = _services(load_settings())
    account = service.get_account(args.account)
    if account is None:
        sys.exit(f"inferd: no account named {args.account!r}")
    created = service.create_key(account.id, args.name)
    print(created.key)


def keys_list(args: argparse.Namespace) -> None:
    service = _services(load_settings())
    account = service.get_account(args.account)
    if account is None:
        sys.exit(f"inferd: no account named {args.account!r}")
    for key in service.list_keys(account.id):
        alias = f"\talias of {key.alias_of}" if key.alias_of else ""
        print(f"{key.name}\t{key.prefix}...\t{key.created_at.isoformat()}{alias}")


def keys_revoke(args: argparse.Namespace) -> None:
    settings = load_settings()
    service = _services(settings)
    account = service.get_account(args.account)
    evict = None if account is None else service.delete_key(account.id, args.name)
    if account is None or evict is None:
        sys.exit(f"inferd: no key {args.name!r} in account {args.account!r}")
    if settings.redis_url:
        import orjson
        import redis

        with redis.Redis.from_url(settings.redis_url) as client:
            client.publish(
                f"{settings.redis_prefix}:revocations", orjson.dumps([account.id, evict])
            )
    print(f"revoked {args.name}")


def webhooks_secret(args: argparse.Namespace) -> None:
    from inferd.jobs.webhooks.secrets import WebhookSecrets

    settings = load_settings()
    service = _services(settings)
    account = service.get_account(args.account)
    if account is None:
        sys.exit(f"inferd: no account named {args.account!r}")
    secrets = WebhookSecrets(service.db, service.vault, settings.webhooks_rotation_window_s)
    print(secrets.rotate(account.id) if args.rotate else secrets.current(account.id))


def accounts_create(args: argparse.Namespace) -> None:
    from inferd.auth.accounts import FIRST_KEY

    service = _services(load_settings())
    account = service.create_account(
        args.name,
        is_admin=args.admin,
        concurrency_limit=args.concurrency_limit,
        spending_limit=args.spending_limit,
        gpu_quota=args.gpu_quota,
    )
    created = service.create_key(account.id, FIRST_KEY)
    print(f"{account.id}\t{created.key}")


def accounts_list(args: argparse.Namespace) -> None:
    for account in _services(load_settings()).list_accounts():
        print(
            f"{account.id}\t{account.name}\tadmin={account.is_admin}\t"
            f"concurrency={account.concurrency_limit}\tspending={account.spending_limit}"
        )


def usage(args: argparse.Namespace) -> None:
    from inferd.billing.ledger import UsageLedger, parse_when

    settings = load_settings()
    service = _services(settings)
    account = service.get_account(args.account)
    if account is None:
        sys.exit(f"inferd: no account named {args.account!r}")
    rows = UsageLedger(service.db).summary(
        account.id, parse_when(args.since), parse_when(args.until, end=True), args.model, None
    )
    print("date\tmodel\trequests\tprompt_tokens\tcompletion_tokens\tcost")
    for r in rows:
        print(
            f"{r['date']}\t{r['model']}\t{r['requests']}\t{r['prompt_tokens']}\t"
            f"{r['completion_tokens']}\t{r['cost']:.6f}"
        )


def models_build(args: argparse.Namespace) -> None:
    import os

    from inferd.weights.tiny import build_all

    # Builders find the converted-weights cache through the same variable as the workers.
    os.environ.setdefault("INFERD_MODEL_CACHE", str(load_settings().model_cache))
    for path in build_all():
        print(f"built {path}")


def models_seed(args: argparse.Namespace) -> None:
    from pathlib import Path

    from inferd.catalog import Catalog
    from inferd.control import builtins

    settings = load_settings()
    try:
        catalog = Catalog.load(Path(args.catalog) if args.catalog else settings.catalog)
    except (OSError, ValueError) as exc:
        sys.exit(f"inferd: cannot seed: {exc}")
    changed = builtins.seed(_database(settings), catalog)
    print(f"{len(catalog)} built-in models; " + ("updated" if changed else "unchanged"))


def models_list(args: argparse.Namespace) -> None:
    from inferd.control import builtins

    for spec in builtins.load(_database(load_settings())):
        print(f"{spec.name}\t{spec.task}\t{spec.engine}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="inferd")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the API server and its model workers")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--backend", choices=["local", "ray"], help="where model replicas run")
    p.add_argument("--ray-address", help="the Ray cluster's HOST:PORT (with --backend ray)")
    p.set_defaults(func=serve)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="op", required=True)
    p = keys.add_parser("create", help="create an API key (printed once)")
    p.add_argument("--name", required=True)
    p.add_argument("--account", default="admin")
    p.set_defaults(func=keys_create)

    p = keys.add_parser("list", help="list an account's keys (names only)")
    p.add_argument("--account", default="admin")
    p.set_defaults(func=keys_list)
    p = keys.add_parser("revoke", help="delete a key; it stops working at once")
    p.add_argument("--name", required=True)
    p.add_argument("--account", default="admin")
    p.set_defaults(func=keys_revoke)

    hooks = sub.add_parser("webhooks", help="webhook signing").add_subparsers(
        dest="op", required=True
    )
    p = hooks.add_parser("secret", help="print an account's webhook signing secret (whsec_...)")
    p.add_argument("--account", default="admin")
    p.add_argument(
        "--rotate",
        action="store_true",
        help="make a new one (the old one keeps signing for the rotation window)",
    )
    p.set_defaults(func=webhooks_secret)

    accounts = sub.add_parser("accounts", help="manage accounts").add_subparsers(
        dest="op", required=True
    )
    p = accounts.add_parser("create", help="create an account and its first key")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true")
    p.add_argument("--concurrency-limit", type=int)
    p.add_argument("--spending-limit", type=float)
    p.add_argument("--gpu-quota", type=int, help="GPUs its deployments may hold")
    p.set_defaults(func=accounts_create)
    p = accounts.add_parser("list", help="list accounts")
    p.set_defaults(func=accounts_list)

    p = sub.add_parser("usage", help="usage and cost by day and model")
    p.add_argument("--account", default="admin")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--model")
    p.set_defaults(func=usage)

    models = sub.add_parser("models", help="built-in models").add_subparsers(
        dest="op", required=True
    )
    p = models.add_parser("build", help="build the small models of the default catalog")
    p.set_defaults(func=models_build)
    p = models.add_parser(
        "seed", help="write a catalog file's models into the database; running gateways follow"
    )
    p.add_argument("catalog", nargs="?", help="catalog TOML (default: the configured one)")
    p.set_defaults(func=models_seed)
    p = models.add_parser("list", help="the built-in models the database holds")
    p.set_defaults(func=models_list)

    from inferd.cli_containers import add_parser as add_containers_parser
    from inferd.cli_deploy import add_parser as add_deploy_parser
    from inferd.cli_routes import add_parser as add_routes_parser
    from inferd.cli_teams import add_parser as add_teams_parser

    add_deploy_parser(sub)
    add_containers_parser(sub)
    add_routes_parser(sub)
    add_teams_parser(sub)

    args = parser.parse_args(argv)
    args.func(args)
