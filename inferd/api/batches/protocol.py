"""Wire models of the Batch API (OpenAI's shapes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

Endpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


class OutputExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="ignore")

    anchor: Literal["created_at"] = "created_at"
    seconds: int = Field(ge=1, le=30 * 86400)


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: Endpoint
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = Field(
        default=None, description="Up to 16 string pairs, kept with the batch."
    )
    output_expires_after: OutputExpiresAfter | None = Field(
        default=None, description="When the output and error files are purged (default 30 days)."
    )


class BatchListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    after: str | None = Field(default=None, description="A batch id: the page starts after it.")
    limit: int = Field(default=20, ge=1, le=100, description="Batches per page.")
    order: Literal["asc", "desc"] = Field(default="desc", description="By `created_at`.")


class RequestCounts(TypedDict):
    total: int
    completed: int
    failed: int


class BatchErrors(TypedDict):
    object: Literal["list"]
    data: list[dict[str, Any]]  # {code, message, param, line}


class BatchObject(TypedDict):
    """OpenAI's batch object; `pause_reason` (inferd) says why a batch waits for money."""

    id: str
    object: Literal["batch"]
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    model: str | None
    pause_reason: str | None


class BatchList(TypedDict):
    object: Literal["list"]
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
