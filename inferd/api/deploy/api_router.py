"""Routes of the deployments API. Handler names give the seed pages' `/docs` anchors
(`deploy_list_deploy_list_get`, `deploy_delete_deploy__deploy_id__delete`); `/deploy/list`
is declared before `/deploy/{deploy_id}`."""

from __future__ import annotations

from inferd.api.deploy import serving
from inferd.api.deploy.protocol import (
    DeployListQuery,
    DeployLLM,
    DeployLora,
    DeployObject,
    DeployUpdate,
    GpuAvailability,
)
from inferd.api.endpoint import JSON, Endpoint, Reply, links

DEPLOY_ID = {"deploy_id": "The version's id (from the deploy object)."}
OBJECT = {JSON: DeployObject}
ITEM = "/deploy/{deploy_id}"
# A deployment's walk, by its id: create → get → update → stop → start → delete → get (gone).
BY_ID = {"deploy_id": "$response.body#/deploy_id"}
CREATED = links(
    BY_ID, f"GET {ITEM}", f"PUT {ITEM}", f"POST {ITEM}/stop", f"POST {ITEM}/start", f"DELETE {ITEM}"
)
READ = links(BY_ID, f"PUT {ITEM}", f"POST {ITEM}/stop", f"POST {ITEM}/start", f"DELETE {ITEM}")
UPDATED = links(BY_ID, f"GET {ITEM}", f"DELETE {ITEM}")
STOPPED = links(BY_ID, f"GET {ITEM}", f"POST {ITEM}/start", f"DELETE {ITEM}")
STARTED = links(BY_ID, f"GET {ITEM}", f"POST {ITEM}/stop")
DELETED = links(BY_ID, f"GET {ITEM}", f"POST {ITEM}/start")
LORA = (
    *links({"name": "$response.body#/model_name"}, "DELETE /lora-model/{name}"),
    *links({"deploy_id": "$response.body#/deploy_id"}, f"GET {ITEM}", f"DELETE {ITEM}"),
)

routes = [
    Endpoint(
        "/lora-model",
        serving.deploy_lora,
        "POST",
        summary="Deploy a LoRA adapter",
        description="The adapter (a PEFT repository on the hub) runs on its base model's "
        "instances; the base comes from its `adapter_config.json` and must take adapters.",
        body={JSON: DeployLora},
        responses={200: Reply("The deploy object (`type: lora`).", OBJECT)},
        links=LORA,
        errors=(403, 409),
    ),
    Endpoint(
        "/models/lora/list",
        serving.lora_list,
        "GET",
        summary="List your LoRA adapters",
        responses={200: Reply("Their deploy objects.", {JSON: list[DeployObject]})},
        errors=(403,),
    ),
    Endpoint(
        "/lora-model/{name:path}",
        serving.lora_delete,
        "DELETE",
        params={"name": "The adapter's name, with or without your owner prefix."},
        summary="Delete a LoRA adapter",
        responses={200: Reply("Its versions, now deleted.", {JSON: list[DeployObject]})},
        errors=(403, 404),
    ),
    Endpoint(
        "/deploy/llm",
        serving.deploy_llm,
        "POST",
        summary="Deploy an LLM from a Hugging Face repository",
        description="A model name you deployed before gets a new version. The answer comes at "
        "once (status `initializing`); poll the deploy object while weights download.",
        body={JSON: DeployLLM},
        responses={200: Reply("The deploy object.", OBJECT)},
        links=CREATED,
        errors=(403, 409),
    ),
    Endpoint(
        "/deploy/llm/gpu_availability",
        serving.gpu_availability,
        "GET",
        summary="Accelerator pools and what is free",
        responses={200: Reply("Every pool of this server.", {JSON: GpuAvailability})},
        errors=(403,),
    ),
    Endpoint(
        "/deploy/list",
        serving.deploy_list,
        "GET",
        summary="List your deployments",
        query=DeployListQuery,
        responses={200: Reply("Every version, newest first.", {JSON: list[DeployObject]})},
        errors=(403,),
    ),
    Endpoint(
        "/deploy/{deploy_id}",
        serving.deploy_get,
        "GET",
        params=DEPLOY_ID,
        summary="A deployment's state",
        responses={200: Reply("The deploy object.", OBJECT)},
        links=READ,
        errors=(403, 404),
    ),
    Endpoint(
        "/deploy/{deploy_id}",
        serving.deploy_update,
        "PUT",
        params=DEPLOY_ID,
        summary="Change a deployment's scaling settings",
        body={JSON: DeployUpdate},
        responses={200: Reply("The deploy object.", OBJECT)},
        links=UPDATED,
        errors=(403, 404),
    ),
    Endpoint(
        "/deploy/{deploy_id}",
        serving.deploy_delete,
        "DELETE",
        params=DEPLOY_ID,
        summary="Delete a deployment version",
        responses={200: Reply("The deploy object, `deleted` once its instances stop.", OBJECT)},
        links=DELETED,
        errors=(403, 404),
    ),
    Endpoint(
        "/deploy/{deploy_id}/stop",
        serving.deploy_stop,
        "POST",
        params=DEPLOY_ID,
        summary="Stop a deployment's instances",
        responses={200: Reply("The deploy object.", OBJECT)},
        links=STOPPED,
        errors=(403, 404),
    ),
    Endpoint(
        "/deploy/{deploy_id}/start",
        serving.deploy_start,
        "POST",
        params=DEPLOY_ID,
        summary="Start a stopped or failed deployment again",
        responses={200: Reply("The deploy object.", OBJECT)},
        links=STARTED,
        errors=(403, 404),
    ),
]
