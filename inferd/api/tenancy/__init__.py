"""Accounts, API keys, scoped JWTs and usage over HTTP."""
