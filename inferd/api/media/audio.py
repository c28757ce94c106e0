"""Audio given by the user: a file upload, a data URL, an http(s) URL or bare base64."""

from __future__ import annotations

# Magic numbers of the containers faster-whisper's decoder (FFmpeg) is asked to open.
_FORMATS: list[tuple[int, bytes, str]] = [
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
    (0, b"ID3", "mp3"),
    (0, b"\x1aE\xdf\xa3", "webm"),
    (4, b"ftyp", "mp4"),
]


def sniff_audio(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    for offset, magic, name in _FORMATS:
        if data[offset : offset + len(magic)] == magic:
            return name
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return "mp3"  # a bare MPEG audio frame header
    return None
