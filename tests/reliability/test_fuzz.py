"""Fuzz pass over every parser that reads user bytes (issue 17): multipart bodies (streamed and in
memory), data URLs, images, audio, JSONL batch files, bearer credentials and scoped JWTs.

Each parser, fed arbitrary and near-valid-but-mutated input, either returns a value or raises the
"bad input" exception its API turns into a 4xx; never another type, never a hang (every call runs
under a timeout), and what it accepts is usable by the code after it (storable, serialisable,
of the types the callers expect). Decompression bombs (a tiny image declaring a huge canvas, a
WAV declaring a huge length) are refused or measured cheaply, without decoding.

Then a smaller pass end to end: the same bodies POSTed to a real server's endpoints that parse
them answer 4xx JSON errors (or 2xx where valid), never 5xx, and the server still serves a
normal request afterwards with nothing left in flight. The media endpoints need real models: a
handful of examples go to the shared `server`.

Hypothesis runs derandomized (fixed seed, no example database), with bounded examples and
deadlines generous enough for a shared two-core machine.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import os
import string
import struct
import threading
import time
import wave
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import cache, partial
from types import SimpleNamespace
from typing import Any, TypeVar

import httpx
import jwt
import orjson
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from PIL import Image
from starlette.requests import Request

from inferd.api.batches.lines import BatchLines
from inferd.api.caps import audio_seconds, check_audio_seconds
from inferd.api.errors import APIError
from inferd.api.gateway import Gateway
from inferd.api.media.audio import sniff_audio
from inferd.api.media.images import MAX_PIXELS, check_decodes, decode_data_url, sniff_image
from inferd.api.media.inputs import MediaInputs
from inferd.api.media.multipart import parse_form
from inferd.api.multipart_stream import MultipartError, stream_multipart
from inferd.auth.authenticator import (
    JWT_PREFIX,
    Authenticator,
    AuthError,
    Principal,
    parse_bearer,
    parse_kid,
)
from inferd.auth.keys import KeyVault
from inferd.auth.scoped_jwt import ScopedJwtError, inspect, kid_for
from inferd.config import Settings
from inferd.engines.base import EngineError
from inferd.engines.tasks.media import input_image
from inferd.jobs.batch.lines import MAX_CUSTOM_ID, MAX_ERRORS, Checker
from inferd.jobs.files import FileInvalid, Upload, lines
from inferd.store.db import Database
from tests.conftest import ADMIN_KEY, NULL_MODEL, VISION_MODEL, Server

T = TypeVar("T")

# The bombs below are meant: PIL's warning about them is expected noise.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

# A hang is a call still running after this long (a parse of these inputs takes milliseconds).
CALL_TIMEOUT_S = 20.0
SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=30),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
    print_blob=False,
)


# INFERD_FUZZ_SCALE=20 runs twenty times the examples (a longer hunt, by hand).
SCALE = float(os.environ.get("INFERD_FUZZ_SCALE", "1"))


def fuzz(max_examples: int) -> settings:
    return settings(SETTINGS, max_examples=max(1, int(max_examples * SCALE)))


def bounded(fn: Callable[..., T], *args: Any, timeout: float = CALL_TIMEOUT_S) -> T:
    """`fn(*args)` in a thread of its own; the example fails if it is still running after
    `timeout` (a hang), and whatever it raised is re-raised here."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {timeout} s: a hang")
    if "error" in box:
        raise box["error"]
    return box["value"]


def outcome(fn: Callable[..., T], *args: Any, refusal: type[Exception]) -> T | Exception:
    """The value, or the documented refusal; any other exception fails the example."""
    try:
        value = bounded(fn, *args)
    except refusal as exc:
        tally(fn, f"refused {getattr(exc, 'status', '')} {str(exc)[:50]}")
        return exc
    tally(fn, "accepted")
    return value


def tally(fn: Callable[..., Any], what: str) -> None:
    """Counted for `--hypothesis-show-statistics`: how much of the input gets how far."""
    if currently_in_test_context():
        event(f"{getattr(fn, '__name__', 'call')}: {what}")


def client_error(exc: Exception, statuses: tuple[int, ...] = ()) -> None:
    status = exc.status  # type: ignore[attr-defined]
    assert 400 <= status < 500, f"{type(exc).__name__} {status}: {exc}"
    if statuses:
        assert status in statuses, f"{status}: {exc}"


def storable(text: str) -> None:
    """A value that reaches the database (SQLite and PostgreSQL) as text."""
    assert "\x00" not in text, "PostgreSQL text cannot hold NUL"
    text.encode("utf-8")  # no lone surrogates


# -- mutations --------------------------------------------------------------------------------

INTERESTING = st.sampled_from(
    [0, 1, 2, 7, 8, 16, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
) | st.integers(0, 0xFFFFFFFF)


def mutate(draw: st.DrawFn, data: bytes, max_ops: int = 4, focus: int | None = None) -> bytes:
    """`data` with up to `max_ops` edits (bit flips, bytes, inserts, cuts, 32-bit integers from
    the interesting ones, repeats), at positions in the first `focus` bytes when given (the
    header of a format, where lengths and dimensions live)."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, max_ops))):
        limit = len(buf) if focus is None else min(len(buf), focus)
        pos = draw(st.integers(0, limit))
        op = draw(st.sampled_from(["flip", "byte", "insert", "delete", "cut", "int", "repeat"]))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and pos < len(buf):
            buf[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 16))]
        elif op == "cut":
            del buf[pos:]
        elif op == "int":
            fmt = draw(st.sampled_from(["<I", ">I", "<H", ">H"]))
            value = draw(INTERESTING) & (0xFFFF if fmt.endswith("H") else 0xFFFFFFFF)
            packed = struct.pack(fmt, value)
            buf[pos : pos + len(packed)] = packed
        elif op == "repeat":
            piece = bytes(buf[pos : pos + draw(st.integers(1, 32))])
            buf[pos:pos] = piece * draw(st.integers(1, 8))
    return bytes(buf)


# -- sample media -----------------------------------------------------------------------------


@cache
def picture(fmt: str, size: tuple[int, int] = (6, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(out, fmt)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(
    width: int,
    height: int,
    depth: int = 8,
    colour: int = 2,
    idat: bytes | None = None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """A PNG whose chunks' CRCs are right, whatever the header says: past PIL's CRC checks."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr)
    for kind, data in extra:
        body += png_chunk(kind, data)
    body += png_chunk(b"IDAT", zlib.compress(idat if idat is not None else b"\0" * 16))
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 marker declares another size."""
    data = bytearray(picture("JPEG", (16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_with_canvas(width: int, height: int) -> bytes:
    """A VP8X WebP declaring a canvas of width x height (24-bit fields, minus one)."""
    vp8x = b"\x10\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    inner = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(inner)) + inner


def wav(
    rate: int = 16000,
    bits: int = 16,
    channels: int = 1,
    frames: bytes = b"\0\0" * 1600,
    declared: int | None = None,
    riff: int | None = None,
    fmt_tag: int = 1,
) -> bytes:
    """A WAV file whose header says what it is told to (`declared`: the data chunk's size)."""
    fmt = struct.pack(
        "<HHIIHH",
        fmt_tag,
        channels,
        rate,
        (rate * channels * bits // 8) & 0xFFFFFFFF,
        (channels * bits // 8) & 0xFFFF,
        bits,
    )
    size = len(frames) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size)
    body += frames
    return b"RIFF" + struct.pack("<I", len(body) if riff is None else riff) + body


@cache
def real_wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(i / 8))) for i in range(3200)
            )  # 0.2 s of a tone
        )
    return out.getvalue()


@cache
def streamed_webm(seconds: int = 60) -> bytes:
    """Opus in WebM written as a stream (a recorder's, a browser's MediaRecorder): no Duration
    element, so the container declares no length; at 6 kb/s an hour is 2 MB."""
    import av
    import numpy as np

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            self.data += b
            return len(b)

    pipe = Pipe()
    with av.open(pipe, "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.bit_rate = 6000
        silence = np.zeros((1, 960), dtype=np.float32)
        for i in range(seconds * 50):  # 20 ms frames
            frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 960
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return bytes(pipe.data)


IMAGES = st.sampled_from(["PNG", "JPEG", "WEBP", "GIF", "BMP"]).map(picture)
CRAFTED_PNGS = st.builds(
    png,
    width=INTERESTING,
    height=INTERESTING,
    depth=st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]),
    colour=st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
    idat=st.none() | st.binary(max_size=64),
    extra=st.lists(
        st.tuples(
            st.sampled_from([b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"PLTE", b"tRNS", b"acTL"]),
            st.binary(max_size=48),
        ),
        max_size=3,
    ).map(tuple),
)
IMAGE_BYTES = st.one_of(
    IMAGES.flatmap(lambda b: st.composite(lambda draw: mutate(draw, b, focus=64))()),
    IMAGES.flatmap(lambda b: st.composite(lambda draw: mutate(draw, b))()),
    CRAFTED_PNGS,
    st.builds(jpeg_with_size, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    st.builds(webp_with_canvas, st.integers(1, 1 << 24), st.integers(1, 1 << 24)),
    st.binary(max_size=256),
)

AUDIO_MAGIC = [b"fLaC", b"OggS", b"ID3\x03\0\0\0\0\0\0", b"\x1aE\xdf\xa3", b"\0\0\0\x18ftypmp42"]
CRAFTED_WAVS = st.builds(
    wav,
    rate=INTERESTING,
    bits=st.sampled_from([0, 1, 8, 16, 24, 32, 64, 0xFFFF]),
    channels=st.sampled_from([0, 1, 2, 8, 0xFFFF]),
    frames=st.binary(max_size=256),
    declared=st.none() | INTERESTING,
    riff=st.none() | INTERESTING,
    fmt_tag=st.sampled_from([1, 3, 0xFFFE, 0, 0x55, 0x11]),
)
AUDIO_BYTES = st.one_of(
    st.just(real_wav()).flatmap(lambda b: st.composite(lambda draw: mutate(draw, b, focus=48))()),
    st.just(streamed_webm(2)).flatmap(lambda b: st.composite(lambda draw: mutate(draw, b))()),
    CRAFTED_WAVS,
    st.builds(lambda m, t: m + t, st.sampled_from(AUDIO_MAGIC), st.binary(max_size=512)),
    st.builds(lambda h, t: bytes([0xFF, 0xE0 | (h & 0x1F)]) + t, st.integers(0, 255), st.binary()),
    st.binary(max_size=256),
)


# -- multipart --------------------------------------------------------------------------------

BOUNDARY_CHARS = string.ascii_letters + string.digits + "'()+_,-./:=? "
BOUNDARIES = st.text(BOUNDARY_CHARS, min_size=1, max_size=72)
FIELD_NAMES = st.sampled_from(
    ["file", "model", "purpose", "language", "a[]", "", "naïve"]
) | st.text(max_size=10)


def mostly(usual: st.SearchStrategy[T], odd: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """`usual` three times in four: most inputs should get past the first check."""
    return st.integers(0, 3).flatmap(lambda k: odd if k == 3 else usual)


DISPOSITIONS = mostly(
    st.sampled_from(['form-data; name="{n}"', 'form-data; name="{n}"; filename="{f}"']),
    st.sampled_from(
        [
            "form-data; name={n}; filename={f}",
            'form-data; name="{n}"; filename=""',
            "form-data; name*=utf-8''{n}",
            'form-data; filename="{f}"',
            'attachment; name="{n}"',
            "form-data",
            "",
            'form-data; name="{n}"; name="{n}"',
            'form-data; name="{n}\\"; filename="{f}\\',
        ]
    ),
)
PART_DATA = mostly(
    st.sampled_from(["batch", NULL_MODEL, "json", "en"]).map(str.encode)
    | st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200) | st.sampled_from([real_wav(), picture("PNG")]),
)


@st.composite
def multipart_part(draw: st.DrawFn) -> bytes:
    name = draw(FIELD_NAMES)
    filename = draw(st.sampled_from(["a.jsonl", "x.wav", "", "é.png"]) | st.text(max_size=12))
    headers = [
        "Content-Disposition: " + draw(DISPOSITIONS).replace("{n}", name).replace("{f}", filename)
    ]
    if draw(st.booleans()):
        headers.append("Content-Type: " + draw(st.sampled_from(["text/plain", "audio/wav", ""])))
    if draw(st.integers(0, 5)) == 5:
        encoding = draw(st.sampled_from(["binary", "8bit", "base64", "quoted-printable", "X"]))
        headers.append(f"Content-Transfer-Encoding: {encoding}")
    if draw(st.integers(0, 5)) == 5:
        headers.append(draw(st.text(max_size=30)))
    head = "\r\n".join(headers).encode("utf-8", "surrogatepass")
    return head + b"\r\n\r\n" + draw(PART_DATA)


@st.composite
def multipart_body(draw: st.DrawFn, form: tuple[bytes, ...] = ()) -> tuple[str, bytes]:
    """(content type, body): a near-valid multipart/form-data body, often mutated; `form`: the
    parts an endpoint needs, among the random ones (before any mutation)."""
    boundary = draw(
        mostly(st.just("----inferd-fuzz-1"), st.sampled_from(["x", "a" * 70]) | BOUNDARIES)
    )
    raw = boundary.encode()
    parts = draw(st.permutations([*draw(st.lists(multipart_part(), max_size=3)), *form]))
    body = draw(st.sampled_from([b"", b"preamble\r\n"]))
    for part in parts:
        body += b"--" + raw + b"\r\n" + part + b"\r\n"
    body += b"--" + raw + draw(st.sampled_from([b"--\r\n", b"--", b"", b"\r\n", b"--\r\nepilogue"]))
    if draw(st.integers(0, 3)) == 3:
        body = mutate(draw, body, max_ops=3)
    header_boundary = draw(
        mostly(st.just(boundary), st.sampled_from([f'"{boundary}"', "other", ""]))
    )
    content_type = draw(
        mostly(
            st.just("multipart/form-data; boundary={b}"),
            st.sampled_from(
                [
                    "multipart/form-data; boundary={b}; charset=utf-8",
                    "Multipart/Form-Data; BOUNDARY={b}",
                    "multipart/form-data",
                    "multipart/mixed; boundary={b}",
                    "multipart/form-data; boundary*=utf-8''{b}",
                ]
            ),
        )
    ).replace("{b}", header_boundary)
    if draw(st.integers(0, 9)) == 9:
        content_type = draw(st.text(st.characters(max_codepoint=255), max_size=60))
    return content_type, body


class RecordingSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.aborted, "written after abort"
        self.data += data

    def abort(self) -> None:
        self.aborted = True


def stream(
    content_type: str, body: bytes, piece: int, on_file: Callable[..., Any], **limits: int
) -> Any:
    """stream_multipart over a request whose body arrives in `piece`-byte chunks."""
    chunks = [body[i : i + piece] for i in range(0, len(body), piece)] or [b""]
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode()),
    ]

    async def receive() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return asyncio.run(stream_multipart(Request(scope, receive), on_file, **limits))


@fuzz(300)
@given(multipart_body(), st.sampled_from([1, 7, 64, 4096]))
def test_streamed_multipart(form: tuple[str, bytes], piece: int) -> None:
    content_type, body = form
    sinks: list[RecordingSink] = []

    def on_file(name: str, filename: str | None, kind: str | None) -> RecordingSink:
        assert isinstance(name, str) and isinstance(filename, str | None)
        sinks.append(RecordingSink())
        return sinks[-1]

    limits = {"max_bytes": 2048, "max_field_bytes": 64, "max_fields": 4, "max_files": 2}
    result = outcome(
        partial(stream, **limits), content_type, body, piece, on_file, refusal=MultipartError
    )
    if isinstance(result, MultipartError):
        client_error(result, (400, 413, 415))
        assert all(sink.aborted for sink in sinks), "a refused upload leaves no partial file"
        return
    assert len(result.fields) <= 4 and len(result.files) <= 2
    assert all(len(v.encode()) <= 64 for v in result.fields.values())
    for file in result.files:
        assert not file.sink.aborted and file.size == len(file.sink.data)


@fuzz(300)
@given(multipart_body())
def test_in_memory_multipart(form: tuple[str, bytes]) -> None:
    content_type, body = form
    result = outcome(parse_form, content_type, body, refusal=APIError)
    if isinstance(result, APIError):
        client_error(result, (400,))
        return
    for name, value in result.items():
        assert isinstance(name, str)
        for item in value if isinstance(value, list) else [value]:
            assert isinstance(item, str | bytes)
    # The gateway's entry for form bodies (JSON or multipart by content type).
    routed = outcome(Gateway.fields, content_type, body, refusal=APIError)
    assert isinstance(routed, dict | APIError)


@fuzz(150)
@given(st.text(max_size=600) | st.sampled_from(["", "file", "a" * 513, "x\x00.jsonl"]))
def test_upload_filenames(filename: str) -> None:
    sink = RecordingSink()
    store = SimpleNamespace(blobs=SimpleNamespace(writer=lambda _id: sink), upload_max_bytes=64)
    result = outcome(Upload(store, "acc_fuzz").start, filename or None, refusal=FileInvalid)  # type: ignore[arg-type]
    if isinstance(result, Upload):
        assert result.filename is not None
        storable(result.filename)


# -- images and audio -------------------------------------------------------------------------


@fuzz(400)
@given(IMAGE_BYTES)
def test_images(data: bytes) -> None:
    assert sniff_image(data) in (None, "png", "jpeg", "webp")
    result = outcome(check_decodes, data, "image", refusal=APIError)
    if isinstance(result, APIError):
        client_error(result, (400, 413))
    else:
        width, height = result
        assert width * height <= MAX_PIXELS
        if width * height <= 4_000_000:
            # What passes the gateway is decoded in a worker (the task models' `input_image`,
            # the vision LLM's processor likewise): a bad image is its EngineError (a 4xx).
            decoded = outcome(input_image, data, refusal=EngineError)
            assert isinstance(decoded, EngineError) or decoded.size == (width, height)


@pytest.mark.parametrize(
    "bomb",
    [
        pytest.param(png(100_000, 100_000), id="png-10G-pixels"),
        pytest.param(png(10_000, 10_000), id="png-100M-pixels"),
        pytest.param(png(0x7FFFFFFF, 0x7FFFFFFF, 16, 6), id="png-max-canvas"),
        pytest.param(jpeg_with_size(65_535, 65_535), id="jpeg-4G-pixels"),
        pytest.param(webp_with_canvas(1 << 24, 1 << 24), id="webp-max-canvas"),
    ],
)
def test_image_bombs_are_refused_cheaply(bomb: bytes) -> None:
    """A few hundred bytes declaring a canvas of gigapixels: 413 from the header, in
    milliseconds, without a pixel decoded."""
    assert len(bomb) < 1024
    started = time.monotonic()
    result = outcome(check_decodes, bomb, "image", refusal=APIError)
    assert isinstance(result, APIError) and result.status == 413, result
    assert result.code == "too_large"
    assert time.monotonic() - started < 2


def test_a_compressed_canvas_at_the_limit_is_checked_without_decoding() -> None:
    """8000 x 8000 black pixels (192 MB decoded) compress to ~190 kB: checking it reads the
    header and the chunks' CRCs only."""
    bomb = png(8000, 8000, idat=(b"\0" + b"\0" * 8000 * 3) * 8000)
    assert len(bomb) < 400_000
    started = time.monotonic()
    assert bounded(check_decodes, bomb, "image") == (8000, 8000)
    assert time.monotonic() - started < 5


def data_url(mime: str, payload: str, marker: str = ";base64") -> str:
    return f"data:{mime}{marker},{payload}"


@st.composite
def image_data_urls(draw: st.DrawFn) -> str:
    data = draw(IMAGE_BYTES)
    payload = draw(
        mostly(st.just("std"), st.sampled_from(["url", "unpadded", "spaced"])).map(
            lambda kind: {
                "std": base64.b64encode(data).decode(),
                "url": base64.urlsafe_b64encode(data).decode(),
                "unpadded": base64.b64encode(data).decode().rstrip("="),
                "spaced": " ".join(base64.b64encode(data).decode()),
            }[kind]
        )
    )
    if draw(st.integers(0, 5)) == 5:
        payload = mutate(draw, payload.encode(), max_ops=2).decode("latin-1")
    mime = draw(st.sampled_from(["image/png", "image/jpeg", "", "text/plain", "image/png;x=y"]))
    marker = draw(mostly(st.just(";base64"), st.sampled_from(["", ";BASE64", ";base64;x=y"])))
    return data_url(mime, payload, marker)


@pytest.fixture(scope="module")
def media() -> Iterator[MediaInputs]:
    inputs = MediaInputs(Settings(max_image_bytes=64 * 1024, max_audio_bytes=64 * 1024))
    yield inputs
    asyncio.run(inputs.aclose())


@fuzz(300)
@given(image_data_urls() | st.text(max_size=80).map(lambda t: "data:" + t))
def test_image_data_urls(media: MediaInputs, value: str) -> None:
    decoded = outcome(decode_data_url, value, "image", refusal=APIError)
    if isinstance(decoded, APIError):
        client_error(decoded, (400,))
    result = outcome(lambda: asyncio.run(media.image(value, "image")), refusal=APIError)
    if isinstance(result, APIError):
        client_error(result, (400, 413, 415))
    else:
        assert sniff_image(result) is not None


@fuzz(300)
@given(AUDIO_BYTES)
def test_audio(data: bytes) -> None:
    """The gateway's cheap duration check (a container header read, no decoding)."""
    assert sniff_audio(data) in (None, "wav", "flac", "ogg", "mp3", "webm", "mp4")
    seconds = bounded(audio_seconds, data)
    assert seconds is None or isinstance(seconds, float)
    result = outcome(check_audio_seconds, Settings(), data, "file", refusal=APIError)
    if isinstance(result, APIError):
        client_error(result, (400,))
        assert result.code == "over_cap"


@fuzz(150)
@given(AUDIO_BYTES, st.booleans())
def test_audio_inputs(media: MediaInputs, data: bytes, as_url: bool) -> None:
    value: str | bytes = data_url("audio/wav", base64.b64encode(data).decode()) if as_url else data
    result = outcome(lambda: asyncio.run(media.audio(value, "file")), refusal=APIError)
    if isinstance(result, APIError):
        client_error(result, (400, 413, 415))
    else:
        assert sniff_audio(result) is not None


def test_audio_without_a_declared_length_is_measured() -> None:
    """A minute of streamed Opus (30 kB) declares no length: its packets are counted, up to
    the cap, rather than passed to the model, which would decode it whole first (11 hours, the
    25 MB upload limit at this rate, are 2.5 GB of samples)."""
    audio = streamed_webm(60)
    assert sniff_audio(audio) == "webm" and len(audio) < 100_000
    assert bounded(audio_seconds, audio) == pytest.approx(60, abs=0.1)
    result = outcome(
        check_audio_seconds, Settings(max_audio_seconds=30), audio, "file", refusal=APIError
    )
    assert isinstance(result, APIError) and result.code == "over_cap"
    assert bounded(check_audio_seconds, Settings(max_audio_seconds=90), audio, "file") is None


@pytest.mark.parametrize(
    ("audio", "refused"),
    [
        # The data chunk claims 4 GiB; the file is 0.1 s: measured by what is there.
        pytest.param(wav(declared=0xFFFFFFFF, riff=0xFFFFFFFF), False, id="wav-claims-4GiB"),
        # 1 byte a second: the 100 kB the file holds last 28 hours.
        pytest.param(wav(rate=1, bits=8, frames=b"\x80" * 100_000), True, id="wav-1-hz"),
        # 25 MB (the upload limit) at 8 kHz, 8 bit: 52 minutes of audio.
        pytest.param(wav(rate=8000, bits=8, frames=b"\x80" * 25_000_000), True, id="wav-52-min"),
    ],
)
def test_audio_length_is_judged_cheaply(audio: bytes, refused: bool) -> None:
    started = time.monotonic()
    result = outcome(check_audio_seconds, Settings(), audio, "file", refusal=APIError)
    assert isinstance(result, APIError) == refused, result
    if refused:
        assert result.status == 400 and result.code == "over_cap"  # type: ignore[union-attr]
    assert time.monotonic() - started < 5


# -- JSONL batch input ------------------------------------------------------------------------

JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ENDPOINT = "/v1/chat/completions"


@st.composite
def batch_line(draw: st.DrawFn, model: str = NULL_MODEL) -> bytes:
    """One line of a batch input: a valid request with some fields replaced, or junk."""
    custom_id = draw(
        st.sampled_from(["req-1", "req-2", "", "x" * (MAX_CUSTOM_ID + 1), "a\x00b", "\ud800"])
        | st.text(max_size=12)
    )
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": ENDPOINT,
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": draw(st.text(max_size=20))}],
            "max_tokens": 2,
        },
    }
    for _ in range(draw(st.integers(0, 2))):
        path = draw(
            st.sampled_from(
                [
                    ("custom_id",),
                    ("method",),
                    ("url",),
                    ("body",),
                    ("body", "model"),
                    ("body", "messages"),
                    ("body", "max_tokens"),
                    ("body", "stream"),
                    ("body", "temperature"),
                    ("body", "n"),
                ]
            )
        )
        target = line
        for key in path[:-1]:
            target = target[key] if isinstance(target.get(key), dict) else target
        target[path[-1]] = draw(JSON_VALUES)
    kind = draw(st.integers(0, 9))
    if kind <= 5:
        return json.dumps(line, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if kind == 6:
        return mutate(draw, json.dumps(line).encode(), max_ops=3)
    if kind == 7:
        depth = draw(st.sampled_from([10, 900, 1100, 5000, 100_000]))
        return b'{"custom_id": "deep", "body": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == 8:
        return draw(
            st.sampled_from(
                [b"", b"   ", b"\r", b"NaN", b"\xef\xbb\xbf{}", b'{"a": Infinity}', b"[]", b"1e999"]
            )
        )
    return draw(st.binary(max_size=64))


@st.composite
def jsonl_file(draw: st.DrawFn) -> bytes:
    body = b"\n".join(draw(st.lists(batch_line(), max_size=8)))
    return body + draw(st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]))


def check_batch(data: bytes, piece: int, max_line_bytes: int) -> tuple[Checker, list[Any]]:
    """The batch service's validation loop over `data` read in `piece`-byte chunks."""
    gateway = SimpleNamespace(validate=Gateway.validate)
    checker = Checker(ENDPOINT, BatchLines(gateway).check_body)  # type: ignore[arg-type]
    chunks = iter([data[i : i + piece] for i in range(0, len(data), piece)])
    passed = []
    for number, raw in enumerate(lines(chunks, max_line_bytes), start=1):
        line = checker.line(raw, number)
        if line is not None:
            passed.append(line)
    checker.finish()
    return checker, passed


@fuzz(300)
@given(jsonl_file(), st.sampled_from([1, 5, 64, 1 << 20]), mostly(st.just(1 << 24), st.just(16)))
def test_jsonl_batch_input(data: bytes, piece: int, max_line_bytes: int) -> None:
    result = outcome(check_batch, data, piece, max_line_bytes, refusal=FileInvalid)
    if isinstance(result, FileInvalid):
        assert max_line_bytes < len(data)
        return
    checker, passed = result
    assert len(checker.errors) <= MAX_ERRORS and checker.error_count >= len(checker.errors)
    assert checker.count == len(passed)
    if not passed and not checker.errors:
        pytest.fail("an empty batch must fail validation")
    ids = [line.custom_id for line in passed]
    assert len(set(ids)) == len(ids)
    for line in passed:
        # What the service stores (the custom_id as text, the body as JSON) and replays (the
        # body through orjson, as an HTTP request).
        assert 0 < len(line.custom_id) <= MAX_CUSTOM_ID
        storable(line.custom_id)
        json.dumps(line.body, allow_nan=False)
        orjson.loads(orjson.dumps(line.body))
        assert line.body["model"] == checker.model
    for error in checker.errors:
        json.dumps(error.as_dict())


@fuzz(200)
@given(st.binary(max_size=300), st.integers(1, 64), st.integers(1, 128))
def test_file_lines(data: bytes, piece: int, max_line_bytes: int) -> None:
    """Every line comes back, split at `\\n` only, or the file is refused for a long line."""
    chunks = iter([data[i : i + piece] for i in range(0, len(data), piece)])
    result = outcome(lambda: list(lines(chunks, max_line_bytes)), refusal=FileInvalid)
    expected = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        expected.pop()
    if isinstance(result, FileInvalid):
        assert any(len(line) > max_line_bytes for line in expected)
    else:
        assert result == expected


# -- credentials ------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Authenticator, str, str]]:
    """An authenticator over a real database with one account and its key `fuzz`."""
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('fuzz-auth') / 'inferd.db'}")
    db.migrate()
    authenticator = Authenticator(db, KeyVault(b"f" * 32))
    account = authenticator.accounts.create_account("fuzz")
    key = authenticator.accounts.create_key(account.id, "fuzz").key
    yield authenticator, account.id, key
    db.close()


def sign(header: Any, claims: Any, key: str) -> str:
    """A compact JWS over any header and payload JSON (not only what PyJWT would write)."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = jwt.api_jws.get_algorithm_by_name("HS256").sign(
        signing_input.encode(), key.encode()
    )
    return signing_input + "." + b64url(signature)


CLAIM_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from([math.nan, math.inf, -math.inf, 10**30, 10**400, -1, 0, 1e308, "1", [], {}]),
)


@st.composite
def scoped_jwt(draw: st.DrawFn, account_id: str, key: str, key_name: str = "fuzz") -> str:
    """A scoped JWT signed with the account's key (so the claims are read) whose header and
    claims are near-valid, or a JWT-shaped string of random segments."""
    kind = draw(st.integers(0, 5))  # 0-3: signed (the simplest example too)
    if kind == 4:
        return draw(st.text(max_size=60))
    if kind == 5:
        segment = st.one_of(
            st.binary(max_size=40).map(b64url),
            JSON_VALUES.map(lambda v: b64url(json.dumps(v).encode())),
            st.text(max_size=20),
        )
        return ".".join(draw(st.lists(segment, min_size=1, max_size=5)))
    kid: Any = kid_for(account_id, key_name)  # mostly right: the claims are what is fuzzed
    if draw(st.integers(0, 3)) == 3:
        kid = draw(
            st.sampled_from(
                [
                    kid_for(account_id, "nope"),
                    account_id + ":/w==",  # not UTF-8
                    account_id + ":é",  # not ASCII
                    account_id + "\x00:ZnV6eg==",  # a NUL
                    "no-colon",
                ]
            )
            | st.text(max_size=20)
            | JSON_VALUES
        )
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT", "kid": kid}
    if draw(st.integers(0, 5)) == 5:
        header[draw(st.sampled_from(["alg", "typ", "crit", "b64", "x"]))] = draw(CLAIM_VALUES)
    now = int(time.time())
    claims: dict[str, Any] = {"sub": account_id, "exp": now + 3600}
    for name in draw(
        st.lists(
            st.sampled_from(
                [
                    "sub",
                    "exp",
                    "models",
                    "model",
                    "spending_limit",
                    "srv",
                    "jti",
                    "nbf",
                    "iat",
                    "aud",
                    "iss",
                ]
            ),
            max_size=4,
        )
    ):
        claims[name] = draw(
            CLAIM_VALUES
            | st.integers(-10, 30 * 86400).map(lambda ahead: now + ahead)
            | st.lists(st.text(max_size=8))
        )
    payload: Any = claims if draw(st.integers(0, 9)) < 9 else draw(JSON_VALUES)
    return sign(header, payload, key)


@fuzz(200)
@given(st.none() | st.text(max_size=40) | st.text(max_size=20).map(lambda t: "Bearer " + t))
def test_bearer(header: str | None) -> None:
    result = outcome(parse_bearer, header, refusal=AuthError)
    if isinstance(result, AuthError):
        client_error(result, (401,))
    else:
        assert result and result == result.strip()


@fuzz(200)
@given(JSON_VALUES | st.builds(lambda a, b: f"{a}:{b}", st.text(max_size=10), st.text(max_size=10)))
def test_kid(kid: Any) -> None:
    result = outcome(parse_kid, kid, refusal=AuthError)
    if isinstance(result, AuthError):
        client_error(result, (401,))
    else:
        account_id, key_name = result
        storable(account_id)
        storable(key_name)


@fuzz(300)
@given(st.data())
def test_scoped_jwts(auth: tuple[Authenticator, str, str], data: st.DataObject) -> None:
    authenticator, account_id, key = auth
    token = JWT_PREFIX + data.draw(scoped_jwt(account_id, key))
    result = outcome(authenticator.verify_jwt, token, refusal=AuthError)
    if isinstance(result, AuthError):
        client_error(result, (401,))
    else:
        scope = result.jwt
        assert result.account_id == account_id and scope is not None
        assert isinstance(scope.expires_at, int)
        assert scope.models is None or all(isinstance(m, str) for m in scope.models)
        limit = scope.spending_limit
        assert limit is None or (isinstance(limit, float) and math.isfinite(limit) and limit >= 0)
    caller = Principal(account_id, "fuzz", False, None, None)
    inspected = outcome(inspect, authenticator, caller, token, refusal=ScopedJwtError)
    if isinstance(inspected, ScopedJwtError):
        assert 400 <= inspected.status < 500
    else:
        assert not isinstance(result, AuthError), "inspect accepts what verify refuses"
        json.dumps(inspected, allow_nan=False)


# -- end to end -------------------------------------------------------------------------------

E2E = settings(SETTINGS, max_examples=25, deadline=timedelta(seconds=60))


def sendable(value: str) -> bool:
    """A header value HTTP/1.1 can carry (h11 refuses the rest before anything is sent)."""
    return value == value.strip() and all(0x20 <= ord(c) <= 0xFF and c != "\x7f" for c in value)


def refused_or_served(response: httpx.Response) -> None:
    if response.status_code >= 400:
        assert response.headers.get("content-type") == "application/json", (
            response.status_code,
            response.headers,
            response.text[:300],
        )
    if currently_in_test_context():
        error = response.json().get("error") if response.status_code >= 400 else None
        reason = f" {error['message'][:40]}" if isinstance(error, dict) else ""
        event(f"{response.request.url.path}: {response.status_code}{reason}")
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"]


@pytest.fixture(scope="module")
def null_http(null_server: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=null_server.url, headers=headers, timeout=60) as http:
        yield http


def still_serving(server: Server, http: httpx.Client, model: str = NULL_MODEL) -> None:
    """A normal request succeeds, and nothing is left in flight."""
    r = http.post(
        "/v1/openai/chat/completions",
        json={"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while server.metric("inferd_queue_depth", model) != 0:
        assert time.monotonic() < deadline, "a request is still in flight"
        time.sleep(0.2)


def field(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"Content-Disposition: {disposition}\r\n\r\n".encode() + value


UPLOAD_FORM = (field("purpose", b"batch"), field("file", b'{"custom_id": "a"}\n', "in.jsonl"))
TRANSCRIPTION_FORM = (field("model", NULL_MODEL.encode()), field("file", real_wav(), "a.wav"))


@E2E
@given(multipart_body(UPLOAD_FORM), multipart_body(TRANSCRIPTION_FORM))
def test_e2e_multipart(
    null_http: httpx.Client, upload: tuple[str, bytes], transcription: tuple[str, bytes]
) -> None:
    """POST /v1/files streams the form; the transcription endpoint parses it in memory (the
    null server has no speech model: a valid form ends in a 4xx after parsing)."""
    for path, (content_type, body) in (
        ("/v1/files", upload),
        ("/v1/openai/audio/transcriptions", transcription),
    ):
        assume(sendable(content_type))
        headers = {"Content-Type": content_type.encode("latin-1")}
        response = null_http.post(path, content=body, headers=headers)  # type: ignore[arg-type]
        refused_or_served(response)
        if path == "/v1/files" and response.status_code == 200:
            assert null_http.delete(f"/v1/files/{response.json()['id']}").status_code == 200


def test_e2e_multipart_leaves_the_server_serving(
    null_server: Server, null_http: httpx.Client
) -> None:
    still_serving(null_server, null_http)


@settings(E2E, max_examples=6)
@given(jsonl_file())
def test_e2e_jsonl_batches(null_http: httpx.Client, data: bytes) -> None:
    """An uploaded JSONL file, valid or not, makes a batch that ends (never stuck validating)."""
    files = {"file": ("input.jsonl", data, "application/jsonl")}
    upload = null_http.post("/v1/openai/files", files=files, data={"purpose": "batch"})
    refused_or_served(upload)
    if upload.status_code != 200:
        assert not data, upload.text  # the only refusal of a well-formed upload: empty file
        return
    created = null_http.post(
        "/v1/openai/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": ENDPOINT,
            "completion_window": "24h",
        },
    )
    refused_or_served(created)
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 60
    while True:
        batch = null_http.get(f"/v1/openai/batches/{created.json()['id']}").json()
        if batch["status"] in ("completed", "failed"):
            break
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)


def test_e2e_batch_lines_the_checker_used_to_crash_on(null_http: httpx.Client) -> None:
    """Found by the pass above: nesting past the standard parser's recursion limit crashed the
    validation job (the batch sat in `validating` through every retry); a lone surrogate
    passed validation, then failed every replay of its line; a NUL in `custom_id` broke
    PostgreSQL's insert. Now they are errors of their lines, and the batch fails."""

    def line(custom_id: str, content: str = "hi") -> bytes:
        body = {"model": NULL_MODEL, "messages": [{"role": "user", "content": content}]}
        item = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
        return json.dumps(item).encode()

    data = b"\n".join(
        [
            line("ok"),
            line("deep").replace(b'"hi"', b"[" * 100_000 + b"]" * 100_000),
            line("nul\x00id"),
            line("lone", "\ud800"),
        ]
    )
    files = {"file": ("input.jsonl", data, "application/jsonl")}
    upload = null_http.post("/v1/openai/files", files=files, data={"purpose": "batch"})
    assert upload.status_code == 200, upload.text
    created = null_http.post(
        "/v1/openai/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": ENDPOINT,
            "completion_window": "24h",
        },
    )
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 60
    while (batch := null_http.get(f"/v1/openai/batches/{created.json()['id']}").json())[
        "status"
    ] not in ("completed", "failed"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
    assert batch["status"] == "failed", batch
    errors = {(e["line"], e["code"]) for e in batch["errors"]["data"]}
    assert errors == {
        (2, "invalid_json_line"),
        (3, "missing_required_parameter"),
        (4, "invalid_json_line"),
    }


@pytest.fixture(scope="module")
def admin_kid(null_http: httpx.Client) -> str:
    minted = null_http.post("/v1/scoped-jwt", json={"api_key_name": "auto"})
    assert minted.status_code == 200, minted.text
    return jwt.get_unverified_header(minted.json()["token"][len(JWT_PREFIX) :])["kid"]


HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
).map(str.strip)


@E2E
@given(st.data())
def test_e2e_authorization(
    null_server: Server, null_http: httpx.Client, admin_kid: str, data: st.DataObject
) -> None:
    account_id = admin_kid.rpartition(":")[0]
    signed = data.draw(st.integers(0, 2)) < 2
    if signed:
        token = data.draw(scoped_jwt(account_id, ADMIN_KEY, "auto"))
        header = "Bearer " + JWT_PREFIX + token.strip()
        assume(sendable(header))
    else:
        header = data.draw(HEADER_TEXT)
    assume(header)
    chat = null_http.post(
        "/v1/openai/chat/completions",
        json={"model": NULL_MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": header.encode("latin-1")},  # type: ignore[dict-item]
    )
    refused_or_served(chat)
    if signed:
        token = header[len("Bearer ") :]
        decoded = null_http.get("/v1/scoped-jwt", params={"jwtoken": token})
        refused_or_served(decoded)


def test_e2e_scoped_jwts_that_used_to_be_500(null_http: httpx.Client, admin_kid: str) -> None:
    """Found by the pass above, each a 500 before: a `kid` whose key name is not ASCII, and
    self-signed claims of the wrong type (`models` a number, `spending_limit` a list)."""
    account_id = admin_kid.rpartition(":")[0]
    exp = int(time.time()) + 600
    header = {"alg": "HS256", "typ": "JWT", "kid": admin_kid}
    tokens = [
        sign({**header, "kid": account_id + ":é"}, {"sub": account_id, "exp": exp}, ADMIN_KEY),
        sign(header, {"sub": account_id, "exp": exp, "models": 5}, ADMIN_KEY),
        sign(header, {"sub": account_id, "exp": exp, "spending_limit": []}, ADMIN_KEY),
        sign(header, {"sub": account_id, "exp": exp, "spending_limit": 10**400}, ADMIN_KEY),
    ]
    for token in tokens:
        chat = null_http.post(
            "/v1/openai/chat/completions",
            json={"model": NULL_MODEL, "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {JWT_PREFIX}{token}"},
        )
        assert chat.status_code == 401, chat.text
        assert chat.json()["error"]["code"] == "invalid_api_key"


def test_e2e_authorization_leaves_the_server_serving(
    null_server: Server, null_http: httpx.Client
) -> None:
    still_serving(null_server, null_http)


# Real models for the media endpoints: a handful of examples on the shared server.
MEDIA = settings(SETTINGS, max_examples=6, deadline=timedelta(seconds=120))


@pytest.fixture(scope="module")
def media_http(server: Server) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as http:
        yield http


def vision_chat(http: httpx.Client, url: str) -> httpx.Response:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]
    return http.post(
        "/v1/openai/chat/completions",
        json={
            "model": VISION_MODEL,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": content}],
        },
    )


@MEDIA
@given(image_data_urls())
def test_e2e_images(media_http: httpx.Client, url: str) -> None:
    refused_or_served(vision_chat(media_http, url))


@MEDIA
@given(AUDIO_BYTES)
def test_e2e_audio(media_http: httpx.Client, audio: bytes) -> None:
    response = media_http.post(
        "/v1/openai/audio/transcriptions",
        files={"file": ("audio.wav", audio, "audio/wav")},
        data={"model": "openai/whisper-tiny.en"},
    )
    refused_or_served(response)


def test_e2e_media_bombs_and_the_server_still_serves(
    server: Server, media_http: httpx.Client
) -> None:
    for bomb in (png(100_000, 100_000), jpeg_with_size(65_535, 65_535)):
        response = vision_chat(media_http, data_url("image/png", base64.b64encode(bomb).decode()))
        assert response.status_code == 413, response.text
    still_serving(server, media_http, VISION_MODEL)
