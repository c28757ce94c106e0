"""POST /v1/openai/audio/transcriptions (multipart `file`, as OpenAI's) and
POST /v1/openai/audio/speech (JSON in, audio bytes out)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from inferd.api.caps import check_audio_seconds, check_caps
from inferd.api.disconnect import unless_disconnected
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.openai.protocol import SpeechRequest, TranscriptionRequest
from inferd.api.responses import JSONResponse
from inferd.requests import Synthesize, Transcribe

SPEECH_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg"}


async def create_transcription(gateway: Gateway, request: Request) -> Response:
    meta = gateway.meta(request, "transcriptions")
    principal = await gateway.principal(request)
    fields = await gateway.read_fields(request)
    if isinstance(fields.get("timestamp_granularities"), str):
        fields["timestamp_granularities"] = [fields["timestamp_granularities"]]
    body = gateway.validate(TranscriptionRequest, fields)
    serving = gateway.serving
    spec = serving.resolve(principal, body.model, "automatic-speech-recognition")
    neutral = Transcribe(
        audio=await gateway.media.audio(body.file, "file"),
        language=body.language,
        initial_prompt=body.prompt,
        temperature=body.temperature,
        word_timestamps="word" in body.timestamp_granularities,
    )
    await asyncio.to_thread(check_audio_seconds, gateway.settings, neutral.audio, "file")
    outcome = await unless_disconnected(request, serving.run_task(principal, spec, neutral, meta))
    out = outcome.output
    fmt = body.response_format
    if fmt == "text":
        return PlainTextResponse(out["text"])
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(_subtitles(out["segments"], vtt=fmt == "vtt"))
    if fmt == "json":
        return JSONResponse({"text": out["text"]})
    verbose: dict[str, Any] = {
        "task": "transcribe",
        "language": out["language"],
        "duration": out["duration"],
        "text": out["text"],
        "segments": [{k: v for k, v in s.items() if k != "words"} for s in out["segments"]],
    }
    if "word" in body.timestamp_granularities:
        verbose["words"] = [w for s in out["segments"] for w in s.get("words", ())]
    return JSONResponse(verbose)


async def create_speech(gateway: Gateway, request: Request) -> Response:
    meta = gateway.meta(request, "speech")
    principal = await gateway.principal(request)
    body = await gateway.read_json(request, SpeechRequest)
    if body.response_format not in SPEECH_FORMATS:
        raise APIError(
            400,
            f"`response_format` {body.response_format!r} is not supported; use "
            f"{' or '.join(SPEECH_FORMATS)}.",
            param="response_format",
            code="unsupported_parameter",
        )
    neutral = Synthesize(
        text=body.input,
        voice=body.voice,
        format=body.response_format,  # type: ignore[arg-type]  # checked above
        speed=body.speed,
    )
    check_caps(gateway.settings, neutral, {"text": "input"})
    outcome = await unless_disconnected(
        request, gateway.serving.run_task(principal, body.model, neutral, meta)
    )
    return Response(
        outcome.files[0],
        media_type=SPEECH_FORMATS[body.response_format],
        headers={"x-request-id": outcome.request_id},
    )


def _timestamp(seconds: float, vtt: bool) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{'.' if vtt else ','}{ms:03d}"


def _subtitles(segments: list[dict[str, Any]], vtt: bool) -> str:
    blocks = ["WEBVTT\n"] if vtt else []
    for i, seg in enumerate(segments, 1):
        span = f"{_timestamp(seg['start'], vtt)} --> {_timestamp(seg['end'], vtt)}"
        text = seg["text"].strip()
        blocks.append(f"{span}\n{text}\n" if vtt else f"{i}\n{span}\n{text}\n")
    return "\n".join(blocks)
