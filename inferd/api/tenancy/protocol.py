"""Request bodies of the tenancy API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreateAccount(_Body):
    name: str = Field(min_length=1, max_length=200)
    concurrency_limit: int | None = Field(default=None, ge=1, le=100_000)
    spending_limit: float | None = Field(default=None, ge=0)
    is_admin: bool = False


class CreateApiToken(_Body):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._\-]+$")


class CreateScopedJwt(_Body):
    api_key_name: str = Field(min_length=1, max_length=200)
    models: list[str] | None = None
    expires_delta: int | None = Field(default=None, gt=0)
    expires_at: int | None = Field(default=None, gt=0)
    spending_limit: float | None = Field(default=None, ge=0)
