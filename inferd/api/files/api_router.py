"""Routes of the Files API, under `/v1/openai` (where the `openai` SDK's base URL points) and
under `/v1`."""

from __future__ import annotations

from inferd.api.endpoint import FORM, JSON, Endpoint, Link, Reply, links
from inferd.api.files import serving
from inferd.api.files.protocol import FileDeleted, FileList, FileListQuery, FileObject, FileUpload

PREFIXES = ("/v1/openai", "/v1")
FILE_PARAM = {"file_id": "The file's id (`file-...`)."}


def _routes(prefix: str) -> list[Endpoint]:
    item = f"{prefix}/files/{{file_id}}"
    by_id = {"file_id": "$response.body#/id"}
    # A file's walk: upload → read, its content, a batch of it → delete → read (gone).
    read = links(by_id, f"GET {item}/content", f"DELETE {item}")
    batch = Link(
        "POST",
        f"{prefix}/batches",
        body={
            "input_file_id": "$response.body#/id",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        description="Run the file's lines as a batch of chat completions.",
    )
    return [
        Endpoint(
            f"{prefix}/files",
            serving.create_file,
            "POST",
            body={FORM: FileUpload},
            responses={200: Reply("The file object.", {JSON: FileObject})},
            links=(*links(by_id, f"GET {item}"), *read, batch),
            errors=(403, 415),
        ),
        Endpoint(
            f"{prefix}/files",
            serving.list_files,
            "GET",
            query=FileListQuery,
            responses={200: Reply("A page of file objects.", {JSON: FileList})},
            errors=(403,),
        ),
        Endpoint(
            f"{prefix}/files/{{file_id}}",
            serving.retrieve_file,
            "GET",
            params=FILE_PARAM,
            responses={200: Reply("The file object.", {JSON: FileObject})},
            links=read,
            errors=(403, 404),
        ),
        Endpoint(
            f"{prefix}/files/{{file_id}}",
            serving.delete_file,
            "DELETE",
            params=FILE_PARAM,
            responses={200: Reply("The deletion.", {JSON: FileDeleted})},
            links=links(by_id, f"GET {item}", f"GET {item}/content"),
            errors=(403, 404),
        ),
        Endpoint(
            f"{prefix}/files/{{file_id}}/content",
            serving.file_content,
            "GET",
            params=FILE_PARAM,
            responses={200: Reply("The content.", {serving.CONTENT_TYPE: bytes})},
            errors=(403, 404),
        ),
    ]


routes = [route for prefix in PREFIXES for route in _routes(prefix)]
