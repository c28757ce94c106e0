"""A PostgreSQL schema of a test module's own: other suites reset `public` of the shared
database, so store-level tests keep to a schema they create and drop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from inferd.store.db import normalise_url

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _run(*statements: str) -> None:
    engine = create_engine(normalise_url(POSTGRES_URL), connect_args={"connect_timeout": 2})
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@contextlib.contextmanager
def own_schema(schema: str) -> Iterator[str]:
    """A fresh `schema` and the URL whose connections use it; skips when PostgreSQL is away."""
    try:
        _run(f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}")
    except Exception:
        pytest.skip("PostgreSQL not reachable")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        _run(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
