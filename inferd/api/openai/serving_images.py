"""POST /v1/openai/images/generations: OpenAI's shape over the text-to-image task."""

from __future__ import annotations

import base64
import re
import time

from starlette.requests import Request
from starlette.responses import Response

from inferd.api.caps import check_caps
from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.native.serving_tasks import data_url
from inferd.api.openai.protocol import ImageGenerationRequest
from inferd.api.responses import JSONResponse
from inferd.requests import GenerateImage

_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")


async def create_image(gateway: Gateway, request: Request) -> Response:
    meta = gateway.meta(request, "images")
    principal = await gateway.principal(request)
    body = await gateway.read_json(request, ImageGenerationRequest)
    width = height = None
    if body.size and body.size != "auto":
        match = _SIZE.match(body.size)
        if match is None:
            raise APIError(400, "`size` must look like 512x512.", param="size")
        width, height = int(match.group(1)), int(match.group(2))
    neutral = GenerateImage(
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        width=width,
        height=height,
        num_inference_steps=body.num_inference_steps,
        seed=body.seed,
        num_images=body.n,
    )
    check_caps(gateway.settings, neutral, {"width": "size", "height": "size"})
    outcome = await unless_disconnected(
        request, gateway.serving.run_task(principal, body.model, neutral, meta)
    )
    # `url` is a data URL: generated images are never stored (docs/privacy.md).
    if body.response_format == "b64_json":
        data = [{"b64_json": base64.b64encode(png).decode("ascii")} for png in outcome.files]
    else:
        data = [{"url": data_url("image/png", png)} for png in outcome.files]
    return JSONResponse({"created": int(time.time()), "data": data})
