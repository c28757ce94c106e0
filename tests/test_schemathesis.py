"""schemathesis against a live server on loopback: every operation of /openapi.json, fixed seed,
bounded examples, no stateful phase, exactly the four response checks below. It runs as a
non-admin account on a server whose cost caps (docs/configuration.md) make every request the
contract allows finish quickly, with the real default models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, Server

ROOT = Path(__file__).parents[1]
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
SEED = 1
MAX_EXAMPLES = 40  # per operation and phase; the run stays well under 3 minutes on 2 cores
CAPS = {
    "INFERD_MAX_OUTPUT_TOKENS": "4",
    "INFERD_DEFAULT_NATIVE_MAX_NEW_TOKENS": "4",
    "INFERD_MAX_IMAGE_PIXELS": str(64 * 64),
    "INFERD_MAX_IMAGE_STEPS": "2",
    "INFERD_MAX_TTS_CHARS": "64",
    "INFERD_MAX_AUDIO_SECONDS": "5",
}


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("schemathesis"), {"INFERD_ADMIN_KEY": ADMIN_KEY, **CAPS}
    )
    server.start(timeout=300)
    yield server
    server.stop()


@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing(capped_server: Server, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    account = httpx.post(
        capped_server.url + "/v1/accounts", headers=admin, json={"name": "schemathesis"}
    )
    assert account.status_code == 200, account.text
    key = account.json()["api_key"]
    cards = httpx.get(capped_server.url + "/models/list", headers=admin).json()
    served = ",".join(f"{card['model_name']}={card['task']}" for card in cards)
    report = tmp_path / "report.json"
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(ROOT / "tests" / "schemathesis.toml"),
        "run",
        capped_server.url + "/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,fuzzing",  # coverage is unbounded on bodies this large; stateful is off
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--header",
        f"Authorization: Bearer {key}",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    env = {**os.environ, "INFERD_ST_MODELS": served, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540
    )
    output = run.stdout + run.stderr
    assert report.exists(), output[-5000:]
    result = json.loads(report.read_text())
    assert result["complete"], output[-5000:]
    assert result["operations"]["tested"] == result["operations"]["total"] > 20
    assert result["phases"]["stateful"]["status"] == "skip"
    assert result["test_cases"]["generated"] > 500
    assert not result["failures"] and not result["errors"], output[-20000:]
    assert run.returncode == 0, output[-5000:]
