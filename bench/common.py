"""Shared bench helpers: start servers on loopback, drive them with a lean HTTP/1.1 client.

The load client speaks keep-alive HTTP/1.1 over raw asyncio streams: a general-purpose client
(httpx) costs more CPU per request than the gateway under test and would measure itself.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
BENCH_KEY = "ik_bench_key_0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 300, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


class Process:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            args, env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_inferd(catalog_toml: str, port: int, env: dict[str, str] | None = None) -> Process:
    home = Path(tempfile.mkdtemp(prefix="inferd-bench-"))
    catalog = home / "catalog.toml"
    catalog.write_text(catalog_toml)
    proc = Process(
        [sys.executable, "-m", "inferd", "serve", "--port", str(port)],
        {
            "INFERD_HOME": str(home),
            "INFERD_CATALOG": str(catalog),
            "INFERD_ADMIN_KEY": BENCH_KEY,
            "INFERD_LOG_LEVEL": "WARNING",
            "INFERD_CONCURRENCY_LIMIT": "100000",
            **(env or {}),
        },
    )
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    bodies: list[bytes]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, body: dict, headers: dict[str, str]) -> bytes:
        payload = orjson.dumps(body)
        head = [
            f"POST {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        status_line = await self.reader.readline()
        if not status_line.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected response: {status_line!r}")
        length, chunked = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value:
                chunked = True
        if not chunked:
            return await self.reader.readexactly(length)
        out = bytearray()
        while True:
            size = int((await self.reader.readline()).strip(), 16)
            if size == 0:
                await self.reader.readline()
                return bytes(out)
            out += await self.reader.readexactly(size)
            await self.reader.readline()


async def closed_loop(
    port: int,
    path: str,
    body: dict,
    headers: dict[str, str],
    concurrency: int,
    seconds: float,
    connect_gap: float = 0.0,
) -> LoadResult:
    """`concurrency` connections, each sending its next request as soon as one returns.

    `connect_gap` seconds between connection opens spread them over the workers of a
    multi-process server sharing one listening socket: opened at once, one worker often accepts
    them all and the others idle for the whole run.
    """
    conns = [Connection(port) for _ in range(concurrency)]
    if connect_gap:
        for conn in conns:
            await conn.open()
            await asyncio.sleep(connect_gap)
    else:
        await asyncio.gather(*(c.open() for c in conns))
    latencies: list[float] = []
    bodies: list[bytes] = []
    stop_at = time.perf_counter() + seconds

    async def run(conn: Connection) -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            bodies.append(await conn.post(path, body, headers))
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in conns))
    return LoadResult(len(latencies), time.perf_counter() - started, latencies, bodies[:4])


async def open_loop(
    port: int,
    path: str,
    body: dict,
    headers: dict[str, str],
    rate: float,
    seconds: float,
    connections: int = 64,
    connect_gap: float = 0.0,
) -> LoadResult:
    """Requests at a fixed rate (latency is measured from the scheduled send time);
    `connect_gap` as in `closed_loop`."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        conn = Connection(port)
        await conn.open()
        pool.put_nowait(conn)
        await asyncio.sleep(connect_gap)
    latencies: list[float] = []
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        conn = await pool.get()
        try:
            await conn.post(path, body, headers)
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - due)

    await asyncio.gather(*(one(i) for i in range(total)))
    return LoadResult(total, time.perf_counter() - start, latencies, [])
