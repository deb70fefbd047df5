"""nexus-backup: the command line. Prints and progress bars live here only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click

from api import __version__, faults, logs
from api.audit.service import CLI
from api.config import get_settings
from api.errors import AppError
from api.operations import Operations, recovery
from api.progress import ProgressView
from api.services import Services, open_services
from api.states import CLI_BACKUP_TYPES, BackupStatus, BackupType

P = ParamSpec("P")
T = TypeVar("T")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"nexus-backup: error: {logs.redact(message)}", err=True)
    sys.exit(code)


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class PlainView:
    """Progress as plain lines on stderr, at most every few seconds (logs, CI)."""

    def __init__(self) -> None:
        self._last = 0.0
        self._name = ""

    def phase(self, name: str, total: int | None) -> None:
        self._name = name
        click.echo(f"{name}...", err=True)
        self._last = time.monotonic()

    def advance(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last < 5:
            return
        self._last = now
        share = f" ({min(100, done * 100 // total)}%)" if total else ""
        click.echo(f"  {self._name}: {_human(done)}{share}", err=True)


class BarView:
    """A progress bar on a terminal (rich)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: Any = None

    def __enter__(self) -> BarView:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def phase(self, name: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self._progress.tasks[-1].total or 0)
        self._task = self._progress.add_task(name, total=total)

    def advance(self, done: int, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done, total=total)


def _views(quiet: bool) -> tuple[list[ProgressView], Any]:
    if quiet:
        return [], None
    if sys.stderr.isatty():
        bar = BarView()
        return [bar], bar
    return [PlainView()], None


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; its errors reach `_Group.invoke`, the one place that reports
    them. SIGTERM or SIGINT cancels it: what it started stops, cleans up and records itself
    ("interrupted by shutdown", `with_operations`), then the command exits 128 + the signal's
    number with one line."""
    received: list[int] = []

    async def interruptible() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def interrupt(signum: int) -> None:
            if not received:
                task.cancel("interrupted by shutdown")
            received.append(signum)  # a second signal changes nothing: cleanup is under way

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, interrupt, signum)
        try:
            return await coroutine
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    try:
        return asyncio.run(interruptible())
    except asyncio.CancelledError:
        if not received:
            raise
        name = signal.Signals(received[0]).name
        _fail(
            f"interrupted by {name}: what was running was stopped, its partial files removed "
            "and its record marked failed (a restore was undone, or finished if it had "
            "committed)",
            128 + received[0],
        )
        raise  # not reached: _fail exits


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def with_services(
    function: Callable[..., Awaitable[T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """Open the catalog (migrated), recover what a killed process left, run, close. Every
    command needs DATABASE_URL, even one that only reads a separate catalog."""

    @wraps(function)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        settings = get_settings()
        settings.require_database_url()
        services = await open_services(settings)
        try:
            for note in await recovery.recover(Operations(services)):
                click.echo(f"recovered: {note}", err=True)
            return await function(services, *args, **kwargs)
        finally:
            await services.close()

    return wrapper


def with_operations(
    function: Callable[..., Awaitable[T]],
) -> Callable[..., Coroutine[Any, Any, T]]:
    """As with_services, passing the operations engine (its `services` are open)."""

    @with_services
    @wraps(function)
    async def wrapper(services: Services, *args: Any, **kwargs: Any) -> T:
        operations = Operations(services)
        try:
            return await function(operations, *args, **kwargs)
        finally:
            # Interrupted (SIGTERM, Ctrl-C): what still runs stops and records itself first.
            await operations.shutdown()
            await operations.notifier.close()  # a failed backup's notice goes out before exit

    return wrapper


class _Group(click.Group):
    """The one place a failure is reported: an AppError (bad setting, unreachable catalog or
    bucket, refused archive, busy) is one line and exit 1, Ctrl-C is "interrupted" and exit
    130, and anything unexpected is one line too, with the traceback only under -v."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AppError as error:
            _fail(error.detail)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            verbose = bool(ctx.params.get("verbose"))
            if verbose:
                click.echo(logs.redact(traceback.format_exc()), err=True, nl=False)
            what = f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(": ")
            hint = "" if verbose else "; run with -v for the traceback"
            _fail(f"internal error: {what}{hint}")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nexus-backup")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens to stderr.")
def main(verbose: bool) -> None:
    """Back up and restore a PostgreSQL application database and its uploads, as one
    verified archive.

    Settings come from the environment or .env: DATABASE_URL, UPLOADS_DIR, BACKUP_DIR,
    BACKUP_COMPRESSION, APP_VERSION, POST_RESTORE_COMMAND, CATALOG_DATABASE_URL.
    """
    settings = None
    with contextlib.suppress(AppError):  # a bad setting: the command reports it itself
        settings = get_settings()
    logs.configure(settings, verbose=verbose)  # redacting; JSON lines in production
    faults.check(production=settings is not None and settings.production)  # tests only
    click.get_current_context().call_on_close(logs.uninstall)  # run in-process (tests)


@main.command()
@click.argument("name", required=False)
@click.option(
    "--type",
    "kind",
    default="manual",
    show_default=True,
    type=click.Choice([kind.value for kind in CLI_BACKUP_TYPES]),
    help="Why the backup is taken (pre_update: CI before a deploy).",
)
@click.option("--description", help="A note stored with the backup.")
@click.option("--sync", "sync_to_cloud", is_flag=True, help="Upload to cloud storage when done.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def backup(
    name: str | None, kind: str, description: str | None, sync_to_cloud: bool, quiet: bool
) -> None:
    """Back up the database and the uploads to BACKUP_DIR/NAME.tar.gz; print its path."""
    from api.operations import BackupOp
    from api.storage import service as storage

    @with_operations
    async def go(operations: Operations) -> None:
        views, bar = _views(quiet)
        if sync_to_cloud:
            storage.require(operations.services.storage)
        run = BackupOp(name=name, type=kind, description=description, sync_to_cloud=sync_to_cloud)
        with bar if bar is not None else contextlib.nullcontext():
            handle = await operations.submit(run, CLI, views)
            assert handle.operation.id is not None
            # The backup itself, then its after-hooks (the upload) on the same handle.
            result = await handle.wait()
        if result.status != "completed":
            _fail(f"backup {result.name} failed: {result.error_message}")
        click.echo(
            f"backup {result.name} completed: {result.table_count} tables, "
            f"{result.record_count} rows, {result.uploaded_files_count} files, "
            f"{_human(result.file_size)}, sha256 {result.checksum}",
            err=True,
        )
        if sync_to_cloud:
            if result.sync_status != "synced":
                click.echo(
                    f"warning: the cloud upload failed ({result.sync_error}); the local backup "
                    f"is fine; it is retried from {result.next_sync_at:%Y-%m-%d %H:%M} UTC by "
                    "the service, or now with `nexus-backup sync`",
                    err=True,
                )
            else:
                click.echo(f"uploaded to {result.cloud_provider} as {result.cloud_path}", err=True)
        click.echo(result.file_path)

    _run(go())


@main.command()
@click.argument("archive")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Verify and show what would change; change nothing.")
@click.option("--force", is_flag=True, help="Restore even an archive of a newer app version.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def restore(archive: str, yes: bool, dry_run: bool, force: bool, quiet: bool) -> None:
    """Restore ARCHIVE (a path, or a catalogued backup's name or id): database and uploads.

    The archive is verified completely first, and a pre_restore safety backup is taken before
    anything changes. The restore is all or nothing.
    """
    from api.operations import RestoreOp
    from api.restores.runner import RestoreRequest

    settings = get_settings()
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            _fail(
                "a restore replaces the live database and uploads: pass --yes to confirm, "
                "or --dry-run to see what would change"
            )
        click.echo(
            f"This replaces the database and the uploads in {settings.uploads_dir} with "
            f"{archive}. A pre_restore safety backup is taken first.",
            err=True,
        )
        typed = click.prompt("Type the archive or backup name as given to continue", err=True)
        if typed.strip() != archive:
            _fail("confirmation did not match; nothing was changed")

    @with_operations
    async def go(operations: Operations) -> None:
        views, bar = _views(quiet)
        request = RestoreRequest(archive=archive, dry_run=dry_run, force=force)
        with bar if bar is not None else contextlib.nullcontext():
            result = await operations.run(RestoreOp(request), CLI, views)
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
        if result.plan is not None:
            _print_plan(result.plan)
            return
        pre = result.pre_restore
        click.echo(
            f"restored {archive}; the state before is in pre_restore backup "
            f"{pre.name if pre else '-'} ({pre.file_path if pre else '-'})"
        )

    _run(go())


def _print_plan(plan: Any) -> None:
    click.echo(f"archive {plan.archive} verified (sha256 {plan.sha256}, {plan.layout} layout)")
    click.echo(f"app version {plan.app_version or '-'}, schema {plan.schema_version or '-'}")
    for warning in plan.warnings:
        click.echo(f"warning: {warning}")
    if not plan.tables_known:
        click.echo("tables: the archive records no row counts (seed layout)")
    elif plan.tables:
        click.echo("tables whose row counts would change (live -> restored):")
        for change in plan.tables:
            live = "-" if change.live is None else change.live
            archived = "dropped" if change.archived is None else change.archived
            click.echo(f"  {change.table}: {live} -> {archived}")
    else:
        click.echo("tables: row counts are the same")
    for label, items in (
        ("files that would be added", plan.files_added),
        ("files that would be removed", plan.files_removed),
        ("files that would be changed", plan.files_changed),
    ):
        click.echo(f"{label}: {len(items)}")
        for item in items[:20]:
            click.echo(f"  {item}")
        if len(items) > 20:
            click.echo(f"  ... and {len(items) - 20} more")
    click.echo("dry run: nothing was changed")


@main.command()
@click.argument("archive")
@click.option(
    "--deep",
    is_flag=True,
    help="Restore drill: load the catalogued backup into a scratch database and check it "
    "(row counts, checksums, VERIFY_SQL); the outcome is recorded on the backup.",
)
def verify(archive: str, deep: bool) -> None:
    """Check ARCHIVE (a path, or a catalogued backup's name or id) completely; with --deep,
    restore a catalogued backup into a scratch database and check it (exit 1 when it fails)."""
    from api.operations import ArchiveVerifyOp

    if deep:
        _verify_deep(archive)
        return

    @with_operations
    async def go(operations: Operations) -> None:
        result = await operations.run(ArchiveVerifyOp(archive), CLI)
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(
            f"OK {result.path}: {result.layout} layout, sha256 {result.sha256} "
            f"({result.checksum_source or 'no stored'} checksum), {result.upload_files} uploaded "
            f"files, database.sql {_human(result.database_size)}"
        )

    _run(go())


def _verify_deep(ref: str) -> None:
    """The deep verify (a restore drill) of the catalogued backup `ref` names: its id, name or
    archive path; the same operation as the API's, recorded on the backup the same way."""
    from pathlib import Path

    from api.backups import service
    from api.backups.verify import Verification
    from api.db import transaction
    from api.errors import NotFound
    from api.operations import VerifyOp

    @with_operations
    async def go(operations: Operations) -> tuple[str, str, Verification]:
        async with transaction(operations.services.sessions) as session:
            backup = await service.find(session, ref)
            if backup is None and Path(ref).is_file():
                backup = await service.by_file(session, str(Path(ref).resolve()))
        if backup is None:
            raise NotFound(
                f"{ref!r} is not a catalogued backup (its name, id or archive path); a deep "
                "verify restores a catalogued backup: `nexus-backup list` shows them"
            )
        result = await operations.run(VerifyOp(backup.id, deep=True), CLI)
        return backup.id, backup.name, result

    backup_id, name, result = _run(go())
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not result.ok:
        _fail(f"restore drill of {name} ({backup_id}) FAILED: {result.problem}")
    click.echo(
        f"OK {name} ({backup_id}) restores: {result.tables_checked} tables with the recorded row "
        f"counts, sha256 {result.sha256}, {result.layout} layout"
    )


@main.command(name="list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--status", type=click.Choice([status.value for status in BackupStatus]))
@click.option("--type", "kind", type=click.Choice([kind.value for kind in BackupType]))
@click.option("--json", "as_json", is_flag=True, help="JSON lines, for scripts.")
def list_command(limit: int, status: str | None, kind: str | None, as_json: bool) -> None:
    """List catalogued backups, newest first."""
    from api.backups import service
    from api.db import transaction

    @with_services
    async def go(services: Services) -> None:
        async with transaction(services.sessions) as session:
            rows = await service.list_backups(session, limit=limit, status=status, kind=kind)
        if as_json:
            for row in rows:
                click.echo(
                    json.dumps(
                        {
                            "id": row.id,
                            "name": row.name,
                            "type": row.type,
                            "status": row.status,
                            "filePath": row.file_path,
                            "fileSize": row.file_size,
                            "checksum": row.checksum,
                            "createdAt": row.created_at.isoformat(),
                            "errorMessage": row.error_message,
                        }
                    )
                )
            return
        if not rows:
            click.echo("no backups yet: run `nexus-backup backup`", err=True)
            return
        click.echo(f"{'ID':<8}  {'NAME':<36}  {'TYPE':<11}  {'STATUS':<11}  {'SIZE':>10}  CREATED")
        for row in rows:
            click.echo(
                f"{row.id[:8]:<8}  {row.name[:36]:<36}  {row.type:<11}  {row.status:<11}  "
                f"{_human(row.file_size):>10}  {row.created_at:%Y-%m-%d %H:%M:%S}"
                + (f"  {row.error_message}" if row.status == "failed" else "")
            )

    _run(go())


@main.command()
@click.option("--downgrade", "revision", help="Downgrade the catalog to REVISION (e.g. base).")
def migrate(revision: str | None) -> None:
    """Apply the catalog schema migrations (done automatically by every command)."""
    from api import migrate as migrations
    from api.db import make_engine

    async def go() -> None:
        engine = make_engine(get_settings().catalog_url())
        try:
            if revision:
                await migrations.downgrade(engine, revision)
            else:
                await migrations.upgrade(engine)
        finally:
            await engine.dispose()

    _run(go())
    click.echo("catalog downgraded" if revision else "catalog is up to date")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the API and the admin page on DATABASE_URL (required; `make run` serves a
    throwaway demo instead)."""
    from api import serving
    from api.main import create_app

    settings = get_settings()
    settings.require_database_url()
    settings.check_serving()
    if settings.production:
        # Default secrets, an unreachable database, an unwritable BACKUP_DIR, an old pg_dump:
        # one line naming the fix, before anything starts (api/startup.py).
        from api import startup

        _run(startup.check_production(settings))

    async def reachable() -> None:
        # The catalog is opened (and migrated) here first, so an unreachable one is one line
        # naming the setting instead of a traceback from inside the server's startup.
        services = await open_services(settings)
        await services.close()

    _run(reachable())
    logs.configure(settings)  # at LOG_LEVEL, -v or not; uvicorn's lines go through it too
    app = create_app(settings)
    server = serving.Server(serving.uvicorn_config(app, settings, host, port))
    server.run()
    if not server.started:
        _fail(f"the server did not start on {host}:{port}: the log above says why", 3)


@main.command()
def check() -> None:
    """Check the settings as production startup does (secrets, catalog and app database,
    BACKUP_DIR, pg_dump against the server) and print each result; exit 1 on a problem. The
    bucket, when configured, is asked too: an outage there is a warning, not a problem (local
    backups go on; the sync is retried). Changes nothing (the catalog is not migrated)."""
    from api import startup

    settings = get_settings()
    results = _run(startup.run_checks(settings, storage=True))
    for result in results:
        outcome = {True: "ok", False: "problem" if result.fatal else "warning", None: "skipped"}
        click.echo(f"{outcome[result.ok]:<8} {result.name:<10} {result.detail}")
    problems = sum(result.ok is False and result.fatal for result in results)
    if problems:
        _fail(f"{problems} problem{'s' if problems > 1 else ''} found (see above)")
    if not settings.production:
        click.echo("all checks passed (NEXUS_ENV=development: serve does not enforce them)")
    else:
        click.echo("all checks passed")


@main.command()
def openapi() -> None:
    """Print the OpenAPI document (what web/ generates its types from)."""
    from api.config import Settings
    from api.main import create_app

    click.echo(json.dumps(create_app(Settings(_env_file=None)).openapi(), indent=2, sort_keys=True))


@main.group()
def users() -> None:
    """Manage the people who may log in to the web page."""


@users.command(name="create")
@click.option("--email", required=True, help="Login email.")
@click.option("--role", required=True, help="OWNER, GCMC_MANAGER or KAJ_MANAGER (others get 403).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(email: str, role: str, password_stdin: bool) -> None:
    """Create a user (the first admin, for instance)."""
    from api.audit import service as audit
    from api.auth import service as auth
    from api.db import transaction
    from api.states import AuditOutcome

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)

    @with_services
    async def go(services: Services) -> None:
        async with transaction(services.sessions) as session:
            user = await auth.create_user(session, email, role, password)
            await audit.record(
                session,
                audit.CLI,
                action="user.create",
                target=user.email,
                outcome=AuditOutcome.completed,
                detail={"role": user.role},
            )
        click.echo(f"user {user.email} created with role {user.role}")

    _run(go())


@main.group()
def tokens() -> None:
    """Manage API tokens for CI scripts and integrations."""


@tokens.command(name="create")
@click.option("--name", required=True, help="What the token is for, e.g. ci-deploy.")
@click.option("--role", default="OWNER", show_default=True, help="The role the token acts as.")
@click.option("--expires-days", type=click.IntRange(1, 3650), help="Expire after N days.")
def tokens_create(name: str, role: str, expires_days: int | None) -> None:
    """Create a token; it is printed once (on stdout) and stored only as a hash."""
    from api.audit import service as audit
    from api.auth import service as auth
    from api.db import transaction
    from api.states import AuditOutcome

    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None

    @with_services
    async def go(services: Services) -> None:
        async with transaction(services.sessions) as session:
            secret, token = await auth.create_token(session, name, role, "cli", expires)
            await audit.record(
                session,
                audit.CLI,
                action="token.create",
                target=token.name,
                outcome=AuditOutcome.completed,
                detail={"id": token.id, "role": token.role},
            )
        click.echo(
            f"token {token.name} ({token.id}, role {token.role}) created; it is shown only "
            "once. Use it as: Authorization: Bearer <token>",
            err=True,
        )
        click.echo(secret)

    _run(go())


@tokens.command(name="list")
def tokens_list() -> None:
    """List tokens (never their secrets)."""
    from api.auth import service as auth
    from api.db import transaction

    @with_services
    async def go(services: Services) -> None:
        async with transaction(services.sessions) as session:
            rows = await auth.list_tokens(session)
        if not rows:
            click.echo("no tokens: nexus-backup tokens create --name NAME", err=True)
            return
        click.echo(
            f"{'ID':<16}  {'NAME':<24}  {'ROLE':<14}  {'PREFIX':<10}  {'STATE':<8}  LAST USED"
        )
        for row in rows:
            expired = row.expires_at is not None and row.expires_at < datetime.now(UTC)
            state = "revoked" if row.revoked_at else "expired" if expired else "active"
            used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
            click.echo(
                f"{row.id:<16}  {row.name[:24]:<24}  {row.role:<14}  {row.prefix:<10}  "
                f"{state:<8}  {used}"
            )

    _run(go())


@tokens.command(name="revoke")
@click.argument("token")
def tokens_revoke(token: str) -> None:
    """Revoke a token by id or name; it stops working at once."""
    from api.audit import service as audit
    from api.auth import service as auth
    from api.db import transaction
    from api.states import AuditOutcome

    @with_services
    async def go(services: Services) -> None:
        async with transaction(services.sessions) as session:
            row = await auth.revoke_token(session, token)
            await audit.record(
                session,
                audit.CLI,
                action="token.revoke",
                target=row.name,
                outcome=AuditOutcome.completed,
                detail={"id": row.id},
            )
        click.echo(f"token {row.name} ({row.id}) revoked")

    _run(go())


@main.command(name="sync")
@click.argument("backup_ref", metavar="BACKUP")
def sync_command(backup_ref: str) -> None:
    """Upload a catalogued backup (name or id) to cloud storage and confirm the copy."""
    from api.backups import service
    from api.db import transaction
    from api.operations import SyncOp

    @with_operations
    async def go(operations: Operations) -> None:
        async with transaction(operations.services.sessions) as session:
            found = await service.find(session, backup_ref)
        if found is None:
            raise AppError(f"no backup named {backup_ref!r}; `nexus-backup list` shows them")
        result = await operations.run(SyncOp(found.id), CLI)
        if result.sync_status != "synced":
            raise AppError(f"the upload of {result.name} failed: {result.sync_error}")
        click.echo(f"{result.name} synced to {result.cloud_provider} as {result.cloud_path}")

    _run(go())


@main.group()
def storage() -> None:
    """Cloud storage (BACKUP_S3_*): test it, list what is there."""


@storage.command(name="test")
def storage_test() -> None:
    """Upload, read back and delete a small object."""
    from api.storage import service as storage_service

    @with_services
    async def go(services: Services) -> None:
        result = await storage_service.round_trip(storage_service.require(services.storage))
        click.echo(
            f"storage OK: {services.storage.name if services.storage else '-'} bucket "
            f"{services.settings.backup_s3_bucket} at "
            f"{storage_service.endpoint_host(services.settings)} "
            f"({result['latencyMs']} ms round trip)"
        )

    _run(go())


@storage.command(name="list")
def storage_list() -> None:
    """List the objects in the bucket (under BACKUP_S3_PREFIX)."""
    from api.storage import service as storage_service

    @with_services
    async def go(services: Services) -> None:
        objects = await storage_service.require(services.storage).list("")
        for item in objects:
            when = f"{item.modified:%Y-%m-%d %H:%M}" if item.modified else "-"
            click.echo(f"{_human(item.size):>10}  {when}  {item.key}")
        if not objects:
            click.echo("the bucket is empty", err=True)

    _run(go())


@main.group()
def catalog() -> None:
    """The catalog of backups."""


@catalog.command(name="import")
def catalog_import() -> None:
    """Add every archive in BACKUP_DIR and in the bucket that the catalog does not list
    (verified, from its sidecar and manifest): a new server sees all the old backups."""
    from api.operations import ImportOp

    @with_operations
    async def go(operations: Operations) -> None:
        report = await operations.run(ImportOp(), CLI)
        for name in report.imported:
            click.echo(f"imported {name}")
        for problem in report.problems:
            click.echo(f"not imported: {problem}", err=True)
        click.echo(
            f"{len(report.imported)} imported, {len(report.skipped)} already catalogued, "
            f"{len(report.problems)} refused",
            err=True,
        )
        if report.problems:
            raise AppError("some archives could not be imported (see above)")

    _run(go())


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["main"]
