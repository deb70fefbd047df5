"""Shared API schema base: camelCase JSON, read from ORM objects; the error body."""

from __future__ import annotations

from typing import Any

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel


def _storable(value: Any) -> Any:
    """Text PostgreSQL can store: no NUL character, no unpaired surrogate (JSON allows both)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (it has an unpaired surrogate)") from None
    elif isinstance(value, list | tuple):
        for item in value:
            _storable(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    return value


# For text taken from a query string, which no Schema validates: `Annotated[str, Query(...),
# Storable]` refuses what PostgreSQL cannot store with 422, as a body's fields are.
Storable = AfterValidator(_storable)


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)

    @field_validator("*", mode="after")
    @classmethod
    def _text_is_storable(cls, value: Any) -> Any:
        return _storable(value)


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
