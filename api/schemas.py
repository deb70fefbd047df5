"""Shared API schema base: camelCase JSON, read from ORM objects; the error body."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class ErrorOut(Schema):
    error: str
    detail: str


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses` documenting the error body for each status code."""
    text = {
        400: "Invalid request",
        401: "No or invalid credentials",
        403: "Role or CSRF refused",
        404: "Not found",
        409: "Busy or conflicting state",
        422: "Invalid input",
        500: "The operation failed",
        503: "Not configured or unavailable",
    }
    return {code: {"model": ErrorOut, "description": text.get(code, "Error")} for code in codes}
