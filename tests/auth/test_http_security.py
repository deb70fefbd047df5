"""HTTP hardening, attacked as a caller would: exact role names; bounded GK-Nexus JWTs and a
strong secret; restore and delete for OWNER only (unless widened); login throttling per
account and per address, counted in the catalog before Argon2 runs, and Argon2 off the event
loop; refusals counted, not one row each; a request body limit; a header deadline against
slow clients; security headers; a Secure cookie behind a trusted TLS proxy."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import ValidationError

from api.auth import service as auth
from api.config import Settings
from api.db import transaction
from api.errors import BadRequest, ConfigError
from api.main import create_app
from tests.auth.helpers import (
    ADMIN_ROLES,
    JWT_SECRET,
    NOW,
    PASSWORD,
    assert_error,
    bearer,
    make_jwt,
    session_cookie,
)
from tests.conftest import ROOT, Api, App, serve

START = NOW  # the servers' clock: a fixed instant on a minute boundary, as make_jwt assumes


class Clock:
    """The app's clock, moved by the test."""

    def __init__(self, at: datetime = START) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


class Server:
    """One app under test: create clients (from any client address) and credentials."""

    def __init__(self, app: App, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi
        self.services = fastapi.state.services

    @asynccontextmanager
    async def client(self, address: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=self.fastapi, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c

    async def token(self, role: str) -> dict[str, str]:
        async with transaction(self.services.sessions) as session:
            secret, _ = await auth.create_token(
                session, f"t-{role}-{time.monotonic_ns()}", role, "t"
            )
        return bearer(secret)

    async def user(self, email: str, role: str = "OWNER") -> None:
        async with transaction(self.services.sessions) as session:
            await auth.create_user(session, email, role, PASSWORD)

    async def audit(self, action: str) -> list[dict[str, Any]]:
        rows = self.app.sql(
            "SELECT coalesce(json_agg(json_build_object('actor', actor, 'target', target, "
            "'outcome', outcome, 'detail', detail, 'client', client_address) ORDER BY id), "
            f"'[]') FROM nexus_backup.audit_log WHERE action = '{action}'"
        )
        return list(json.loads(rows))


@asynccontextmanager
async def running(
    app: App, clock: Clock | None = None, **overrides: object
) -> AsyncIterator[Server]:
    settings = app.settings(scheduler_enabled=False, **overrides)
    fastapi = create_app(settings, clock=clock or Clock())
    async with LifespanManager(fastapi):
        yield Server(app, fastapi)


def _counted(rows: list[dict[str, Any]]) -> int:
    return sum(int((row["detail"] or {}).get("count", 1)) for row in rows)


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    response = await client.post("/auth/login", json={"email": email, "password": password})
    client.cookies.clear()
    return response


# --- 1. exact role names -----------------------------------------------------------------


async def test_role_names_are_exact_in_jwts_tokens_and_catalog_rows(app: App) -> None:
    async with running(app, nexus_jwt_secret=JWT_SECRET) as server, server.client() as client:
        for role in ("owner", "Owner", "OWNER ", " OWNER", "gcmc_manager", "KAJ_manager"):
            response = await client.get("/backups", headers=bearer(make_jwt(role=role)))
            body = assert_error(response, 403, "Forbidden")
            assert repr(role)[1:-1] in body["detail"] or role.strip() in body["detail"], body
        assert (await client.get("/backups", headers=bearer(make_jwt()))).status_code == 200

        # The CLI and the service refuse to make a token or user with a non-exact role.
        async with transaction(server.services.sessions) as session:
            for role in ("owner", " OWNER", "Owner"):
                with pytest.raises(BadRequest, match="exact"):
                    await auth.create_token(session, "lower", role, "t")
                with pytest.raises(BadRequest, match="exact"):
                    await auth.create_user(session, f"{role.strip()}@gk.test", role, PASSWORD)
        made = await asyncio.to_thread(
            app.cli, "tokens", "create", "--name", "lower", "--role", "owner", check=False
        )
        assert made.returncode != 0
        assert "exact" in made.stderr, made.stderr

        # A catalog row changed behind the service's back (a lower-case role) grants nothing.
        headers = await server.token("OWNER")
        app.sql("UPDATE nexus_backup.api_token SET role = 'owner'")
        assert_error(await client.get("/backups", headers=headers), 403, "Forbidden")


# --- 2. JWTs -----------------------------------------------------------------------------


async def test_jwts_need_a_bounded_lifetime(app: App) -> None:
    now = int(START.timestamp())  # the servers' clock
    async with running(app, nexus_jwt_secret=JWT_SECRET) as server, server.client() as client:
        accepted = {
            "exp in 5 minutes, no iat": make_jwt(),
            "iat now, exp in 23 hours": make_jwt(iat=now, exp=now + 23 * 3600),
        }
        refused = {
            "no exp": make_jwt(exp=None),
            "exp in 25 hours, no iat": make_jwt(exp=now + 25 * 3600),
            "exp in ten years": make_jwt(exp=now + 10 * 365 * 86400),
            "issued ten days ago, exp in a minute": make_jwt(iat=now - 10 * 86400, exp=now + 60),
            "iat in the future": make_jwt(iat=now + 3600, exp=now + 3700),
            "expired a second ago": make_jwt(exp=now - 1),
            "not valid before an hour from now": make_jwt(nbf=now + 3600),
            "iat not a number": make_jwt(iat="yesterday"),
            "HS384": make_jwt(algorithm="HS384"),
        }
        for label, token in accepted.items():
            response = await client.get("/auth/me", headers=bearer(token))
            assert response.status_code == 200, (label, response.text)
        for label, token in refused.items():
            response = await client.get("/auth/me", headers=bearer(token))
            assert response.status_code == 401, (label, response.text)
            assert_error(response, 401, "Unauthorized")
        assert server.services.settings.jwt_max_lifetime_seconds == 24 * 3600


async def test_jwt_issuer_and_audience_are_checked_when_configured(app: App) -> None:
    async with (
        running(
            app,
            nexus_jwt_secret=JWT_SECRET,
            nexus_jwt_issuer="https://gk-nexus.test",
            nexus_jwt_audience="nexus-backup",
        ) as server,
        server.client() as client,
    ):
        good = make_jwt(iss="https://gk-nexus.test", aud="nexus-backup")
        assert (await client.get("/auth/me", headers=bearer(good))).status_code == 200
        for label, token in {
            "no iss": make_jwt(aud="nexus-backup"),
            "wrong iss": make_jwt(iss="https://evil.test", aud="nexus-backup"),
            "no aud": make_jwt(iss="https://gk-nexus.test"),
            "wrong aud": make_jwt(iss="https://gk-nexus.test", aud="another-service"),
        }.items():
            response = await client.get("/auth/me", headers=bearer(token))
            assert response.status_code == 401, (label, response.text)


@pytest.mark.parametrize("secret", ["x", "changeme", "s" * 31, "é" * 15])
async def test_a_short_jwt_secret_refuses_startup(app: App, secret: str) -> None:
    with pytest.raises(ConfigError) as refused:
        create_app(app.settings(nexus_jwt_secret=secret))
    assert refused.value.detail == (
        "NEXUS_JWT_SECRET must be at least 32 bytes: generate one with `openssl rand -hex 32`"
    )
    create_app(app.settings(nexus_jwt_secret="s" * 32))  # 32 bytes is enough


def test_serve_exits_with_one_line_for_a_short_jwt_secret(app: App) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api", "serve", "--port", "1"],
        cwd=app.root,
        env=app.env(NEXUS_JWT_SECRET="short-secret"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "nexus-backup: error: NEXUS_JWT_SECRET must be at least 32 bytes: generate one with "
        "`openssl rand -hex 32`"
    ), result.stderr


# --- 3. restore and delete -------------------------------------------------------------


async def _backup(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> str:
    made = await client.post("/backups?wait=true", headers=headers, json={"name": name})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def test_restore_and_delete_need_owner_by_default(app: App) -> None:
    async with running(app) as server, server.client() as client:
        owner = await server.token("OWNER")
        backup_id = await _backup(client, owner, "keep-me")
        archives = sorted(p.name for p in app.backups.iterdir())
        for role in ("GCMC_MANAGER", "KAJ_MANAGER"):
            manager = await server.token(role)
            # They still use the backup API ...
            assert (await client.get("/backups", headers=manager)).status_code == 200
            # ... but may not destroy anything.
            deleted = await client.delete(f"/backups/{backup_id}", headers=manager)
            body = assert_error(deleted, 403, "Forbidden")
            assert "OWNER" in body["detail"], body
            assert "DESTRUCTIVE_ROLES" in body["detail"], body
            restored = await client.post(
                f"/backups/{backup_id}/restore", headers=manager, json={"confirm": "keep-me"}
            )
            assert_error(restored, 403, "Forbidden")
        assert sorted(p.name for p in app.backups.iterdir()) == archives
        listed = (await client.get("/backups", headers=owner)).json()
        assert [b["name"] for b in listed["items"]] == ["keep-me"]
        assert app.sql("SELECT count(*) FROM nexus_backup.system_restore").strip() == "0"
        refusals = [
            row
            for row in await server.audit("auth.refused")
            if "may not restore or delete" in row["detail"]["reason"]
        ]
        assert {r["actor"].split("-")[1] for r in refusals} == {"GCMC_MANAGER", "KAJ_MANAGER"}
        assert _counted(refusals) == 4, refusals
        # The owner may: a wrong confirmation is the only thing in the way.
        wrong = await client.post(
            f"/backups/{backup_id}/restore", headers=owner, json={"confirm": "nope"}
        )
        assert_error(wrong, 400, "BadRequest")


async def test_destructive_roles_widen_delete_but_never_for_safety_backups(app: App) -> None:
    async with running(app, destructive_roles="GCMC_MANAGER") as server:
        async with server.client() as client:
            owner = await server.token("OWNER")
            manager = await server.token("GCMC_MANAGER")
            kaj = await server.token("KAJ_MANAGER")
            plain = await _backup(client, owner, "plain")
            safety = await _backup(client, owner, "safety")
            # A pre_restore backup, as a restore leaves it (made so in the catalog).
            app.sql(
                f"UPDATE nexus_backup.system_backup SET type = 'pre_restore' WHERE id = '{safety}'"
            )

            assert_error(await client.delete(f"/backups/{plain}", headers=kaj), 403, "Forbidden")
            refused = await client.delete(f"/backups/{safety}", headers=manager)
            body = assert_error(refused, 403, "Forbidden")
            assert "pre_restore" in body["detail"], body
            wrong = await client.post(
                f"/backups/{plain}/restore", headers=manager, json={"confirm": "nope"}
            )
            assert_error(wrong, 400, "BadRequest")  # authorised; only the confirmation is wrong
            assert (await client.delete(f"/backups/{plain}", headers=manager)).status_code == 200
            names = [
                b["name"] for b in (await client.get("/backups", headers=owner)).json()["items"]
            ]
            assert names == ["safety"], names
            assert (await client.delete(f"/backups/{safety}", headers=owner)).status_code == 200
        reasons = {r["detail"]["reason"] for r in await server.audit("auth.refused")}
        assert "role GCMC_MANAGER may not delete a pre_restore backup" in reasons, reasons


def test_destructive_roles_must_be_exact_admin_roles() -> None:
    assert Settings(_env_file=None).destructive_role_set == {"OWNER"}  # type: ignore[call-arg]
    widened = Settings(_env_file=None, destructive_roles="GCMC_MANAGER, KAJ_MANAGER")  # type: ignore[call-arg]
    assert widened.destructive_role_set == set(ADMIN_ROLES)
    for wrong in ("owner", "ACCOUNTANT", "OWNER,gcmc_manager"):
        with pytest.raises(ValidationError, match="DESTRUCTIVE_ROLES"):
            Settings(_env_file=None, destructive_roles=wrong)  # type: ignore[call-arg]


# --- 4. login throttling and Argon2 off the event loop ------------------------------------


class CountingHasher(PasswordHasher):
    """The real Argon2 hasher, counting verifications (to see which logins ran it)."""

    def __init__(self) -> None:
        super().__init__()
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    counting = CountingHasher()
    monkeypatch.setattr(auth, "_hasher", counting)
    return counting


async def test_failed_logins_are_throttled_per_account_before_argon2(
    app: App, hasher: CountingHasher
) -> None:
    clock = Clock()
    async with running(app, clock) as server, server.client() as client:
        await server.user("boss@gk.test")
        for _ in range(5):
            assert_error(
                await _login(client, "boss@gk.test", "wrong-password"), 401, "Unauthorized"
            )
        assert hasher.verified == 5
        for password in ("wrong-password", PASSWORD):  # even the right one, until it ends
            throttled = await _login(client, "Boss@GK.test", password)
            body = assert_error(throttled, 429, "TooManyRequests")
            assert throttled.headers["retry-after"] == "900", throttled.headers
            assert "900 seconds" in body["detail"], body
            assert not throttled.headers.get_list("set-cookie")
        assert hasher.verified == 5, "a throttled login must not run Argon2"
        # Another account from the same address is not affected.
        await server.user("other@gk.test")
        assert (await _login(client, "other@gk.test", PASSWORD)).status_code == 200

        clock.advance(600)
        retry = await _login(client, "boss@gk.test", PASSWORD)
        assert retry.headers["retry-after"] == "300"
        clock.advance(300)
        assert (await _login(client, "boss@gk.test", PASSWORD)).status_code == 200
        # A success starts the account afresh: five more tries before the next 429.
        for _ in range(5):
            assert (await _login(client, "boss@gk.test", "nope-nope")).status_code == 401
        assert (await _login(client, "boss@gk.test", PASSWORD)).status_code == 429
    refused = [r for r in await server.audit("auth.login") if r["outcome"] == "refused"]
    assert refused, "the throttled logins are audited"
    assert {r["actor"] for r in refused} == {"boss@gk.test"}
    assert "too many failed logins for this account" in refused[0]["detail"]["reason"]


async def test_failed_logins_are_throttled_per_address(app: App) -> None:
    clock = Clock()
    async with running(app, clock) as server:
        await server.user("boss@gk.test")
        async with server.client("10.1.1.1") as attacker, server.client("10.2.2.2") as office:
            for number in range(20):
                response = await _login(attacker, f"guess{number}@gk.test", "wrong-password")
                assert response.status_code == 401, response.text
            throttled = await _login(attacker, "boss@gk.test", PASSWORD)
            assert_error(throttled, 429, "TooManyRequests")
            assert throttled.headers["retry-after"] == "900"
            assert "address" in throttled.json()["detail"]
            # The same account from another address still logs in.
            assert (await _login(office, "boss@gk.test", PASSWORD)).status_code == 200
            clock.advance(900)
            assert (await _login(attacker, "boss@gk.test", PASSWORD)).status_code == 200


async def test_ipv6_clients_are_throttled_per_64_network(app: App) -> None:
    async with running(app, Clock(), login_max_failures_per_address=3) as server:
        for number in range(3):
            async with server.client(f"2001:db8:1:2::{number + 1:x}") as client:
                assert (await _login(client, f"g{number}@gk.test", "wrong-pw")).status_code == 401
        async with server.client("2001:db8:1:2:ffff::9") as same_network:
            throttled = await _login(same_network, "g9@gk.test", "wrong-pw")
            assert_error(throttled, 429, "TooManyRequests")
        async with server.client("2001:db8:1:3::1") as other_network:
            assert (await _login(other_network, "g9@gk.test", "wrong-pw")).status_code == 401


async def test_concurrent_guesses_cannot_pass_the_limit_and_processes_share_it(
    app: App, hasher: CountingHasher
) -> None:
    clock = Clock()
    async with running(app, clock) as first, running(app, clock) as second:
        await first.user("boss@gk.test")
        async with first.client() as one, second.client() as two:
            answers = await asyncio.gather(
                *(_login(one if n % 2 else two, "boss@gk.test", f"guess-{n}") for n in range(8))
            )
            assert sorted(r.status_code for r in answers) == [401] * 5 + [429] * 3
            assert hasher.verified == 5
            # Both processes see the account as throttled: the counters are in the catalog.
            for client in (one, two):
                assert (await _login(client, "boss@gk.test", PASSWORD)).status_code == 429


class GatedHasher(PasswordHasher):
    """Real Argon2, but verification waits for the test's go-ahead. If it ran on the event
    loop, the loop would stall until the wait times out, and the test sees `stalled`."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.go = threading.Event()
        self.stalled = False

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.entered.set()
        if not self.go.wait(timeout=15):
            self.stalled = True
        return super().verify(hash, password)


async def test_argon2_runs_off_the_event_loop(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    gated = GatedHasher()
    async with running(app) as server, server.client() as client:
        await server.user("boss@gk.test")
        monkeypatch.setattr(auth, "_hasher", gated)
        login = asyncio.create_task(_login(client, "boss@gk.test", "wrong-password"))
        # Wait for the event in a worker thread: the event loop keeps serving the login.
        reached = await asyncio.to_thread(gated.entered.wait, 30)
        assert reached, "the login never reached Argon2"
        # Argon2 is busy with the login: the event loop still answers /health.
        health = await client.get("/health")
        assert health.status_code == 200
        assert not login.done()
        # ... and the login holds no catalog transaction open while it waits for Argon2.
        open_transactions = app.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
        )
        assert open_transactions.strip() == "0"
        gated.go.set()
        assert (await login).status_code == 401
        assert not gated.stalled, "Argon2 verification ran on the event loop and blocked it"


# --- 5. refusals are counted, not a row each ----------------------------------------------


async def test_a_flood_of_anonymous_requests_adds_a_bounded_number_of_audit_rows(
    app: App,
) -> None:
    clock = Clock()
    async with running(app, clock) as server, server.client() as client:
        first = await client.get("/backups/first-of-the-flood")
        assert_error(first, 401, "Unauthorized")
        for number in range(499):
            path = f"/backups/x{number}" if number % 2 else "/schedules"
            assert (await client.get(path)).status_code == 401
            if number % 100 == 99:
                clock.advance(20)  # the flood spans three minutes
        rows = await server.audit("auth.refused")
        assert len(rows) <= 5, rows
        assert _counted(rows) == 500
        assert rows[0]["target"] == "GET /backups/first-of-the-flood", rows[0]
        assert rows[0]["client"] == "127.0.0.1"
        assert rows[0]["detail"]["reason"] == "no credentials"

        # Bad logins are counted the same way (and throttled after 20 from one address).
        for number in range(30):
            await _login(client, f"x{number}@gk.test", "wrong-password")
        logins = await server.audit("auth.login")
        assert len(logins) <= 31, logins  # one per email at most, and one throttled summary
        assert _counted(logins) == 30


async def test_refusals_from_many_addresses_are_capped_per_minute(app: App) -> None:
    async with running(app, Clock(), audit_refusal_rows_per_minute=3) as server:
        for number in range(12):
            async with server.client(f"10.0.0.{number}") as client:
                for _ in range(3):
                    assert (await client.get("/backups")).status_code == 401
        rows = await server.audit("auth.refused")
        assert len(rows) == 4, rows  # three addresses, then one summary row for the rest
        assert _counted(rows) == 36
        assert rows[-1]["actor"] == "*"
        assert "more than 3" in rows[-1]["detail"]["reason"]


# --- 6. request body limit ---------------------------------------------------------------


async def test_a_large_chunked_body_is_refused_without_reading_it(app: App) -> None:
    pulled = 0
    chunk = b"x" * 65536

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'{"email": "a@b.test", "password": "'
        for _ in range(20 * 16):  # 20 MiB, if anyone read it all
            pulled += len(chunk)
            yield chunk
        yield b'"}'

    async with running(app) as server, server.client() as client:
        response = await client.post(
            "/auth/login", content=body(), headers={"Content-Type": "application/json"}
        )
        detail = assert_error(response, 413, "TooLarge")["detail"]
        assert "MAX_BODY_BYTES" in detail
        assert pulled <= 1024 * 1024 + 2 * len(chunk), f"{pulled} bytes were read"
        # A body within the limit is fine.
        small = await client.post("/auth/login", json={"email": "a@b.test", "password": "x" * 500})
        assert small.status_code == 401


async def test_a_body_that_never_completes_is_refused(app: App) -> None:
    stalled = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"email": "a@b.test", '
        await stalled.wait()  # the client stops sending, never to resume
        yield b'"password": "x"}'

    async with running(app, http_body_timeout_seconds=1) as server, server.client() as client:
        # (Without the timeout the request would wait forever: bounded here to fail instead.)
        response = await asyncio.wait_for(
            client.post(
                "/auth/login", content=body(), headers={"Content-Type": "application/json"}
            ),
            timeout=60,
        )
        detail = assert_error(response, 408, "RequestTimeout")["detail"]
        assert "HTTP_BODY_TIMEOUT_SECONDS" in detail
        assert not stalled.is_set()
        assert (await client.get("/health")).status_code == 200


async def test_a_declared_large_body_is_refused_before_the_app_runs(app: App) -> None:
    async with running(app, max_body_bytes=4096) as server, server.client() as client:
        for method, path in (("POST", "/auth/login"), ("GET", "/health"), ("POST", "/backups")):
            request = client.build_request(method, path, content=b"{}")
            request.headers["Content-Length"] = str(300 * 1024 * 1024)
            response = await client.send(request)
            assert_error(response, 413, "TooLarge")
            assert response.headers["x-content-type-options"] == "nosniff"
        assert await server.audit("auth.refused") == [], "refused before authentication ran"


# --- 7. security headers -----------------------------------------------------------------


async def test_security_headers_on_the_page_the_api_and_errors(app: App, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html><title>Nexus Backup</title>")
    fastapi = create_app(app.settings(scheduler_enabled=False), web_dist=dist)
    async with LifespanManager(fastapi):
        transport = httpx.ASGITransport(app=fastapi)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for path in ("/app/", "/health", "/backups", "/nope", "/openapi.json"):
                response = await client.get(path)
                headers = response.headers
                csp = headers["content-security-policy"]
                for directive in (
                    "default-src 'self'",
                    "frame-ancestors 'none'",
                    "object-src 'none'",
                    "base-uri 'none'",
                ):
                    assert directive in csp, (path, csp)
                assert "unsafe" not in csp, (path, csp)
                assert headers["x-content-type-options"] == "nosniff", path
                assert headers["referrer-policy"] == "no-referrer", path
                assert headers["x-frame-options"] == "DENY", path
            docs = await client.get("/docs")
            assert docs.status_code == 200
            assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
            assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]


def test_the_page_has_no_inline_script_or_style() -> None:
    """The CSP forbids inline scripts and styles: web/index.html (which Vite turns into
    web/dist/index.html, adding only a module script and a stylesheet from /app/assets) must
    load its code from files."""
    index = ROOT / "web" / "index.html"
    html = index.read_text()
    scripts = [part.split(">", 1) for part in html.split("<script")[1:]]
    assert scripts, html
    for attributes, rest in scripts:
        assert "src=" in attributes, f"inline script in web/index.html: {attributes}{rest[:80]}"
        assert rest.startswith("</script>"), rest[:80]
    assert "<style" not in html
    assert "style=" not in html


# --- 8. the real server: slow headers, large bodies, a TLS proxy -------------------------


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.split(b"\r\n\r\n", 1)[1].endswith(b"}"):
                break
        return answer


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


@pytest.fixture
def owner_login(app: App) -> tuple[str, str]:
    email = "owner@gk.test"
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "api",
            "users",
            "create",
            "--email",
            email,
            "--role",
            "OWNER",
            "--password-stdin",
        ],
        cwd=app.root,
        env=app.env(),
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    return email, PASSWORD


def test_real_server_header_deadline_body_limit_and_proxy_cookie(
    app: App, tmp_path: Path, owner_login: tuple[str, str]
) -> None:
    email, password = owner_login
    with serve(app, tmp_path / "server.log", HTTP_HEADER_TIMEOUT_SECONDS="2") as base:
        port = _port(base)
        # A slow client trickling header bytes is disconnected; others are served meanwhile.
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as slow:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            closed = False
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not closed:
                try:
                    slow.sendall(b"X")
                    closed = slow.recv(1024) == b""
                except TimeoutError:
                    pass
                except OSError:
                    closed = True
                assert httpx.get(f"{base}/health", timeout=10).status_code == 200
            assert closed, "the server kept a connection that never finished its headers"
        # Keep-alive requests on one connection still work.
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(3):
                assert client.get("/health").status_code == 200

        # A declared 300 MB body is refused at once, nothing read.
        answer = _raw(
            port,
            b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 314572800\r\n\r\n{",
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"error":"TooLarge"' in answer.replace(b" ", b""), answer
        # Behind a TLS proxy on 127.0.0.1 (trusted by default), the cookie is Secure.
        proxied = httpx.post(
            f"{base}/auth/login",
            json={"email": email, "password": password},
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"},
            timeout=30,
        )
        assert proxied.status_code == 200, proxied.text
        assert "secure" in session_cookie(proxied)[1]
        assert proxied.headers["strict-transport-security"] == "max-age=31536000"
        plain = httpx.post(
            f"{base}/auth/login", json={"email": email, "password": password}, timeout=30
        )
        assert plain.status_code == 200, plain.text
        assert "secure" not in session_cookie(plain)[1]
        assert plain.headers["x-frame-options"] == "DENY"
        assert "strict-transport-security" not in plain.headers
    logins = app.sql(
        "SELECT client_address FROM nexus_backup.audit_log WHERE action = 'auth.login' "
        "AND outcome = 'completed' ORDER BY id"
    ).split()
    assert logins == ["203.0.113.7", "127.0.0.1"], logins


def test_forwarded_headers_from_an_untrusted_address_are_ignored(
    app: App, tmp_path: Path, owner_login: tuple[str, str]
) -> None:
    email, password = owner_login
    with serve(app, tmp_path / "server.log", FORWARDED_ALLOW_IPS="192.0.2.1") as base:
        spoofed = httpx.post(
            f"{base}/auth/login",
            json={"email": email, "password": password},
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"},
            timeout=30,
        )
        assert spoofed.status_code == 200, spoofed.text
        assert "secure" not in session_cookie(spoofed)[1]
    logins = app.sql(
        "SELECT client_address FROM nexus_backup.audit_log WHERE action = 'auth.login' "
        "AND outcome = 'completed'"
    ).split()
    assert logins == ["127.0.0.1"], logins


async def test_only_roles_that_may_delete_set_a_schedules_retention(api: Api) -> None:
    manager = await api.headers("GCMC_MANAGER")
    body = {"name": "hourly", "cronExpression": "0 * * * *", "retentionDays": 1}
    refused = await api.client.post("/schedules", headers=manager, json=body)
    assert refused.status_code == 403, refused.text
    assert "retention" in refused.json()["detail"]
    assert (await api.client.get("/schedules", headers=manager)).json() == []
    kept = await api.client.post(
        "/schedules", headers=manager, json={**body, "retentionDays": None}
    )
    assert kept.status_code == 201, kept.text
    url = f"/schedules/{kept.json()['id']}"
    lowered = await api.client.patch(url, headers=manager, json={"retentionDays": 1})
    assert lowered.status_code == 403, lowered.text
    owner = await api.client.patch(url, headers=await api.headers(), json={"retentionDays": 1})
    assert owner.status_code == 200, owner.text
    assert owner.json()["retentionDays"] == 1
