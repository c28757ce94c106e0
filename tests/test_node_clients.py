"""The official Node clients against the native and OpenAI routes: the pinned `deepinfra` npm
client (the seed page's TextToImage example) and the AI SDK's DeepInfra provider (images and
chat). The tests themselves are in tests/node/ (`node --test`); `make test` installs their
packages from tests/node/package-lock.json."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, CHAT_MODEL, Server

NODE_DIR = Path(__file__).parent / "node"
IMAGE_MODEL = "inferd/stable-diffusion-tiny"  # inferd/catalog/default.toml


def test_node_clients(server: Server) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules").is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI requires node and `npm ci --prefix tests/node`")
        pytest.skip("node or tests/node/node_modules missing: run `make .venv/.test-done`")
    env = {
        **os.environ,
        "INFERD_URL": server.url,
        "INFERD_API_KEY": ADMIN_KEY,
        "INFERD_IMAGE_MODEL": IMAGE_MODEL,
        "INFERD_CHAT_MODEL": CHAT_MODEL,
        "NO_PROXY": "127.0.0.1,localhost",  # the clients honour proxy variables
        "NODE_NO_WARNINGS": "1",
    }
    env.pop("DEEPINFRA_API_KEY", None)
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", str(NODE_DIR)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = f"{result.stdout}\n{result.stderr}"
    print(output)
    assert result.returncode == 0, f"node --test failed:\n{output}"
    # An exit code of 0 also means "found no tests": check that every test ran and passed.
    counts = dict(re.findall(r"^\S* ?(tests|pass) (\d+)$", result.stdout, re.MULTILINE))
    assert int(counts.get("tests", 0)) >= 3 and counts["pass"] == counts["tests"], output
