"""Text to speech with a Piper VITS voice (ONNX), as WAV or MP3."""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

from inferd.engines.base import EngineError
from inferd.engines.task import TaskModel, TaskResult
from inferd.engines.tasks.media import input_text
from inferd.requests import Synthesize

FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg"}


class PiperModel(TaskModel):
    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        from piper import PiperVoice

        onnx = path if path.suffix == ".onnx" else next(path.glob("*.onnx"))
        self.voice = PiperVoice.load(str(onnx))
        self.voice_name = str(options.get("voice", onnx.stem))
        self.max_chars = int(options.get("max_characters", 4096))

    def info(self) -> dict[str, Any]:
        return {
            "voices": [self.voice_name],
            "sample_rate": self.voice.config.sample_rate,
            "formats": sorted(FORMATS),
        }

    def run(self, request: Synthesize) -> TaskResult:
        from piper import SynthesisConfig

        text = input_text(request.text, "text")
        if len(text) > self.max_chars:
            raise EngineError(f"`text` exceeds {self.max_chars} characters.", status=413)
        voice = request.voice
        if voice not in (None, "", "default", self.voice_name):
            raise EngineError(f"Unknown `voice`; this model has: {self.voice_name}.")
        fmt = request.format or "wav"
        if fmt not in FORMATS:
            raise EngineError(f"`format` must be one of: {', '.join(FORMATS)}.")
        speed = float(request.speed or 1.0)
        if not 0.25 <= speed <= 4.0:
            raise EngineError("`speed` must be between 0.25 and 4.0.")
        buf = io.BytesIO()
        try:
            with wave.open(buf, "wb") as wav:
                self.voice.synthesize_wav(text, wav, SynthesisConfig(length_scale=1.0 / speed))
        except wave.Error:
            # Piper wrote no frames: nothing in the text can be spoken ("...", "?").
            raise EngineError("`text` holds nothing that can be spoken.") from None
        data = buf.getvalue()
        rate = self.voice.config.sample_rate
        seconds = (len(data) - 44) / 2 / rate
        if fmt == "mp3":
            data = _wav_to_mp3(data)
        return TaskResult(
            output={"content_type": FORMATS[fmt], "format": fmt},
            files=[data],  # the audio
            input_tokens=len(text),
            units={"audio_seconds": seconds, "characters": len(text)},
        )


def _wav_to_mp3(wav_bytes: bytes) -> bytes:
    import av

    out = io.BytesIO()
    with av.open(io.BytesIO(wav_bytes)) as src, av.open(out, "w", format="mp3") as dst:
        stream = dst.add_stream("mp3", rate=src.streams.audio[0].rate)
        for frame in src.decode(audio=0):
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()
