"""First start, the CLI, and a graceful shutdown that drains in-flight streams."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
from openai import OpenAI

from tests.conftest import CHAT_MODEL, Server


def test_first_start_cli_and_graceful_drain(tmp_path) -> None:
    server = Server(tmp_path, {"INFERD_DRAIN_TIMEOUT_S": "30"}).start()
    try:
        printed = re.findall(
            r"admin API key \(shown once, store it now\): (\S+)", server.log_text()
        )
        assert len(printed) == 1
        admin_key = printed[0]
        database = (server.home / "inferd.db").read_bytes()
        assert admin_key.encode() not in database  # only a keyed hash is stored
        client = OpenAI(api_key=admin_key, base_url=server.url + "/v1/openai", max_retries=0)
        assert client.models.list().data

        made = subprocess.run(
            [sys.executable, "-m", "inferd", "keys", "create", "--name", "ci"],
            env=server.env,
            capture_output=True,
            text=True,
            check=True,
        )
        new_key = made.stdout.strip()
        assert new_key.startswith("ik_")
        rows = (
            sqlite3.connect(server.home / "inferd.db")
            .execute("select name from api_keys")
            .fetchall()
        )
        assert ("ci",) in rows
        OpenAI(api_key=new_key, base_url=server.url + "/v1/openai").models.list()

        # A stream in flight when SIGTERM arrives finishes; new connections are refused.
        result: dict = {}

        def stream() -> None:
            text = []
            for chunk in client.chat.completions.create(
                model=CHAT_MODEL,
                messages=[{"role": "user", "content": "Tell a story."}],
                max_tokens=120,
                stream=True,
                extra_body={"ignore_eos": True},
            ):
                if chunk.choices and chunk.choices[0].finish_reason:
                    result["finish"] = chunk.choices[0].finish_reason
                    result["usage"] = chunk.usage
            result["text"] = "".join(text)

        thread = threading.Thread(target=stream)
        thread.start()
        time.sleep(0.8)
        server.proc.send_signal(15)
        time.sleep(0.3)
        refused = False
        try:
            httpx.get(server.url + "/healthz", timeout=2)
        except httpx.HTTPError:
            refused = True
        thread.join(60)
        assert result.get("finish") == "length"
        assert result["usage"].completion_tokens == 120
        assert refused
        # uvicorn re-raises SIGTERM after a clean shutdown, as a process manager expects.
        assert server.proc.wait(30) in (0, -15)
        assert not server.worker_pids(CHAT_MODEL)
    finally:
        server.stop()


def test_admin_key_from_environment(tmp_path) -> None:
    key = "ik_from_env_for_automation_123"
    server = Server(tmp_path, {"INFERD_ADMIN_KEY": key})
    server.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(
                    server.url + "/v1/openai/models", headers={"Authorization": f"Bearer {key}"}
                )
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert r.status_code == 200
        assert "shown once" not in server.log_text()
    finally:
        server.stop()
