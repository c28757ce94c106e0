"""schemathesis against a live server on loopback: every operation of /openapi.json, fixed seed,
bounded examples, no stateful phase, exactly the four response checks below. It runs as a
non-admin account on a server whose cost caps (docs/configuration.md) make every request the
contract allows finish quickly, with the real default models."""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import subprocess
import sys
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inferd.api.caps import audio_seconds, check_audio_seconds, check_caps
from inferd.api.errors import APIError
from inferd.config import Settings
from inferd.requests import GenerateImage, Synthesize
from tests.conftest import ADMIN_KEY, Server

ROOT = Path(__file__).parents[1]
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
SEED = 1
MAX_EXAMPLES = 15  # per operation and phase: about 2 minutes on 2 cores for ~60 operations
CAPS = {
    "INFERD_MAX_OUTPUT_TOKENS": "4",
    "INFERD_DEFAULT_NATIVE_MAX_NEW_TOKENS": "4",
    "INFERD_MAX_IMAGE_PIXELS": str(64 * 64),
    "INFERD_MAX_IMAGE_STEPS": "2",
    "INFERD_MAX_TTS_CHARS": "64",
    "INFERD_MAX_AUDIO_SECONDS": "5",
    "INFERD_GPU_QUOTA": "0",  # deploy and container calls are checked to their refusal
    "INFERD_CONTAINERS": "true",
    # Its own bridge's firewall tables (no container ever starts), removed at the end.
    "INFERD_CONTAINER_BRIDGE": "inferd-st0",
    "INFERD_CONTAINER_SUBNET": "127.217.0.0/24",
}


# The default catalog, with text to image at 64 px and 2 steps by default and at most: the caps
# bound what a request asks for, not a model's defaults.
CATALOG_EDITS = {
    "max_side = 256, default_side = 64, default_steps = 10, max_steps = 50": (
        "max_side = 64, default_side = 64, default_steps = 2, max_steps = 2"
    ),
}


def capped_catalog(path: Path) -> Path:
    text = (ROOT / "inferd" / "catalog" / "default.toml").read_text()
    for old, new in CATALOG_EDITS.items():
        assert text.count(old) == 1, f"default.toml changed: update CATALOG_EDITS ({old})"
        text = text.replace(old, new)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("schemathesis")
    catalog = capped_catalog(root / "catalog.toml")
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_CATALOG": str(catalog), **CAPS}
    server = Server(root, env)
    server.start(timeout=300)
    yield server
    server.stop()
    for family in ("inet", "bridge"):
        subprocess.run(["nft", "delete", "table", family, "inferd_inferd_st0"], check=False)


@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing(capped_server: Server, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    account = httpx.post(
        capped_server.url + "/v1/accounts", headers=admin, json={"name": "schemathesis"}
    )
    assert account.status_code == 200, account.text
    # A member's key: billing and roles answer 403 (checked against the contract like any
    # other answer) instead of a generated spending limit of 0 turning the rest into 402s.
    inferd = [sys.executable, "-m", "inferd", "teams"]
    cli = functools.partial(
        subprocess.run, env=capped_server.env, capture_output=True, text=True, check=True
    )
    cli([*inferd, "add-member", "schemathesis", "st@example.test", "--role", "member"])
    member = [*inferd, "key", "schemathesis", "st@example.test", "--name", "st-member"]
    key = cli(member).stdout.strip()
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
        # Path parameters drop generated values with `/` and the like: with few examples per
        # operation Hypothesis takes that for a broken strategy.
        "--suppress-health-check",
        "filter_too_much",
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
    print(output[-2500:])  # the summary: counts, warnings, running time (pytest -s shows it)
    assert report.exists(), output[-5000:]
    result = json.loads(report.read_text())
    assert result["complete"], output[-5000:]
    assert result["operations"]["tested"] == result["operations"]["total"] > 20
    assert result["phases"]["stateful"]["status"] == "skip"
    assert result["test_cases"]["generated"] > 400
    assert not result["failures"] and not result["errors"], output[-20000:]
    assert run.returncode == 0, output[-5000:]


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return out.getvalue()


def test_caps_refuse_what_is_over_them() -> None:
    """The caps the run relies on: over → 400 naming the field (in the wire's spelling)."""
    settings = Settings(
        max_image_pixels=64 * 64, max_image_steps=2, max_tts_chars=8, max_audio_seconds=1
    )
    check_caps(settings, GenerateImage(prompt="x", width=64, height=64, num_inference_steps=2))
    check_caps(settings, GenerateImage(prompt="x"))  # the model's defaults: the catalog's call
    check_caps(settings, Synthesize(text="12345678"))
    refused = [
        (GenerateImage(prompt="x", width=72), {}, "width"),
        (GenerateImage(prompt="x", height=128, width=64), {}, "width"),
        (GenerateImage(prompt="x", height=72), {}, "height"),
        (GenerateImage(prompt="x", width=128, height=128), {"width": "size"}, "size"),
        (GenerateImage(prompt="x", num_inference_steps=3), {}, "num_inference_steps"),
        (Synthesize(text="123456789"), {"text": "input"}, "input"),
    ]
    for request, names, param in refused:
        with pytest.raises(APIError) as exc:
            check_caps(settings, request, names)
        assert (exc.value.status, exc.value.code, exc.value.param) == (400, "over_cap", param)
    check_audio_seconds(settings, wav(0.5))
    check_audio_seconds(settings, b"not audio at all")  # unknown length: the model decides
    with pytest.raises(APIError) as exc:
        check_audio_seconds(settings, wav(2.0), "file")
    assert (exc.value.status, exc.value.param) == (400, "file")
    assert audio_seconds(wav(2.0)) == pytest.approx(2.0, abs=0.01)


def test_caps_are_wired_into_every_route(capped_server: Server) -> None:
    """Over-cap values on the live server: a 400 naming the wire field, before any work."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    url = capped_server.url
    cases = [
        ("/v1/inference/inferd/stable-diffusion-tiny", {"prompt": "x", "width": 128}, "width"),
        (
            "/v1/inference/inferd/stable-diffusion-tiny",
            {"prompt": "x", "num_inference_steps": 3},
            "num_inference_steps",
        ),
        (
            "/v1/openai/images/generations",
            {"model": "inferd/stable-diffusion-tiny", "prompt": "x", "size": "128x128"},
            "size",
        ),
        ("/v1/inference/rhasspy/piper-en_US-joe-medium", {"text": "x" * 65}, "text"),
        (
            "/v1/openai/audio/speech",
            {"model": "rhasspy/piper-en_US-joe-medium", "input": "x" * 65, "voice": "joe"},
            "input",
        ),
    ]
    for path, body, param in cases:
        r = httpx.post(url + path, json=body, headers=headers, timeout=60)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["code"] == "over_cap" and r.json()["error"]["param"] == param
    long = "data:audio/wav;base64," + base64.b64encode(wav(6.0)).decode()
    r = httpx.post(
        url + "/v1/inference/openai/whisper-tiny.en",
        json={"audio": long},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "audio", r.text
    r = httpx.post(
        url + "/v1/openai/audio/transcriptions",
        headers=headers,
        timeout=60,
        data={"model": "openai/whisper-tiny.en"},
        files={"file": ("a.wav", wav(6.0), "audio/wav")},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "file", r.text
