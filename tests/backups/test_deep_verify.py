"""Deep verify over the API: one at a time across processes (each test-restores a whole
database into a scratch one)."""

from __future__ import annotations

from api.locks import DEEP_VERIFY_LOCK, MutationLock
from tests.conftest import Api


async def test_a_second_deep_verify_is_refused_while_one_runs(api: Api) -> None:
    headers = await api.headers()
    backup = (await api.client.post("/backups?wait=true", headers=headers)).json()
    deep_url = f"/backups/{backup['id']}/verify?deep=true"
    running = MutationLock(api.services.engine, DEEP_VERIFY_LOCK)  # as another process would
    assert await running.try_acquire()
    try:
        refused = await api.client.post(deep_url, headers=headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "Busy"
        assert "deep verify is already running" in refused.json()["detail"]
        shallow = await api.client.post(f"/backups/{backup['id']}/verify", headers=headers)
        assert shallow.json()["ok"] is True, "a plain checksum verify is never held up"
    finally:
        await running.release()
    deep = await api.client.post(deep_url, headers=headers)
    assert deep.status_code == 200, deep.text
    assert deep.json()["ok"] is True
    assert deep.json()["tablesChecked"] > 0
