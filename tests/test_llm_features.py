"""LLM features against the real default chat model: tools, JSON modes, logprobs, n, seed."""

from __future__ import annotations

import json
import math

import httpx
import jsonschema
import numpy as np
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.conftest import CHAT_MODEL

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 30}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
PERSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}


def test_forced_tool_call_validates_20_of_20(client: OpenAI) -> None:
    schema = WEATHER["function"]["parameters"]
    for seed in range(20):
        completion = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=ASK,
            tools=[WEATHER],
            max_tokens=80,
            temperature=1.0,
            seed=seed,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        [call] = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), schema)


@pytest.mark.parametrize("choice", ["required", "any"])
def test_required_picks_a_declared_function(client: OpenAI, choice: str) -> None:
    for seed in range(3):
        completion = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=ASK,
            tools=[WEATHER, TIME],
            tool_choice=choice,
            max_tokens=80,
            seed=seed,
        )
        [call] = completion.choices[0].message.tool_calls
        tool = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
        jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_streamed_tool_call_reassembles(client: OpenAI) -> None:
    kwargs = dict(
        model=CHAT_MODEL,
        messages=ASK,
        tools=[WEATHER],
        max_tokens=80,
        temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    plain = client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    deltas = [
        c.choices[0].delta.tool_calls[0]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    ]
    first, rest = deltas[0], deltas[1:]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function.name == "get_weather" and first.function.arguments == ""
    assert rest and all(d.id is None and d.function.name is None for d in rest)
    assert "".join(d.function.arguments for d in rest) == plain.function.arguments
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["tool_calls"]


def test_sdk_stream_helper_collects_tool_calls(client: OpenAI) -> None:
    with client.chat.completions.stream(
        model=CHAT_MODEL,
        messages=ASK,
        tools=[WEATHER],
        max_tokens=80,
        temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_multi_turn_with_tool_results(client: OpenAI) -> None:
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "unit": "celsius"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    completion = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=messages,
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=30,
        temperature=0,
    )
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.prompt_tokens > 40  # the call and its result reached the prompt


def test_json_schema_validates_20_of_20(client: OpenAI) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": True},
    }
    for seed in range(20):
        completion = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Describe a person."}],
            response_format=fmt,
            max_tokens=120,
            temperature=1.0,
            seed=seed,
        )
        jsonschema.validate(json.loads(completion.choices[0].message.content), PERSON)


def test_json_object_always_parses(client: OpenAI, http: httpx.Client) -> None:
    for seed in range(5):
        completion = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "List three fruits."}],
            response_format={"type": "json_object"},
            max_tokens=150,
            seed=seed,
        )
        assert isinstance(json.loads(completion.choices[0].message.content), dict)
    legacy = client.completions.create(
        model=CHAT_MODEL,
        prompt="A JSON object:",
        max_tokens=100,
        extra_body={"response_format": {"type": "json_object"}},
    )
    assert isinstance(json.loads(legacy.choices[0].text), dict)
    native = http.post(
        f"/v1/inference/{CHAT_MODEL}",
        json={
            "input": "A JSON object:",
            "max_new_tokens": 100,
            "response_format": {"type": "json_schema", "json_schema": {"schema": PERSON}},
        },
    )
    jsonschema.validate(json.loads(native.json()["results"][0]["generated_text"]), PERSON)


class Person(BaseModel):
    name: str
    age: int


def test_sdk_parse_returns_a_pydantic_object(client: OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format=Person,
        max_tokens=60,
    )
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person)


def engine_logprobs(prompt: str, generated: list[int]) -> tuple[int, list[float]]:
    """The model's own scores from llama.cpp directly: (prompt length, logprob of every token
    after the first, given what precedes it)."""
    from llama_cpp import Llama

    from inferd.catalog import Catalog
    from inferd.weights.resolve import resolve_weights

    path = resolve_weights(Catalog.load(None).resolve(CHAT_MODEL).weights)
    llm = Llama(
        str(path), n_ctx=512, logits_all=True, verbose=False, n_threads=2, flash_attn=True
    )  # the same kernels as the server
    prompt_ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    ids = prompt_ids + generated
    llm.eval(ids)
    scores = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    peak = scores.max(axis=1, keepdims=True)
    lse = (peak + np.log(np.exp(scores - peak).sum(axis=1, keepdims=True)))[:, 0]
    return len(prompt_ids), (scores[np.arange(len(ids) - 1), ids[1:]] - lse[:-1]).tolist()


def test_logprobs_match_the_engine(http: httpx.Client, client: OpenAI) -> None:
    prompt = "The capital of France is"
    native = http.post(
        f"/v1/inference/{CHAT_MODEL}",
        json={
            "input": prompt,
            "max_new_tokens": 5,
            "temperature": 0,
            "details": True,
            "top_logprobs": 3,
        },
    ).json()
    tokens = native["details"]["tokens"]
    n_prompt, expected = engine_logprobs(prompt, [t["id"] for t in tokens])
    # native non-streaming details
    assert np.allclose([t["logprob"] for t in tokens], expected[n_prompt - 1 :], atol=0.05)
    for token in tokens:
        tops = [t["logprob"] for t in token["top_tokens"]]
        assert tops == sorted(tops, reverse=True)
        assert math.isclose(tops[0], token["logprob"], abs_tol=1e-6)  # greedy = the mode
    # completions with echo: the prompt is scored too
    echo = client.completions.create(
        model=CHAT_MODEL, prompt=prompt, max_tokens=5, temperature=0, echo=True, logprobs=2
    )
    lp = echo.choices[0].logprobs
    assert echo.choices[0].text.startswith(prompt)
    assert len(lp.tokens) == n_prompt + 5
    assert lp.token_logprobs[0] is None  # the first prompt token has no context
    assert np.allclose(lp.token_logprobs[1:], expected, atol=0.05)
    assert all(len(top) == 2 for top in lp.top_logprobs[1:])


def test_chat_logprobs_and_top_logprobs(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = completion.choices[0].logprobs.content
    assert "".join(c.token for c in content) == completion.choices[0].message.content
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1.0001


def test_n_choices_and_seed(client: OpenAI) -> None:
    kwargs = dict(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Name an animal."}],
        max_tokens=12,
        temperature=1.0,
        seed=7,
        n=3,
    )
    first = client.chat.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1, 2]
    again = client.chat.completions.create(**kwargs)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert (
        first.usage.completion_tokens == sum(len(c.message.content) > 0 for c in first.choices)
        or first.usage.completion_tokens > 0
    )
    streamed = list(client.chat.completions.create(**kwargs, stream=True))
    texts = {0: "", 1: "", 2: ""}
    for chunk in streamed:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert [texts[i] for i in range(3)] == [c.message.content for c in first.choices]
    assert sum(1 for c in streamed for ch in c.choices if ch.finish_reason) == 3


def test_penalties_and_sampling_knobs_take_effect(client: OpenAI) -> None:
    base = dict(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Repeat: la la la"}],
        max_tokens=24,
        temperature=0,
    )
    plain = client.chat.completions.create(**base).choices[0].message.content
    penalised = (
        client.chat.completions.create(**base, frequency_penalty=2.0, presence_penalty=2.0)
        .choices[0]
        .message.content
    )
    repeated = (
        client.chat.completions.create(**base, extra_body={"repetition_penalty": 1.8})
        .choices[0]
        .message.content
    )
    assert penalised != plain
    assert repeated != plain
    for knobs in ({"top_k": 5}, {"min_p": 0.2}, {"top_p": 0.5}):
        out = client.chat.completions.create(
            **{**base, "temperature": 1.0, "seed": 3}, extra_body=knobs
        )
        assert out.choices[0].message.content
    stops = client.chat.completions.create(**base, stop="la")
    assert "la" not in stops.choices[0].message.content
