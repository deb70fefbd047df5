"""Login throttling per account and per client address, in the catalog (so every server
process on it counts alike). An attempt is counted before its password is checked, so
concurrent guesses cannot slip past the limit and a throttled login costs no Argon2 run."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import LoginThrottle


@dataclass(frozen=True)
class Limits:
    per_account: int
    per_address: int
    window: timedelta


@dataclass(frozen=True)
class Refusal:
    """Why an attempt is refused and how long until the window ends."""

    reason: str
    retry_after: int


def account_key(email: str) -> str:
    return f"account:{email}"[:400]


def address_key(address: str) -> str:
    """IPv4 addresses one by one; IPv6 by /64 (one subscriber's network has them all)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address:{address}"[:400]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"address:{ip.ipv4_mapped}"
        return f"address:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"address:{ip}"


async def attempt(
    session: AsyncSession, email: str, address: str | None, now: datetime, limits: Limits
) -> Refusal | None:
    """Count one login attempt for the account and the address; a Refusal once either has
    more attempts than its limit within the window (counted from its first attempt)."""
    # Forget windows that have ended (a few at a time, skipping rows another login holds).
    ended = (
        select(LoginThrottle.key)
        .where(LoginThrottle.first_at <= now - limits.window)
        .limit(100)
        .with_for_update(skip_locked=True)
    )
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key.in_(ended)))
    checks = [(account_key(email), limits.per_account, "account")]
    if address:
        checks.append((address_key(address), limits.per_address, "address"))
    refusal: Refusal | None = None
    for key, limit, what in checks:
        expired = LoginThrottle.first_at <= now - limits.window
        statement = (
            insert(LoginThrottle)
            .values(key=key, failures=1, first_at=now)
            .on_conflict_do_update(
                index_elements=[LoginThrottle.key],
                set_={
                    "failures": case((expired, 1), else_=LoginThrottle.failures + 1),
                    "first_at": case((expired, now), else_=LoginThrottle.first_at),
                },
            )
            .returning(LoginThrottle.failures, LoginThrottle.first_at)
        )
        failures, first_at = (await session.execute(statement)).one()
        if failures > limit:
            wait = math.ceil((first_at + limits.window - now).total_seconds())
            if refusal is None or wait > refusal.retry_after:
                refusal = Refusal(f"too many failed logins for this {what}", max(1, wait))
    return refusal


async def succeeded(session: AsyncSession, email: str, address: str | None) -> None:
    """A right password: the account starts afresh; the address's attempt is taken back."""
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == account_key(email)))
    if address:
        await session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == address_key(address), LoginThrottle.failures > 0)
            .values(failures=LoginThrottle.failures - 1)
        )
