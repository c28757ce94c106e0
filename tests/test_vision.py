"""Vision chat: image_url parts (data URLs and fetched URLs), image tokens in usage, the SSRF
guard, bad images, and models without vision refusing by name. Against the tiny SmolVLM of
the default catalog, served by the same transformers code that serves real SmolVLM folders."""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from openai import BadRequestError, OpenAI
from PIL import Image

from tests.conftest import CHAT_MODEL, VISION_MODEL, MediaServer, Server

# Each image becomes <fake_token_around_image><global-img>, 16 x <image>, <fake_token_around_image>.
TOKENS_PER_IMAGE = 19


def picture(fmt: str, size: tuple[int, int] = (96, 64), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def data_url(data: bytes, kind: str) -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


def ask(client: OpenAI, images: list[str], **kw):
    content = [{"type": "text", "text": "What is the capital of France?"}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in images]
    return client.chat.completions.create(
        model=VISION_MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=12,
        temperature=0,
        **kw,
    )


def test_multi_image_request_counts_image_tokens(client: OpenAI) -> None:
    text_only = ask(client, [])
    images = [
        data_url(picture("PNG"), "image/png"),
        data_url(picture("JPEG", (300, 200), (10, 200, 10)), "image/jpeg"),
        data_url(picture("WEBP", (40, 90)), "image/webp"),
    ]
    reply = ask(client, images)
    # The decoder is SmolLM2's real weights: images in the prompt leave its knowledge intact.
    assert "Paris" in reply.choices[0].message.content
    added = reply.usage.prompt_tokens - text_only.usage.prompt_tokens
    assert added == 3 * TOKENS_PER_IMAGE


def test_image_by_url_and_streaming(client: OpenAI, media_server: MediaServer) -> None:
    url = media_server.add("cat.png", picture("PNG"), "image/png")
    redirect = f"{media_server.url}/redirect?to={url}"
    reply = ask(client, [url])
    stream = ask(client, [redirect], stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content  # same greedy decode either way
    assert chunks[-1].usage.prompt_tokens == reply.usage.prompt_tokens


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/x.png",  # loopback, another port than the allowed one
        "http://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
        "http://10.1.2.3/x.png",  # private
        "http://[::1]/x.png",
        "http://0.0.0.0/x.png",
    ],
)
def test_ssrf_guard_refuses_internal_addresses(client: OpenAI, url: str) -> None:
    with pytest.raises(BadRequestError) as exc:
        ask(client, [url])
    assert exc.value.code == "url_not_allowed"


def test_redirect_to_internal_address_is_refused(
    client: OpenAI, server: Server, media_server: MediaServer
) -> None:
    sneaky = f"{media_server.url}/redirect?to=http://127.0.0.1:{server.port}/healthz"
    with pytest.raises(BadRequestError) as exc:
        ask(client, [sneaky])
    assert exc.value.code == "url_not_allowed"


def test_bad_images(http: httpx.Client, media_server: MediaServer) -> None:
    def send(url: str) -> httpx.Response:
        content = [{"type": "image_url", "image_url": {"url": url}}]
        return http.post(
            "/v1/openai/chat/completions",
            json={"model": VISION_MODEL, "messages": [{"role": "user", "content": content}]},
        )

    gif = send(data_url(picture("GIF"), "image/gif"))
    assert gif.status_code == 415 and gif.json()["error"]["code"] == "unsupported_media_type"
    truncated = send(data_url(picture("JPEG", (300, 200))[:400], "image/jpeg"))
    assert truncated.status_code == 400 and "decoded" in truncated.json()["error"]["message"]
    broken = send(data_url(picture("PNG")[:40], "image/png"))
    assert broken.status_code == 400 and "decoded" in broken.json()["error"]["message"]
    not_b64 = send("data:image/png;base64,@@@")
    assert not_b64.status_code == 400 and "base64" in not_b64.json()["error"]["message"]
    big = send(data_url(picture("PNG") + b"\0" * (3 * 1024 * 1024), "image/png"))
    assert big.status_code == 413
    missing = send(f"{media_server.url}/nope.png")
    assert missing.status_code == 400 and "404" in missing.json()["error"]["message"]
    scheme = send("file:///etc/passwd")
    assert scheme.status_code == 400
    for response in (gif, broken, not_b64, big, missing, scheme):
        assert response.json()["error"]["param"].startswith("messages")


def test_models_without_vision_refuse_images_by_name(client: OpenAI, http: httpx.Client) -> None:
    with pytest.raises(BadRequestError) as exc:
        client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_url(picture("PNG"), "")}}
                    ],
                }
            ],
        )
    assert exc.value.code == "unsupported_feature" and "vision" in str(exc.value)
    assert "vision" in http.get(f"/models/{VISION_MODEL}").json()["tags"]
    assert "vision" not in http.get(f"/models/{CHAT_MODEL}").json()["tags"]
    assert "tools" in http.get(f"/models/{CHAT_MODEL}").json()["tags"]


def test_tools_and_json_with_an_image(client: OpenAI) -> None:
    import json

    reply = ask(
        client,
        [data_url(picture("PNG"), "image/png")],
        response_format={"type": "json_object"},
    )
    # max_tokens=12 may cut the object; the closing mode still makes it parse.
    json.loads(reply.choices[0].message.content)


def test_slow_url_times_out(client: OpenAI, media_server: MediaServer) -> None:
    started = time.monotonic()
    with pytest.raises(BadRequestError) as exc:
        ask(client, [f"{media_server.url}/slow?s=6"])  # fetch_timeout_s is 2 on the test server
    assert exc.value.code == "fetch_timeout"
    assert time.monotonic() - started < 5
