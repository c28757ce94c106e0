"""No prompt, output or embedding reaches disk, the database or a log line."""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
from openai import OpenAI
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from tests.conftest import CHAT_MODEL, EMBED_MODEL, VISION_MODEL, MediaServer, Server

CANARY = "zebracanary7Q4x"


def files_under(root: Path, since: float | None = None):
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                if path.is_symlink() or not path.is_file():
                    continue
                if since is not None and path.stat().st_mtime < since:
                    continue
                if path.stat().st_size > 200 * 1024 * 1024:
                    continue
                yield path
            except OSError:
                continue


def test_canary_goes_nowhere(
    server: Server, client: OpenAI, http: httpx.Client, media_server: MediaServer
) -> None:
    started = time.time() - 1
    say = f"Please repeat the word {CANARY} exactly: {CANARY}"
    chat = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "system", "content": CANARY}, {"role": "user", "content": say}],
        max_tokens=24,
        stop=["."],
    )
    outputs = [chat.choices[0].message.content]
    for chunk in client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": say}], max_tokens=24, stream=True
    ):
        if chunk.choices:
            outputs.append(chunk.choices[0].delta.content or "")
    outputs.append(
        client.completions.create(model=CHAT_MODEL, prompt=say, max_tokens=24, stop=[CANARY[:5]])
        .choices[0]
        .text
    )
    for _ in client.completions.create(model=CHAT_MODEL, prompt=say, max_tokens=8, stream=True):
        pass
    client.embeddings.create(model=EMBED_MODEL, input=[CANARY, say])
    native = http.post(f"/v1/inference/{CHAT_MODEL}", json={"input": say, "stop": [CANARY]})
    outputs.append(native.json()["results"][0]["generated_text"])
    with http.stream(
        "POST",
        f"/v1/inference/{CHAT_MODEL}",
        json={"input": say, "stream": True, "max_new_tokens": 16},
    ) as r:
        for line in r.iter_lines():
            if line:
                outputs.append(json.loads(line[6:])["token"]["text"])
    http.post(f"/v1/inference/{EMBED_MODEL}", json={"inputs": [CANARY]})
    # Vision: the canary in the text and inside the image file (a PNG text chunk), sent as a
    # data URL and fetched from a URL.
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", CANARY)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "PNG", pnginfo=info)
    fetched = media_server.add("canary.png", buf.getvalue(), "image/png")
    inline = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    for url in (inline, fetched):
        parts = [{"type": "text", "text": say}, {"type": "image_url", "image_url": {"url": url}}]
        vision = client.chat.completions.create(
            model=VISION_MODEL, messages=[{"role": "user", "content": parts}], max_tokens=8
        )
        outputs.append(vision.choices[0].message.content)
    # Every task: text inputs carry the canary; the OCR image shows it and carries it in a PNG
    # text chunk; speech is synthesised from it and transcribed back; uploads go as multipart.
    spoken = http.post(
        "/v1/inference/rhasspy/piper-en_US-joe-medium", json={"text": f"Say {CANARY} now."}
    ).json()["audio"]
    heard = http.post("/v1/inference/openai/whisper-tiny.en", json={"audio": spoken}).json()
    outputs.append(heard["text"])
    page = Image.new("RGB", (520, 100), "white")
    ImageDraw.Draw(page).text((20, 30), CANARY, fill="black", font=ImageFont.load_default(36))
    scan = io.BytesIO()
    page.save(scan, "PNG", pnginfo=info)
    read = http.post(
        "/v1/inference/rapidocr/PP-OCRv4", files={"image": ("scan.png", scan.getvalue())}
    )
    outputs.append(read.json()["text"])
    for model, body in [
        ("spacy/en_core_web_sm", {"input": say}),
        ("vader/sentiment", {"input": say}),
        ("inferd/bert-tiny-mlm", {"input": f"{CANARY} [MASK]"}),
        (
            "sentence-transformers/all-MiniLM-L6-v2-reranker",
            {"queries": [CANARY], "documents": [say]},
        ),
        ("inferd/stable-diffusion-tiny", {"prompt": say, "width": 64, "height": 64}),
        ("inferd/clip-tiny", {"image": inline, "candidate_labels": [CANARY]}),
    ]:
        answer = http.post(f"/v1/inference/{model}", json=body)
        assert answer.status_code == 200, answer.text
    # LLM features: tools, structured output, logprobs with echo.
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string", "maxLength": 40}},
                "required": ["q"],
            },
        },
    }
    called = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": say}],
        tools=[tool],
        tool_choice="required",
        max_tokens=40,
    )
    outputs.append(called.choices[0].message.tool_calls[0].function.arguments)
    structured = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": say}],
        max_tokens=60,
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "x",
                "schema": {
                    "type": "object",
                    "properties": {"word": {"type": "string", "maxLength": 30}},
                    "required": ["word"],
                },
            },
        },
        logprobs=True,
        top_logprobs=2,
    )
    outputs.append(structured.choices[0].message.content)
    client.completions.create(model=CHAT_MODEL, prompt=say, max_tokens=4, echo=True, logprobs=1)
    # A scoped JWT carrying the canary as its model restriction, and its use.
    minted = http.post(
        "/v1/scoped-jwt",
        json={
            "api_key_name": next(k["name"] for k in http.get("/v1/api-tokens").json()),
            "models": [CANARY],
        },
    ).json()
    httpx.post(
        f"{server.url}/v1/openai/chat/completions",
        headers={"Authorization": f"Bearer {minted['token']}"},
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": CANARY}]},
    )
    # Error paths too: a refused request must not log its content either.
    http.post(
        "/v1/openai/chat/completions",
        json={"model": CHAT_MODEL, "messages": [{"role": "wizard", "content": CANARY}]},
    )
    http.post(
        "/v1/openai/chat/completions",
        json={
            "model": CHAT_MODEL,
            "max_tokens": 4000,
            "messages": [{"role": "user", "content": (CANARY + " ") * 600}],
        },
    )
    http.post(f"/v1/inference/{CHAT_MODEL}", content=f'{{"input": "{CANARY}'.encode())

    time.sleep(0.5)
    # Outputs echo the canary sometimes; the model's own words are protected the same way.
    needles = {CANARY.encode()} | {o.encode() for o in outputs if len(o) >= 12}
    places = [server.home, server.tmp, server.log_path.parent]
    hits = []
    for root in places:
        for path in files_under(root):
            data = path.read_bytes()
            hits += [str(path) for n in needles if n in data]
    for path in files_under(Path(tempfile.gettempdir()), since=started):
        data = path.read_bytes()
        hits += [str(path) for n in needles if n in data]
    assert not hits, f"content found on disk: {sorted(set(hits))}"
    assert "request" in server.log_text()  # the logs exist and carry metadata
