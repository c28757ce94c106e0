"""Webhook delivery: Standard Webhooks signing, SSRF-safe attempts and the retry policy."""
