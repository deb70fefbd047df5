"""Routers parse, authorise, call one service function and return a schema: no SQL and no audit
rows in a router, and no catalog transaction held open across a network call."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from tests.conftest import Api
from tests.s3server import S3Server

ROUTERS = sorted((Path(__file__).parent.parent / "api").glob("*/router.py"))
SQL = {"select", "update", "delete", "insert", "text"}
AUDIT = {"record", "record_counted", "entry"}


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    sql_names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy")
        for alias in node.names
        if alias.name in SQL
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        where = f"{path.parent.name}/{path.name}:{node.lineno}"
        if isinstance(func, ast.Name) and func.id in sql_names:
            found.append(f"{where}: SQL {func.id}(...)")
        elif isinstance(func, ast.Attribute) and func.attr == "execute":
            found.append(f"{where}: {ast.unparse(func)}(...) runs SQL")
        elif (
            isinstance(func, ast.Attribute)
            and func.attr in AUDIT
            and isinstance(func.value, ast.Name)
            and func.value.id == "audit"
        ):
            found.append(f"{where}: audit.{func.attr}(...) belongs in a service")
    return found


def test_the_router_scan_finds_every_router() -> None:
    assert {p.parent.name for p in ROUTERS} >= {"audit", "backups", "restores", "schedules"}


@pytest.mark.parametrize("router", ROUTERS, ids=lambda p: p.parent.name)
def test_a_router_holds_no_sql_and_writes_no_audit_row(router: Path) -> None:
    problems = _problems(router)
    assert not problems, "move these into a service function:\n" + "\n".join(problems)


def test_the_router_scan_catches_sql_and_audit_calls(tmp_path: Path) -> None:
    """The scan itself works: a router written the old way is caught on every count."""
    bad = tmp_path / "bad" / "router.py"
    bad.parent.mkdir()
    bad.write_text(
        "from sqlalchemy import select, delete as remove\n"
        "async def route(session, audit):\n"
        "    await session.execute(select(1))\n"
        "    await session.execute(remove(1))\n"
        "    await audit.record(session, 'x', 'y', None, 'completed')\n"
    )
    assert len(_problems(bad)) == 5


async def test_storage_test_holds_no_catalog_transaction_open_during_the_round_trip(
    capi: Api,
    s3: S3Server,
) -> None:
    """POST /storage/test talks to the bucket with no catalog transaction open, then audits the
    result in a short transaction of its own."""
    headers = await capi.headers()
    s3.fail("PUT", "", times=1, mode="hang")
    testing = asyncio.create_task(capi.client.post("/storage/test", headers=headers))
    assert await asyncio.to_thread(s3.wait_until_held), "the PUT never reached the bucket"
    open_transactions = capi.app.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
    )
    s3.reset()  # the held request is dropped; the client's retry goes through
    response = await testing
    assert open_transactions.strip() == "0", "a catalog transaction was open during the test"
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True, response.json()
    audit = await capi.client.get("/audit?action=storage.test", headers=headers)
    assert [(e["action"], e["outcome"]) for e in audit.json()["items"]] == [
        ("storage.test", "completed")
    ]
