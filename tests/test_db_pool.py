"""The catalog pool pings a connection that sat idle before handing it out, and only then: a
connection the server closed while idle is replaced, a busy pool pays no ping per request."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from api import db, errors
from api.db import make_engine
from nexus_dev.cluster import LocalCluster


async def test_an_idle_connection_the_server_closed_is_replaced_at_checkout(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(cluster.url("postgres"))
    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        cluster.psql("postgres", f"SELECT pg_terminate_backend({int(pid)})")
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", -1.0)  # it has been idle long enough
        async with engine.connect() as connection:
            again = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert again != pid
    finally:
        await engine.dispose()


async def test_a_connection_just_returned_is_handed_out_without_a_ping(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    engine = make_engine(cluster.url("postgres"))
    pings: list[bool] = []
    try:
        async with engine.connect() as connection:
            adapter = type((await connection.get_raw_connection()).dbapi_connection)
        ping = adapter.ping

        def counted(self: object) -> None:
            pings.append(True)
            ping(self)

        monkeypatch.setattr(adapter, "ping", counted)
        for _ in range(3):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        assert pings == [], "a connection returned moments ago was pinged"
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", -1.0)
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        assert pings == [True], "an idle connection was handed out without a ping"
    finally:
        await engine.dispose()


async def test_a_connection_lost_in_use_is_still_catalog_unavailable(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a ping, a connection the server closed a moment ago fails its one request with
    the usual 503 naming the catalog; the next checkout gets a fresh connection."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    engine = make_engine(cluster.url("postgres"))
    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        cluster.psql("postgres", f"SELECT pg_terminate_backend({int(pid)})")
        with pytest.raises(errors.CatalogUnavailable):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
