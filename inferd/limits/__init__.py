"""Admission: in-flight request limits per account and model (429 "Rate limited")."""

from inferd.limits.concurrency import ConcurrencyLimiter, InProcessLimiter, RateLimited

__all__ = ["ConcurrencyLimiter", "InProcessLimiter", "RateLimited"]
