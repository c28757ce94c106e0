"""Wire shapes of the Files API: the upload form, the list query and OpenAI's file objects.

Request models parse the wire (lenient: unknown fields ignored, numbers as numeric strings);
response shapes are TypedDicts, rendered as plain dicts, both read by the OpenAPI document.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# pydantic reads TypedDicts only from typing_extensions before Python 3.12.
from typing_extensions import TypedDict

MAX_EXPIRES_AFTER_S = 30 * 86400


class FileUploadFields(BaseModel):
    """The text fields of an upload. OpenAI takes `expires_after[seconds]` from 3600; any
    positive number of seconds up to 30 days is accepted here."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    purpose: Literal["batch"] = Field(description="`batch`: the input of a batch.")
    expires_after_anchor: Literal["created_at"] | None = Field(
        default=None,
        alias="expires_after[anchor]",
        description="What `expires_after[seconds]` counts from; only `created_at`.",
    )
    expires_after_seconds: int | None = Field(
        default=None,
        alias="expires_after[seconds]",
        ge=1,
        le=MAX_EXPIRES_AFTER_S,
        description="Seconds after `created_at` when the file is purged (default 24 h; a "
        "batch's input is purged when its batch ends instead).",
    )


class FileUpload(FileUploadFields):
    """`POST /files`: multipart/form-data, the content in the `file` part (up to 200 MB)."""

    file: bytes = Field(description="The content: for `batch`, JSONL, one request per line.")


class FileListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    after: str | None = Field(
        default=None, description="A file id: the page starts after it (the previous `last_id`)."
    )
    limit: int = Field(default=10_000, ge=1, le=10_000, description="Files per page.")
    order: Literal["asc", "desc"] = Field(default="desc", description="By `created_at`.")
    purpose: str | None = Field(default=None, description="Only files of this purpose.")


class FileObject(TypedDict):
    """OpenAI's file object."""

    id: str
    object: Literal["file"]
    bytes: int
    created_at: int  # unix seconds
    filename: str
    purpose: str  # batch | batch_output
    status: Literal["processed"]
    expires_at: int | None  # unix seconds: then its content is purged
    status_details: None


class FileList(TypedDict):
    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(TypedDict):
    id: str
    object: Literal["file"]
    deleted: bool
