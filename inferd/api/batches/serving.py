"""Handlers of the Batch API: create, retrieve, cancel, list. Batches belong to the caller's
account (another account's is a 404); scoped JWTs get 403, as for files."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.batches.protocol import BatchListQuery, BatchObject, CreateBatch
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.responses import JSONResponse, unix_time
from inferd.auth import Principal
from inferd.jobs.batch.service import BatchError, Batches
from inferd.store.batch_tables import Batch

MAX_METADATA = 16


async def _batches(request: Request) -> tuple[Gateway, Principal, Batches]:
    gateway: Gateway = request.app.state.gateway
    if gateway.batches is None:
        raise APIError(404, "Batches are not enabled on this server.", code="not_found")
    principal = await gateway.key_holder(request, "Scoped JWTs cannot use the Batch API.")
    return gateway, principal, gateway.batches


def _refused(exc: BatchError) -> APIError:
    return APIError(exc.status, exc.message, param=exc.param)


async def create_batch(request: Request) -> Response:
    """Create a batch

    Runs every line of the input file (JSONL, uploaded with purpose `batch`) against
    `endpoint`, at a lower priority than interactive requests and at the batch discount. Lines
    are checked first (`validating`); a bad line fails the batch with `errors` naming it.
    """
    gateway, principal, batches = await _batches(request)
    body = await gateway.read_json(request, CreateBatch)
    if body.metadata is not None and len(body.metadata) > MAX_METADATA:
        raise APIError(400, f"`metadata` holds at most {MAX_METADATA} pairs.", param="metadata")
    expires = body.output_expires_after.seconds if body.output_expires_after else None
    try:
        row = await asyncio.to_thread(
            batches.create,
            principal.account_id,
            asdict(principal),
            body.input_file_id,
            body.endpoint,
            body.metadata,
            expires,
        )
    except BatchError as exc:
        raise _refused(exc) from None
    return JSONResponse(batch_object(row))


async def retrieve_batch(request: Request) -> Response:
    """Retrieve a batch"""
    _, principal, batches = await _batches(request)
    batch_id = request.path_params["batch_id"]
    row = await asyncio.to_thread(batches.get, principal.account_id, batch_id)
    if row is None:
        raise _not_found(batch_id)
    return JSONResponse(batch_object(row))


async def cancel_batch(request: Request) -> Response:
    """Cancel a batch

    No further line starts; lines running finish, and everything done so far is written to the
    output and error files (`cancelling` → `cancelled`).
    """
    _, principal, batches = await _batches(request)
    batch_id = request.path_params["batch_id"]
    try:
        row = await asyncio.to_thread(batches.cancel, principal.account_id, batch_id)
    except BatchError as exc:
        raise _refused(exc) from None
    if row is None:
        raise _not_found(batch_id)
    return JSONResponse(batch_object(row))


async def list_batches(request: Request) -> Response:
    """List batches"""
    gateway, principal, batches = await _batches(request)
    query = gateway.validate(BatchListQuery, dict(request.query_params))
    try:
        rows, more = await asyncio.to_thread(
            batches.list, principal.account_id, query.after, query.limit, query.order
        )
    except BatchError as exc:
        raise _refused(exc) from None
    data = [batch_object(row) for row in rows]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )


def _not_found(batch_id: str) -> APIError:
    return APIError(404, f"No such batch: `{batch_id}`.", param="batch_id", code="not_found")


def batch_object(row: Batch) -> BatchObject:
    errors = json.loads(row.errors_json) if row.errors_json else None
    # A batch heading for its end shows the status OpenAI shows meanwhile.
    status = {"expiring": "finalizing"}.get(row.status, row.status)
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": unix_time(row.created_at),
        "in_progress_at": unix_time(row.in_progress_at),
        "expires_at": unix_time(row.expires_at),
        "finalizing_at": unix_time(row.finalizing_at),
        "completed_at": unix_time(row.completed_at),
        "failed_at": unix_time(row.failed_at),
        "expired_at": unix_time(row.expired_at),
        "cancelling_at": unix_time(row.cancelling_at),
        "cancelled_at": unix_time(row.cancelled_at),
        "request_counts": {"total": row.total, "completed": row.completed, "failed": row.failed},
        "metadata": json.loads(row.metadata_json) if row.metadata_json else None,
        "model": row.model,
        "pause_reason": row.pause_reason,
    }
