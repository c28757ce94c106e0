"""The serving core with no HTTP in sight: a neutral request in, a neutral result out, usage
settled — the way a webhook job or a batch line runs a request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from inferd.auth import Principal
from inferd.billing.budget import InProcessBudget
from inferd.billing.ledger import UsageLedger
from inferd.catalog import Catalog
from inferd.config import Settings
from inferd.limits import InProcessLimiter
from inferd.requests import (
    ChatTurn,
    ClassifyText,
    Embed,
    Generate,
    SamplingParams,
    Transcribe,
)
from inferd.runtime import Runtime
from inferd.runtime.local import LocalBackend
from inferd.serving import RequestError, RequestMeta, Serving
from inferd.store.db import Database

from .conftest import CHAT_MODEL, EMBED_MODEL

SENTIMENT = "vader/sentiment"


@pytest.fixture(scope="module")
def loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def core(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory):
    home: Path = tmp_path_factory.mktemp("core")
    settings = Settings(home=home)
    catalog = Catalog(
        [s for s in Catalog.load(None) if s.name in {CHAT_MODEL, EMBED_MODEL, SENTIMENT}]
    )
    db = Database(settings.sqlalchemy_url)
    db.migrate()
    ledger = UsageLedger(db, flush_interval_s=60)
    runtime = Runtime(
        catalog, LocalBackend(env={"INFERD_MODEL_CACHE": str(settings.model_cache)}), 120
    )
    serving = Serving(
        settings, catalog, runtime, InProcessLimiter(8), InProcessBudget(ledger.total), ledger
    )

    async def start() -> None:
        await runtime.start()
        for deployment in runtime.deployments.values():
            await asyncio.wait_for(deployment.replicas[0].wait_ready(), 180)

    loop.run_until_complete(start())
    yield serving
    loop.run_until_complete(runtime.stop())
    db.close()


def principal(limit: float | None = 1.0) -> Principal:
    return Principal(
        account_id="acct-core",
        key_name="auto",
        is_admin=False,
        concurrency_limit=None,
        spending_limit=limit,
    )


def test_generate_embed_and_task_settle_usage(core: Serving, loop) -> None:
    who = principal()
    chat = Generate(
        params=SamplingParams(max_tokens=8, temperature=0.0),
        messages=[ChatTurn(role="user", content="What is the capital of France?")],
    )

    async def scenario():
        metas = [RequestMeta("job") for _ in range(3)]
        run = await core.generate(who, CHAT_MODEL, [chat], metas[0])
        [tokens] = await run.complete()
        embedded = await core.embed(who, EMBED_MODEL, Embed(texts=["a", "bb cc"]), metas[1])
        sentiment = await core.run_task(
            who, SENTIMENT, ClassifyText(input="I love this, it is great!"), metas[2]
        )
        await core.ledger.flush()
        return run, tokens, embedded, sentiment, metas

    run, tokens, embedded, sentiment, metas = loop.run_until_complete(scenario())
    assert 1 <= len(tokens) <= 8
    assert run.generations[0].text == "".join(t.text for t in tokens) != ""
    assert metas[0].completion_tokens == len(tokens) and metas[0].status == 200
    assert embedded.vectors.shape == (2, 384) and embedded.vectors.dtype == np.float32
    assert sentiment.output["results"][0]["label"] == "POSITIVE"
    rows = core.ledger.summary(who.account_id, None, None, None, None)
    assert sum(r["requests"] for r in rows) == 3
    by_model = {r["model"]: r for r in rows}
    assert by_model[CHAT_MODEL]["completion_tokens"] == run.completion_tokens
    assert by_model[EMBED_MODEL]["prompt_tokens"] == embedded.tokens
    # Every reservation was settled at the actual cost: nothing stays reserved.
    budget = core.budget
    assert isinstance(budget, InProcessBudget)
    assert all(v == 0 for v in budget._reserved.values())
    spent = run.cost + embedded.cost + sentiment.cost
    assert budget._settled[f"acct:{who.account_id}"] == pytest.approx(spent)
    # And the concurrency slots came back.
    assert isinstance(core.limiter, InProcessLimiter)
    assert not any(core.limiter._in_flight.values())


def test_refusals_are_request_errors(core: Serving, loop) -> None:
    who = principal()

    async def refuse(target: str, request) -> RequestError:
        with pytest.raises(RequestError) as info:
            if isinstance(request, Generate):
                await core.generate(who, target, [request], RequestMeta())
            else:
                await core.run_task(who, target, request, RequestMeta())
        return info.value

    hello = Generate(params=SamplingParams(max_tokens=4), prompt="Hello")
    assert loop.run_until_complete(refuse("no/such-model", hello)).status == 404
    wrong = loop.run_until_complete(refuse(SENTIMENT, hello))
    assert wrong.status == 400 and wrong.code == "wrong_task"
    audio = Transcribe(audio=b"RIFF")
    assert loop.run_until_complete(refuse(CHAT_MODEL, audio)).code == "wrong_task"
    too_long = Generate(params=SamplingParams(max_tokens=10**6), prompt="Hello")
    error = loop.run_until_complete(refuse(CHAT_MODEL, too_long))
    assert error.status == 400 and error.code == "context_length_exceeded"
    assert not any(core.limiter._in_flight.values())  # type: ignore[attr-defined]
