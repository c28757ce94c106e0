"""Routes of the webhooks API."""

from __future__ import annotations

from inferd.api.endpoint import JSON, Endpoint, Reply
from inferd.api.webhooks import serving
from inferd.api.webhooks.protocol import WebhookDeliveries, WebhookDelivery, WebhookSecret

routes = [
    Endpoint(
        "/v1/webhooks/secret",
        serving.get_secret,
        "GET",
        summary="The webhook signing secret",
        description="Deliveries are signed with it per Standard Webhooks (`webhook-id`, "
        "`webhook-timestamp`, `webhook-signature`); created on first read.",
        responses={200: Reply("The secret.", {JSON: WebhookSecret})},
        errors=(403,),
    ),
    Endpoint(
        "/v1/webhooks/secret/rotate",
        serving.rotate_secret,
        "POST",
        summary="Rotate the webhook signing secret",
        description="Returns the new secret. Until the rotation window ends, deliveries carry "
        "a signature with the old secret too.",
        responses={200: Reply("The new secret.", {JSON: WebhookSecret})},
        errors=(403,),
    ),
    Endpoint(
        "/v1/webhooks/deliveries",
        serving.list_deliveries,
        "GET",
        summary="List webhook deliveries",
        description="The account's webhook requests, newest first, with their attempts.",
        responses={200: Reply("The deliveries.", {JSON: WebhookDeliveries})},
        errors=(403,),
    ),
    Endpoint(
        "/v1/webhooks/deliveries/{delivery_id}/resend",
        serving.resend,
        "POST",
        params={"delivery_id": "The delivery's id (its `webhook-id`)."},
        summary="Resend a webhook delivery",
        description="A new round of attempts with the same `webhook-id`; possible until the "
        "resend window after the last attempt ends (then 410).",
        responses={200: Reply("The delivery.", {JSON: WebhookDelivery})},
        errors=(403, 404, 410),
    ),
]
