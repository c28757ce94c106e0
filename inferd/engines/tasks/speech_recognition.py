"""Speech recognition with faster-whisper (CTranslate2 Whisper weights, int8 on CPU)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from inferd.engines.base import EngineError
from inferd.engines.task import TaskModel, TaskResult
from inferd.engines.tasks.media import input_bytes
from inferd.requests import Transcribe

SAMPLE_RATE = 16000


class WhisperModel(TaskModel):
    def __init__(self, path: Path, options: dict[str, Any]) -> None:
        from faster_whisper import WhisperModel as FW

        self.model = FW(
            str(path),
            device="cpu",
            compute_type=options.get("compute_type", "int8"),
            cpu_threads=int(options.get("n_threads", 2)),
            local_files_only=True,
        )
        self.max_seconds = float(options.get("max_audio_seconds", 1800))
        self.beam_size = int(options.get("beam_size", 1))

    def info(self) -> dict[str, Any]:
        return {
            "max_audio_seconds": self.max_seconds,
            "multilingual": self.model.model.is_multilingual,
        }

    def run(self, request: Transcribe) -> TaskResult:
        from faster_whisper.audio import decode_audio

        try:
            audio = decode_audio(io.BytesIO(input_bytes(request.audio, "audio")), SAMPLE_RATE)
        except Exception:  # PyAV raises many types for undecodable input
            raise EngineError("`audio`: the audio could not be decoded.") from None
        seconds = len(audio) / SAMPLE_RATE
        if seconds > self.max_seconds:
            raise EngineError(
                f"`audio` is {seconds:.0f} s long; the limit is {self.max_seconds:.0f} s.",
                status=413,
                code="too_large",
            )
        if seconds == 0:
            raise EngineError("`audio` holds no sound.")
        language = request.language or None
        if language and not self.model.model.is_multilingual and language != "en":
            raise EngineError("This model only transcribes English (`language`: en).")
        words = bool(request.word_timestamps)
        segments, info = self.model.transcribe(
            audio,
            language=language,
            task=request.task or "transcribe",
            initial_prompt=request.initial_prompt or None,
            temperature=float(request.temperature or 0.0),
            beam_size=self.beam_size,
            word_timestamps=words,
            vad_filter=False,
        )
        out = []
        for i, seg in enumerate(segments):
            item: dict[str, Any] = {
                "id": i,
                "start": round(seg.start, 3),
                "end": round(seg.end, 3),
                "text": seg.text,
            }
            if words:
                item["words"] = [
                    {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)}
                    for w in seg.words or ()
                ]
            out.append(item)
        return TaskResult(
            output={
                "text": "".join(s["text"] for s in out).strip(),
                "segments": out,
                "language": info.language,
                "duration": round(seconds, 3),
            },
            units={"audio_seconds": seconds},
        )
