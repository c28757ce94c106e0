"""Admission: in-flight request limits per account and model (429 "Rate limited")."""

from inferd.limits.concurrency import ConcurrencyLimiter, RateLimited

__all__ = ["ConcurrencyLimiter", "RateLimited"]
