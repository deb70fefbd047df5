"""The operations engine: one path for every operation. Submitting gives the pending record at
once; the mutation lock is held from the record to the end of the work (children run under
it, a second mutation is refused naming the holder) and released before the after-hooks; a
failing hook never undoes its operation; a deletion interrupted after its commit is purged by
recovery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api.audit.service import Caller
from api.backups.models import SystemBackup
from api.errors import Busy
from api.operations import BackupOp, Operations
from api.operations.backup import Mutation
from api.operations.engine import Context
from api.operations.recovery import recover
from tests.conftest import Api


async def test_submit_answers_with_the_pending_record_and_the_handle_waits_for_the_end(
    api: Api,
) -> None:
    backup = BackupOp(name="handled")
    handle = await api.operations.submit(backup, Caller("tester"))
    assert backup.record is not None
    assert backup.record.status == "pending"
    assert handle.id == backup.record.id
    done = await handle.wait()
    assert done.status == "completed"
    assert done.created_by == "tester"
    assert Path(done.file_path or "").is_file()


class _Parent(Mutation[tuple[SystemBackup, str]]):
    """A mutation that runs a child backup under its own lock and meanwhile tries a second
    mutation, as another request would."""

    kind = "test-parent"

    async def run(self, ctx: Context) -> tuple[SystemBackup, str]:
        child = await ctx.child(BackupOp(name="child-of-parent"))
        try:
            await ctx.operations.submit(BackupOp(name="intruder"))
        except Busy as refused:
            return child, refused.detail
        return child, "not refused"


async def test_a_child_runs_under_its_parents_lock_and_a_second_mutation_is_refused(
    api: Api,
) -> None:
    child, refusal = await api.operations.run(_Parent())
    assert child.status == "completed"
    assert refusal != "not refused", "a second mutation ran while one held the lock"
    assert "wait for it to finish" in refusal


async def test_after_hooks_run_once_the_lock_is_released_and_their_failure_is_their_own(
    api: Api,
) -> None:
    seen: list[str] = []

    async def takes_the_lock(ctx: Context, operation: Any, backup: SystemBackup) -> SystemBackup:
        if backup.name != "first":
            return backup  # the hook's own backup runs these hooks too
        # Would be refused (Busy) if the first backup's lock were still held.
        after = await ctx.operations.run(BackupOp(name="after-first"))
        seen.append(after.status)
        return backup

    async def fails(ctx: Context, operation: Any, backup: SystemBackup) -> SystemBackup:
        raise RuntimeError("a notification service is down")

    hooks = {BackupOp.kind: (fails, takes_the_lock)}
    operations = Operations(api.services, hooks={**hooks})
    done = await operations.run(BackupOp(name="first"))
    assert done.status == "completed", "a failing after-hook undid its operation"
    assert seen == ["completed"]


async def test_a_deletion_stopped_after_its_commit_is_purged_by_recovery(api: Api) -> None:
    headers = await api.headers()
    body = (
        await api.client.post("/backups?wait=true", headers=headers, json={"name": "half-gone"})
    ).json()
    archive = Path(body["filePath"])
    assert archive.is_file()
    # What a process that died right after the deletion's commit leaves: the record deleted,
    # the files still there, not purged.
    api.app.sql(
        f"UPDATE nexus_backup.system_backup SET deleted_at = now() WHERE id = '{body['id']}'"
    )
    assert (await api.client.get(f"/backups/{body['id']}", headers=headers)).status_code == 404
    notes = await recover(Operations(api.services))
    assert any("finished purging" in note for note in notes), notes
    assert not archive.exists(), "recovery left the archive of a deleted backup"
    assert not Path(str(archive) + ".sha256").exists()
    purged = api.app.sql(
        f"SELECT purged_at IS NOT NULL FROM nexus_backup.system_backup WHERE id = '{body['id']}'"
    )
    assert purged.strip() == "t"


async def test_delete_marks_then_purges_and_records_when(api: Api) -> None:
    headers = await api.headers()
    body = (
        await api.client.post("/backups?wait=true", headers=headers, json={"name": "purged"})
    ).json()
    assert (await api.client.delete(f"/backups/{body['id']}", headers=headers)).status_code == 200
    row = api.app.sql(
        f"SELECT deleted_at <= purged_at FROM nexus_backup.system_backup WHERE id = '{body['id']}'"
    )
    assert row.strip() == "t", "purgedAt must follow the committed deletion"
    assert not Path(body["filePath"]).exists()
