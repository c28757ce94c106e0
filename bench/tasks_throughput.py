"""Every unary task: requests/s at concurrency 8 through inferd (HTTP, JSON with data URLs)
vs. the same TaskModel called directly in one process (run_batch over batches of up to 8,
the engine's own best case). One inferd serves all task models; tasks run one after another.

Target: >= 0.9x per task. Tasks that answer in microseconds (VADER) are bounded by the gateway,
so they are also measured against the null model through the same server: >= 0.8x its
requests/s.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import sys
import time
from importlib import resources

from bench.common import BENCH_KEY, closed_loop, free_port, start_inferd
from inferd.catalog import Catalog
from inferd.weights.resolve import resolve_weights

CONCURRENCY = 8
NULL_MODEL = """
[[models]]
name = "bench/null"
task = "text-generation"
engine = "null"
"""
GATEWAY_BOUND = "vader/sentiment"
SECONDS = float(os.environ.get("TASK_SECONDS", "8"))


def _png_text(text: str) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (420, 90), "white")
    ImageDraw.Draw(image).text((15, 25), text, fill="black", font=ImageFont.load_default(32))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _speech() -> bytes:
    import wave

    from piper import PiperVoice

    spec = Catalog.load(None).resolve("rhasspy/piper-en_US-joe-medium")
    voice = PiperVoice.load(str(resolve_weights(spec.weights)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        voice.synthesize_wav("The quick brown fox jumps over the lazy dog.", w)
    return buf.getvalue()


def _photo() -> bytes:
    import sklearn.datasets

    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    return open(os.path.join(folder, "flower.jpg"), "rb").read()


def cases() -> dict[str, tuple[dict, dict]]:
    """model → (HTTP body, engine inputs): the same request both ways."""
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    speech, photo, scan = _speech(), _photo(), _png_text("Invoice 4711 paid")
    sentence = "My name is John Doe and I live in San Francisco."
    table = {
        "openai/whisper-tiny.en": ({"audio": speech}, "audio", "audio/wav"),
        "rhasspy/piper-en_US-joe-medium": ({"text": sentence}, None, None),
        "rapidocr/PP-OCRv4": ({"image": scan}, "image", "image/png"),
        "spacy/en_core_web_sm": ({"input": sentence}, None, None),
        "google/efficientnet-lite0": ({"image": photo}, "image", "image/jpeg"),
        "vader/sentiment": ({"input": "I love it, wonderful!"}, None, None),
        "sentence-transformers/all-MiniLM-L6-v2-reranker": (
            {"queries": ["capital of France"], "documents": [sentence, "Paris is in France."]},
            None,
            None,
        ),
        "inferd/stable-diffusion-tiny": (
            {"prompt": "a fox", "width": 64, "height": 64},
            None,
            None,
        ),
        "inferd/bert-tiny-mlm": ({"input": "I need my [MASK] now."}, None, None),
        "inferd/clip-tiny": (
            {"image": photo, "candidate_labels": ["dog", "flower"]},
            "image",
            "image/jpeg",
        ),
        "inferd/yolos-tiny": ({"image": photo}, "image", "image/jpeg"),
    }
    out = {}
    for model, (inputs, media, kind) in table.items():
        http = dict(inputs)
        if media:
            http[media] = f"data:{kind};base64,{b64(inputs[media])}"
        out[model] = (http, inputs)
    return out


def direct(model: str, inputs: dict) -> float:
    from inferd.engines.tasks import load_task_model
    from inferd.requests import TASK_TYPES

    spec = Catalog.load(None).resolve(model)
    task_model = load_task_model(spec, resolve_weights(spec.weights))
    batch = [TASK_TYPES[spec.task](**inputs)] * min(CONCURRENCY, task_model.max_batch)
    task_model.run_batch(batch)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        task_model.run_batch(batch)
        done += len(batch)
    return done / (time.perf_counter() - started)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    only = set(sys.argv[1:])
    table = {m: c for m, c in cases().items() if not only or m in only}
    # The default catalog as shipped: the chat models idle while the tasks run.
    catalog = resources.files("inferd.catalog").joinpath("default.toml").read_text()
    catalog += NULL_MODEL
    port = free_port()
    server = start_inferd(catalog, port)
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    ours = {}
    try:
        for model, (body, _) in table.items():
            path = f"/v1/inference/{model}"
            asyncio.run(closed_loop(port, path, body, headers, 1, 0.5))  # warm-up
            ours[model] = asyncio.run(
                closed_loop(port, path, body, headers, CONCURRENCY, SECONDS)
            ).rps
        null_body = {"input": "hello", "max_new_tokens": 1}
        null_rps = asyncio.run(
            closed_loop(port, "/v1/inference/bench/null", null_body, headers, CONCURRENCY, SECONDS)
        ).rps
    finally:
        server.stop()
    if GATEWAY_BOUND in ours:
        print(
            f"gateway-bound: {GATEWAY_BOUND} {ours[GATEWAY_BOUND]:.0f} req/s vs the null model "
            f"{null_rps:.0f} req/s through the same server: "
            f"{ours[GATEWAY_BOUND] / null_rps:.2f}x (target >= 0.8x)"
        )
    print(
        f"tasks: requests/s at concurrency {CONCURRENCY}, inferd (HTTP) vs. the task model "
        f"in-process (run_batch), {SECONDS:g} s each (target >= 0.9x)"
    )
    for model, (_, inputs) in table.items():
        theirs = direct(model, inputs)
        print(
            f"  {model:50s} inferd {ours[model]:8.1f}   direct {theirs:8.1f}   "
            f"ratio {ours[model] / theirs:.2f}x"
        )


if __name__ == "__main__":
    main()
