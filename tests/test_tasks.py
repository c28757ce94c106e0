"""Every unary task on the native API and the OpenAI audio routes, with real models on real
input: speech synthesised by the TTS voice is transcribed back to its words, a rendered text
image is read back by OCR, known entities, a known photo, JSON and multipart bodies, and every
bad-input case (400 naming the field, 415 format, 413 size)."""

from __future__ import annotations

import base64
import difflib
import io
import os
import re
import wave

import httpx
import pytest
import sklearn.datasets
from openai import BadRequestError, OpenAI
from PIL import Image, ImageDraw, ImageFont

from tests.conftest import MediaServer

ASR = "openai/whisper-tiny.en"
TTS = "rhasspy/piper-en_US-joe-medium"
OCR = "rapidocr/PP-OCRv4"
NER = "spacy/en_core_web_sm"
IMAGE_CLS = "google/efficientnet-lite0"
TEXT_CLS = "vader/sentiment"
RERANK = "sentence-transformers/all-MiniLM-L6-v2-reranker"
SENTENCE = "The quick brown fox jumps over the lazy dog."
FLOWER = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", "flower.jpg")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def heard(text: str) -> bool:
    """The transcript holds SENTENCE's words. Piper samples its prosody (noise_scale), so a
    word may come out slurred for whisper tiny: 8 of the 9 words must match, in order."""
    matcher = difflib.SequenceMatcher(None, words(text), words(SENTENCE))
    return sum(block.size for block in matcher.get_matching_blocks()) >= len(words(SENTENCE)) - 1


def data_url(data: bytes, kind: str) -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def spoken(http: httpx.Client) -> bytes:
    """SENTENCE as WAV from the TTS model, through the native API."""
    r = http.post(f"/v1/inference/{TTS}", json={"text": SENTENCE, "format": "wav"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["inference_status"]["status"] == "succeeded"
    assert body["inference_status"]["cost"] > 0
    header, _, payload = body["audio"].partition(",")
    assert header == "data:audio/wav;base64"
    return base64.b64decode(payload)


def text_image(text: str) -> bytes:
    image = Image.new("RGB", (520, 110), "white")
    ImageDraw.Draw(image).text((20, 30), text, fill="black", font=ImageFont.load_default(36))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_speech_round_trip_json(http: httpx.Client, spoken: bytes) -> None:
    with wave.open(io.BytesIO(spoken)) as w:
        assert w.getframerate() == 22050 and w.getnframes() > 22050  # over a second of speech
    r = http.post(
        f"/v1/inference/{ASR}",
        json={"audio": data_url(spoken, "audio/wav"), "word_timestamps": True},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert heard(body["text"])
    assert body["language"] == "en"
    segment = body["segments"][0]
    assert 0 <= segment["start"] < segment["end"] <= body["duration"] + 0.5
    assert heard("".join(w["word"] for w in segment["words"]))
    assert all(w["start"] <= w["end"] for w in segment["words"])
    status = body["inference_status"]
    assert status["cost"] == pytest.approx(body["duration"] * 0.0001, rel=1e-3)
    assert status["runtime_ms"] >= 0 and body["request_id"]


def test_speech_recognition_multipart_and_url(
    http: httpx.Client, spoken: bytes, media_server: MediaServer
) -> None:
    r = http.post(f"/v1/inference/{ASR}", files={"audio": ("fox.wav", spoken, "audio/wav")})
    assert r.status_code == 200, r.text
    assert heard(r.json()["text"])
    url = media_server.add("fox.wav", spoken, "audio/wav")
    r = http.post(f"/v1/inference/{ASR}", json={"audio": url})
    assert heard(r.json()["text"])


def test_openai_sdk_speech_and_transcription(client: OpenAI) -> None:
    speech = client.audio.speech.create(
        model=TTS, voice="joe", input=SENTENCE, response_format="mp3"
    )
    mp3 = speech.read()
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF
    transcript = client.audio.transcriptions.create(
        model=ASR, file=("speech.mp3", mp3, "audio/mpeg")
    )
    assert heard(transcript.text)
    verbose = client.audio.transcriptions.create(
        model=ASR,
        file=("speech.mp3", mp3),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.language == "en" and verbose.duration > 1
    assert heard(" ".join(w.word for w in verbose.words))
    srt = client.audio.transcriptions.create(model=ASR, file=("a.mp3", mp3), response_format="srt")
    assert "00:00:00," in srt and "-->" in srt
    with pytest.raises(BadRequestError) as exc:
        client.audio.speech.create(model=TTS, voice="joe", input="hi", response_format="opus")
    assert "response_format" in str(exc.value)


def test_ocr_reads_rendered_text(http: httpx.Client) -> None:
    image = text_image("Invoice 4711 paid")
    for request in (
        {"json": {"image": data_url(image, "image/png")}},
        {"files": {"image": ("scan.png", image, "image/png")}},
    ):
        r = http.post(f"/v1/inference/{OCR}", **request)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["text"] == "Invoice 4711 paid"
        assert len(body["lines"][0]["box"]) == 4 and body["lines"][0]["score"] > 0.9


def test_named_entities_of_a_known_sentence(http: httpx.Client) -> None:
    sentence = "My name is John Doe and I live in San Francisco."
    r = http.post(f"/v1/inference/{NER}", json={"input": sentence})
    assert r.status_code == 200, r.text
    found = {(e["entity_group"], e["word"]) for e in r.json()["results"]}
    assert found == {("PERSON", "John Doe"), ("GPE", "San Francisco")}
    for entity in r.json()["results"]:
        assert sentence[entity["start"] : entity["end"]] == entity["word"]
    assert r.json()["inference_status"]["tokens_input"] == 12


def test_image_classification_of_a_known_photo(http: httpx.Client) -> None:
    photo = open(FLOWER, "rb").read()  # noqa: SIM115 - a test fixture file
    r = http.post(
        f"/v1/inference/{IMAGE_CLS}",
        files={"image": ("flower.jpg", photo, "image/jpeg")},
        data={"top_k": "3"},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3 and results[0]["label"] == "daisy"
    assert results[0]["score"] >= results[1]["score"] >= results[2]["score"]


def test_text_classification_and_reranking(http: httpx.Client) -> None:
    good = http.post(f"/v1/inference/{TEXT_CLS}", json={"input": "I love it, wonderful!"})
    bad = http.post(f"/v1/inference/{TEXT_CLS}", json={"input": "This is awful and I hate it."})
    assert good.json()["results"][0]["label"] == "POSITIVE"
    assert bad.json()["results"][0]["label"] == "NEGATIVE"
    r = http.post(
        f"/v1/inference/{RERANK}",
        json={
            "queries": ["What is the capital of France?"],
            "documents": ["Bananas are yellow.", "Paris is the capital of France."],
        },
    )
    assert r.status_code == 200, r.text
    first, second = r.json()["scores"]
    assert second > first


def test_models_list_their_task(http: httpx.Client, client: OpenAI) -> None:
    cards = {c["model_name"]: c for c in http.get("/models/list").json()}
    assert cards[ASR]["task"] == "automatic-speech-recognition"
    assert cards[TTS]["task"] == "text-to-speech"
    ids = {m.id for m in client.models.list()}
    assert {ASR, TTS, OCR, NER, IMAGE_CLS, TEXT_CLS, RERANK} <= ids


@pytest.mark.parametrize(
    ("model", "request_kw", "status", "needle"),
    [
        (ASR, {"json": {}}, 400, "audio"),
        (ASR, {"json": {"audio": "data:audio/wav;base64,UklGRg=="}}, 415, "audio"),
        (ASR, {"files": {"audio": ("x.txt", b"hello world", "text/plain")}}, 415, "audio"),
        (ASR, {"json": {"audio": "ftp://example.com/a.wav"}}, 400, "audio"),
        (ASR, {"json": {"audio": "http://169.254.169.254/a.wav"}}, 400, "audio"),
        (ASR, {"json": {"audio": data_url(b"RIFF\0\0\0\0WAVEjunk", "audio/wav")}}, 400, "audio"),
        (ASR, {"json": {"audio": data_url(b"ID3" + b"\0" * 64, "")}}, 400, "audio"),
        (ASR, {"json": {"audio": "AAAA", "temperature": 7}}, 400, "temperature"),
        (TTS, {"json": {"text": ""}}, 400, "text"),
        (TTS, {"json": {"text": "..."}}, 400, "text"),
        (TTS, {"json": {"text": "hi", "format": "ogg"}}, 400, "format"),
        (TTS, {"json": {"text": "hi", "voice": "nobody"}}, 400, "voice"),
        (OCR, {"json": {"image": data_url(b"GIF89a" + b"\0" * 32, "image/gif")}}, 415, "image"),
        (OCR, {"json": {"image": data_url(b"\x89PNG\r\n\x1a\n" + b"\0" * 9, "")}}, 400, "image"),
        (OCR, {"json": {"image": "not a url"}}, 400, "image"),
        (IMAGE_CLS, {"json": {"image": "x", "top_k": 0}}, 400, "top_k"),
        (NER, {"json": {"input": 42}}, 400, "input"),
        (RERANK, {"json": {"queries": ["a", "b"], "documents": ["x", "y", "z"]}}, 400, "quer"),
        (
            OCR,
            {"content": b"--b\r\nbroken", "headers": {"content-type": "multipart/form-data"}},
            400,
            "boundary",
        ),
    ],
)
def test_bad_inputs(
    http: httpx.Client, model: str, request_kw: dict, status: int, needle: str
) -> None:
    r = http.post(f"/v1/inference/{model}", **request_kw)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_too_large_inputs(http: httpx.Client) -> None:
    big = b"RIFF\0\0\0\0WAVE" + b"\0" * (26 * 1024 * 1024)
    r = http.post(f"/v1/inference/{ASR}", files={"audio": ("big.wav", big, "audio/wav")})
    assert r.status_code == 413
    big_image = b"\x89PNG\r\n\x1a\n" + b"\0" * (3 * 1024 * 1024)
    r = http.post(f"/v1/inference/{OCR}", files={"image": ("big.png", big_image, "image/png")})
    assert r.status_code == 413 and "image" in r.json()["error"]["message"]


IMAGE_GEN = "inferd/stable-diffusion-tiny"


def png_of(url: str) -> bytes:
    """A data URL's PNG bytes (generated images are returned inline, never stored)."""
    head, _, data = url.partition(",")
    assert head == "data:image/png;base64"
    return base64.b64decode(data)


def test_text_to_image_returns_inline_pngs(http: httpx.Client, server, client: OpenAI) -> None:
    r = http.post(
        f"/v1/inference/{IMAGE_GEN}",
        json={"prompt": "a red fox", "width": 64, "height": 96, "seed": 7, "num_images": 2},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 2
    assert body["inference_status"]["cost"] == pytest.approx(2 * 0.001)
    first = png_of(body["images"][0])
    assert Image.open(io.BytesIO(first)).size == (64, 96)
    # Seeded: the same request draws the same picture. Sizes as strings (the AI SDK) work.
    again = http.post(
        f"/v1/inference/{IMAGE_GEN}",
        json={"prompt": "a red fox", "width": "64", "height": "96", "seed": 7},
    ).json()
    assert png_of(again["images"][0]) == first
    # The OpenAI SDK, both response formats; `url` is a data URL too.
    generated = client.images.generate(
        model=IMAGE_GEN, prompt="a blue boat", n=1, size="64x64", response_format="b64_json"
    )
    png = base64.b64decode(generated.data[0].b64_json)
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    by_url = client.images.generate(model=IMAGE_GEN, prompt="a blue boat", size="64x64")
    assert Image.open(io.BytesIO(png_of(by_url.data[0].url))).size == (64, 64)
    # Nothing was written: no blob store, no image files under the server's home.
    assert not list(server.home.rglob("*.png"))
    assert httpx.get(f"{server.url}/v1/blobs/anything").status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "width": 65}, "width"),
        ({"prompt": "x", "width": 4096}, "width"),
        ({"prompt": "x", "num_images": 9}, "num_images"),
        ({"prompt": "x", "num_inference_steps": 500}, "num_inference_steps"),
    ],
)
def test_text_to_image_bad_inputs(http: httpx.Client, body: dict, needle: str) -> None:
    r = http.post(f"/v1/inference/{IMAGE_GEN}", json=body)
    assert r.status_code == 400 and needle in r.json()["error"]["message"]


def test_fill_mask_zero_shot_and_detection(http: httpx.Client) -> None:
    """The tiny built models answer in the hub's shapes (their weights are random)."""
    r = http.post(
        "/v1/inference/inferd/bert-tiny-mlm", json={"input": "I need my [MASK] now!", "top_k": 3}
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3
    for item in results:
        assert item["sequence"] == f"i need my {item['token_str']} now!"
    missing = http.post("/v1/inference/inferd/bert-tiny-mlm", json={"input": "no mask here"})
    assert missing.status_code == 400 and "[MASK]" in missing.json()["error"]["message"]

    photo = open(FLOWER, "rb").read()  # noqa: SIM115
    r = http.post(
        "/v1/inference/inferd/clip-tiny",
        json={"image": data_url(photo, "image/jpeg"), "candidate_labels": ["dog", "flower"]},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert {x["label"] for x in results} == {"dog", "flower"}
    assert sum(x["score"] for x in results) == pytest.approx(1.0, abs=1e-4)

    form = http.post(
        "/v1/inference/inferd/clip-tiny",
        files={"image": ("flower.jpg", photo, "image/jpeg")},
        data={"candidate_labels": "dog, flower, car"},
    )
    assert {x["label"] for x in form.json()["results"]} == {"dog", "flower", "car"}

    r = http.post(
        "/v1/inference/inferd/yolos-tiny",
        files={"image": ("flower.jpg", photo, "image/jpeg")},
        data={"threshold": "0"},
    )
    assert r.status_code == 200, r.text
    width, height = Image.open(FLOWER).size
    results = r.json()["results"]
    assert results
    for item in results:
        box = item["box"]
        assert 0 <= box["xmin"] <= box["xmax"] <= width
        assert 0 <= box["ymin"] <= box["ymax"] <= height
        assert 0 <= item["score"] <= 1


@pytest.mark.parametrize("container", ["flac", "ogg"])
def test_speech_recognition_of_flac_and_ogg(
    http: httpx.Client, spoken: bytes, container: str
) -> None:
    import av

    out = io.BytesIO()
    with av.open(io.BytesIO(spoken)) as src, av.open(out, "w", format=container) as dst:
        # Ogg with Opus (48 kHz), the common Ogg audio today.
        codec, rate = ("flac", 22050) if container == "flac" else ("libopus", 48000)
        stream = dst.add_stream(codec, rate=rate)
        for frame in src.decode(audio=0):
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    r = http.post(f"/v1/inference/{ASR}", files={"audio": (f"fox.{container}", out.getvalue())})
    assert r.status_code == 200, r.text
    assert heard(r.json()["text"])


def test_truncated_jpeg_is_a_400(http: httpx.Client) -> None:
    photo = open(FLOWER, "rb").read()  # noqa: SIM115
    r = http.post(f"/v1/inference/{IMAGE_CLS}", json={"image": data_url(photo[:2000], "")})
    assert r.status_code == 400 and "image" in r.json()["error"]["message"]


def test_audio_longer_than_the_model_allows_is_413(spoken: bytes) -> None:
    """The duration limit is the model's (`options.max_audio_seconds`), checked after decoding;
    driven in-process with the real whisper model and a 1 s limit."""
    from inferd.catalog import Catalog
    from inferd.engines.base import EngineError
    from inferd.engines.tasks.speech_recognition import WhisperModel
    from inferd.requests import Transcribe
    from inferd.weights.resolve import resolve_weights

    spec = Catalog.load(None).resolve(ASR)
    model = WhisperModel(resolve_weights(spec.weights), {"max_audio_seconds": 1})
    with pytest.raises(EngineError) as exc:
        model.run(Transcribe(audio=spoken))
    assert exc.value.status == 413 and "limit is 1 s" in str(exc.value)
