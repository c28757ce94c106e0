"""Cost caps of this server (settings `max_image_pixels`, `max_image_steps`, `max_tts_chars`,
`max_audio_seconds`): a request over one is refused with 400 before it is admitted, so an
operator can bound what any one request costs (the schemathesis run relies on it).

Generated tokens need no check here: `max_output_tokens` clamps `max_tokens` in the engine, as
OpenAI clamps to a model's limit. Model-specific limits (a diffusion model's largest side, a
Whisper model's `max_audio_seconds`) are still the engine's to enforce.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

from inferd.api.errors import APIError
from inferd.config import Settings
from inferd.requests import GenerateImage, InferenceRequest, Synthesize


def check_caps(
    settings: Settings, request: InferenceRequest, params: Mapping[str, str] | None = None
) -> None:
    """Raise a 400 when `request` is over a cap. `params` maps a field of the neutral request
    to its wire name for `error.param` (OpenAI speech: `{"text": "input"}`; OpenAI images:
    `{"width": "size", "height": "size"}`)."""
    names = params or {}
    if isinstance(request, GenerateImage):
        width, height = request.width, request.height
        # A side left to the model's default counts as the other side (square); both absent:
        # the catalog's defaults, which the operator chose.
        pixels = (width or height or 0) * (height or width or 0)
        if pixels > settings.max_image_pixels:
            field = "width" if width else "height"
            raise _over(
                names.get(field, field),
                f"width * height is {pixels} pixels; this server allows at most "
                f"{settings.max_image_pixels}.",
            )
        steps = request.num_inference_steps
        if steps is not None and steps > settings.max_image_steps:
            field = "num_inference_steps"
            raise _over(
                names.get(field, field),
                f"`{names.get(field, field)}` is {steps}; this server allows at most "
                f"{settings.max_image_steps}.",
            )
    elif isinstance(request, Synthesize) and len(request.text) > settings.max_tts_chars:
        field = names.get("text", "text")
        raise _over(
            field,
            f"`{field}` has {len(request.text)} characters; this server allows at most "
            f"{settings.max_tts_chars}.",
        )


def check_audio_seconds(settings: Settings, audio: bytes, param: str = "audio") -> None:
    """Raise a 400 when the audio is longer than `max_audio_seconds`, judged by its container's
    header, or by its packets where the header does not tell (cheap; no decoding). Audio whose
    length neither tells passes: the model's own limit (413) still applies after decoding.
    Blocking: call it in a thread."""
    seconds = audio_seconds(audio, settings.max_audio_seconds)
    if seconds is not None and seconds > settings.max_audio_seconds:
        raise _over(
            param,
            f"`{param}` is {seconds:.0f} s long; this server allows at most "
            f"{settings.max_audio_seconds:.0f} s.",
        )


def audio_seconds(audio: bytes, limit: float | None = None) -> float | None:
    """The duration a container declares (WAV, FLAC, MP3, OGG, ...), or None.

    A container written as a stream may declare none (a WebM from a recorder): then its audio
    packets are read (demuxed, not decoded) and their durations summed, stopping once past
    `limit`: a few MB of low-bitrate Opus hold hours of audio, which the model would decode
    whole (gigabytes of samples) before its own limit applies."""
    import av  # PyAV (a faster-whisper dependency); imported on first use only

    try:
        with av.open(io.BytesIO(audio), "r") as container:
            if container.duration is not None:
                return container.duration / av.time_base
            stream = container.streams.audio[0] if container.streams.audio else None
            if stream is None or not stream.time_base:
                return None
            if stream.duration is not None:
                return float(stream.duration * stream.time_base)
            tick = float(stream.time_base)
            most = math.inf if limit is None else limit / tick  # in ticks: no Fraction per packet
            start = end = None
            for packet in container.demux(stream):
                pts = packet.pts
                if pts is None:
                    continue
                if start is None:
                    start = end = pts
                start, end = min(start, pts), max(end, pts + (packet.duration or 0))
                if end - start > most:
                    break
            return None if start is None else (end - start) * tick
    except Exception:  # PyAV raises many types for data it cannot read
        return None


def _over(param: str, message: str) -> APIError:
    return APIError(400, message, code="over_cap", param=param)
