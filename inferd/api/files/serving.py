"""Handlers of the Files API: upload (streamed), list, retrieve, content (streamed), delete.

An upload goes from the socket through the streaming multipart reader straight into the
encrypted store, a chunk at a time; content goes back the same way, decrypted a chunk at a
time. Neither is ever held whole in memory or written anywhere in plaintext, and the content is
never parsed here (a batch reads its lines when it is created). Every file belongs to the
caller's account; another account's file is a 404. Scoped JWTs get 403: files are an API key's
business, like the account's other management routes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from inferd.api.errors import APIError
from inferd.api.files.protocol import FileListQuery, FileObject, FileUploadFields
from inferd.api.gateway import Gateway
from inferd.api.multipart_stream import MultipartError, stream_multipart
from inferd.api.responses import JSONResponse, unix_time
from inferd.auth import Principal
from inferd.jobs.files import (
    UPLOAD_PURPOSES,
    CursorUnknown,
    FileInvalid,
    FileNotFound,
    FileStore,
    FileTooLarge,
    Upload,
)
from inferd.store.batch_tables import BatchFile

# Room in the body for the framing and the text fields, beyond the file's own limit.
FORM_FIELDS = 8
FORM_FIELD_BYTES = 4096
FORM_OVERHEAD = 64 * 1024 + FORM_FIELDS * FORM_FIELD_BYTES
CONTENT_TYPE = "application/octet-stream"


async def _files(request: Request) -> tuple[Gateway, Principal, FileStore]:
    gateway: Gateway = request.app.state.gateway
    if gateway.files is None:
        raise APIError(404, "Files are not enabled on this server.", code="not_found")
    principal = await gateway.key_holder(request, "Scoped JWTs cannot use the Files API.")
    return gateway, principal, gateway.files


def _not_found(file_id: str) -> APIError:
    # The id comes from the path, not the body: it is the caller's own handle, safe to name.
    return APIError(404, f"No such file: `{file_id}`.", param="file_id", code="not_found")


async def create_file(request: Request) -> Response:
    """Upload a file

    multipart/form-data: the content as the `file` part (up to 200 MB; for `batch`, JSONL with
    one request per line), `purpose` (`batch`), and optionally `expires_after[anchor]`
    (`created_at`) with `expires_after[seconds]`. The content is encrypted as it arrives. An
    unused file is purged 24 h after its upload (or at `expires_after`); a batch's input is
    purged when its batch ends.
    """
    gateway, principal, files = await _files(request)
    with files.upload(principal.account_id) as upload:
        form = await _receive(request, files, upload)
        purpose = form.get("purpose")
        if purpose is None:
            raise APIError(400, "`purpose` is required.", param="purpose", code="missing_field")
        if purpose not in UPLOAD_PURPOSES:
            raise APIError(
                400,
                f"`purpose` must be one of: {', '.join(UPLOAD_PURPOSES)}.",
                param="purpose",
                code="invalid_purpose",
            )
        fields = gateway.validate(FileUploadFields, form)
        anchor, seconds = fields.expires_after_anchor, fields.expires_after_seconds
        if (anchor is None) != (seconds is None):
            raise APIError(
                400,
                "`expires_after` needs both `expires_after[anchor]` (created_at) and "
                "`expires_after[seconds]`.",
                param="expires_after",
                code="invalid_parameter",
            )
        if not upload.started:
            raise APIError(
                400, "Send the content as the `file` part.", param="file", code="missing_field"
            )
        try:
            row = await asyncio.to_thread(upload.finish, fields.purpose, seconds)
        except FileInvalid as exc:
            raise APIError(400, str(exc), param=exc.param, code="invalid_file") from None
    return JSONResponse(file_object(row))


async def _receive(request: Request, files: FileStore, upload: Upload) -> dict[str, str]:
    """Stream the form: the `file` part into `upload`, the text fields returned."""

    def on_file(name: str, filename: str | None, _content_type: str | None) -> Upload:
        if name != "file":
            raise MultipartError(400, "The form's file part must be named `file`.")
        try:
            return upload.start(filename)
        except FileInvalid as exc:
            raise MultipartError(400, str(exc)) from None

    try:
        form = await stream_multipart(
            request,
            on_file,
            max_bytes=files.upload_max_bytes + FORM_OVERHEAD,
            max_field_bytes=FORM_FIELD_BYTES,
            max_fields=FORM_FIELDS,
        )
    except FileTooLarge as exc:
        raise APIError(413, str(exc), param="file", code="too_large") from None
    return form.fields


async def list_files(request: Request) -> Response:
    """List files

    The account's files, newest first unless `order=asc`, as a cursor page: pass the previous
    page's `last_id` as `after` while `has_more` is true.
    """
    gateway, principal, files = await _files(request)
    query = gateway.validate(FileListQuery, dict(request.query_params))
    try:
        rows, has_more = await asyncio.to_thread(
            files.list,
            principal.account_id,
            after=query.after,
            limit=query.limit,
            order=query.order,
            purpose=query.purpose,
        )
    except CursorUnknown as exc:
        raise APIError(400, str(exc), param="after", code="invalid_parameter") from None
    data = [file_object(row) for row in rows]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


async def retrieve_file(request: Request) -> Response:
    """Retrieve a file

    The file object; 404 once the file is deleted or its content purged.
    """
    _, principal, files = await _files(request)
    file_id = request.path_params["file_id"]
    row = await asyncio.to_thread(files.get, principal.account_id, file_id)
    if row is None:
        raise _not_found(file_id)
    return JSONResponse(file_object(row))


async def file_content(request: Request) -> Response:
    """Retrieve a file's content

    The bytes as uploaded (or as the batch wrote them), streamed; 404 once the file is deleted
    or its content purged.
    """
    _, principal, files = await _files(request)
    file_id = request.path_params["file_id"]
    try:
        row, chunks = await asyncio.to_thread(files.open, principal.account_id, file_id)
    except FileNotFound:
        raise _not_found(file_id) from None
    return StreamingResponse(
        _decrypted(chunks),
        media_type=CONTENT_TYPE,
        headers={"content-length": str(row.bytes)},
    )


async def _decrypted(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # One chunk per thread hop: decryption and disk reads stay off the event loop, and only
    # the chunk being sent is in memory.
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk
    finally:
        # A client that left mid-read: its thread may still be inside the generator, which
        # then closes its file when it is collected.
        with contextlib.suppress(ValueError):
            close = getattr(chunks, "close", None)
            if close is not None:
                close()


async def delete_file(request: Request) -> Response:
    """Delete a file

    Its key and ciphertext are destroyed at once; the content is then 404.
    """
    _, principal, files = await _files(request)
    file_id = request.path_params["file_id"]
    if not await asyncio.to_thread(files.delete, principal.account_id, file_id):
        raise _not_found(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


def file_object(row: BatchFile) -> FileObject:
    """OpenAI's file object for a row."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": unix_time(row.created_at),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "expires_at": unix_time(row.expires_at),
        "status_details": None,
    }
