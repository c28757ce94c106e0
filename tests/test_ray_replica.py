"""The Serve side of the Ray backend on the suite's real Ray cluster (tests/ray_cluster.py):
model replicas hosted in Serve deployments, called through deployment handles with streamed,
typed events; Ray's HTTP proxy never starts."""

from __future__ import annotations

import asyncio
import time

import pytest

from inferd.requests import Failed, Finished, Generate, SamplingParams, Started, Tokens
from inferd.runtime.ray_replica import ModelReplica, decode_events, encode_request
from tests.ray_cluster import RayCluster

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray
serve = pytest.importorskip("ray.serve")

NULL_SPEC = (
    '{"name": "test/null", "task": "text-generation", "engine": "null",'
    ' "options": {"tokens": 5, "token_delay_ms": 20}}'
)


@pytest.fixture(scope="module")
def cluster(ray_cluster: RayCluster) -> str:
    return ray_cluster.address


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
    return [event async for chunk in stream for event in decode_events(chunk)]


def test_null_model_streams_typed_events(cluster: str) -> None:
    handle = deploy("test-null", NULL_SPEC)

    async def run() -> None:
        events = await generate(handle, "hi", 5)
        assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
        assert sum(len(e.items) for e in events if isinstance(e, Tokens)) == 5
        bad = [
            e async for c in handle.options(stream=True).remote(b"\x01") for e in decode_events(c)
        ]
        assert isinstance(bad[0], Failed) and bad[0].status == 400
        # Calls run concurrently in one replica: 8 streams of 5 x 20 ms take far less than 8x.
        started = time.perf_counter()
        many = await asyncio.gather(*(generate(handle, "hi", 5) for _ in range(8)))
        assert all(isinstance(e[-1], Finished) for e in many)
        assert time.perf_counter() - started < 8 * 5 * 0.02
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert await handle.node.remote() in alive

    asyncio.run(run())
    serve.delete("test-null")
