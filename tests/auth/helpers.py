"""Shared by the auth tests: the test secrets, credentials and the checks of an answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import jwt

ADMIN_ROLES = ("OWNER", "GCMC_MANAGER", "KAJ_MANAGER")
JWT_SECRET = "gk-nexus-test-jwt-secret-" + "s" * 40
PASSWORD = "correct horse battery staple"
SESSION_COOKIE = "nexus_session"


def assert_error(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """The response is the JSON error {"error": kind, "detail": ...} with this status."""
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == kind, body
    assert isinstance(body["detail"], str)
    assert body["detail"].strip(), body
    assert "Traceback" not in response.text
    return dict(body)


def session_cookie(response: httpx.Response) -> tuple[str, list[str]]:
    """The nexus_session value of a Set-Cookie header and its attributes, lower-cased."""
    for header in response.headers.get_list("set-cookie"):
        pair, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = pair.partition("=")
        if name == SESSION_COOKIE:
            return value, [a.lower() for a in attributes]
    raise AssertionError(f"no {SESSION_COOKIE} cookie set: {response.headers}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# The instant the clocks of the apps that check these JWTs stand at (create_app(clock=...)):
# a JWT's validity never depends on when the test runs.
NOW = datetime(2031, 5, 6, 7, 8, 0, tzinfo=UTC)


def make_jwt(secret: str = JWT_SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A GK-Nexus JWT for an OWNER, expiring 5 minutes after NOW; a claim given as None is
    left out."""
    values: dict[str, Any] = {
        "sub": "user-1",
        "email": "boss@gk.test",
        "role": "OWNER",
        "exp": int(NOW.timestamp()) + 300,
    }
    values.update(claims)
    values = {k: v for k, v in values.items() if v is not None}
    return jwt.encode(values, secret, algorithm=algorithm)
