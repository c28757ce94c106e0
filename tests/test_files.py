"""The Files API against a live server, with the real `openai` SDK: uploads streamed into the
encrypted store, cursor pages, accounts, deletion, expiry and the privacy of the content."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai import OpenAI
from sqlalchemy import select

from inferd.jobs import JobQueue
from inferd.jobs.files import FileInUse, FileNotFound, FileStore, FileTooLarge, lines
from inferd.store.batch_tables import BatchFile
from inferd.store.blobs import BlobStore
from inferd.store.db import Database
from inferd.store.jobs_tables import Job
from inferd.store.models import Account
from tests.conftest import ADMIN_KEY, NULL_CATALOG, NULL_MODEL, Server
from tests.pg_schema import own_schema

CANARY = "filescanary7Wq"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
MB = 1024 * 1024


@pytest.fixture(scope="module")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("files")
    (root / "catalog.toml").write_text(NULL_CATALOG)
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_CATALOG": str(root / "catalog.toml")}
    srv = Server(root, env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sdk(files_server: Server) -> OpenAI:
    return OpenAI(api_key=ADMIN_KEY, base_url=files_server.url + "/v1/openai", max_retries=0)


def jsonl(count: int, pad: int = 0) -> bytes:
    """A batch input: one chat request per line, the canary in every prompt."""
    out = io.BytesIO()
    for i in range(count):
        request = {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": NULL_MODEL,
                "messages": [{"role": "user", "content": f"{CANARY} {i} " + "x" * pad}],
            },
        }
        out.write(json.dumps(request).encode() + b"\n")
    return out.getvalue()


def blob_files(server: Server) -> list[Path]:
    return [p for p in (server.home / "blobs").iterdir() if p.is_file()]


def db_row(server: Server, file_id: str) -> dict[str, Any]:
    with sqlite3.connect(server.home / "inferd.db") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM batch_files WHERE id = ?", (file_id,)).fetchone()
    assert row is not None
    return dict(row)


def test_upload_retrieve_and_content_round_trip(files_server: Server, sdk: OpenAI) -> None:
    data = jsonl(12_000, pad=200)  # about 3.5 MB: many chunks of the store and of the socket
    assert len(data) > 3 * MB
    before = time.time()
    created = sdk.files.create(file=("requests.jsonl", data), purpose="batch")
    assert created.id.startswith("file-")
    assert created.object == "file" and created.purpose == "batch"
    assert created.bytes == len(data) and created.filename == "requests.jsonl"
    assert created.status == "processed" and created.status_details is None
    assert int(before) - 1 <= created.created_at <= time.time() + 1
    assert created.expires_at == created.created_at + 86400  # unused: 24 h
    assert sdk.files.retrieve(created.id) == created
    assert sdk.files.content(created.id).content == data
    # The same file under /v1/files, with plain HTTP.
    with httpx.Client(base_url=files_server.url, headers=AUTH, timeout=30) as http:
        r = http.get(f"/v1/files/{created.id}/content")
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-length"] == str(len(data))
        assert http.get(f"/v1/files/{created.id}").json() == created.model_dump()
    # Encrypted at rest: the blob exists, its size is the content's plus the seal.
    blob = files_server.home / "blobs" / created.id
    assert blob.stat().st_size > len(data)
    assert CANARY.encode() not in blob.read_bytes()


def test_responses_match_the_openapi_document(files_server: Server, sdk: OpenAI) -> None:
    document = httpx.get(files_server.url + "/openapi.json").json()

    def validator(path: str, method: str, status: int = 200) -> jsonschema.Validator:
        response = document["paths"][path][method]["responses"][str(status)]
        schema = response["content"]["application/json"]["schema"]
        return jsonschema.Draft202012Validator({**schema, "components": document["components"]})

    created = sdk.files.create(file=("a.jsonl", jsonl(2)), purpose="batch")
    with httpx.Client(base_url=files_server.url, headers=AUTH, timeout=30) as http:
        for prefix in ("/v1/openai", "/v1"):
            got = http.get(f"{prefix}/files/{created.id}").json()
            validator(f"{prefix}/files/{{file_id}}", "get").validate(got)
            page = http.get(f"{prefix}/files", params={"limit": 1}).json()
            validator(f"{prefix}/files", "get").validate(page)
            missing = http.get(f"{prefix}/files/file-nope")
            assert missing.status_code == 404
            validator(f"{prefix}/files/{{file_id}}", "get", 404).validate(missing.json())
        deleted = http.delete(f"/v1/files/{created.id}").json()
        validator("/v1/files/{file_id}", "delete").validate(deleted)
        assert deleted == {"id": created.id, "object": "file", "deleted": True}
    upload = document["paths"]["/v1/openai/files"]["post"]["requestBody"]["content"]
    form = upload["multipart/form-data"]["schema"]
    props = document["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]["properties"]
    assert props["file"]["format"] == "binary"
    assert {"purpose", "expires_after[anchor]", "expires_after[seconds]"} <= set(props)


def test_list_pages_with_the_sdk(sdk: OpenAI) -> None:
    ids = [
        sdk.files.create(file=(f"page-{i}.jsonl", jsonl(1)), purpose="batch").id for i in range(5)
    ]
    # Auto-pagination over pages of two follows `has_more` and `last_id` to the end.
    newest_first = [f.id for f in sdk.files.list(limit=2)]
    assert len(newest_first) == len(set(newest_first))
    assert [i for i in newest_first if i in ids] == ids[::-1]
    oldest_first = [f.id for f in sdk.files.list(limit=2, order="asc")]
    assert [i for i in oldest_first if i in ids] == ids
    page = sdk.files.list(limit=2, order="asc", after=ids[1])
    assert [f.id for f in page.data] == ids[2:4] and page.has_more
    last = sdk.files.list(limit=10, order="asc", after=ids[4])
    assert [f.id for f in last.data if f.id in ids] == [] and not last.has_more
    assert sdk.files.list(purpose="batch_output").data == []
    with pytest.raises(openai.BadRequestError):
        sdk.files.list(after="file-unknown")
    with pytest.raises(openai.BadRequestError):
        sdk.files.list(limit=0)


def test_delete_destroys_the_content(files_server: Server, sdk: OpenAI) -> None:
    created = sdk.files.create(file=("gone.jsonl", jsonl(3)), purpose="batch")
    assert (files_server.home / "blobs" / created.id).exists()
    deleted = sdk.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True
    assert not (files_server.home / "blobs" / created.id).exists()
    with pytest.raises(openai.NotFoundError):
        sdk.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.delete(created.id)
    assert created.id not in {f.id for f in sdk.files.list()}
    row = db_row(files_server, created.id)  # kept for the record, without its key
    assert row["wrapped_key"] is None and row["deleted_at"] and row["purged_at"]


def test_files_belong_to_their_account(files_server: Server, sdk: OpenAI) -> None:
    created = sdk.files.create(file=("mine.jsonl", jsonl(2)), purpose="batch")
    account = httpx.post(
        files_server.url + "/v1/accounts", headers=AUTH, json={"name": "files-other"}
    )
    assert account.status_code == 200, account.text
    other = OpenAI(
        api_key=account.json()["api_key"],
        base_url=files_server.url + "/v1/openai",
        max_retries=0,
    )
    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)
    assert list(other.files.list()) == []
    theirs = other.files.create(file=("theirs.jsonl", jsonl(1)), purpose="batch")
    assert [f.id for f in other.files.list()] == [theirs.id]
    assert theirs.id not in {f.id for f in sdk.files.list()}
    assert sdk.files.content(created.id).content == jsonl(2)  # untouched

    minted = httpx.post(
        files_server.url + "/v1/scoped-jwt",
        headers=AUTH,
        json={"api_key_name": "auto", "models": [NULL_MODEL]},
    )
    assert minted.status_code == 200, minted.text
    scoped = OpenAI(
        api_key=minted.json()["token"], base_url=files_server.url + "/v1/openai", max_retries=0
    )
    with pytest.raises(openai.PermissionDeniedError):
        scoped.files.list()
    with pytest.raises(openai.PermissionDeniedError):
        scoped.files.create(file=("x.jsonl", jsonl(1)), purpose="batch")
    with pytest.raises(openai.AuthenticationError):
        OpenAI(api_key="ik_wrong", base_url=other.base_url, max_retries=0).files.list()


def test_refused_uploads_leave_nothing(files_server: Server, sdk: OpenAI) -> None:
    blobs = set(blob_files(files_server))
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.files.create(file=("x.jsonl", jsonl(50)), purpose="fine-tune")
    assert refused.value.status_code == 400
    assert "batch" in refused.value.message and refused.value.param == "purpose"
    with pytest.raises(openai.BadRequestError):
        sdk.files.create(file=("empty.jsonl", b""), purpose="batch")
    with pytest.raises(openai.BadRequestError):  # OpenAI's minimum is 3600 s; ours is 1
        sdk.files.create(
            file=("x.jsonl", jsonl(1)),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 0},
        )
    with httpx.Client(base_url=files_server.url, headers=AUTH, timeout=30) as http:
        no_file = http.post("/v1/files", data={"purpose": "batch"}, files={"other": ("a", b"1")})
        assert no_file.status_code == 400
        text_file = http.post(
            "/v1/files", files={"purpose": (None, "batch"), "file": (None, "not a file part")}
        )
        assert text_file.status_code == 400 and text_file.json()["error"]["param"] == "file"
        no_purpose = http.post("/v1/files", files={"file": ("a.jsonl", jsonl(1))})
        assert no_purpose.status_code == 400
        assert no_purpose.json()["error"]["param"] == "purpose"
        as_json = http.post("/v1/files", json={"purpose": "batch"})
        assert as_json.status_code == 415
        unauthenticated = http.post(
            "/v1/files", files={"file": ("a", b"1")}, headers={"authorization": ""}
        )
        assert unauthenticated.status_code == 401
    # Cut off mid-body: the partial ciphertext is dropped.
    boundary = "cutoff"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()

    def truncated() -> Iterator[bytes]:
        yield head
        yield jsonl(2000)
        raise ConnectionAbortedError("the client goes away")

    with pytest.raises(ConnectionAbortedError):
        httpx.post(
            files_server.url + "/v1/files",
            headers={**AUTH, "content-type": f"multipart/form-data; boundary={boundary}"},
            content=truncated(),
        )
    deadline = time.monotonic() + 5
    while set(blob_files(files_server)) != blobs:
        assert time.monotonic() < deadline, set(blob_files(files_server)) - blobs
        time.sleep(0.05)
    assert not [p for p in (files_server.home / "blobs").iterdir() if p.name.endswith(".part")]


def peak_rss(pid: int) -> int:
    """The process's peak resident set so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_large_files_stream_through_bounded_memory(files_server: Server) -> None:
    """64 MB up and down: the server's peak memory grows by far less than the file."""
    assert files_server.proc is not None
    size, piece = 64 * MB, bytes(range(256)) * 4096  # 1 MiB
    boundary = "stream64"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"'
        "\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // len(piece)):
            yield piece
        yield tail

    before = peak_rss(files_server.proc.pid)
    headers = {
        **AUTH,
        "content-type": f"multipart/form-data; boundary={boundary}",
        "content-length": str(len(head) + size + len(tail)),
    }
    with httpx.Client(base_url=files_server.url, headers=AUTH, timeout=60) as http:
        created = http.post("/v1/files", headers=headers, content=body())
        assert created.status_code == 200, created.text
        file_id = created.json()["id"]
        assert created.json()["bytes"] == size
        received = hashlib.sha256()
        with http.stream("GET", f"/v1/files/{file_id}/content") as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                received.update(chunk)
        expected = hashlib.sha256()
        for _ in range(size // len(piece)):
            expected.update(piece)
        assert received.digest() == expected.digest()
        assert http.delete(f"/v1/files/{file_id}").status_code == 200
    growth = peak_rss(files_server.proc.pid) - before
    assert growth < 16 * MB, growth


def test_oversize_is_refused_before_the_body_is_read(files_server: Server) -> None:
    """A declared length over the limit is answered at once: only the headers and the file
    part's start are sent, and the 413 arrives without the server waiting for more."""
    boundary = "big"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
    ).encode()
    conn = HTTPConnection("127.0.0.1", files_server.port, timeout=10)
    try:
        conn.putrequest("POST", "/v1/files")
        conn.putheader("Authorization", f"Bearer {ADMIN_KEY}")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(200 * MB + 2 * MB))
        conn.endheaders(message_body=head)
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"]["code"] == "too_large"
    finally:
        conn.close()


def test_expires_after_purges_the_content(files_server: Server, sdk: OpenAI) -> None:
    created = sdk.files.create(
        file=("short.jsonl", jsonl(5)),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 1},
    )
    assert created.expires_at == created.created_at + 1
    blob = files_server.home / "blobs" / created.id
    assert blob.exists()
    deadline = time.monotonic() + 15
    while True:
        try:
            sdk.files.content(created.id)
        except openai.NotFoundError:
            break
        assert time.monotonic() < deadline, "the file was not purged"
        time.sleep(0.2)
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(created.id)
    row = db_row(files_server, created.id)
    assert row["purged_at"] is not None and row["wrapped_key"] is None
    assert row["deleted_at"] is None  # expired, not deleted
    assert not blob.exists()
    assert created.id not in {f.id for f in sdk.files.list()}


def test_no_plaintext_anywhere(files_server: Server, sdk: OpenAI) -> None:
    """After every test of the live server above: the canary went through its uploads."""
    live = [f for f in sdk.files.list() if f.purpose == "batch"]
    assert live  # some files still wait, encrypted
    blobs = blob_files(files_server)
    assert {f.id for f in live} <= {p.name for p in blobs}
    hits = []
    for root in (files_server.home, files_server.tmp, files_server.log_path.parent):
        for path in Path(root).rglob("*"):
            if path.is_file() and CANARY.encode() in path.read_bytes():
                hits.append(str(path))
    assert not hits, hits
    assert CANARY not in files_server.log_text()


# -- the store the batch code uses, on SQLite and PostgreSQL ------------------------------------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with own_schema("inferd_files_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[FileStore, str]]:
    """A store with 1 KiB chunks and a 10 kB upload limit, and an account of its own."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'inferd.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Database(url)
    db.migrate()
    account = "acct_" + secrets.token_hex(6)
    with db.session() as s, s.begin():
        s.add(Account(id=account, name=account))
    blobs = BlobStore(tmp_path / "blobs", secrets.token_bytes(32), chunk_size=1024)
    files = FileStore(db, blobs, JobQueue(db), upload_max_bytes=10_000)
    yield files, account
    db.close()


def test_store_refuses_an_oversize_upload_and_keeps_nothing(store: tuple[FileStore, str]) -> None:
    files, account = store
    with pytest.raises(FileTooLarge), files.upload(account) as upload:
        upload.start("big.jsonl")
        for _ in range(11):
            upload.write(b"x" * 1000)
    assert list(files.blobs.root.iterdir()) == []
    assert files.record(upload.file_id) is None
    assert files.list(account) == ([], False)


def test_store_outputs_lines_attach_and_purge(store: tuple[FileStore, str]) -> None:
    files, account = store
    with files.upload(account) as upload:
        upload.start("in.jsonl")
        for i in range(300):  # many chunks of 1 KiB, lines across chunk boundaries
            upload.write(f'{{"custom_id": "r{i}"}}\n'.encode())
        uploaded = upload.finish("batch")
    assert uploaded.role is None and uploaded.batch_id is None
    _, chunks = files.open(account, uploaded.id)
    assert [json.loads(line)["custom_id"] for line in lines(chunks)] == [
        f"r{i}" for i in range(300)
    ]

    attached = files.attach(account, uploaded.id, "batch_1")
    assert (attached.batch_id, attached.role) == ("batch_1", "input")
    with pytest.raises(FileInUse):
        files.attach(account, uploaded.id, "batch_2")
    with pytest.raises(FileNotFound):
        files.attach("acct_other", uploaded.id, "batch_2")
    # Past its expiry, the purge job leaves an attached input to its batch.
    with files.db.session() as s, s.begin():
        s.get(BatchFile, uploaded.id).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    files._expire(uploaded.id)
    assert files.get(account, uploaded.id) is not None
    assert files.purge(uploaded.id) and not files.purge(uploaded.id)  # the batch ended
    assert files.record(uploaded.id).purged_at is not None
    with pytest.raises(FileNotFound):
        files.open(account, uploaded.id)

    with files.create_output(account, "batch_1", "output", "batch_1_output.jsonl") as out:
        out.write(b'{"id": 1}\n')
        out.write(b'{"id": 2}\n')
        output = out.finish()
    assert output.purpose == "batch_output" and output.bytes == 20
    assert (output.batch_id, output.role) == ("batch_1", "output")
    lifetime = output.expires_at - output.created_at
    assert lifetime == timedelta(days=30)
    with files.db.session() as s:
        job = s.scalars(select(Job).where(Job.ref == output.id)).one()
    assert job.kind == "files.purge" and job.key == f"files.purge:{output.id}"
    assert abs(_utc(job.run_at) - _utc(output.expires_at)) < timedelta(seconds=1)
    _, chunks = files.open(account, output.id)
    assert b"".join(chunks) == b'{"id": 1}\n{"id": 2}\n'
    with files.create_output(account, "batch_1", "error", "errors.jsonl", expires_after_s=60):
        pass  # left unfinished: nothing remains
    assert {p.name for p in files.blobs.root.iterdir()} == {output.id}


def test_store_cursor_breaks_ties_by_id(store: tuple[FileStore, str]) -> None:
    """Files created in the same microsecond page without loss or repeats."""
    files, account = store
    ids = []
    for i in range(5):
        with files.upload(account) as upload:
            upload.start(f"{i}.jsonl")
            upload.write(b"{}\n")
            ids.append(upload.finish("batch").id)
    same = datetime(2030, 1, 1, tzinfo=UTC)
    with files.db.session() as s, s.begin():
        for row in s.scalars(select(BatchFile).where(BatchFile.id.in_(ids))):
            row.created_at = same
    for order in ("asc", "desc"):
        seen, after, more = [], None, True
        while more:
            page, more = files.list(account, after=after, limit=2, order=order)
            seen += [row.id for row in page]
            after = page[-1].id
        assert seen == sorted(ids, reverse=order == "desc")


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
