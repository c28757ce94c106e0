"""Soak (issue 17; not in CI): one inferd under a steady open-loop mixed load for `--minutes`
(default 30), sampled every 10 s.

The catalog is three entries of the default catalog as shipped (SmolLM2 chat, all-MiniLM-L6-v2
embeddings, VADER sentiment) plus a null model. The load is a fixed request rate (default 20
req/s: on a quiet 2-core VM well under what it sustains) over a fixed, shuffled cycle of 100
request kinds: null, VADER and embeddings calls through the native and OpenAI routes (88%),
native requests answered by webhook to a receiver on loopback (5%), invalid bodies (2%, 400)
and SmolLM2 generations of at most 8 tokens (5%: unary native and chat, a stream, and a stream
abandoned after its first chunk). Latency is measured from each request's scheduled send time;
a request never waits for a connection (the generator opens one when none is idle).

Every sample reads, from /proc, the RSS and open file descriptors of the gateway and of each
of its worker processes, and `inferd_queue_depth` from /metrics. Targets:

- RSS of every process grows < 5%: median of the first 3 samples after `--warmup-minutes` vs
  median of the last 3 under load;
- no file descriptors leak: the min of those same samples grows by FD_SLACK at most, and so do
  the fds of the idle server (after every kind ran once, before the load, vs after the load);
- no slots leak: after the load every model's queue depth is back to 0, every webhook accepted
  was delivered, and LIMIT concurrent SmolLM2 requests (the concurrency limit the server runs
  with) are all admitted: a leaked limiter slot would refuse one with 429;
- p99 latency (all kinds) of the last 5 minutes within 20% of the first 5 minutes after warm-up
  (the first and last quarter of the measured period when it is shorter than 20 minutes);
- no process restarted and no request got an unexpected status or timed out (60 s).

Exit code 0 only if every target passes. Quick check: `--minutes 2 --warmup-minutes 0.5`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import httpx
import orjson

from bench.common import BENCH_KEY, Connection, free_port, start_inferd

LLM = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBED = "sentence-transformers/all-MiniLM-L6-v2"
VADER = "vader/sentiment"
NULL = "bench/null"
SHORT = {LLM: "smollm2", EMBED: "minilm", VADER: "vader", NULL: "null"}
NULL_MODEL = f"""
[[models]]
name = "{NULL}"
task = "text-generation"
engine = "null"
"""
LIMIT = 64  # per account and model; the post-load probe sends this many SmolLM2 requests at once
CONNECTIONS = 32  # idle keep-alive connections the load generator keeps (it opens more on demand)
REQUEST_TIMEOUT_S = 60.0
RSS_GROWTH_MAX = 0.05
FD_SLACK = 4
P99_RATIO_MAX = 1.2
HEADERS = {"Authorization": f"Bearer {BENCH_KEY}"}


def catalog() -> str:
    """The default catalog's entries for our three real models, verbatim, plus the null model."""
    text = resources.files("inferd.catalog").joinpath("default.toml").read_text()
    blocks = [b for b in text.split("[[models]]")[1:] if f'name = "{LLM}"' in b]
    blocks += [b for b in text.split("[[models]]")[1:] if f'name = "{EMBED}"' in b]
    blocks += [b for b in text.split("[[models]]")[1:] if f'name = "{VADER}"' in b]
    assert len(blocks) == 3, "default catalog entries not found"
    return "".join("[[models]]" + b for b in blocks) + NULL_MODEL


@dataclass
class Kind:
    name: str
    weight: int  # per 100 requests
    path: str
    body: dict
    status: int = 200
    mode: str = "unary"  # unary | webhook | abandon


def chat(model: str, **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Say hi."}], **extra}


def kinds(hook_url: str) -> list[Kind]:
    native = "/v1/inference/"
    return [
        Kind("null", 34, native + NULL, {"input": "hello", "max_new_tokens": 4}),
        Kind("null_chat", 10, "/v1/openai/chat/completions", chat(NULL, max_tokens=4)),
        Kind("vader", 22, native + VADER, {"input": "I love it, wonderful!"}),
        Kind("embed", 14, native + EMBED, {"inputs": ["The quick brown fox."]}),
        Kind("embed_oai", 8, "/v1/openai/embeddings", {"model": EMBED, "input": "Hello there."}),
        Kind("llm", 2, native + LLM, {"input": "Once upon a time", "max_new_tokens": 8}),
        Kind("llm_chat", 1, "/v1/openai/chat/completions", chat(LLM, max_tokens=8)),
        Kind("llm_stream", 1, "/v1/openai/chat/completions", chat(LLM, max_tokens=8, stream=True)),
        Kind(
            "llm_abandon",
            1,
            "/v1/openai/chat/completions",
            chat(LLM, max_tokens=8, stream=True),
            mode="abandon",
        ),
        Kind(
            "webhook",
            5,
            native + NULL,
            {"input": "hello", "max_new_tokens": 4, "webhook": hook_url},
            mode="webhook",
        ),
        Kind("invalid", 2, native + NULL, {"input": "hello", "max_new_tokens": 0}, status=400),
    ]


# -- the load generator's client: keep-alive HTTP/1.1, any status ------------------------------


class Client(Connection):
    async def request(self, path: str, body: dict) -> tuple[int, bytes]:
        await self.send(path, body)
        status, length, chunked = await self.head()
        if not chunked:
            return status, await self.reader.readexactly(length)
        out = bytearray()
        while chunk := await self.chunk():
            out += chunk
        return status, bytes(out)

    async def send(self, path: str, body: dict) -> None:
        payload = orjson.dumps(body)
        head = [
            f"POST {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            *(f"{k}: {v}" for k, v in HEADERS.items()),
        ]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

    async def head(self) -> tuple[int, int, bool]:
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                return status, length, chunked
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value:
                chunked = True

    async def chunk(self) -> bytes:
        size = int((await self.reader.readline()).strip(), 16)
        if size == 0:
            await self.reader.readline()
            return b""
        data = await self.reader.readexactly(size)
        await self.reader.readline()
        return data

    def close(self) -> None:
        self.writer.close()


# -- the webhook receiver ------------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.delivered: dict[str, float] = {}  # request_id -> arrival (perf_counter)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    request_id = json.loads(body)["request_id"]
                except (ValueError, KeyError):
                    request_id = f"?{len(receiver.delivered)}"
                receiver.delivered[request_id] = time.perf_counter()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- processes from /proc ------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode(errors="replace").split("\0")


def _rss_fds(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss * 1024, len(os.listdir(f"/proc/{pid}/fd"))


def processes(root: int, others: set[str]) -> dict[str, tuple[int, int, int]]:
    """label -> (pid, RSS bytes, open fds) for the gateway and its worker processes. Other
    children (the gateway runs `podman` now and then) come and go: their names go to `others`."""
    out: dict[str, tuple[int, int, int]] = {}
    for pid in [root, *_children(root)]:
        try:
            args = _cmdline(pid)
            if pid == root:
                label = "gateway"
            elif "inferd.worker.main" in args and "--spec" in args:
                name = json.loads(args[args.index("--spec") + 1])["name"]
                label = SHORT.get(name, name)
            else:
                others.add(os.path.basename(args[0]))
                continue
            rss, fds = _rss_fds(pid)
        except (OSError, StopIteration, ValueError, IndexError):
            continue  # exited meanwhile
        while label in out:
            label += "'"
        out[label] = (pid, rss, fds)
    return out


def fd_kinds(pid: int) -> Counter[str]:
    """What a process's fds point at: socket, pipe, anon_inode:[eventfd], a file's path..."""
    out: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        out[target.split(":[", 1)[0] if target.startswith(("socket:", "pipe:")) else target] += 1
    return out


def api(port: int) -> httpx.AsyncClient:
    """A client for one step: its connections are closed when the step ends, so they never
    count in the gateway's open fds."""
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=300)


async def queue_depth(port: int) -> dict[str, float]:
    async with api(port) as client:
        text = (await client.get("/metrics")).text
    out = {}
    for line in text.splitlines():
        if line.startswith("inferd_queue_depth{"):
            labels, value = line.rsplit(" ", 1)
            model = labels.split('model="', 1)[1].split('"', 1)[0]
            out[SHORT.get(model, model)] = float(value)
    return out


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Done:
    kind: str
    due: float  # seconds since the load started
    latency: float
    ok: bool


@dataclass
class Sample:
    t: float
    procs: dict[str, tuple[int, int, int]]
    depth: dict[str, float]
    conns: int = 0  # the load generator's open connections
    fd_kinds: Counter[str] | None = None  # the gateway's, when idle


@dataclass
class Soak:
    port: int
    rate: float
    seconds: float
    receiver: Receiver
    done: list[Done] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    webhooks: dict[str, float] = field(default_factory=dict)  # request_id -> submit time
    pool: deque[Client] = field(default_factory=deque)
    conns: int = 0  # connections the generator has open (each is an fd of the gateway too)

    async def open(self) -> Client:
        client = Client(self.port)
        await client.open()
        self.conns += 1
        return client

    def close(self, client: Client) -> None:
        client.close()
        self.conns -= 1

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.first_errors) < 10:
            self.first_errors.append(f"{kind}: {detail}")

    async def run_load(self, cycle: list[Kind], start: float) -> None:
        for _ in range(CONNECTIONS):
            self.pool.append(await self.open())
        tasks: set[asyncio.Task] = set()
        i = 0
        while (due := i / self.rate) < self.seconds:
            await asyncio.sleep(max(0.0, start + due - time.perf_counter()))
            task = asyncio.create_task(self.one(cycle[i % len(cycle)], start, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks)
        while self.pool:
            self.close(self.pool.popleft())

    async def connection(self) -> Client:
        """An idle keep-alive connection, else a new one: a slow request never holds up the
        next one (open loop). Used in turn (FIFO), so none idles into the server's keep-alive
        timeout."""
        return self.pool.popleft() if self.pool else await self.open()

    def put_back(self, client: Client) -> None:
        # Connections opened in a burst are closed again: the gateway's fds follow the load.
        if len(self.pool) < CONNECTIONS:
            self.pool.append(client)
        else:
            self.close(client)

    async def one(self, kind: Kind, start: float, due: float) -> None:
        ok = False
        try:
            if kind.mode == "abandon":
                ok = await asyncio.wait_for(self.abandon(kind), REQUEST_TIMEOUT_S)
            else:
                client = await self.connection()
                try:
                    status, body = await asyncio.wait_for(
                        client.request(kind.path, kind.body), REQUEST_TIMEOUT_S
                    )
                except BaseException:
                    self.close(client)  # in an unknown state
                    raise
                self.put_back(client)
                ok = status == kind.status
                if not ok:
                    self.error(kind.name, f"status {status}: {body[:200]!r}")
                elif kind.mode == "webhook":
                    self.webhooks[orjson.loads(body)["request_id"]] = time.perf_counter()
        except Exception as exc:  # counted and reported
            self.error(kind.name, repr(exc))
        self.done.append(Done(kind.name, due, time.perf_counter() - start - due, ok))

    async def abandon(self, kind: Kind) -> bool:
        """A stream the client walks away from after its first chunk."""
        client = await self.open()
        try:
            await client.send(kind.path, kind.body)
            status, _, chunked = await client.head()
            if status != kind.status or not chunked or not await client.chunk():
                self.error(kind.name, f"status {status}")
                return False
            return True
        finally:
            self.close(client)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"


async def main_async(args: argparse.Namespace) -> int:
    seconds, warmup = args.minutes * 60, args.warmup_minutes * 60
    if not 0 <= warmup < seconds:
        sys.exit("--warmup-minutes must be shorter than --minutes")
    receiver = Receiver()
    port = free_port()
    t_boot = time.perf_counter()
    server = start_inferd(
        catalog(),
        port,
        {
            "INFERD_CONCURRENCY_LIMIT": str(LIMIT),
            "INFERD_WEBHOOKS_ALLOW_HOSTS": f"127.0.0.1:{receiver.port}",
            "INFERD_BLOB_MASTER_KEY": os.urandom(32).hex(),
            "HF_HUB_OFFLINE": "1",
        },
    )
    print(f"inferd ready in {time.perf_counter() - t_boot:.1f} s (pid {server.proc.pid})")
    try:
        return await soak(args, server.proc.pid, port, receiver, seconds, warmup)
    finally:
        server.stop()
        receiver.close()


async def soak(
    args: argparse.Namespace,
    root: int,
    port: int,
    receiver: Receiver,
    seconds: float,
    warmup: float,
) -> int:
    table = kinds(receiver.url)
    async with api(port) as client:  # every kind works before the clock starts
        for kind in table:
            r = await client.post(kind.path, json=kind.body)
            if kind.mode != "abandon" and r.status_code != kind.status:
                sys.exit(f"{kind.name}: {r.status_code} {r.text[:300]}")
    deadline = time.monotonic() + 30
    while len(receiver.delivered) < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    cycle = [k for k in table for _ in range(k.weight)]
    random.Random(17).shuffle(cycle)
    mix = ", ".join(f"{k.name} {k.weight}%" for k in table)
    print(
        f"load: {args.rate:g} req/s open loop for {clock(seconds)} (warm-up {clock(warmup)}), "
        f"up to {CONNECTIONS} idle keep-alive connections; mix: {mix}"
    )

    state = Soak(port, args.rate, seconds, receiver)
    others: set[str] = set()
    idle_before = Sample(0.0, processes(root, others), await queue_depth(port), 0, fd_kinds(root))
    labels = list(idle_before.procs)
    cols = "".join(f"{label[:14]:>15}" for label in labels)
    print(
        f"\n{'time':>7} {'phase':7} {'done/s':>7} {'err':>4} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'depth':>5} {'conns':>5}{cols}   (RSS MiB / fds)"
    )

    def show(sample: Sample, phase: str, window: list[Done], period: float) -> None:
        lat = [d.latency * 1000 for d in window]
        procs = "".join(
            f"{mib(sample.procs[label][1]) + '/' + str(sample.procs[label][2]):>15}"
            if label in sample.procs
            else f"{'gone':>15}"
            for label in labels
        )
        print(
            f"{clock(sample.t):>7} {phase:7} {len(window) / max(period, 1e-9):7.1f} "
            f"{sum(not d.ok for d in window):4d} {pct(lat, 0.5):7.1f} {pct(lat, 0.99):7.1f} "
            f"{sum(sample.depth.values()):5.0f} {sample.conns:5d}{procs}",
            flush=True,
        )

    show(idle_before, "idle", [], 1.0)
    samples: list[Sample] = []
    start = time.perf_counter()
    load = asyncio.create_task(state.run_load(cycle, start))
    seen = 0
    step = args.sample_seconds
    times = [k * step for k in range(1, int(seconds / step) + 1) if k * step < seconds - step / 2]
    for t in [*times, seconds, None]:
        # The last sample is taken when the load and its in-flight requests are done.
        timeout = None if t is None else max(0.0, start + t - time.perf_counter())
        await asyncio.wait({load}, timeout=timeout)
        now = time.perf_counter() - start
        sample = Sample(now, processes(root, others), await queue_depth(port), state.conns)
        window = state.done[seen:]
        seen += len(window)
        period = now - (samples[-1].t if samples else 0.0)
        if load.done():
            ended = sample
            show(sample, "ended", window, period)
            break
        samples.append(sample)
        show(sample, "warm-up" if now < warmup else "measure", window, period)
    load.result()
    print(f"load ended at {clock(ended.t)} (requests in flight at {clock(seconds)} finished)")

    # -- drain: webhooks delivered, queue depth back to 0, every limiter slot free ---------------
    t_end = time.perf_counter()
    deadline = time.monotonic() + 300
    while not set(state.webhooks) <= set(receiver.delivered) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    undelivered = len(set(state.webhooks) - set(receiver.delivered))
    while sum((depth := await queue_depth(port)).values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    drain_s = time.perf_counter() - t_end
    probe_body = {"input": "Once upon a time", "max_new_tokens": 8}
    async with api(port) as client:
        probe = await asyncio.gather(
            *(client.post(f"/v1/inference/{LLM}", json=probe_body) for _ in range(LIMIT))
        )
    probe_statuses = sorted({r.status_code for r in probe})
    await asyncio.sleep(1)  # the gateway closes the probe's connections
    drained = Sample(
        time.perf_counter() - start,
        processes(root, others),
        await queue_depth(port),
        state.conns,
        fd_kinds(root),
    )
    show(drained, "drained", [], 1.0)

    return report(
        args,
        state,
        Phases(idle_before, samples, drained, others),
        depth,
        drain_s,
        undelivered,
        probe_statuses,
        seconds,
        warmup,
    )


@dataclass
class Phases:
    idle_before: Sample  # after every kind ran once, before the load
    under_load: list[Sample]
    drained: Sample  # after the load, the drain and the limiter probe
    others: set[str]  # names of other children of the gateway seen


def report(
    args: argparse.Namespace,
    state: Soak,
    phases: Phases,
    depth: dict[str, float],
    drain_s: float,
    undelivered: int,
    probe_statuses: list[int],
    seconds: float,
    warmup: float,
) -> int:
    results: list[bool] = []

    def verdict(ok: bool) -> str:
        results.append(ok)
        return "PASS" if ok else "FAIL"

    samples, idle, drained = phases.under_load, phases.idle_before, phases.drained
    measured = [s for s in samples if s.t >= warmup] or samples[-1:]
    head, tail = measured[:3], measured[-3:]
    print(
        f"\nsoak: {args.rate:g} req/s, {clock(seconds - warmup)} measured after "
        f"{clock(warmup)} warm-up; {len(state.done)} requests, "
        f"{sum(not d.ok for d in state.done)} failed"
    )
    print(
        f"\n{'':18}{'RSS MiB':-^36}      {'fds under load':-^21}      {'fds idle':-^21}\n"
        f"{'process':9} {'pid':>8} {'warm':>8} {'end':>8} {'growth':>7} {'max':>8}       "
        f"{'warm':>6} {'end':>6} {'diff':>6}       {'before':>6} {'after':>6} {'diff':>6}"
    )
    everyone = [*samples, idle, drained]
    for label in dict.fromkeys(label for s in everyone for label in s.procs):
        pids = {s.procs[label][0] for s in everyone if label in s.procs}
        if len(pids) != 1 or not all(label in s.procs for s in everyone):
            print(f"{label:9} pids {sorted(pids)}: restarted, new or gone   {verdict(False)}")
            continue
        rss0 = statistics.median(s.procs[label][1] for s in head)
        rss1 = statistics.median(s.procs[label][1] for s in tail)
        growth = rss1 / rss0 - 1
        peak = max(s.procs[label][1] for s in samples)
        # The gateway's fds less the load generator's connections to it (one fd each).
        conns = label == "gateway"
        fds0 = min(s.procs[label][2] - conns * s.conns for s in head)
        fds1 = min(s.procs[label][2] - conns * s.conns for s in tail)
        idle0, idle1 = idle.procs[label][2], drained.procs[label][2]
        print(
            f"{label:9} {pids.pop():>8} {mib(rss0):>8} {mib(rss1):>8} {growth:+7.1%} "
            f"{mib(peak):>8} {verdict(growth < RSS_GROWTH_MAX):5} "
            f"{fds0:>6} {fds1:>6} {fds1 - fds0:+6d} {verdict(fds1 - fds0 <= FD_SLACK):5} "
            f"{idle0:>6} {idle1:>6} {idle1 - idle0:+6d} {verdict(idle1 - idle0 <= FD_SLACK):5}"
        )
    print(
        f"(RSS and fds under load: median and min of the first 3 samples after warm-up and of "
        f"the last 3 under load, RSS growth < {RSS_GROWTH_MAX:.0%}, fds +{FD_SLACK} at most; "
        f"the gateway's fds less the load generator's open connections ('conns'); fds idle: "
        f"after every kind ran once, before the load, vs after the load, the drain and the "
        f"limiter probe, +{FD_SLACK} at most)"
    )
    if idle.fd_kinds is not None and drained.fd_kinds is not None:
        diff = drained.fd_kinds.copy()
        diff.subtract(idle.fd_kinds)
        changed = {k: v for k, v in diff.items() if v}
        print(f"gateway fds idle, after - before, by target: {changed or 'none'}")
    if phases.others:
        print(f"other children of the gateway seen (not workers, not counted): {phases.others}")

    print(
        f"\nqueue depth after the load (drained in {drain_s:.1f} s): {depth or '{}'}   "
        f"{verdict(not any(depth.values()))}"
    )
    print(
        f"webhooks: {len(state.webhooks)} accepted, "
        f"{len(state.webhooks) - undelivered} delivered   {verdict(undelivered == 0)}"
    )
    if state.webhooks:
        lags = [
            (state.receiver.delivered[rid] - sent) * 1000
            for rid, sent in state.webhooks.items()
            if rid in state.receiver.delivered
        ]
        print(f"  submit -> delivery p50 {pct(lags, 0.5):.0f} ms, p99 {pct(lags, 0.99):.0f} ms")
    print(
        f"limiter: {LIMIT} concurrent {SHORT[LLM]} requests after the load, statuses "
        f"{probe_statuses} (limit {LIMIT})   {verdict(probe_statuses == [200])}"
    )
    failed = sum(state.errors.values())
    print(f"unexpected statuses/errors: {failed} {state.errors or ''}   {verdict(failed == 0)}")
    for line in state.first_errors:
        print(f"  {line}")

    span = seconds - warmup
    width = 300.0 if span >= 1200 else span / 4
    first = [d for d in state.done if warmup <= d.due < warmup + width]
    last = [d for d in state.done if seconds - width <= d.due]
    p99_first = pct([d.latency for d in first], 0.99) * 1000
    p99_last = pct([d.latency for d in last], 0.99) * 1000
    ratio = p99_last / p99_first
    print(
        f"\np99 latency, all kinds: {clock(warmup)}-{clock(warmup + width)} {p99_first:.1f} ms "
        f"({len(first)} requests), {clock(seconds - width)}-{clock(seconds)} {p99_last:.1f} ms "
        f"({len(last)}); ratio {ratio:.2f} (<= {P99_RATIO_MAX})   "
        f"{verdict(ratio <= P99_RATIO_MAX)}"
    )
    print(
        f"  {'kind':12} {'n':>6} {'p50 first':>10} {'p50 last':>9} {'p99 first':>10} "
        f"{'p99 last':>9}"
    )
    for name in dict.fromkeys(d.kind for d in state.done):
        a = [d.latency * 1000 for d in first if d.kind == name]
        b = [d.latency * 1000 for d in last if d.kind == name]
        print(
            f"  {name:12} {len(a) + len(b):>6} {pct(a, 0.5):10.1f} {pct(b, 0.5):9.1f} "
            f"{pct(a, 0.99):10.1f} {pct(b, 0.99):9.1f}"
        )
    passed = all(results)
    print(f"\n{'PASS' if passed else 'FAIL'}: {results.count(True)} of {len(results)} targets met")
    return 0 if passed else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s, all kinds")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
