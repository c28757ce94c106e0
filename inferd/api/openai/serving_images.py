"""POST /v1/openai/images/generations: OpenAI's shape over the text-to-image task."""

from __future__ import annotations

import re
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.responses import JSONResponse
from inferd.api.tasks import run_task, store_images

_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")


class ImageGenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: str = Field(min_length=1, max_length=10_000)
    n: int = Field(default=1, ge=1, le=4)
    size: str | None = None
    response_format: Literal["url", "b64_json"] = "url"
    negative_prompt: str | None = None  # extensions, as DeepInfra accepts them
    num_inference_steps: int | None = Field(default=None, ge=1, le=150)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)


async def create_image(gateway: Gateway, request: Request) -> Response:
    request.scope.setdefault("state", {})["route"] = "images"
    body = await gateway.read_json(request, ImageGenerationRequest)
    width = height = None
    if body.size and body.size != "auto":
        match = _SIZE.match(body.size)
        if match is None:
            raise APIError(400, "`size` must look like 512x512.", param="size")
        width, height = int(match.group(1)), int(match.group(2))
    inputs = {
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "width": width,
        "height": height,
        "num_inference_steps": body.num_inference_steps,
        "seed": body.seed,
        "num_images": body.n,
    }
    outcome = await run_task(
        gateway, request, body.model, "text-to-image", inputs, {}, text_bound=len(body.prompt)
    )
    images = outcome.output["images"]
    if body.response_format == "b64_json":
        data = [{"b64_json": b64} for b64 in images]
    else:
        data = [{"url": url} for url in await store_images(gateway, request, images)]
    return JSONResponse({"created": int(time.time()), "data": data})
