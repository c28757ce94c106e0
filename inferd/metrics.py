"""Prometheus metrics, one registry per process. Labels carry metadata only."""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "inferd_requests_total",
    "Requests by route, model and status.",
    ["route", "model", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "inferd_request_duration_seconds",
    "Time to the last byte, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
TOKENS = Counter(
    "inferd_tokens_total",
    "Tokens processed, by model and kind (input|output).",
    ["model", "kind"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "inferd_queue_depth",
    "Requests submitted to a model's replicas and not yet finished.",
    ["model"],
    registry=REGISTRY,
)
REPLICAS = Gauge(
    "inferd_replicas_ready",
    "Replicas of a model ready to serve.",
    ["model"],
    registry=REGISTRY,
)
WORKER_RESTARTS = Counter(
    "inferd_worker_restarts_total",
    "Worker processes restarted after they died.",
    ["model"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "inferd_rate_limited_total",
    "Requests refused by the concurrency limiter.",
    ["model"],
    registry=REGISTRY,
)


def model_label(name: str, deploy_id: str | None) -> str:
    """The `model` label of a model: an account's deployment by its deploy_id, never its
    name (`/metrics` is unauthenticated and a private model's name is its owner's business)."""
    return f"deploy_id:{deploy_id}" if deploy_id else name


# `.labels()` costs a lock and a tuple build per call: cache the children on the hot path.
@lru_cache(maxsize=4096)
def request_counter(route: str, model: str, status: str):
    return REQUESTS.labels(route, model, status)


@lru_cache(maxsize=256)
def latency_histogram(route: str):
    return LATENCY.labels(route)


@lru_cache(maxsize=4096)
def token_counter(model: str, kind: str):
    return TOKENS.labels(model, kind)
