"""Auth API schemas."""

from __future__ import annotations

from pydantic import Field

from api.schemas import Schema


class LoginIn(Schema):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class MeOut(Schema):
    actor: str
    role: str
    kind: str
    csrf_token: str | None = Field(
        default=None, description="Send as X-CSRF-Token on POST/PATCH/DELETE with the cookie"
    )
