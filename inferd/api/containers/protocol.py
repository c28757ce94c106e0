"""Wire models of the GPU containers API, as the seed page shows them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from inferd.store.container_tables import ACTIVE_STATES, INACTIVE_STATES


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreateContainer(_Body):
    name: str = Field(min_length=1, max_length=100, description="Yours to choose; shown in lists.")
    gpu_config: str = Field(
        min_length=1,
        max_length=64,
        description="`NxTYPE-MEMGB` (e.g. `1xA100-80GB`): one of GET /v1/containers/params.",
    )
    container_image: str = Field(
        min_length=1,
        max_length=200,
        description="One of the images GET /v1/containers/params lists.",
    )
    cloud_init_user_data: str | None = Field(
        default=None,
        max_length=65536,
        description="cloud-init user data (`#cloud-config` ...), applied at boot; never returned.",
    )


class RenameContainer(_Body):
    name: str = Field(min_length=1, max_length=100)


class ListQuery(_Body):
    state: Literal["active", "inactive"] = Field(
        default="active",
        description="`active`: creating, starting, running, shutting_down; `inactive`: failed, "
        "deleted.",
    )


# -- responses --------------------------------------------------------------------------------

State = Literal[(*ACTIVE_STATES, *INACTIVE_STATES)]  # type: ignore[valid-type]


class Created(TypedDict):
    container_id: str


class ContainerObject(TypedDict):
    id: str
    name: str
    state: State  # type: ignore[valid-type]
    start_ts: str | None  # ISO 8601: when it started running
    state_ts: str  # when it entered its state
    stop_ts: str | None  # when it stopped running (or failed)
    ip: str | None  # the SSH address, while running
    gpu_config: str
    price_per_hour: float  # the whole config's price in USD
    container_image: str
    fail_reason: str | None


class GpuConfigAvailability(TypedDict):
    gpu_config: str
    price_per_hour: float
    available: bool  # false: "Out of capacity" for now
    free: int  # GPUs (CPU slots) of its pool free now
    total: int


class Availability(TypedDict):
    gpu_configs: list[GpuConfigAvailability]


class Params(TypedDict):
    images: list[str]
    gpu_configs: list[str]
