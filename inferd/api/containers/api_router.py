"""Routes of the GPU containers API (`/v1/containers`); the fixed paths come before
`/v1/containers/{container_id}`."""

from __future__ import annotations

from inferd.api.containers import serving
from inferd.api.containers.protocol import (
    Availability,
    ContainerObject,
    CreateContainer,
    Created,
    ListQuery,
    Params,
    RenameContainer,
)
from inferd.api.endpoint import JSON, Endpoint, Reply, links

CONTAINER_ID = {"container_id": "The container's id (`ctr-...`)."}
OBJECT = {JSON: ContainerObject}
ITEM = "/v1/containers/{container_id}"
# A container's walk: create → get → rename → delete → get, rename (after its end).
CREATED = links(
    {"container_id": "$response.body#/container_id"},
    f"GET {ITEM}",
    f"PATCH {ITEM}",
    f"DELETE {ITEM}",
)
BY_ID = {"container_id": "$response.body#/id"}
READ = links(BY_ID, f"PATCH {ITEM}", f"DELETE {ITEM}")
RENAMED = links(BY_ID, f"GET {ITEM}", f"DELETE {ITEM}")
DELETED = links(BY_ID, f"GET {ITEM}", f"PATCH {ITEM}")

routes = [
    Endpoint(
        "/v1/containers",
        serving.create_container,
        "POST",
        summary="Start a GPU container",
        description="Answers at once (state `creating`); poll until `running` with an `ip`, "
        "then `ssh ubuntu@IP` with the key your cloud-init user data gave.",
        body={JSON: CreateContainer},
        responses={200: Reply("The new container's id.", {JSON: Created})},
        links=CREATED,
        errors=(402, 403, 503),
    ),
    Endpoint(
        "/v1/containers",
        serving.list_containers,
        "GET",
        summary="List your containers",
        query=ListQuery,
        responses={200: Reply("Newest first.", {JSON: list[ContainerObject]})},
        errors=(403, 503),
    ),
    Endpoint(
        "/v1/containers/gpu_availability",
        serving.container_gpu_availability,
        "GET",
        summary="GPU configs, their prices and whether they are free now",
        responses={200: Reply("Every config this server rents.", {JSON: Availability})},
        errors=(403, 503),
    ),
    Endpoint(
        "/v1/containers/params",
        serving.container_params,
        "GET",
        summary="What a container may be created with",
        responses={200: Reply("Allowed images and GPU configs.", {JSON: Params})},
        errors=(403, 503),
    ),
    Endpoint(
        "/v1/containers/{container_id}",
        serving.get_container,
        "GET",
        params=CONTAINER_ID,
        summary="A container's state",
        responses={200: Reply("The container.", OBJECT)},
        links=READ,
        errors=(403, 404, 503),
    ),
    Endpoint(
        "/v1/containers/{container_id}",
        serving.rename_container,
        "PATCH",
        params=CONTAINER_ID,
        summary="Rename a container",
        body={JSON: RenameContainer},
        responses={200: Reply("The container.", OBJECT)},
        links=RENAMED,
        errors=(403, 404, 503),
    ),
    Endpoint(
        "/v1/containers/{container_id}",
        serving.delete_container,
        "DELETE",
        params=CONTAINER_ID,
        summary="Terminate a container",
        description="Everything in it is lost. It goes `shutting_down`, then `deleted`; "
        "billing stops when it stops running.",
        responses={200: Reply("The container.", OBJECT)},
        links=DELETED,
        errors=(403, 404, 503),
    ),
]
