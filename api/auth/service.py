"""Who is calling: passwords (Argon2), sessions, API tokens, GK-Nexus JWTs. Never commits."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import ParamSpec, TypeGuard, TypeVar

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.audit import service as audit
from api.auth.models import ADMIN_ROLES, ApiToken, AppUser, AuthSession, CatalogSecret
from api.db import transaction
from api.errors import BadRequest, Conflict, NotFound
from api.states import AuditOutcome

P = ParamSpec("P")
T = TypeVar("T")
TOKEN_PREFIX = "nxb_"
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
ROLE = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")
_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown email as slow as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: `actor` is what the audit trail records."""

    actor: str
    role: str
    kind: str  # "session", "token" or "jwt"
    user_id: str | None = None
    csrf_token: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES


def now() -> datetime:
    return datetime.now(UTC)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_role(role: str) -> str:
    """Role names are exact: `owner` is not OWNER (roles are compared as written)."""
    if not ROLE.fullmatch(role):
        raise BadRequest(f"invalid role {role!r}: role names are exact and upper-case, e.g. OWNER")
    return role


def check_password(password: str) -> str:
    if len(password) < 12:
        raise BadRequest("the password must be at least 12 characters long")
    if len(password) > 1024:
        raise BadRequest("the password is longer than 1024 characters")
    return password


async def create_user(session: AsyncSession, email: str, role: str, password: str) -> AppUser:
    email = email.strip().lower()
    if not EMAIL.fullmatch(email):
        raise BadRequest(f"invalid email address {email!r}")
    exists = await session.execute(select(AppUser.id).where(AppUser.email == email))
    if exists.first() is not None:
        raise Conflict(f"a user with email {email} already exists")
    role = check_role(role)
    # Argon2 takes tens of milliseconds of CPU: never on the event loop.
    password_hash = await _argon2(_hasher.hash, check_password(password))
    user = AppUser(
        id=secrets.token_hex(16),
        email=email,
        password_hash=password_hash,
        role=role,
        is_active=True,
        created_at=now(),
    )
    session.add(user)
    return user


async def authenticate_password(
    sessions: async_sessionmaker[AsyncSession], email: str, password: str
) -> str | None:
    """The id of the active user with this email and password, else None. The user is read in
    a short transaction of its own and Argon2 runs after it, in the Argon2 threads: a login
    holds no catalog connection while it waits for or runs Argon2. An outdated hash is
    upgraded (another short transaction)."""
    async with sessions() as session:
        user = (
            await session.execute(select(AppUser).where(AppUser.email == email.strip().lower()))
        ).scalar_one_or_none()
    if not await _argon2(_verify, user.password_hash if user else _DUMMY_HASH, password):
        return None
    if user is None or not user.is_active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        upgraded = await _argon2(_hasher.hash, password)
        async with sessions() as session, session.begin():
            await session.execute(
                update(AppUser).where(AppUser.id == user.id).values(password_hash=upgraded)
            )
    return user.id


# Argon2 takes ~50 ms of CPU and 64 MiB of memory per run: at most two at a time, on threads
# of their own (argon2-cffi releases the GIL), never on the event loop, and never taking the
# threads that backups and restores use.
_ARGON2_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")


async def _argon2(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_ARGON2_THREADS, partial(function, *args, **kwargs))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def open_session(
    session: AsyncSession, user: AppUser, hours: int, client: str | None
) -> tuple[str, AuthSession]:
    """A new session; returns the cookie value (shown once, stored hashed) and the record."""
    cookie = secrets.token_urlsafe(32)
    record = AuthSession(
        id=digest(cookie),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(24),
        created_at=now(),
        expires_at=now() + timedelta(hours=hours),
        client_address=client,
    )
    session.add(record)
    user.last_login_at = now()
    await audit.record(
        session,
        audit.Caller(user.email, client),
        action="auth.login",
        target=None,
        outcome=AuditOutcome.completed,
    )
    return cookie, record


async def session_principal(session: AsyncSession, cookie: str) -> Principal | None:
    row = (
        await session.execute(
            select(AuthSession, AppUser)
            .join(AppUser, AppUser.id == AuthSession.user_id)
            .where(AuthSession.id == digest(cookie))
        )
    ).first()
    if row is None:
        return None
    record, user = row
    if record.expires_at <= now() or not user.is_active:
        return None
    return Principal(
        actor=user.email,
        role=user.role,
        kind="session",
        user_id=user.id,
        csrf_token=record.csrf_token,
    )


async def close_session(session: AsyncSession, cookie: str) -> None:
    record = await session.get(AuthSession, digest(cookie))
    if record is not None:
        await session.delete(record)


async def log_out(
    sessions: async_sessionmaker[AsyncSession], caller: audit.Caller, cookie: str | None
) -> None:
    """End the cookie session (a token has none to end) and audit the logout."""
    async with transaction(sessions) as session:
        if cookie:
            await close_session(session, cookie)
        await audit.record(
            session, caller, action="auth.logout", target=None, outcome=AuditOutcome.completed
        )


async def create_token(
    session: AsyncSession,
    name: str,
    role: str,
    created_by: str,
    expires_at: datetime | None = None,
) -> tuple[str, ApiToken]:
    """A new API token; the secret is returned once and only its SHA-256 is stored."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise BadRequest("a token name must be 1-100 characters")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        id=secrets.token_hex(8),
        name=name,
        token_hash=digest(secret),
        prefix=secret[:10],
        role=check_role(role),
        created_by=created_by,
        created_at=now(),
        expires_at=expires_at,
    )
    session.add(token)
    return secret, token


async def token_principal(session: AsyncSession, secret: str) -> Principal | None:
    token = (
        await session.execute(select(ApiToken).where(ApiToken.token_hash == digest(secret)))
    ).scalar_one_or_none()
    if token is None or token.revoked_at is not None:
        return None
    if token.expires_at is not None and token.expires_at <= now():
        return None
    if token.last_used_at is None or now() - token.last_used_at > timedelta(seconds=60):
        token.last_used_at = now()
    return Principal(actor=f"token:{token.name}", role=token.role, kind="token")


def jwt_principal(
    secret: str | None,
    bearer: str,
    *,
    max_lifetime: int = 24 * 3600,
    issuer: str | None = None,
    audience: str | None = None,
    at: datetime | None = None,
) -> Principal | None:
    """A GK-Nexus-issued JWT, when NEXUS_JWT_SECRET is set: HS256 only; `exp` required, after
    `at` (default now) and at most `max_lifetime` seconds after `iat` (or after `at`, without
    `iat`); `iat` and `nbf` not after `at`; `iss` and `aud` required and checked when
    configured; the `role` claim compared exactly. Times are checked against `at`, the
    request's clock, not PyJWT's own."""
    if not secret:
        return None
    required = ["exp", "role"]
    if issuer:
        required.append("iss")
    if audience:
        required.append("aud")
    try:
        claims = jwt.decode(
            bearer,
            secret,
            algorithms=["HS256"],
            issuer=issuer,
            audience=audience,
            options={
                "require": required,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError:
        return None
    moment = (at or now()).timestamp()
    expires, issued, not_before = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if not _is_time(expires) or expires <= moment or expires - moment > max_lifetime:
        return None
    if issued is not None and (
        not _is_time(issued) or issued > moment or expires - issued > max_lifetime
    ):
        return None
    if not_before is not None and (not _is_time(not_before) or not_before > moment):
        return None
    role = claims.get("role")
    if not isinstance(role, str):
        return None
    who = claims.get("email") or claims.get("sub") or "unknown"
    return Principal(actor=f"jwt:{str(who)[:150]}", role=role, kind="jwt")


def _is_time(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def list_tokens(session: AsyncSession) -> list[ApiToken]:
    return list(
        (await session.execute(select(ApiToken).order_by(ApiToken.created_at.desc())))
        .scalars()
        .all()
    )


async def revoke_token(session: AsyncSession, ref: str) -> ApiToken:
    token = await session.get(ApiToken, ref)
    if token is None:
        token = (
            await session.execute(select(ApiToken).where(ApiToken.name == ref))
        ).scalar_one_or_none()
    if token is None:
        raise NotFound(f"no token with id or name {ref!r}; `nexus-backup tokens list` shows them")
    if token.revoked_at is None:
        token.revoked_at = now()
    return token


async def signing_key(session: AsyncSession, name: str = "download-links") -> bytes:
    """The catalog's own key (made on first use), so every process signs links alike."""
    row = await session.get(CatalogSecret, name)
    if row is None:
        await session.execute(
            insert(CatalogSecret)
            .values(name=name, value=secrets.token_hex(32), created_at=now())
            .on_conflict_do_nothing()
        )
        row = await session.get(CatalogSecret, name)
    assert row is not None
    return bytes.fromhex(row.value)


def sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def signature_ok(key: bytes, message: str, signature: str) -> bool:
    # As bytes: compare_digest refuses str with non-ASCII characters (TypeError, a 500).
    return hmac.compare_digest(sign(key, message).encode(), signature.encode("utf-8", "replace"))
