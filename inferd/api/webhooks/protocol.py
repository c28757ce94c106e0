"""Wire models of the webhooks API: the signing secret and the deliveries."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class WebhookSecret(BaseModel):
    model_config = ConfigDict(extra="ignore")

    secret: str  # whsec_...: verify deliveries with it (Standard Webhooks)


class WebhookDelivery(BaseModel):
    """One webhook request and its delivery; `id` is the `webhook-id` header it carries."""

    model_config = ConfigDict(extra="ignore")

    id: str
    request_id: str
    model: str
    state: str  # queued | pending | delivered | failed
    attempts: int
    last_status: int | None
    last_error: str | None
    last_latency_ms: int | None
    next_attempt_at: datetime | None
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    resendable_until: datetime | None  # then the payload is purged and a resend answers 410


class WebhookDeliveries(BaseModel):
    data: list[WebhookDelivery]
