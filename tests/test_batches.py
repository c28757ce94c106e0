"""The Batch API through the real `openai` SDK: upload a JSONL file, create a batch, poll it to
its end and read the output and error files; cancel and expiry leave the partial output; a
SIGKILL in the middle of a batch loses and repeats nothing; no line reaches the disk in
plaintext."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import ADMIN_KEY, CHAT_MODEL, EMBED_MODEL, Server

CANARY = "batchcanary4Kp"
SLOW, FAST = "test/slow", "test/fast"
CATALOG = f"""
[[models]]
name = "{SLOW}"
task = "text-generation"
engine = "null"
price = {{ input_per_1m = 1000.0, output_per_1m = 1000.0 }}
options = {{ tokens = 4, token_delay_ms = 60 }}

[[models]]
name = "{FAST}"
task = "text-generation"
engine = "null"
"""


def jsonl(lines: list[dict]) -> io.BytesIO:
    data = io.BytesIO("".join(json.dumps(line) + "\n" for line in lines).encode())
    data.name = "batch.jsonl"
    return data


def chat_line(custom_id: str, model: str, text: str = "hi", **extra: object) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {**body, **extra},
    }


def start(root: Path, **env: str) -> Server:
    root.mkdir(parents=True, exist_ok=True)
    (root / "catalog.toml").write_text(CATALOG)
    return Server(
        root,
        {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_CATALOG": str(root / "catalog.toml"), **env},
    ).start()


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start(
        tmp_path_factory.mktemp("batches"),
        INFERD_BATCH_CONCURRENCY="1",
        INFERD_BATCH_BUDGET_RETRY_S="0.3",
    )
    yield srv
    srv.stop()


def sdk(server: Server) -> OpenAI:
    return OpenAI(api_key=ADMIN_KEY, base_url=server.url + "/v1/openai", max_retries=0)


def wait(client: OpenAI, batch_id: str, statuses: tuple[str, ...], timeout: float = 120):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)


def outputs(client: OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_chat_batch_on_the_real_model(server: Server) -> None:
    client = sdk(server)
    prompts = {f"q{i}": f"Name a colour. {CANARY} {i}" for i in range(4)}
    upload = client.files.create(
        file=jsonl([chat_line(cid, CHAT_MODEL, text) for cid, text in prompts.items()]),
        purpose="batch",
    )
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "colours"},
    )
    assert batch.status == "validating" and batch.metadata == {"job": "colours"}
    done = wait(client, batch.id, ("completed", "failed"))
    assert done.status == "completed", done.errors
    assert done.request_counts.total == 4 and done.request_counts.completed == 4
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    lines = outputs(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(prompts)
    for line in lines:
        assert line["error"] is None and line["response"]["status_code"] == 200
        answer = line["response"]["body"]
        assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"]
    assert done.error_file_id is None
    # The input was purged when the batch ended.
    with pytest.raises(openai.NotFoundError):
        client.files.content(upload.id)


def test_embeddings_batch(server: Server) -> None:
    client = sdk(server)
    texts = {f"e{i}": f"sentence number {i}" for i in range(5)}
    lines = [
        {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED_MODEL, "input": text},
        }
        for cid, text in texts.items()
    ]
    upload = client.files.create(file=jsonl(lines), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    done = wait(client, batch.id, ("completed", "failed"))
    assert done.status == "completed" and done.request_counts.completed == 5
    got = {line["custom_id"]: line for line in outputs(client, done.output_file_id)}
    assert set(got) == set(texts)
    for line in got.values():
        vector = line["response"]["body"]["data"][0]["embedding"]
        assert len(vector) == 384


def test_validation_names_the_lines(batch_server: Server) -> None:
    client = sdk(batch_server)
    lines = [
        chat_line("a", FAST),
        chat_line("a", FAST),  # duplicate custom_id
        {**chat_line("b", FAST), "url": "/v1/embeddings"},
        chat_line("c", SLOW),  # another model
        chat_line("d", FAST, messages="not a list"),
    ]
    upload = client.files.create(file=jsonl(lines), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait(client, batch.id, ("failed", "completed"))
    assert failed.status == "failed" and failed.failed_at
    codes = {(e.line, e.code) for e in failed.errors.data}
    assert {(2, "duplicate_custom_id"), (3, "mismatched_url"), (4, "mismatched_model")} <= codes
    assert any(e.line == 5 and e.code == "invalid_request" for e in failed.errors.data)

    unknown = client.files.create(file=jsonl([chat_line("x", "no/such-model")]), purpose="batch")
    batch = client.batches.create(
        input_file_id=unknown.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait(client, batch.id, ("failed", "completed"))
    assert failed.status == "failed" and failed.errors.data[0].code == "model_not_found"

    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/moderations", completion_window="24h"
        )


def test_cancel_keeps_what_ran(batch_server: Server) -> None:
    client = sdk(batch_server)
    upload = client.files.create(
        file=jsonl([chat_line(f"c{i}", SLOW) for i in range(40)]), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 30
    while client.batches.retrieve(batch.id).request_counts.completed < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = wait(client, batch.id, ("cancelled",))
    counts = done.request_counts
    assert 3 <= counts.completed < 40 and counts.failed == 0 and counts.total == 40
    lines = outputs(client, done.output_file_id)
    assert len(lines) == counts.completed
    assert len({line["custom_id"] for line in lines}) == len(lines)


def test_lists_auto_paginate(batch_server: Server) -> None:
    client = sdk(batch_server)
    created = []
    for i in range(3):
        upload = client.files.create(file=jsonl([chat_line(f"p{i}", FAST)]), purpose="batch")
        created.append(
            client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
        )
    listed = [b.id for b in client.batches.list(limit=2)]
    assert set(created) <= set(listed) and len(listed) == len(set(listed))
    assert listed.index(created[2]) < listed.index(created[0])  # newest first
    files = [f.id for f in client.files.list(limit=2)]
    assert len(files) == len(set(files)) >= 3


def test_out_of_money_pauses_and_resumes(batch_server: Server) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(
        batch_server.url + "/v1/accounts",
        headers=admin,
        json={"name": "frugal", "spending_limit": 0.13},
    )
    assert created.status_code == 200, created.text
    client = OpenAI(
        api_key=created.json()["api_key"], base_url=batch_server.url + "/v1/openai", max_retries=0
    )
    # A line reserves $0.10 (100 tokens at $1000 per 1M) and costs a few cents less: a few
    # lines run, then the money is gone.
    upload = client.files.create(
        file=jsonl([chat_line(f"m{i}", SLOW, "a few words here") for i in range(15)]),
        purpose="batch",
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 60
    while True:
        seen = client.batches.retrieve(batch.id)
        if getattr(seen, "pause_reason", None):  # inferd's field, beside OpenAI's
            break
        assert seen.status == "in_progress" or seen.status == "validating", seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)
    assert "Spending limit" in seen.pause_reason
    assert 0 < seen.request_counts.completed < 15
    raised = httpx.patch(
        batch_server.url + "/v1/accounts/frugal", headers=admin, json={"spending_limit": 100}
    )
    assert raised.status_code == 200, raised.text
    done = wait(client, batch.id, ("completed",), timeout=60)
    assert done.request_counts.completed == 15 and done.request_counts.failed == 0
    assert getattr(done, "pause_reason", None) is None


def usage_rows(server: Server, prefix: str) -> dict[str, int]:
    with sqlite3.connect(server.home / "inferd.db") as db:
        rows = db.execute(
            "SELECT request_id, count(*) FROM usage WHERE request_id LIKE ? GROUP BY request_id",
            (prefix + "%",),
        ).fetchall()
    return dict(rows)


def test_sigkill_mid_batch_loses_and_repeats_nothing(batch_server: Server) -> None:
    client = sdk(batch_server)
    ids = [f"k{i}" for i in range(30)]
    upload = client.files.create(
        file=jsonl([chat_line(cid, SLOW, f"{CANARY} {cid}") for cid in ids]), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 30
    while client.batches.retrieve(batch.id).request_counts.completed < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    batch_server.stop(signal.SIGKILL)
    batch_server.start()
    done = wait(client, batch.id, ("completed",), timeout=120)
    assert done.request_counts.completed == 30
    lines = outputs(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(ids)
    # One ledger row per line, however often a line ran; billed at the batch discount.
    billed = usage_rows(batch_server, batch.id)
    assert len(billed) == 30 and set(billed.values()) == {1}
    client.chat.completions.create(**chat_line("k0", SLOW, f"{CANARY} k0")["body"])
    deadline = time.monotonic() + 10
    while True:  # the ledger writes every 0.5 s
        with sqlite3.connect(batch_server.home / "inferd.db") as db:
            [line_cost] = db.execute(
                "SELECT cost FROM usage WHERE request_id = ?", (f"{batch.id}-1",)
            ).fetchone()
            sync = db.execute(
                "SELECT cost FROM usage WHERE request_id NOT LIKE 'batch%' ORDER BY id DESC"
            ).fetchone()
        if sync is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    [sync_cost] = sync
    assert sync_cost > 0 and line_cost == pytest.approx(sync_cost * 0.5)


def test_no_line_reaches_the_disk_in_plaintext(batch_server: Server) -> None:
    """After the batches above (the canary was in their lines)."""
    hits = []
    for root in (batch_server.home, batch_server.tmp, batch_server.log_path.parent):
        for path in Path(root).rglob("*"):
            if path.is_file() and CANARY.encode() in path.read_bytes():
                hits.append(str(path))
    assert not hits, hits


def test_expiry_writes_partial_output(tmp_path: Path) -> None:
    srv = start(
        tmp_path / "expiry", INFERD_BATCH_COMPLETION_WINDOW_S="3", INFERD_BATCH_CONCURRENCY="1"
    )
    try:
        client = sdk(srv)
        upload = client.files.create(
            file=jsonl([chat_line(f"x{i}", SLOW) for i in range(60)]), purpose="batch"
        )
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = wait(client, batch.id, ("expired",), timeout=60)
        counts = done.request_counts
        assert done.expired_at and 0 < counts.completed < 60
        assert counts.completed + counts.failed == 60
        good = outputs(client, done.output_file_id)
        expired = outputs(client, done.error_file_id)
        assert len(good) == counts.completed and len(expired) == counts.failed
        assert all(line["error"]["code"] == "batch_expired" for line in expired)
        assert {line["custom_id"] for line in good + expired} == {f"x{i}" for i in range(60)}
    finally:
        srv.stop()
