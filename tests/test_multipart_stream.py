"""Streaming multipart uploads: a Starlette app over httpx's ASGI transport, bodies sent in
pieces the way a server receives them from the network."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inferd.api.errors import error_response
from inferd.api.multipart_stream import FileSink, MultipartError, stream_multipart
from inferd.store.blobs import BlobStore

BOUNDARY = "----inferd-test-7d1b"
PIECE = 64 * 1024  # how the test client hands the body to the app
MAX_BYTES = 8 * 1024 * 1024


class RecordingSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.writes: list[int] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self.data += data

    def abort(self) -> None:
        self.aborted = True


class Harness:
    """The app, plus what the reader did: the sinks it was given and the form it returned."""

    def __init__(self, *, max_bytes: int = MAX_BYTES, max_field_bytes: int = 1024) -> None:
        self.sinks: list[tuple[str, str | None, str | None, RecordingSink]] = []
        self.max_bytes = max_bytes
        self.max_field_bytes = max_field_bytes

        async def upload(request: Request) -> Response:
            form = await stream_multipart(
                request,
                self.on_file,
                max_bytes=self.max_bytes,
                max_field_bytes=self.max_field_bytes,
            )
            files = [{"name": f.name, "filename": f.filename, "size": f.size} for f in form.files]
            return JSONResponse({"fields": form.fields, "files": files})

        async def on_error(_request: Request, exc: Exception) -> Response:
            assert isinstance(exc, MultipartError)
            return error_response(exc)

        self.app = Starlette(
            routes=[Route("/upload", upload, methods=["POST"])],
            exception_handlers={MultipartError: on_error},
        )

    def on_file(self, name: str, filename: str | None, content_type: str | None) -> FileSink:
        sink = RecordingSink()
        self.sinks.append((name, filename, content_type, sink))
        return sink

    def post(
        self, body: bytes, *, content_type: str | None = None, chunked: bool = True
    ) -> httpx.Response:
        headers = {"content-type": content_type or f"multipart/form-data; boundary={BOUNDARY}"}

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(body), PIECE):
                yield body[start : start + PIECE]

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                # An async iterator goes out chunked (no Content-Length), piece by piece.
                content: Any = pieces() if chunked else body
                return await client.post("/upload", content=content, headers=headers)

        return asyncio.run(send())


def form_body(
    fields: dict[str, str] | None = None,
    files: list[tuple[str, str, bytes]] | None = None,
    *,
    close: bool = True,
) -> bytes:
    out = bytearray()
    for name, value in (fields or {}).items():
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, filename, data in files or []:
        out += (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def test_file_streams_to_sink_in_pieces() -> None:
    harness = Harness()
    # Random bytes with CRLFs and boundary-like dashes, so the parser's lookbehind is exercised.
    data = (secrets.token_bytes(1000) + b"\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n") * 4000
    response = harness.post(form_body({"purpose": "batch"}, [("file", "in.jsonl", data)]))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "fields": {"purpose": "batch"},
        "files": [{"name": "file", "filename": "in.jsonl", "size": len(data)}],
    }
    [(name, filename, content_type, sink)] = harness.sinks
    assert (name, filename, content_type) == ("file", "in.jsonl", "application/jsonl")
    assert bytes(sink.data) == data
    assert not sink.aborted
    # Several MB arrived as many writes, none bigger than what one receive delivered: the
    # reader hands data on as it comes and never gathers the file.
    assert len(data) > 4_000_000
    assert len(sink.writes) > len(data) // PIECE
    assert max(sink.writes) <= PIECE


def test_upload_into_blob_store(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", secrets.token_bytes(32))
    writers = []

    def on_file(name: str, filename: str | None, content_type: str | None) -> FileSink:
        writer = store.writer(f"file-{len(writers)}")
        writers.append(writer)
        return writer

    async def upload(request: Request) -> Response:
        form = await stream_multipart(request, on_file, max_bytes=MAX_BYTES)
        sealed = writers[0].finish()
        return JSONResponse({"key": sealed.wrapped_key, "size": sealed.size, **form.fields})

    harness = Harness()
    harness.app = Starlette(routes=[Route("/upload", upload, methods=["POST"])])
    data = secrets.token_bytes(3 * 1024 * 1024 + 17)
    response = harness.post(form_body({"purpose": "batch"}, [("file", "x.jsonl", data)]))
    assert response.status_code == 200
    body = response.json()
    assert body["size"] == len(data) and body["purpose"] == "batch"
    assert b"".join(store.read("file-0", body["key"])) == data


def test_fields_collected_without_files() -> None:
    harness = Harness()
    response = harness.post(form_body({"purpose": "batch", "note": "héllo"}), chunked=False)
    assert response.json() == {"fields": {"purpose": "batch", "note": "héllo"}, "files": []}
    assert harness.sinks == []


def error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["message"]


def test_oversize_streamed_body_is_413_and_sink_aborted() -> None:
    harness = Harness(max_bytes=1024 * 1024)
    body = form_body({"purpose": "batch"}, [("file", "big.jsonl", b"x" * (2 * 1024 * 1024))])
    status, message = error(harness.post(body))
    assert status == 413 and "exceeds 1048576 bytes" in message
    [(*_, sink)] = harness.sinks
    assert sink.aborted
    assert len(sink.data) <= 1024 * 1024


def test_oversize_declared_length_refused_before_reading() -> None:
    harness = Harness(max_bytes=1024 * 1024)
    body = form_body(files=[("file", "big.jsonl", b"x" * (2 * 1024 * 1024))])
    status, _ = error(harness.post(body, chunked=False))
    assert status == 413
    assert harness.sinks == []


def test_field_too_large_is_413() -> None:
    harness = Harness(max_field_bytes=100)
    status, message = error(harness.post(form_body({"purpose": "b" * 101})))
    assert status == 413 and "`purpose`" in message


@pytest.mark.parametrize(
    ("content_type", "status", "words"),
    [
        ("multipart/form-data", 400, "needs a boundary"),
        ("multipart/form-data; boundary=", 400, "needs a boundary"),
        ("multipart/form-data; boundary=bad{boundary}", 400, "boundary is invalid"),
        (f"multipart/form-data; boundary={'b' * 71}", 400, "boundary is invalid"),
        ("application/json", 415, "must be multipart/form-data"),
    ],
)
def test_bad_content_type(content_type: str, status: int, words: str) -> None:
    harness = Harness()
    got_status, message = error(harness.post(form_body({"a": "b"}), content_type=content_type))
    assert got_status == status and words in message


def test_wrong_boundary_is_400_and_logs_no_content(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness()
    with caplog.at_level(logging.DEBUG):
        response = harness.post(
            form_body({"a": "b"}), content_type="multipart/form-data; boundary=other"
        )
    status, message = error(response)
    assert status == 400 and "malformed" in message
    assert not [r for r in caplog.records if r.name.startswith("python_multipart")]


def test_truncated_body_is_400_and_sink_aborted() -> None:
    harness = Harness()
    body = form_body({"purpose": "batch"}, [("file", "a.jsonl", b"y" * 200_000)], close=False)
    status, message = error(harness.post(body[:-50]))
    assert status == 400 and "closing boundary" in message
    [(*_, sink)] = harness.sinks
    assert sink.aborted


def test_garbage_is_400() -> None:
    harness = Harness()
    status, _ = error(harness.post(b"this is not a multipart body at all\r\n" * 10))
    assert status == 400


def test_second_file_is_400_and_first_aborted() -> None:
    harness = Harness()
    files = [("file", "a.jsonl", b"a" * 1000), ("file2", "b.jsonl", b"b" * 1000)]
    status, message = error(harness.post(form_body(files=files)))
    assert status == 400 and "At most 1 file" in message
    [(*_, sink)] = harness.sinks
    assert sink.aborted


@pytest.mark.parametrize(
    ("part", "words"),
    [
        (b"Content-Disposition: form-data\r\n\r\nx", "no Content-Disposition form-data name"),
        (b"Content-Type: text/plain\r\n\r\nx", "no Content-Disposition form-data name"),
        (b'Content-Disposition: form-data; name="a"\r\n\r\n\xff\xfe', "not UTF-8"),
        (
            b'Content-Disposition: form-data; name="a"\r\nContent-Transfer-Encoding: base64'
            b"\r\n\r\neA==",
            "Content-Transfer-Encoding",
        ),
    ],
)
def test_bad_parts_are_400(part: bytes, words: str) -> None:
    harness = Harness()
    body = b"--" + BOUNDARY.encode() + b"\r\n" + part + b"\r\n--" + BOUNDARY.encode() + b"--\r\n"
    status, message = error(harness.post(body))
    assert status == 400 and words in message


def test_repeated_field_is_400() -> None:
    harness = Harness()
    body = form_body({"purpose": "a"}, close=False) + form_body({"purpose": "b"})
    status, message = error(harness.post(body))
    assert status == 400 and "more than once" in message


def test_reader_error_type() -> None:
    exc = MultipartError(413, "too big", code="too_large")
    assert (exc.status, exc.message, exc.code) == (413, "too big", "too_large")
