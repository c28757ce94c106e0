"""multipart/form-data streamed from the request into file sinks, for large uploads (POST /files).

`api/media/multipart.py` parses small media bodies held in memory. An upload of up to hundreds of
megabytes must neither be held whole in memory nor spooled to a temporary file in plaintext
(Starlette's `request.form()` does the latter), so the body is fed, as it arrives, through
python-multipart's incremental parser: each file part's bytes go straight to a sink (a
`BlobWriter`, which encrypts as it writes), and small text fields are collected.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from inferd.api.errors import APIError

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32
# RFC 2046 §5.1.1: 1-70 characters from this set, not ending in a space.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_IDENTITY_ENCODINGS = (b"7bit", b"8bit", b"binary")
# python-multipart's warnings quote bytes of the body ("got 45 at index 4"): its parsers get a
# logger of their own that emits nothing. Not a registered logger, so no logging config
# re-enables it; parse errors still reach the client as a 400.
_PARSER_LOG = logging.Logger("inferd.api.multipart_stream.parser", logging.CRITICAL + 1)
_PARSER_LOG.disabled = True


class FileSink(Protocol):
    """Where a file part's bytes go as they arrive (a `BlobWriter` is one)."""

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None: ...


# (form field name, filename or None, the part's content type or None) -> a new sink.
OnFile = Callable[[str, str | None, str | None], FileSink]


class MultipartError(APIError):
    """The body is not an acceptable multipart/form-data upload; rendered as a 4xx error."""

    def __init__(self, status: int, message: str, *, code: str = "invalid_multipart") -> None:
        super().__init__(status, message, code=code)


@dataclass(slots=True)
class StreamedFile:
    """A file part whose bytes were all written to `sink`; the caller finishes or aborts it."""

    name: str
    filename: str | None
    content_type: str | None
    size: int
    sink: FileSink


@dataclass(slots=True)
class StreamedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[StreamedFile] = field(default_factory=list)


async def stream_multipart(
    request: Request,
    on_file: OnFile,
    *,
    max_bytes: int,
    max_field_bytes: int = MAX_FIELD_BYTES,
    max_fields: int = MAX_FIELDS,
    max_files: int = 1,
) -> StreamedForm:
    """Parse the body as it arrives; `max_bytes` bounds the whole body (files, fields and framing).

    File parts go to the sinks `on_file` returns; text fields (UTF-8, at most `max_field_bytes`
    each) are collected. On any error every sink created so far is aborted and a
    `MultipartError` (400, 413, 415 or 499) is raised; on success the sinks are returned
    unfinished, for the caller to finish (or abort, if the form turns out to be invalid).
    """
    boundary = _boundary(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    parse = _FormParse(on_file, max_field_bytes, max_fields, max_files)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": parse.on_part_begin,
            "on_header_field": parse.on_header_field,
            "on_header_value": parse.on_header_value,
            "on_header_end": parse.on_header_end,
            "on_headers_finished": parse.on_headers_finished,
            "on_part_data": parse.on_part_data,
            "on_part_end": parse.on_part_end,
            "on_end": parse.on_end,
        },
    )
    parser.logger = _PARSER_LOG
    received = 0
    try:
        async with aclosing(request.stream()) as stream:
            async for chunk in stream:
                received += len(chunk)
                if received > max_bytes:
                    raise _too_large(max_bytes)
                parser.write(chunk)
        parser.finalize()
        if not parse.ended:
            raise MultipartError(400, "The multipart body ends before its closing boundary.")
    except FormParserError:
        parse.abort_all()
        raise MultipartError(400, "The multipart body is malformed.") from None
    except ClientDisconnect:
        parse.abort_all()
        raise MultipartError(
            499, "The client closed the connection.", code="client_closed"
        ) from None
    except BaseException:  # our own errors, a failing sink, cancellation: no partial file stays
        parse.abort_all()
        raise
    return parse.form


def _boundary(content_type: str | None) -> bytes:
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise MultipartError(415, "The body must be multipart/form-data.", code="unsupported_media")
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError(400, "multipart/form-data needs a boundary.")
    if not _BOUNDARY.fullmatch(boundary):
        raise MultipartError(
            400, "The multipart boundary is invalid (1-70 characters, RFC 2046 section 5.1.1)."
        )
    return boundary


def _too_large(max_bytes: int) -> MultipartError:
    return MultipartError(413, f"The request body exceeds {max_bytes} bytes.", code="too_large")


class _FormParse:
    """python-multipart's callbacks: per-part state, the collected form and the open sinks."""

    def __init__(
        self, on_file: OnFile, max_field_bytes: int, max_fields: int, max_files: int
    ) -> None:
        self._on_file = on_file
        self._max_field_bytes = max_field_bytes
        self._max_fields = max_fields
        self._max_files = max_files
        self.form = StreamedForm()
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._name = ""
        self._file: StreamedFile | None = None
        self._value: bytearray | None = None

    def abort_all(self) -> None:
        for file in self.form.files:
            file.sink.abort()

    def on_part_begin(self) -> None:
        self._headers = {}
        self._file = None
        self._value = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value).strip(b" \t")
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise MultipartError(400, "A form part has no Content-Disposition form-data name.")
        encoding = self._headers.get(b"content-transfer-encoding", b"binary").lower()
        if encoding not in _IDENTITY_ENCODINGS:
            raise MultipartError(400, "Form parts must not use a Content-Transfer-Encoding.")
        self._name = name.decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            if self._name in self.form.fields:
                raise MultipartError(400, f"Form field `{self._name}` is given more than once.")
            if len(self.form.fields) >= self._max_fields:
                raise MultipartError(400, f"At most {self._max_fields} form fields.")
            self._value = bytearray()
            return
        if len(self.form.files) >= self._max_files:
            raise MultipartError(400, f"At most {self._max_files} file(s) per request.")
        content_type = self._headers.get(b"content-type")
        decoded_name = filename.decode("utf-8", "replace") or None
        decoded_type = content_type.decode("latin-1") if content_type else None
        sink = self._on_file(self._name, decoded_name, decoded_type)
        self._file = StreamedFile(self._name, decoded_name, decoded_type, 0, sink)
        self.form.files.append(self._file)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if start == end:
            return
        if self._file is not None:
            # One slice of one received chunk: the body is never gathered in memory.
            self._file.sink.write(data[start:end])
            self._file.size += end - start
        elif self._value is not None:
            if len(self._value) + (end - start) > self._max_field_bytes:
                raise MultipartError(
                    413,
                    f"Form field `{self._name}` exceeds {self._max_field_bytes} bytes.",
                    code="too_large",
                )
            self._value += data[start:end]

    def on_part_end(self) -> None:
        if self._value is not None:
            try:
                self.form.fields[self._name] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise MultipartError(400, f"Form field `{self._name}` is not UTF-8 text.") from None
        self._file = None
        self._value = None

    def on_end(self) -> None:
        self.ended = True
