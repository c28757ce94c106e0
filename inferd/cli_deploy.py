"""`inferd deploy ...`: the deployments API from a terminal (a client of a running server).

`inferd deploy llm NAME --gpu CPU-24GB --repo owner/model` creates the deployment and follows
it to `running` with a progress bar while its weights download; it exits non-zero with the
reason when the deployment fails. The API key comes from `--api-key` or `INFERD_API_KEY`; a
Hub token only from the environment variable `--hf-token-env` names (never the command line,
which other users of the machine can read).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


def add_parser(sub: Any) -> None:
    deploy = sub.add_parser("deploy", help="deployments on a running server")
    ops = deploy.add_subparsers(dest="op", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=os.environ.get("INFERD_URL", DEFAULT_URL))
        p.add_argument("--api-key", default=os.environ.get("INFERD_API_KEY"))

    p = ops.add_parser("llm", help="deploy an LLM from a Hugging Face repository")
    p.add_argument("model_name")
    p.add_argument("--gpu", required=True, help="a pool, e.g. CPU-24GB (see `deploy gpus`)")
    p.add_argument("--repo", required=True)
    p.add_argument("--revision")
    p.add_argument("--hf-token-env", help="environment variable holding a Hub token")
    p.add_argument("--num-gpus", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--min-instances", type=int, default=0)
    p.add_argument("--max-instances", type=int, default=1)
    p.add_argument("--no-wait", action="store_true", help="return once created")
    common(p)
    p.set_defaults(func=deploy_llm)

    for name, method in (("get", "GET"), ("delete", "DELETE"), ("stop", "POST"), ("start", "POST")):
        p = ops.add_parser(name, help=f"{name} a deployment version")
        p.add_argument("deploy_id")
        common(p)
        p.set_defaults(func=_action, action=name, method=method)

    p = ops.add_parser("list", help="your deployments")
    p.add_argument("--status")
    common(p)
    p.set_defaults(func=deploy_list)

    p = ops.add_parser("gpus", help="pools and what is free")
    common(p)
    p.set_defaults(func=gpus)


def _client(args: argparse.Namespace) -> httpx.Client:
    if not args.api_key:
        sys.exit("inferd: give --api-key or set INFERD_API_KEY")
    return httpx.Client(
        base_url=args.url, headers={"Authorization": f"Bearer {args.api_key}"}, timeout=60
    )


def _checked(response: httpx.Response) -> Any:
    if not response.is_success:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        sys.exit(f"inferd: {response.status_code}: {message}")
    return response.json()


def _line(obj: dict[str, Any]) -> str:
    instances = obj["instances"]
    reason = obj.get("fail_reason") or obj.get("status_reason") or ""
    return (
        f"{obj['deploy_id']}\t{obj['model_name']}:{obj['version']}\t{obj['status']}\t"
        f"running={instances['running']} pending={instances['pending']}\t{reason}"
    ).rstrip()


def deploy_llm(args: argparse.Namespace) -> None:
    token = os.environ.get(args.hf_token_env) if args.hf_token_env else None
    body = {
        "model_name": args.model_name,
        "gpu": args.gpu,
        "num_gpus": args.num_gpus,
        "max_batch_size": args.max_batch_size,
        "hf": {"repo": args.repo, "revision": args.revision, "token": token},
        "settings": {"min_instances": args.min_instances, "max_instances": args.max_instances},
    }
    with _client(args) as client:
        obj = _checked(client.post("/deploy/llm", json=body))
        print(_line(obj), flush=True)
        if not args.no_wait:
            follow(client, obj["deploy_id"])


def follow(client: httpx.Client, deploy_id: str, poll_s: float = 0.5) -> None:
    """Print each status; a progress bar while weights download; exit 1 if it fails."""
    from tqdm import tqdm

    status, bar = None, None
    try:
        while True:
            obj = _checked(client.get(f"/deploy/{deploy_id}"))
            download = obj.get("download")
            if download and download["total"]:
                if bar is None:
                    bar = tqdm(total=download["total"], unit="B", unit_scale=True, desc="weights")
                bar.update(download["bytes"] - bar.n)
            if obj["status"] != status:
                status = obj["status"]
                if bar is not None and status != "downloading":
                    bar.update(bar.total - bar.n)
                    bar.close()
                    bar = None
                print(_line(obj), flush=True)
            if status == "failed":
                sys.exit(1)
            if status in ("running", "stopped", "deleted"):
                return
            time.sleep(poll_s)
    finally:
        if bar is not None:
            bar.close()


def _action(args: argparse.Namespace) -> None:
    path = f"/deploy/{args.deploy_id}"
    if args.action in ("stop", "start"):
        path += f"/{args.action}"
    with _client(args) as client:
        print(_line(_checked(client.request(args.method, path))))


def deploy_list(args: argparse.Namespace) -> None:
    params = {"status": args.status} if args.status else None
    with _client(args) as client:
        for obj in _checked(client.get("/deploy/list", params=params)):
            print(_line(obj))


def gpus(args: argparse.Namespace) -> None:
    with _client(args) as client:
        for pool in _checked(client.get("/deploy/llm/gpu_availability"))["gpus"]:
            emulated = " (emulated)" if pool["emulated"] else ""
            print(
                f"{pool['gpu_config']}\t{pool['available']}/{pool['total']} free\t"
                f"${pool['usd_per_hour']}/h{emulated}"
            )
