"""Alembic environment: runs on the connection the application hands over."""

from __future__ import annotations

from alembic import context

# The table modules besides models.py, imported for their tables to join Base.metadata.
from inferd.store import (  # noqa: F401
    batch_tables,
    container_tables,
    jobs_tables,
    route_tables,
    team_tables,
    usage_tables,
    webhook_tables,
)
from inferd.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
