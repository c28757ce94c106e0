"""Wire models of the deployments API, as the seed pages show them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from inferd.control.registry import STATUSES


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class HFWeights(_Body):
    repo: str = Field(min_length=3, max_length=200, description="`namespace/name` on the hub.")
    revision: str | None = Field(
        default=None, max_length=200, description="Branch, tag or commit (default branch)."
    )
    token: str | None = Field(
        default=None,
        max_length=1000,
        description="For private repositories; write-only (stored encrypted, never returned).",
    )


class DeploySettings(_Body):
    min_instances: int = Field(default=0, ge=0, le=64)
    max_instances: int = Field(default=1, ge=1, le=64)
    scale_up_window_s: float | None = Field(default=None, ge=0, le=3600)
    scale_down_window_s: float | None = Field(default=None, ge=0, le=86400)
    scale_to_zero_s: float | None = Field(default=None, ge=0, le=86400)
    cold_start_timeout_s: float | None = Field(default=None, gt=0, le=3600)


class DeployLLM(_Body):
    model_name: str = Field(min_length=1, max_length=200, description="Prefixed by your owner.")
    gpu: str = Field(min_length=1, max_length=40, description="A pool: `TYPE-MEMGB`.")
    num_gpus: int = Field(default=1, ge=1, le=8)
    max_batch_size: int = Field(default=16, ge=1, le=256)
    hf: HFWeights
    settings: DeploySettings = Field(default_factory=DeploySettings)


class DeployUpdate(_Body):
    settings: DeploySettings


class DeployListQuery(_Body):
    status: Literal[STATUSES] | None = Field(  # type: ignore[valid-type]
        default=None, description="Only versions in this status (deleted ones only this way)."
    )


# -- responses --------------------------------------------------------------------------------


class Instance(TypedDict):
    id: str
    state: str  # running, starting (Ray: Serve's replica state, lower case)
    node: str | None  # the Ray node id; the gateway's host name on the local backend


class Instances(TypedDict):
    running: int
    pending: int
    list: list[Instance]


class Download(TypedDict):
    bytes: int
    total: int


class DeployConfig(TypedDict):
    gpu: str
    num_gpus: int
    max_batch_size: int
    hf_repo: str
    hf_revision: str | None
    commit: str | None


class DeployObject(TypedDict):
    deploy_id: str
    model_name: str
    version: int
    type: str  # llm | lora
    base_model: str | None  # a LoRA's base model
    task: str
    status: str
    fail_reason: str | None
    status_reason: str | None  # running, but fewer instances than wanted: why
    instances: Instances
    download: Download | None  # while weights download (in this gateway): bytes so far
    config: DeployConfig
    settings: dict[str, float]
    created_at: str
    updated_at: str


class GpuConfig(TypedDict):
    gpu_config: str
    usd_per_hour: float
    available: int
    total: int
    emulated: bool


class GpuAvailability(TypedDict):
    gpus: list[GpuConfig]


class DeployLora(_Body):
    lora_model_name: str = Field(
        min_length=1, max_length=200, description="Prefixed by your owner unless it starts with it."
    )
    hf_model_name: str = Field(
        min_length=3, max_length=200, description="The PEFT adapter's repository on the hub."
    )
    hf_token: str | None = Field(
        default=None, max_length=1000, description="For a private adapter; write-only."
    )
