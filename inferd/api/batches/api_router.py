"""Routes of the Batch API, under `/v1/openai` (the `openai` SDK's base URL) and `/v1`."""

from __future__ import annotations

from inferd.api.batches import serving
from inferd.api.batches.protocol import BatchList, BatchListQuery, BatchObject, CreateBatch
from inferd.api.endpoint import JSON, Endpoint, Reply, links

PREFIXES = ("/v1/openai", "/v1")
BATCH_PARAM = {"batch_id": "The batch's id (`batch_...`)."}


def _routes(prefix: str) -> list[Endpoint]:
    item = f"{prefix}/batches/{{batch_id}}"
    # A batch's walk: create → read → cancel → read; its input file by id.
    by_id = {"batch_id": "$response.body#/id"}
    created = (
        *links(by_id, f"GET {item}", f"POST {item}/cancel"),
        *links({"file_id": "$response.body#/input_file_id"}, f"GET {prefix}/files/{{file_id}}"),
    )
    return [
        Endpoint(
            f"{prefix}/batches",
            serving.create_batch,
            "POST",
            body={JSON: CreateBatch},
            responses={200: Reply("The batch object.", {JSON: BatchObject})},
            links=created,
            errors=(403,),
        ),
        Endpoint(
            f"{prefix}/batches",
            serving.list_batches,
            "GET",
            query=BatchListQuery,
            responses={200: Reply("A page of batch objects.", {JSON: BatchList})},
            errors=(403,),
        ),
        Endpoint(
            f"{prefix}/batches/{{batch_id}}",
            serving.retrieve_batch,
            "GET",
            params=BATCH_PARAM,
            responses={200: Reply("The batch object.", {JSON: BatchObject})},
            links=links(by_id, f"POST {item}/cancel"),
            errors=(403, 404),
        ),
        Endpoint(
            f"{prefix}/batches/{{batch_id}}/cancel",
            serving.cancel_batch,
            "POST",
            params=BATCH_PARAM,
            responses={200: Reply("The batch object.", {JSON: BatchObject})},
            links=links(by_id, f"GET {item}"),
            errors=(403, 404, 409),
        ),
    ]


routes = [route for prefix in PREFIXES for route in _routes(prefix)]
