"""Cost of one request from the model's price book."""

from __future__ import annotations

from inferd.catalog.spec import Price
from inferd.requests import Usage


def token_cost(price: Price, input_tokens: int, output_tokens: int) -> float:
    cost = (
        price.per_request
        + input_tokens * price.input_per_1m / 1e6
        + output_tokens * price.output_per_1m / 1e6
    )
    return round(cost, 10)


def max_cost(price: Price, prompt_bound: int, output_tokens: int) -> float:
    """The most a request can cost: what a spending limit reserves before work starts."""
    return token_cost(price, prompt_bound, output_tokens)


def task_cost(price: Price, usage: Usage) -> float:
    """Tokens (or characters, for speech synthesis), images and audio seconds."""
    cost = token_cost(price, usage.input_tokens, usage.output_tokens)
    cost += usage.images * price.per_image
    cost += usage.audio_seconds * price.per_audio_second
    return round(cost, 10)
