"""`inferd routes ...`: the routes API from a terminal (a client of a running server).

`inferd routes create NAME --target MODEL --target MODEL@https://provider/v1` makes a route
over a model served here and a provider's model (the operator's key for external targets; the
provider's API key comes from `--provider-key-env VAR`, never from the command line, so it
stays out of shell history). `inferd routes apply FILE.json` creates or replaces a route from
the API's JSON body. The API key comes from `--api-key` or `INFERD_API_KEY`, the server from
`--url` or `INFERD_URL`, as for `inferd deploy`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from inferd.cli_deploy import DEFAULT_URL, _checked, _client


def add_parser(sub: Any) -> None:
    routes = sub.add_parser("routes", help="routes on a running server")
    ops = routes.add_subparsers(dest="op", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=os.environ.get("INFERD_URL", DEFAULT_URL))
        p.add_argument("--api-key", default=os.environ.get("INFERD_API_KEY"))

    p = ops.add_parser("create", help="create a route")
    p.add_argument("name")
    p.add_argument(
        "--target",
        action="append",
        required=True,
        help="MODEL (served here) or MODEL@BASE_URL (a provider); repeat, in order",
    )
    p.add_argument("--policy", choices=("ordered", "weighted", "cheapest", "fastest"))
    p.add_argument("--task", choices=("text-generation", "embeddings"))
    p.add_argument("--zero-retention", action="store_true", help="only zero-retention targets")
    p.add_argument("--provider-key-env", help="environment variable with the providers' API key")
    common(p)
    p.set_defaults(func=create)

    p = ops.add_parser("apply", help="create or replace a route from a JSON body")
    p.add_argument("file", type=Path)
    common(p)
    p.set_defaults(func=apply)

    for op, help_text in (
        ("get", "a route"),
        ("delete", "delete a route"),
        ("health", "a route's targets: state, cooldown, p50"),
    ):
        p = ops.add_parser(op, help=help_text)
        p.add_argument("name")
        common(p)
        p.set_defaults(func=_action, action=op)

    p = ops.add_parser("list", help="the routes you may use")
    common(p)
    p.set_defaults(func=list_routes)


def _target(spec: str, key: str | None) -> dict[str, Any]:
    model, at, base_url = spec.partition("@")
    if not at:
        return {"model": spec}
    target: dict[str, Any] = {"model": model, "base_url": base_url}
    if key:
        target["api_key"] = key
    return target


def create(args: argparse.Namespace) -> None:
    key = None
    if args.provider_key_env:
        key = os.environ.get(args.provider_key_env)
        if key is None:
            sys.exit(f"inferd: {args.provider_key_env} is not set")
    body: dict[str, Any] = {"name": args.name, "targets": [_target(t, key) for t in args.target]}
    for field in ("policy", "task"):
        if getattr(args, field):
            body[field] = getattr(args, field)
    if args.zero_retention:
        body["zero_retention"] = True
    with _client(args) as client:
        print(_line(_checked(client.post("/v1/routes", json=body))))


def apply(args: argparse.Namespace) -> None:
    body = json.loads(args.file.read_text())
    with _client(args) as client:
        path = f"/v1/routes/{quote(body['name'])}"
        if client.get(path).status_code == 404:
            print(_line(_checked(client.post("/v1/routes", json=body))))
        else:
            print(_line(_checked(client.put(path, json=body))))


def _action(args: argparse.Namespace) -> None:
    path = f"/v1/routes/{quote(args.name)}"
    with _client(args) as client:
        if args.action == "health":
            for t in _checked(client.get(path + "/health"))["targets"]:
                p50 = f"{t['p50_ms']:.1f} ms" if t["p50_ms"] is not None else "-"
                until = f" until {t['cooldown_until']}" if t["cooldown_until"] else ""
                print(f"{t['served_by']}\t{t['state']}{until}\tfailures={t['failures']}\tp50={p50}")
            return
        method = "DELETE" if args.action == "delete" else "GET"
        print(_line(_checked(client.request(method, path))))


def list_routes(args: argparse.Namespace) -> None:
    with _client(args) as client:
        for route in _checked(client.get("/v1/routes"))["data"]:
            print(_line(route))


def _line(route: dict[str, Any]) -> str:
    targets = ", ".join(
        t["model"] + (f"@{t['base_url']}" if t["base_url"] else "") for t in route["targets"]
    )
    scope = "public" if route["public"] else "private"
    return f"{route['name']}\t{route['policy']}\t{scope}\t{route['source']}\t{targets}"
