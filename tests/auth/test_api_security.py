"""Security of the REST API, over the real ASGI app (and once over real HTTP) on real
PostgreSQL: every protected route refuses anonymous callers (401) and non-admin roles (403)
without side effects; cookie sessions with CSRF; API tokens made by the CLI; GK-Nexus JWTs;
secrets never leak into logs, responses or the audit trail; the fuzzer finds no 500; errors
are always the JSON {"error", "detail"} shape."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.auth import service as auth
from api.db import transaction
from api.main import create_app
from tests.auth.helpers import (
    ADMIN_ROLES,
    JWT_SECRET,
    NOW,
    PASSWORD,
    SESSION_COOKIE,
    assert_error,
    bearer,
    make_jwt,
    session_cookie,
)
from tests.conftest import Api, App, serve, tree_state

# Operations that need no credentials: liveness, logging in, and the signed archive link
# (its signature is the credential).
UNPROTECTED = {"health", "health_live", "health_ready", "auth_login", "backup_file"}
BACKUP_OPERATIONS = {
    "backup_list",
    "backup_getById",
    "backup_latestDrill",
    "backup_create",
    "backup_delete",
    "backup_download",
    "backup_file",
    "backup_restore",
    "backup_verify",
    "backup_sync",
}
OTHER_OPERATIONS = {
    "restore_getById",
    "restore_list",
    "audit_list",
    "auth_login",
    "auth_logout",
    "auth_me",
    "health",
}
METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}
DUMMY_ID = "00000000-0000-4000-8000-000000000000"


# --- helpers ---------------------------------------------------------------------------


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) for every operation of an OpenAPI document."""
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def _api_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) of every APIRoute, also inside included routers (FastAPI >= 0.16x
    keeps included routers as one route each)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _api_routes(inner.routes, prefix + getattr(context, "prefix", ""))


def _request_for(path: str, operation: dict[str, Any]) -> dict[str, Any]:
    """Arguments for client.request(): path parameters filled with a dummy id, required query
    parameters with a dummy value, and an empty JSON object as the body if there is one."""
    url = re.sub(r"\{[^}/]+\}", DUMMY_ID, path)
    params = {
        p["name"]: "1"
        for p in operation.get("parameters", [])
        if p.get("in") == "query" and p.get("required")
    }
    arguments: dict[str, Any] = {"url": url, "params": params}
    if "requestBody" in operation:
        arguments["json"] = {}
    return arguments


def _catalog_counts(app: App) -> str:
    """Row counts of every catalog table but the audit log (refusals are audited)."""
    return app.sql(
        "SELECT table_name || '=' || (xpath('/row/c/text()', query_to_xml(format("
        "'SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]"
        "::text FROM information_schema.tables WHERE table_schema = 'nexus_backup' "
        "AND table_type = 'BASE TABLE' AND table_name <> 'audit_log' ORDER BY table_name"
    )


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


async def _audit(api: Api, headers: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    response = await api.client.get("/audit", headers=headers, params={"limit": 500, **filters})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def _counted(rows: list[dict[str, Any]]) -> int:
    """How many events audit rows stand for: refusals are counted in detail.count."""
    return sum(int((row["detail"] or {}).get("count", 1)) for row in rows)


async def _login(api: Api, email: str, password: str) -> httpx.Response:
    """POST /auth/login; the client's cookie jar is emptied so every later request says
    explicitly which cookie it sends."""
    response = await api.client.post("/auth/login", json={"email": email, "password": password})
    api.client.cookies.clear()
    return response


def _cookie(value: str, csrf: str | None = None) -> dict[str, str]:
    headers = {"Cookie": f"{SESSION_COOKIE}={value}"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return headers


@asynccontextmanager
async def _client(app: App, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """Like the `api` fixture, but with settings overrides (e.g. nexus_jwt_secret) and the
    clock standing at NOW, the instant make_jwt's tokens are made for."""
    fastapi = create_app(app.settings(**overrides), clock=lambda: NOW)
    async with LifespanManager(fastapi) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- 1. every protected route refuses, and the OpenAPI document says so ------------------


async def test_every_operation_has_an_id_and_documents_its_errors(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    operations = _operations(response.json())
    missing = [(m, p) for m, p, op in operations if not op.get("operationId")]
    assert not missing, f"operations without operationId: {missing}"
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids)), f"duplicate operationIds: {sorted(ids)}"
    assert {i for i in ids if i.startswith("backup_")} == BACKUP_OPERATIONS
    assert set(ids) >= OTHER_OPERATIONS, sorted(set(ids))
    # The document and the app's routes agree: every routed operation is documented.
    routed = {
        (method, path)
        for path, route in _api_routes(api.fastapi.routes)
        if route.include_in_schema
        for method in route.methods
    }
    assert routed == {(m, p) for m, p, _ in operations}
    assert all(
        route.operation_id
        for _, route in _api_routes(api.fastapi.routes)
        if route.include_in_schema
    )
    for method, path, operation in operations:
        if operation["operationId"] in UNPROTECTED:
            continue
        documented = set(operation["responses"])
        assert {"401", "403"} <= documented, (method, path, sorted(documented))
        for code in ("401", "403"):
            schema = operation["responses"][code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, code)


async def test_every_protected_route_refuses_anonymous_and_non_admin_callers(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    protected = [
        (method, path, op)
        for method, path, op in _operations(spec)
        if op["operationId"] not in UNPROTECTED
    ]
    assert len(protected) >= 12, protected
    owner = await api.headers("OWNER")
    accountant = await api.headers("ACCOUNTANT")
    counts = _catalog_counts(api.app)
    uploads = tree_state(api.app.uploads)
    refusals = _counted(await _audit(api, owner, action="auth.refused"))

    for method, path, operation in protected:
        request = _request_for(path, operation)
        anonymous = await api.client.request(method, **request)
        body = assert_error(anonymous, 401, "Unauthorized")
        assert "bearer" in anonymous.headers.get("www-authenticate", "").lower(), (
            method,
            path,
            anonymous.headers,
        )
        refused = await api.client.request(method, headers=accountant, **request)
        body = assert_error(refused, 403, "Forbidden")
        assert all(role in body["detail"] for role in ADMIN_ROLES), (method, path, body)
        assert "ACCOUNTANT" in body["detail"], body
        bogus = await api.client.request(
            method, headers=bearer("nxb_" + secrets.token_urlsafe(32)), **request
        )
        assert_error(bogus, 401, "Unauthorized")

    # Nothing was created, started or deleted by the refused calls.
    assert _catalog_counts(api.app) == counts
    assert _files(api.app.backups) == []
    assert tree_state(api.app.uploads) == uploads
    listed = (await api.client.get("/backups", headers=owner)).json()
    assert listed["total"] == 0, listed
    # ... but every refusal is in the audit trail.
    audited = await _audit(api, owner, action="auth.refused")
    # Three refusals per operation, but for the page's anonymous "am I logged in?" probe;
    # counted per caller, reason and minute rather than a row each.
    assert _counted(audited) - refusals == 3 * len(protected) - 1, audited[:5]
    assert len(audited) <= 6, audited
    assert {a["outcome"] for a in audited} == {"refused"}
    assert any(a["actor"].startswith("token:t-ACCOUNTANT") for a in audited)


# --- 2. login with a cookie, CSRF, logout ------------------------------------------------


async def test_cookie_login_csrf_and_logout(api: Api) -> None:
    owner = await api.headers("OWNER")
    await api.user("admin@gk.test", PASSWORD, "OWNER")

    wrong = await _login(api, "admin@gk.test", PASSWORD + "!")
    wrong_body = assert_error(wrong, 401, "Unauthorized")
    assert not wrong.headers.get_list("set-cookie")
    unknown = await _login(api, "nobody@gk.test", PASSWORD)
    assert unknown.status_code == 401
    assert unknown.json() == wrong_body, "an unknown email must look like a wrong password"
    assert not unknown.headers.get_list("set-cookie")
    failed = [a for a in await _audit(api, owner, action="auth.login") if a["outcome"] == "failed"]
    assert {a["actor"] for a in failed} >= {"admin@gk.test", "nobody@gk.test"}, failed

    right = await _login(api, "Admin@GK.test", PASSWORD)
    assert right.status_code == 200, right.text
    login = right.json()
    assert login["actor"] == "admin@gk.test"
    assert login["role"] == "OWNER"
    assert login["kind"] == "session"
    csrf = login["csrfToken"]
    assert isinstance(csrf, str)
    assert len(csrf) >= 16
    cookie, attributes = session_cookie(right)
    assert len(cookie) >= 32
    assert "httponly" in attributes, attributes
    assert "samesite=strict" in attributes, attributes
    assert "path=/" in attributes, attributes
    assert cookie not in right.text
    completed = [
        a for a in await _audit(api, owner, action="auth.login") if a["outcome"] == "completed"
    ]
    assert [a["actor"] for a in completed] == ["admin@gk.test"]

    me = await api.client.get("/auth/me", headers=_cookie(cookie))
    assert me.status_code == 200, me.text
    assert me.json() == {**login, "csrfToken": csrf}

    # A change with the cookie but without (or with a wrong) CSRF token starts nothing.
    for headers in (_cookie(cookie), _cookie(cookie, "x" * len(csrf)), _cookie(cookie, "")):
        refused = await api.client.post("/backups", headers=headers, json={"name": "csrf"})
        assert_error(refused, 403, "Forbidden")
        assert "X-CSRF-Token" in refused.json()["detail"]
    assert (await api.client.get("/backups", headers=_cookie(cookie))).json()["total"] == 0
    assert _files(api.app.backups) == []
    csrf_refusals = [
        a for a in await _audit(api, owner, action="auth.refused") if a["actor"] == "admin@gk.test"
    ]
    assert _counted(csrf_refusals) == 3, csrf_refusals

    started = await api.client.post(
        "/backups", headers=_cookie(cookie, csrf), json={"name": "by-cookie"}
    )
    assert started.status_code == 202, started.text
    assert started.json()["createdBy"] == "admin@gk.test"
    done = await api.wait_backup(started.json()["id"], _cookie(cookie))
    assert done["status"] == "completed", done

    # Logging out needs the CSRF token too, then the cookie is dead.
    assert_error(await api.client.post("/auth/logout", headers=_cookie(cookie)), 403, "Forbidden")
    assert (await api.client.get("/auth/me", headers=_cookie(cookie))).status_code == 200
    logout = await api.client.post("/auth/logout", headers=_cookie(cookie, csrf))
    assert logout.status_code == 204, logout.text
    cleared = [h for h in logout.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)]
    assert cleared, logout.headers
    assert 'nexus_session="";' in cleared[0] or "max-age=0" in cleared[0].lower(), cleared
    api.client.cookies.clear()
    after = await api.client.get("/auth/me", headers=_cookie(cookie))
    assert_error(after, 401, "Unauthorized")
    assert "bearer" in after.headers.get("www-authenticate", "").lower()
    assert_error(
        await api.client.post("/backups", headers=_cookie(cookie, csrf), json={}),
        401,
        "Unauthorized",
    )
    assert [a["actor"] for a in await _audit(api, owner, action="auth.logout")] == ["admin@gk.test"]


async def test_non_admin_user_cannot_log_in(api: Api) -> None:
    owner = await api.headers("OWNER")
    await api.user("accountant@gk.test", PASSWORD, "ACCOUNTANT")
    response = await _login(api, "accountant@gk.test", PASSWORD)
    body = assert_error(response, 403, "Forbidden")
    assert "ACCOUNTANT" in body["detail"]
    assert not response.headers.get_list("set-cookie"), response.headers
    assert _catalog_counts(api.app).count("auth_session=0") == 1
    audited = await _audit(api, owner, action="auth.login")
    assert [(a["actor"], a["outcome"]) for a in audited] == [("accountant@gk.test", "failed")]


async def test_a_forged_session_cookie_is_refused(api: Api) -> None:
    forged = secrets.token_urlsafe(32)
    assert_error(await api.client.get("/auth/me", headers=_cookie(forged)), 401, "Unauthorized")
    assert_error(
        await api.client.post("/backups", headers=_cookie(forged, "x"), json={}),
        401,
        "Unauthorized",
    )


# --- 3. API tokens from the CLI ----------------------------------------------------------


async def test_cli_token_works_is_listed_without_its_secret_and_revokes_at_once(
    api: Api,
) -> None:
    app = api.app
    created = await asyncio.to_thread(
        app.cli, "tokens", "create", "--name", "ci", "--role", "OWNER"
    )
    secret = created.stdout.strip()
    assert re.fullmatch(r"nxb_[A-Za-z0-9_-]{32,}", secret), created.stdout
    assert created.stdout == secret + "\n", "stdout must be the secret alone"
    assert secret not in created.stderr
    assert (
        app.sql(
            "SELECT count(*) FROM nexus_backup.api_token WHERE last_used_at IS NULL AND name = 'ci'"
        ).strip()
        == "1"
    )
    stored = app.sql("SELECT token_hash || ' ' || prefix FROM nexus_backup.api_token")
    assert secret not in stored

    listing = await asyncio.to_thread(app.cli, "tokens", "list")
    assert secret not in listing.stdout + listing.stderr
    line = next(row for row in listing.stdout.splitlines() if " ci " in row)
    assert secret[:10] in line, listing.stdout
    assert "never" in line, line

    me = await api.client.get("/auth/me", headers=bearer(secret))
    assert me.status_code == 200, me.text
    assert me.json()["actor"] == "token:ci"
    assert me.json()["kind"] == "token"
    assert me.json()["csrfToken"] is None
    assert (await api.client.get("/backups", headers=bearer(secret))).status_code == 200
    used = app.sql(
        "SELECT extract(epoch FROM now() - last_used_at) FROM nexus_backup.api_token "
        "WHERE name = 'ci'"
    ).strip()
    assert used, "last_used_at was not set after the token was used"
    assert 0 <= float(used) < 60, used
    listing = await asyncio.to_thread(app.cli, "tokens", "list")
    line = next(row for row in listing.stdout.splitlines() if " ci " in row)
    assert "never" not in line, line
    assert "active" in line, line

    revoked = await asyncio.to_thread(app.cli, "tokens", "revoke", "ci")
    assert secret not in revoked.stdout + revoked.stderr
    response = await api.client.get("/backups", headers=bearer(secret))
    assert_error(response, 401, "Unauthorized")
    assert "bearer" in response.headers.get("www-authenticate", "").lower()
    listing = await asyncio.to_thread(app.cli, "tokens", "list")
    assert "revoked" in next(row for row in listing.stdout.splitlines() if " ci " in row)


async def test_expired_token_is_refused(api: Api) -> None:
    async with transaction(api.services.sessions) as session:
        old, _ = await auth.create_token(
            session, "old", "OWNER", "test", expires_at=datetime.now(UTC) - timedelta(minutes=1)
        )
        fresh, _ = await auth.create_token(
            session, "fresh", "OWNER", "test", expires_at=datetime.now(UTC) + timedelta(hours=1)
        )
    response = await api.client.get("/backups", headers=bearer(old))
    assert_error(response, 401, "Unauthorized")
    assert "bearer" in response.headers.get("www-authenticate", "").lower()
    assert (await api.client.get("/backups", headers=bearer(fresh))).status_code == 200
    assert (
        api.app.sql(
            "SELECT last_used_at IS NULL FROM nexus_backup.api_token WHERE name = 'old'"
        ).strip()
        == "t"
    )


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token nxb_x", "Bearer nxb_", "nxb_abc"],
)
async def test_malformed_authorization_headers_are_401(api: Api, header: str) -> None:
    response = await api.client.get("/backups", headers={"Authorization": header})
    assert_error(response, 401, "Unauthorized")


# --- 4. GK-Nexus JWTs --------------------------------------------------------------------


async def test_gk_nexus_jwts(app: App) -> None:
    async with _client(app, nexus_jwt_secret=JWT_SECRET) as client:
        good = make_jwt()
        me = await client.get("/auth/me", headers=bearer(good))
        assert me.status_code == 200, me.text
        assert me.json()["actor"] == "jwt:boss@gk.test"
        assert me.json()["role"] == "OWNER"
        assert me.json()["kind"] == "jwt"
        assert (await client.get("/backups", headers=bearer(good))).status_code == 200
        for role in ADMIN_ROLES:
            response = await client.get("/backups", headers=bearer(make_jwt(role=role)))
            assert response.status_code == 200, (role, response.text)

        refused = await client.get("/backups", headers=bearer(make_jwt(role="ACCOUNTANT")))
        body = assert_error(refused, 403, "Forbidden")
        assert all(role in body["detail"] for role in ADMIN_ROLES), body
        started = await client.post(
            "/backups", headers=bearer(make_jwt(role="ACCOUNTANT")), json={"name": "jwt"}
        )
        assert_error(started, 403, "Forbidden")

        claims = jwt.decode(good, options={"verify_signature": False})
        unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
        invalid = {
            "expired": make_jwt(exp=int(NOW.timestamp()) - 60),
            "wrong secret": make_jwt(secret="another-secret-" + "x" * 40),
            "alg none": unsigned,
            "missing role": make_jwt(role=None),
            "missing exp": make_jwt(exp=None),
            "role not a string": make_jwt(role=["OWNER"]),
            "HS512": make_jwt(algorithm="HS512"),
            "tampered role": good.split(".")[0]
            + "."
            + _b64({**claims, "role": "OWNER2"})
            + "."
            + good.split(".")[2],
        }
        for label, token in invalid.items():
            response = await client.get("/backups", headers=bearer(token))
            assert response.status_code == 401, (label, response.text)
            assert_error(response, 401, "Unauthorized")
            assert "bearer" in response.headers.get("www-authenticate", "").lower(), label
        listed = await client.get("/backups", headers=bearer(good))
        assert listed.json()["total"] == 0


async def test_jwts_are_refused_when_no_jwt_secret_is_set(api: Api) -> None:
    for token in (make_jwt(), make_jwt(secret="changeme" * 5)):
        response = await api.client.get("/auth/me", headers=bearer(token))
        assert_error(response, 401, "Unauthorized")
        assert "bearer" in response.headers.get("www-authenticate", "").lower()


# --- 5. secrets never leak ---------------------------------------------------------------


async def test_canary_secrets_never_leak(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    app = api.app
    canary = "canary-pw-" + secrets.token_hex(12)
    email = "canary@gk.test"

    def create_user(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "api", *extra, "users", "create"),
                *("--email", email, "--role", "OWNER", "--password-stdin"),
            ],
            cwd=app.root,
            env=app.env(),
            input=canary + "\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    made = await asyncio.to_thread(create_user, "-v")
    assert made.returncode == 0, made.stdout + made.stderr
    assert email in made.stdout
    again = await asyncio.to_thread(create_user, "-v")  # a refused second create
    assert again.returncode != 0
    assert "already exists" in again.stderr
    for output in (made.stdout, made.stderr, again.stdout, again.stderr):
        assert canary not in output
        assert app.cluster.password not in output

    token = await api.token("OWNER", name="canary-token")
    owner = bearer(token)
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    responses: list[httpx.Response] = []

    async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await api.client.request(method, url, **kwargs)
        api.client.cookies.clear()
        responses.append(response)
        return response

    assert (
        await call("POST", "/auth/login", json={"email": email, "password": canary + "-x"})
    ).status_code == 401
    login = await call("POST", "/auth/login", json={"email": email, "password": canary})
    assert login.status_code == 200, login.text
    cookie, _ = session_cookie(login)
    csrf = login.json()["csrfToken"]
    assert (await call("GET", "/auth/me", headers=_cookie(cookie))).status_code == 200
    assert (await call("GET", "/backups", headers=owner)).status_code == 200
    assert (await call("GET", f"/backups/{DUMMY_ID}", headers=owner)).status_code == 404
    assert (await call("GET", "/backups", headers=bearer(token + "x"))).status_code == 401
    assert (await call("POST", "/backups", headers=_cookie(cookie), json={})).status_code == 403
    assert (await call("POST", "/backups", headers=owner, json={"name": "../x"})).status_code == 422
    done = await call("POST", "/backups?wait=true", headers=owner, json={"name": "canary"})
    assert done.status_code == 201, done.text
    backup_id = done.json()["id"]
    link = await call("GET", f"/backups/{backup_id}/download", headers=_cookie(cookie))
    assert link.status_code == 200, link.text
    assert (await call("POST", f"/backups/{backup_id}/verify", headers=owner)).status_code == 200
    audit = await call("GET", "/audit", headers=owner, params={"limit": 500})
    assert audit.status_code == 200
    logout = await call("POST", "/auth/logout", headers=_cookie(cookie, csrf))
    assert logout.status_code == 204

    secrets_ = {
        "canary password": canary,
        "API token": token,
        "session cookie": cookie,
        "database password": app.cluster.password,
    }
    for label, value in secrets_.items():
        assert len(value) >= 8, label
        for record in caplog.records:
            text = record.getMessage() + (record.exc_text or "") + str(record.__dict__)
            assert value not in text, f"{label} in log record {record.name}: {text[:500]}"
        assert value not in caplog.text, label
        for response in responses:
            assert value not in response.text, (label, response.request.url, response.text[:500])
            for name, header in response.headers.multi_items():
                if response is login and name == "set-cookie" and value == cookie:
                    continue
                assert value not in header, (label, response.request.url, name)
        assert value not in json.dumps(audit.json()["items"]), label
    # The catalog stores only hashes: no secret anywhere in its rows.
    dumped = await asyncio.to_thread(
        subprocess.run,
        [
            str(app.cluster.bin("pg_dump")),
            "-h",
            "127.0.0.1",
            "-p",
            str(app.cluster.port),
            "-U",
            "nexus",
            "--data-only",
            "--schema=nexus_backup",
            app.database,
        ],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
            "PGPASSWORD": app.cluster.password,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    dump = dumped.stdout
    assert "app_user" in dump
    assert "audit_log" in dump
    for label, value in secrets_.items():
        assert value not in dump, f"{label} is stored in the catalog"
    # Enough was logged for this check to mean something.
    assert any(r.name == "nexus_backup.http" for r in caplog.records)
    assert any(r.name == "nexus_backup.audit" for r in caplog.records)


# --- 6. the fuzzer finds no server error -------------------------------------------------


def test_schemathesis_finds_no_server_errors(app: App, tmp_path: Path) -> None:
    token = app.cli("tokens", "create", "--name", "fuzz", "--role", "OWNER").stdout.strip()
    server_log = tmp_path / "server.log"
    with serve(app, server_log) as base:
        # Every operation is fuzzed with an OWNER token, so the authenticated code paths (not
        # only the 401s) are exercised.
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "not_a_server_error",
                "-H",
                f"Authorization: Bearer {token}",
                "--max-examples",
                "15",
                "--request-timeout",
                "60",
                "--generation-database",
                "none",
                "--no-color",
                "--workers",
                "1",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert result.returncode == 0, (
            f"schemathesis exited {result.returncode}\n{result.stdout}\n{result.stderr}\n"
            f"server log (tail):\n{server_log.read_text()[-5000:]}"
        )
        # Every operation was really exercised.
        operations = len(_operations(httpx.get(f"{base}/openapi.json", timeout=10).json()))
        tested = re.search(r"Tested: (\d+)", result.stdout)
        assert tested, result.stdout
        assert int(tested.group(1)) == operations, result.stdout


# --- bugs: non-ASCII input reaching hmac.compare_digest ---------------------------------


@asynccontextmanager
async def _lenient(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the same app that gets a 500 answer where api.client would see the
    exception re-raised by the server error middleware."""
    transport = httpx.ASGITransport(app=api.fastapi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def test_download_file_with_non_ascii_signature_is_403_not_500(api: Api) -> None:
    expires = int(time.time()) + 300
    async with _lenient(api) as client:
        for signature in ("\u00cd", ":\u00cdr+", "\u00e9" * 64):
            response = await client.get(
                f"/backups/{DUMMY_ID}/file",
                params={"expires": expires, "signature": signature},
            )
            assert_error(response, 403, "Forbidden")


async def test_non_ascii_csrf_header_is_403_not_500(api: Api) -> None:
    await api.user("csrf@gk.test", PASSWORD, "OWNER")
    login = await _login(api, "csrf@gk.test", PASSWORD)
    cookie, _ = session_cookie(login)
    async with _lenient(api) as client:
        for value in ("\u00e9".encode("latin-1"), "\u00e9".encode()):
            response = await client.post(
                "/backups",
                headers={"Cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF-Token": value},
                json={},
            )
            assert_error(response, 403, "Forbidden")
    assert _files(api.app.backups) == []


# --- 7. errors are JSON, never a traceback -----------------------------------------------


async def test_error_shapes(api: Api) -> None:
    owner = await api.headers("OWNER")

    for client_headers in ({}, owner):
        missing = await api.client.get("/no/such/path", headers=client_headers)
        body = assert_error(missing, 404, "NotFound")
        assert "/no/such/path" in body["detail"]
    wrong_method = await api.client.put("/backups", headers=owner, json={})
    assert_error(wrong_method, 405, "MethodNotAllowed")

    for payload in (
        {"name": "../x"},
        {"name": "a/b"},
        {"name": ""},
        {"name": "x" * 200},
        {"type": "pre_restore"},
        {"name": 5},
        {"description": "d" * 3000},
    ):
        invalid = await api.client.post("/backups", headers=owner, json=payload)
        body = assert_error(invalid, 422, "Unprocessable")
        assert 'File "' not in body["detail"], body
    not_json = await api.client.post(
        "/backups",
        headers={**owner, "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert_error(not_json, 422, "Unprocessable")
    bad_query = await api.client.get("/backups", headers=owner, params={"limit": 0})
    assert_error(bad_query, 422, "Unprocessable")
    bad_login = await api.client.post("/auth/login", json={"email": "a"})
    assert_error(bad_login, 422, "Unprocessable")
    assert (await api.client.get("/backups", headers=owner)).json()["total"] == 0
    assert _files(api.app.backups) == []

    # Names the schema accepts but the service refuses.
    refused = await api.client.post("/backups", headers=owner, json={"name": "a..b"})
    body = assert_error(refused, 400, "BadRequest")
    assert "a..b" in body["detail"]
    first = await api.client.post("/backups?wait=true", headers=owner, json={"name": "twice"})
    assert first.status_code == 201, first.text
    again = await api.client.post("/backups?wait=true", headers=owner, json={"name": "twice"})
    body = assert_error(again, 409, "Conflict")
    assert "twice" in body["detail"]
    also = await api.client.post("/backups?wait=true", headers=owner, json={"name": "twice.tar.gz"})
    assert_error(also, 409, "Conflict")
    listed = (await api.client.get("/backups", headers=owner)).json()
    assert listed["total"] == 1, listed

    for method, url in (
        ("GET", f"/backups/{DUMMY_ID}"),
        ("DELETE", f"/backups/{DUMMY_ID}"),
        ("GET", f"/backups/{DUMMY_ID}/download"),
        ("POST", f"/backups/{DUMMY_ID}/verify"),
        ("GET", f"/restores/{DUMMY_ID}"),
    ):
        assert_error(await api.client.request(method, url, headers=owner), 404, "NotFound")
    restore = await api.client.post(
        f"/backups/{listed['items'][0]['id']}/restore", headers=owner, json={"confirm": "nope"}
    )
    body = assert_error(restore, 400, "BadRequest")
    assert "twice" in body["detail"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/audit", {"action": "backup\u0000.run"}),
        ("/audit", {"actor": "cli\u0000"}),
        ("/schedules/preview", {"cron": "0 3 * * *\u0000"}),
        ("/schedules/preview", {"cron": "0 3 * * *", "timezone": "UTC\u0000"}),
    ],
)
async def test_a_nul_in_a_query_string_is_refused_as_invalid_input(
    api: Api, path: str, params: dict[str, str]
) -> None:
    """A query string may carry %00; PostgreSQL text cannot: 422, never 500 (schemathesis found
    the audit filter case)."""
    response = await api.client.get(path, params=params, headers=await api.headers())
    assert response.status_code == 422, response.text
    assert "NUL" in response.text


@pytest.mark.parametrize("email", ["a\u0000b@example.com", "a\ud800b@example.com", "\u0005\u0000x"])
async def test_text_postgresql_cannot_store_is_refused_as_invalid_input(
    api: Api, email: str
) -> None:
    """JSON may carry a NUL or an unpaired surrogate; PostgreSQL text cannot: 422, never 500
    (schemathesis found the login case)."""
    body = json.dumps({"email": email, "password": "x"})
    response = await api.client.post(
        "/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    headers = await api.headers()
    created = await api.client.post(
        "/backups",
        content=json.dumps({"description": f"note {email}"}),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert created.status_code == 422, created.text
