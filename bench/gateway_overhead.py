"""Gateway overhead, two comparisons in one run (medians of interleaved rounds):

1. inferd → null model (a worker process that answers at once) vs. a bare Starlette endpoint
   returning the same JSON, both under uvicorn with the same loop and parser.
   Targets: ≥ 0.4x the bare requests/s; ≤ 0.25 ms added p50 latency at 1,000 req/s.
2. Passthrough to a null upstream (a bare Starlette app answering a fixed OpenAI chat.completion):
   an inferd route vs. the LiteLLM proxy (requirements/litellm.txt, 2 workers, in its own venv
   .venv-litellm, made on first run), each measured against the upstream alone.
   Targets: inferd ≥ 10x LiteLLM's requests/s at c=32; inferd's added p50 ≤ 1/10 of LiteLLM's
   at 25 req/s (a third or less of what LiteLLM sustains on 2 cores).

`--only-passthrough` runs the second comparison alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from bench.common import (
    BENCH_KEY,
    ROOT,
    Connection,
    Process,
    closed_loop,
    free_port,
    open_loop,
    start_inferd,
    wait_http,
)

NULL_CATALOG = """
[[models]]
name = "bench/null"
task = "text-generation"
engine = "null"
"""

BARE_APP = """
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = orjson.loads({body!r})

async def infer(request):
    await request.body()
    return Response(orjson.dumps(BODY), media_type="application/json")

app = Starlette(routes=[Route("/v1/inference/bench/null", infer, methods=["POST"]),
                        Route("/readyz", lambda r: Response("ok"))])
"""

# An OpenAI-compatible server that answers at once: what both proxies forward to.
UPSTREAM_APP = """
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

COMPLETION = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "null-upstream",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
})
MODELS = orjson.dumps({"object": "list", "data": [
    {"id": "null-upstream", "object": "model", "created": 1700000000, "owned_by": "bench"}]})

async def chat(request):
    await request.body()
    return Response(COMPLETION, media_type="application/json")

app = Starlette(routes=[
    Route("/v1/chat/completions", chat, methods=["POST"]),
    Route("/v1/models", lambda r: Response(MODELS, media_type="application/json")),
    Route("/readyz", lambda r: Response("ok")),
])
"""

# LiteLLM refuses to start without a master key (1.108): it then authenticates every request,
# as inferd does. No database: spend and error logs have nowhere to go, and are switched off.
LITELLM_CONFIG = """
model_list:
  - model_name: bench/passthrough
    litellm_params:
      model: openai/null-upstream
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: sk-upstream
general_settings:
  master_key: {master_key}
  disable_spend_logs: true
  disable_error_logs: true
"""
LITELLM_KEY = "sk-bench-0123456789abcdef0123456789abcdef"
LITELLM_ENV = {
    # The bundled cost map: the remote one is fetched at startup, with retries, and no network here.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY_DISABLED": "true",
    # Also uvicorn's log level: no access-log line per request.
    "LITELLM_LOG": "ERROR",
}
LITELLM_VENV = ROOT / ".venv-litellm"
LITELLM_REQUIREMENTS = ROOT / "requirements" / "litellm.txt"

ROUNDS = 3
# LiteLLM's two uvicorn workers share one listening socket: connections opened 2 ms apart
# spread over both (opened at once, one worker often took all 32 and the other idled).
GAP = 0.002
# A third or less of what LiteLLM serves at c=32 on 2 cores (70-110 req/s: 13-22 ms of CPU per
# request over its two workers), so its p50 is mostly its work rather than a queue.
PASSTHROUGH_RATE = 25
HEADERS = {"Authorization": f"Bearer {BENCH_KEY}"}
CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}


@dataclass
class Target:
    port: int
    path: str
    body: dict
    headers: dict[str, str]


@dataclass
class Figures:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(self, name))


NULL_PATH = "/v1/inference/bench/null"
NULL_BODY = {"input": "hello", "max_new_tokens": 1}


async def sample(target: Target) -> bytes:
    conn = Connection(target.port)
    await conn.open()
    try:
        return await conn.post(target.path, target.body, target.headers)
    finally:
        conn.writer.close()


async def compare(
    targets: dict[str, Target], rate: float, warmup: float = 1.0
) -> dict[str, Figures]:
    """Interleaved rounds, medians reported: the machine's noise hits every side alike."""
    figures = {name: Figures() for name in targets}
    for t in targets.values():
        await closed_loop(
            t.port, t.path, t.body, t.headers, concurrency=16, seconds=warmup, connect_gap=GAP
        )
    for _ in range(ROUNDS):
        for name, t in targets.items():
            result = await closed_loop(
                t.port, t.path, t.body, t.headers, concurrency=32, seconds=3.0, connect_gap=GAP
            )
            figures[name].rps.append(result.rps)
        for name, t in targets.items():
            result = await open_loop(
                t.port, t.path, t.body, t.headers, rate=rate, seconds=3.0, connect_gap=GAP
            )
            figures[name].p50.append(result.pct(0.5))
            figures[name].p99.append(result.pct(0.99))
    return figures


def started(proc: Process, url: str) -> Process:
    """`proc` once `url` answers; stopped, its output shown, if it never does."""
    try:
        wait_http(url, timeout=300)
    except BaseException:
        proc.stop()
        proc.log.seek(0)
        sys.stderr.write(proc.log.read()[-2000:].decode(errors="replace"))
        raise
    return proc


def start_app(source: str, port: int) -> Process:
    """A one-file Starlette app under uvicorn with the loop and parser inferd uses."""
    app_dir = tempfile.mkdtemp(prefix="inferd-bench-app-")
    Path(app_dir, "bench_app.py").write_text(source)
    proc = Process(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench_app:app",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--no-access-log",
            "--app-dir",
            app_dir,
        ]
    )
    return started(proc, f"http://127.0.0.1:{port}/readyz")


def null_model(inferd_port: int) -> None:
    inferd = Target(inferd_port, NULL_PATH, NULL_BODY, HEADERS)
    body = asyncio.run(sample(inferd))
    assert orjson.loads(body)["results"][0]["generated_text"] == "ok"
    bare_port = free_port()
    bare = start_app(BARE_APP.format(body=body.decode()), bare_port)
    try:
        figures = asyncio.run(
            compare({"inferd": inferd, "bare": Target(bare_port, NULL_PATH, NULL_BODY, {})}, 1000)
        )
    finally:
        bare.stop()

    ours, theirs = figures["inferd"], figures["bare"]
    print(
        f"gateway overhead: null model in a worker process vs bare Starlette, same JSON "
        f"(median of {ROUNDS} interleaved rounds)"
    )
    print(
        f"  requests/s at c=32   inferd {ours.median('rps'):8.0f}   "
        f"bare {theirs.median('rps'):8.0f}   "
        f"ratio {ours.median('rps') / theirs.median('rps'):.2f}x  (target >= 0.40x)"
    )
    print(
        f"  p50 at 1000 req/s    inferd {ours.median('p50'):6.2f} ms  "
        f"bare {theirs.median('p50'):6.2f} ms  "
        f"added {ours.median('p50') - theirs.median('p50'):.2f} ms (target <= 0.25 ms)"
    )
    print(
        f"  p99 at 1000 req/s    inferd {ours.median('p99'):6.2f} ms  "
        f"bare {theirs.median('p99'):6.2f} ms"
    )


def inferd_route(inferd_port: int, upstream_port: int) -> Target | str:
    """The passthrough route on inferd, or why there is none."""
    base = f"http://127.0.0.1:{inferd_port}"
    route = {
        "name": "bench/passthrough",
        "targets": [
            {
                "model": "null-upstream",
                "base_url": f"http://127.0.0.1:{upstream_port}/v1",
                "api_key": "sk-upstream",
            }
        ],
    }
    made = httpx.post(f"{base}/v1/routes", json=route, headers=HEADERS, timeout=10)
    if made.status_code != 201:
        return f"POST /v1/routes answered {made.status_code}: {made.text[:200]}"
    body = {"model": "bench/passthrough", **CHAT}
    return Target(inferd_port, "/v1/openai/chat/completions", body, HEADERS)


def litellm_cli() -> Path | str:
    """The proxy's own venv (its pins conflict with the project's), made or brought up to date
    from requirements/litellm.txt; or why it could not be."""
    wanted = LITELLM_REQUIREMENTS.read_text()
    stamp = LITELLM_VENV / ".requirements"
    if stamp.exists() and stamp.read_text() == wanted:
        return LITELLM_VENV / "bin" / "litellm"
    print(f"installing {LITELLM_REQUIREMENTS.name} into {LITELLM_VENV.name} (about a minute)")
    pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "--disable-pip-version-check", "-q"]
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        # Never committed (~750 MB), as venv itself marks its folders from Python 3.13 on.
        (LITELLM_VENV / ".gitignore").write_text("*\n")
        subprocess.run(
            [*pip, "-r", str(LITELLM_REQUIREMENTS)], check=True, capture_output=True, text=True
        )
    except subprocess.CalledProcessError as e:
        return f"installing {LITELLM_REQUIREMENTS} failed: {(e.stderr or '').strip()[-300:]}"
    stamp.write_text(wanted)
    return LITELLM_VENV / "bin" / "litellm"


def start_litellm(cli: Path, upstream_port: int, port: int) -> Process:
    config = Path(tempfile.mkdtemp(prefix="inferd-bench-litellm-"), "config.yaml")
    config.write_text(LITELLM_CONFIG.format(upstream_port=upstream_port, master_key=LITELLM_KEY))
    proc = Process(
        [
            str(cli),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "2",
            # uvicorn kills a worker that misses its 5 s health check, which a worker still
            # importing LiteLLM does on a loaded machine: restarted forever, never ready.
            "--timeout_worker_healthcheck",
            "120",
        ],
        LITELLM_ENV,
    )
    return started(proc, f"http://127.0.0.1:{port}/health/liveliness")


def passthrough(inferd_port: int) -> None:
    upstream_port = free_port()
    procs = [start_app(UPSTREAM_APP, upstream_port)]
    try:
        targets = {
            "upstream": Target(
                upstream_port, "/v1/chat/completions", {"model": "null-upstream", **CHAT}, {}
            )
        }
        route = inferd_route(inferd_port, upstream_port)
        if isinstance(route, str):
            print(f"inferd passthrough skipped: {route}")
        else:
            targets["inferd"] = route
        cli = litellm_cli()
        if isinstance(cli, str):
            print(f"LiteLLM skipped: {cli}")
        else:
            litellm_port = free_port()
            procs.append(start_litellm(cli, upstream_port, litellm_port))
            targets["litellm"] = Target(
                litellm_port,
                "/v1/chat/completions",
                {"model": "bench/passthrough", **CHAT},
                {"Authorization": f"Bearer {LITELLM_KEY}"},
            )
        for name, target in targets.items():
            answer = orjson.loads(asyncio.run(sample(target)))
            assert answer["choices"][0]["message"]["content"] == "ok", (name, answer)
        # LiteLLM's two workers warm up (imports, first connections) for a few seconds.
        figures = asyncio.run(compare(targets, rate=PASSTHROUGH_RATE, warmup=3.0))
    finally:
        for proc in procs:
            proc.stop()

    print(
        f"passthrough: inferd route vs LiteLLM proxy (2 workers) to a null OpenAI upstream "
        f"(median of {ROUNDS} interleaved rounds)"
    )
    up = figures["upstream"]
    paced = f"@{PASSTHROUGH_RATE}/s"
    print(
        f"  {'':9} {'req/s c=32':>10} {'p50 ' + paced:>11} {'p99 ' + paced:>11} {'added p50':>10}"
    )
    for name, f in figures.items():
        added = "" if name == "upstream" else f"{f.median('p50') - up.median('p50'):7.2f} ms"
        print(
            f"  {name:9} {f.median('rps'):10.0f} {f.median('p50'):8.2f} ms "
            f"{f.median('p99'):8.2f} ms {added:>10}"
        )
    for name, f in figures.items():
        if f.median("rps") < 2 * PASSTHROUGH_RATE:
            print(
                f"  warning: {name} serves under twice the paced rate (a loaded machine?): "
                f"its p50 includes queueing"
            )
    if "inferd" in figures and "litellm" in figures:
        ours, theirs = figures["inferd"], figures["litellm"]
        added_ours = ours.median("p50") - up.median("p50")
        added_theirs = theirs.median("p50") - up.median("p50")
        print(
            f"  inferd ÷ LiteLLM req/s          {ours.median('rps') / theirs.median('rps'):6.1f}x"
            f"  (target >= 10x)"
        )
        # inferd's added p50 can come out at or under zero within the machine's noise.
        ratio = added_theirs / added_ours if added_ours > 0 else float("inf")
        print(f"  LiteLLM ÷ inferd added p50      {ratio:6.1f}x  (target >= 10x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only-passthrough", action="store_true", help="skip the null-model comparison"
    )
    args = parser.parse_args()
    inferd_port = free_port()
    inferd = start_inferd(NULL_CATALOG, inferd_port)
    try:
        if not args.only_passthrough:
            null_model(inferd_port)
        passthrough(inferd_port)
    finally:
        inferd.stop()


if __name__ == "__main__":
    main()
