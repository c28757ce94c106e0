"""The Serve side of the Ray backend on a real Ray cluster on this machine (a head node on
127.0.0.2 with its own temp dir, CPUs and memory): model replicas hosted in Serve deployments,
called through deployment handles with streamed, typed events; Ray's HTTP proxy never starts."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferd.catalog import Catalog
from inferd.requests import Failed, Finished, Generate, SamplingParams, Started, Tokens
from inferd.runtime.ray_replica import ModelReplica, decode_event, decode_info, encode_request
from tests.conftest import CHAT_MODEL, free_port

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

NULL_SPEC = (
    '{"name": "test/null", "task": "text-generation", "engine": "null",'
    ' "options": {"tokens": 5, "token_delay_ms": 20}}'
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    # Unix socket paths under the temp dir must stay short.
    temp = tempfile.mkdtemp(prefix="inferd-ray-", dir="/tmp")
    port = free_port()
    head = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.2",
            f"--port={port}",
            f"--temp-dir={temp}",
            "--num-cpus=2",
            "--memory=3000000000",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.2:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            break
        except Exception:
            assert head.poll() is None and time.monotonic() < deadline, "ray head did not start"
            time.sleep(1)
    serve.start(http_options={"location": "NoServer"})
    try:
        yield address
    finally:
        serve.shutdown()
        ray.shutdown()
        # Only the processes this test started (never `ray stop`).
        os.killpg(head.pid, 15)
        head.wait(60)
        shutil.rmtree(temp, ignore_errors=True)


def deploy(name: str, spec_json: str, max_ongoing: int = 16):
    app = (
        serve.deployment(ModelReplica)
        .options(
            name=name,
            max_ongoing_requests=max_ongoing,
            num_replicas=1,
            ray_actor_options={"num_cpus": 0.5},
        )
        .bind(spec_json)
    )
    return serve.run(app, name=name, route_prefix=None)


async def generate(handle, prompt: str, max_tokens: int) -> list:
    request = Generate(params=SamplingParams(max_tokens=max_tokens, temperature=0.0), prompt=prompt)
    stream = handle.options(stream=True).remote(encode_request(request))
    return [decode_event(chunk) async for chunk in stream]


def test_null_model_streams_typed_events(cluster: str) -> None:
    handle = deploy("test-null", NULL_SPEC)

    async def run() -> None:
        events = await generate(handle, "hi", 5)
        assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
        assert sum(len(e.items) for e in events if isinstance(e, Tokens)) == 5
        bad = [decode_event(c) async for c in handle.options(stream=True).remote(b"\x01")]
        assert isinstance(bad[0], Failed) and bad[0].status == 400
        # Calls run concurrently in one replica: 8 streams of 5 x 20 ms take far less than 8x.
        started = time.perf_counter()
        many = await asyncio.gather(*(generate(handle, "hi", 5) for _ in range(8)))
        assert all(isinstance(e[-1], Finished) for e in many)
        assert time.perf_counter() - started < 8 * 5 * 0.02
        assert await handle.node.remote() == ray.get_runtime_context().get_node_id()

    asyncio.run(run())
    serve.delete("test-null")


def test_smollm2_on_a_ray_replica_answers_like_a_worker(cluster: str) -> None:
    spec = Catalog.load(None).resolve(CHAT_MODEL)
    handle = deploy("test-smollm2", spec.model_dump_json())

    async def run() -> None:
        info = decode_info(await handle.info.remote())
        assert info.context_length > 0 and "chat" in info.features
        results = await asyncio.gather(
            *(generate(handle, f"The capital of France is{' ' * i}", 8) for i in range(4))
        )
        for events in results:
            assert isinstance(events[-1], Finished), events[-1]
            text = "".join(t.text for e in events if isinstance(e, Tokens) for t in e.items)
            assert text.strip()

    asyncio.run(run())
    serve.delete("test-smollm2")
