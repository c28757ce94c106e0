"""`inferd containers ...`: the GPU containers API from a terminal (a client of a running server),
and `inferd containers build-image`, which builds their base image on this machine.

`inferd containers create NAME --gpu-config 1xCPU-24GB --image IMAGE --ssh-key-file
~/.ssh/id_ed25519.pub` sends the page's `#cloud-config` (user `ubuntu` with that key and
password-less sudo), follows the container to `running` and prints the `ssh ubuntu@IP` line; it
exits 1 with the reason when the container fails. The API key comes from `--api-key` or
`INFERD_API_KEY`, the server from `--url` or `INFERD_URL`, as for `inferd deploy`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from inferd.cli_deploy import DEFAULT_URL, _checked, _client
from inferd.control.container_image import DEFAULT_IMAGE, build

POLL_S = 1.0


def add_parser(sub: Any) -> None:
    containers = sub.add_parser("containers", help="GPU containers on a running server")
    ops = containers.add_subparsers(dest="op", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=os.environ.get("INFERD_URL", DEFAULT_URL))
        p.add_argument("--api-key", default=os.environ.get("INFERD_API_KEY"))

    p = ops.add_parser("create", help="start a container and wait until SSH answers")
    p.add_argument("name")
    p.add_argument("--gpu-config", required=True, help="NxTYPE-MEMGB, e.g. 1xCPU-24GB")
    p.add_argument("--image", required=True, help="a container image (see `containers params`)")
    user = p.add_mutually_exclusive_group()
    user.add_argument("--ssh-key-file", type=Path, help="public key(s) for the `ubuntu` user")
    user.add_argument("--user-data-file", type=Path, help="cloud-init user data to send as is")
    p.add_argument("--no-wait", action="store_true", help="return once created")
    common(p)
    p.set_defaults(func=create)

    p = ops.add_parser("list", help="your containers (active ones unless --inactive)")
    p.add_argument("--inactive", action="store_true", help="failed and deleted ones instead")
    common(p)
    p.set_defaults(func=list_containers)

    p = ops.add_parser("get", help="a container's state and address")
    p.add_argument("container_id")
    common(p)
    p.set_defaults(func=_action, method="GET")

    p = ops.add_parser("rename", help="rename a container")
    p.add_argument("container_id")
    p.add_argument("name")
    common(p)
    p.set_defaults(func=_action, method="PATCH")

    p = ops.add_parser("delete", help="terminate a container (everything in it is lost)")
    p.add_argument("container_id")
    common(p)
    p.set_defaults(func=_action, method="DELETE")

    p = ops.add_parser("gpus", help="GPU configs, prices and what is free")
    common(p)
    p.set_defaults(func=gpus)

    p = ops.add_parser("params", help="the images and GPU configs a container may have")
    common(p)
    p.set_defaults(func=params)

    p = ops.add_parser("build-image", help="build the base image on this machine (no server)")
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"podman image (default {DEFAULT_IMAGE})")
    p.set_defaults(func=build_image)


def cloud_config(keys: list[str]) -> str:
    """The page's user data: user `ubuntu`, bash, password-less sudo, these keys."""
    user = {
        "name": "ubuntu",
        "shell": "/bin/bash",
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "ssh_authorized_keys": keys,
    }
    body = yaml.safe_dump({"users": [user]}, sort_keys=False, width=1_000_000)
    return "#cloud-config\n" + body


def read_keys(path: Path) -> list[str]:
    """Public keys of an `.pub` or authorized_keys file; exits on a private key or none."""
    try:
        text = path.read_text()
    except OSError as exc:
        sys.exit(f"inferd: cannot read {path}: {exc.strerror}")
    if "PRIVATE KEY" in text:
        sys.exit(f"inferd: {path} is a private key; give the public one ({path}.pub)")
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        sys.exit(f"inferd: no public key in {path}")
    return keys


def _line(obj: dict[str, Any]) -> str:
    return (
        f"{obj['id']}\t{obj['name']}\t{obj['state']}\t{obj['gpu_config']}\t"
        f"${obj['price_per_hour']}/h\t{obj['container_image']}\t{obj.get('ip') or '-'}\t"
        f"{obj.get('fail_reason') or ''}"
    ).rstrip()


def create(args: argparse.Namespace) -> None:
    user_data = None
    if args.ssh_key_file is not None:
        user_data = cloud_config(read_keys(args.ssh_key_file))
    elif args.user_data_file is not None:
        try:
            user_data = args.user_data_file.read_text()
        except OSError as exc:
            sys.exit(f"inferd: cannot read {args.user_data_file}: {exc.strerror}")
    else:
        print("inferd: no --ssh-key-file or --user-data-file: nobody can log in", file=sys.stderr)
    body = {
        "name": args.name,
        "gpu_config": args.gpu_config,
        "container_image": args.image,
        "cloud_init_user_data": user_data,
    }
    with _client(args) as client:
        container_id = _checked(client.post("/v1/containers", json=body))["container_id"]
        if args.no_wait:
            print(container_id)
            return
        follow(client, container_id)


def follow(client: httpx.Client, container_id: str, poll_s: float = POLL_S) -> None:
    """Print each state; the SSH line once running; exit 1 if it fails or goes away."""
    state = None
    while True:
        obj = _checked(client.get(f"/v1/containers/{container_id}"))
        if obj["state"] != state:
            state = obj["state"]
            print(_line(obj), flush=True)
        if state == "running" and obj.get("ip"):
            print(f"ssh ubuntu@{obj['ip']}", flush=True)
            return
        if state == "failed":
            sys.exit(f"inferd: {container_id} failed: {obj.get('fail_reason') or 'no reason'}")
        if state in ("shutting_down", "deleted"):
            sys.exit(f"inferd: {container_id} was terminated before it ran")
        time.sleep(poll_s)


def _action(args: argparse.Namespace) -> None:
    body = {"name": args.name} if args.method == "PATCH" else None
    with _client(args) as client:
        path = f"/v1/containers/{args.container_id}"
        print(_line(_checked(client.request(args.method, path, json=body))))


def list_containers(args: argparse.Namespace) -> None:
    query = {"state": "inactive" if args.inactive else "active"}
    with _client(args) as client:
        for obj in _checked(client.get("/v1/containers", params=query)):
            print(_line(obj))


def gpus(args: argparse.Namespace) -> None:
    with _client(args) as client:
        for config in _checked(client.get("/v1/containers/gpu_availability"))["gpu_configs"]:
            status = "available" if config["available"] else "out of capacity"
            print(
                f"{config['gpu_config']}\t${config['price_per_hour']}/h\t"
                f"{config['free']}/{config['total']} free\t{status}"
            )


def params(args: argparse.Namespace) -> None:
    with _client(args) as client:
        obj = _checked(client.get("/v1/containers/params"))
    print("images:", " ".join(obj["images"]) or "none")
    print("gpu configs:", " ".join(obj["gpu_configs"]) or "none")


def build_image(args: argparse.Namespace) -> None:
    try:
        build(args.image)
    except RuntimeError as exc:
        sys.exit(f"inferd: {exc}")
    except subprocess.CalledProcessError as exc:
        command = " ".join(str(part) for part in exc.cmd[:2])
        sys.exit(f"inferd: `{command}` failed (exit {exc.returncode}); the image was not built")
    except OSError as exc:
        sys.exit(f"inferd: the image was not built: {exc}")
