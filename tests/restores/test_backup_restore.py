"""End to end on real PostgreSQL: back up with the CLI, change everything, restore, compare."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, App, database_state, tree_state


def _archives(app: App) -> list[str]:
    return sorted(p.name for p in app.backups.glob("*.tar.*") if not p.name.endswith(".sha256"))


def _catalog(app: App) -> list[dict[str, object]]:
    result = app.cli("list", "--json", "--limit", "1000")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _mess_up(app: App) -> None:
    """Change rows, schema, sequences and files the way a bad day would."""
    app.sql(
        "DELETE FROM invoice_lines WHERE id % 3 = 0;"
        "UPDATE clients SET name = 'changed' WHERE id < 10;"
        "INSERT INTO clients (name, email) VALUES ('late', 'late@example.com');"
        "CREATE TABLE created_after_backup (id int);"
        "CREATE SCHEMA other; CREATE TABLE other.t (x int);"
        "SELECT setval(pg_get_serial_sequence('clients', 'id'), 99999);"
    )
    last = sorted(p for p in app.uploads.rglob("*") if p.is_file())[-1]
    last.write_bytes(b"overwritten")
    shutil.rmtree(sorted(p for p in app.uploads.iterdir() if p.is_dir())[0])
    (app.uploads / "added-after-backup.txt").write_text("new")
    os.chmod(app.uploads, 0o700)


def test_round_trip_restores_schema_rows_sequences_and_files_exactly(app: App) -> None:
    before_db = database_state(app)
    before_tree = tree_state(app.uploads)
    path = Path(app.cli("backup", "golden").stdout.strip())
    assert path == app.backups / "golden.tar.gz"

    _mess_up(app)
    assert database_state(app) != before_db
    assert tree_state(app.uploads) != before_tree

    app.cli("restore", str(path), "--yes")

    schema, data = database_state(app)
    assert schema == before_db[0], "schema after restore differs from the backup's"
    assert data == before_db[1], "rows or sequence values after restore differ from the backup's"
    assert tree_state(app.uploads) == before_tree, "uploads (bytes, modes, mtimes) differ"
    assert app.sql("SELECT to_regclass('created_after_backup')").strip() == ""
    assert app.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'other'").strip() == "0"


def test_archive_is_inspectable_with_tar_and_sha256sum(app: App) -> None:
    path = Path(app.cli("backup", "inspect").stdout.strip())
    check = subprocess.run(
        ["sha256sum", "-c", path.name + ".sha256"], cwd=path.parent, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    listing = subprocess.run(["tar", "tzf", str(path)], capture_output=True, text=True, check=True)
    names = listing.stdout.split()
    assert "manifest.json" in names
    assert "database.sql" in names
    assert any(name.startswith("uploads/") for name in names)
    manifest = json.loads(
        subprocess.run(
            ["tar", "xzf", str(path), "-O", "manifest.json"], capture_output=True, check=True
        ).stdout
    )
    assert manifest["formatVersion"] == 1
    assert manifest["schemaVersion"] == "20251213_0042"
    assert manifest["database"]["tables"]["public.clients"] == 60
    assert manifest["appVersion"] == "1.0.0"
    file_entries = [f for f in manifest["files"] if f["path"].startswith("uploads/")]
    assert manifest["uploads"]["fileCount"] == len(file_entries) > 0


def test_plain_tar_and_psql_restore_without_the_tool(app: App, tmp_path: Path) -> None:
    before_db = database_state(app)
    path = Path(app.cli("backup", "portable").stdout.strip())
    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run(["tar", "xzf", str(path), "-C", str(out)], check=True)
    app.cluster.create_database("plain_psql_target")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = app.cluster.password
        subprocess.run(
            [
                str(app.cluster.bin("psql")),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-o",
                os.devnull,
                "-h",
                "127.0.0.1",
                "-p",
                str(app.cluster.port),
                "-U",
                "nexus",
                "-f",
                str(out / "database.sql"),
                "plain_psql_target",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        restored = app.cluster.psql("plain_psql_target", "SELECT count(*) FROM invoice_lines")
        original = app.sql("SELECT count(*) FROM invoice_lines")
        assert restored == original
    finally:
        app.cluster.drop_database("plain_psql_target")
    assert database_state(app) == before_db


def test_zstd_archive_round_trips(app: App) -> None:
    before = tree_state(app.uploads), database_state(app)
    path = Path(app.cli("backup", "zst", BACKUP_COMPRESSION="zstd").stdout.strip())
    assert path.name == "zst.tar.zst"
    assert path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    _mess_up(app)
    app.cli("restore", "zst", "--yes")
    assert (tree_state(app.uploads), database_state(app)) == before


def test_pre_restore_backup_gives_back_the_state_before(app: App) -> None:
    app.cli("backup", "old")
    _mess_up(app)
    messed = tree_state(app.uploads), database_state(app)
    app.cli("restore", "old", "--yes")
    pre = [b for b in _catalog(app) if b["type"] == "pre_restore"]
    assert len(pre) == 1
    assert pre[0]["status"] == "completed"
    app.cli("restore", str(pre[0]["name"]), "--yes")
    assert (tree_state(app.uploads), database_state(app)) == messed


def test_catalog_lists_every_earlier_backup_after_a_restore(app: App) -> None:
    for name in ("one", "two", "three"):
        app.cli("backup", name)
    before = {b["id"] for b in _catalog(app)}
    app.cli("restore", "one", "--yes")
    after = {b["id"] for b in _catalog(app)}
    assert before <= after
    assert len(after - before) == 1  # the pre_restore safety backup


def test_dry_run_reports_changes_and_touches_nothing(app: App) -> None:
    app.cli("backup", "plan")
    _mess_up(app)
    messed = tree_state(app.uploads), database_state(app)
    result = app.cli("restore", "plan", "--dry-run")
    assert "public.clients: 61 -> 60" in result.stdout
    assert "public.created_after_backup: 0 -> dropped" in result.stdout
    assert "added-after-backup.txt" in result.stdout
    assert "files that would be changed: 1" in result.stdout
    assert "nothing was changed" in result.stdout
    assert (tree_state(app.uploads), database_state(app)) == messed
    assert [b["type"] for b in _catalog(app)] == ["manual"]


def test_newer_app_version_is_refused_without_force(app: App) -> None:
    app.cli("backup", "future", APP_VERSION="2.0.0")
    _mess_up(app)
    messed = tree_state(app.uploads), database_state(app)
    refused = app.cli("restore", "future", "--yes", check=False)
    assert refused.returncode != 0
    assert "2.0.0" in refused.stderr
    assert "--force" in refused.stderr
    assert (tree_state(app.uploads), database_state(app)) == messed
    app.cli("restore", "future", "--yes", "--force")
    assert tree_state(app.uploads) != messed[0]


def test_restore_without_yes_on_a_pipe_refuses(app: App) -> None:
    app.cli("backup", "ask")
    result = app.cli("restore", "ask", check=False)
    assert result.returncode != 0
    assert "--yes" in result.stderr


def _retar(source: Path, target: Path, edit: object) -> None:
    """Copy an archive member by member, letting `edit(info, data)` change or add members."""
    with (
        tarfile.open(source, "r:gz") as old,
        tarfile.open(target, "w:gz", format=tarfile.PAX_FORMAT) as new,
    ):
        for info in old:
            data = old.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            for out_info, out_data in edit(info, data):  # type: ignore[operator]
                new.addfile(out_info, io.BytesIO(out_data) if out_data is not None else None)


def _same(info: tarfile.TarInfo, data: bytes | None) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [(info, data)]


def _bit_flip(path: Path, out: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    out.write_bytes(bytes(raw))


def _truncate(path: Path, out: Path) -> None:
    out.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def _tamper_manifest(path: Path, out: Path) -> None:
    def edit(
        info: tarfile.TarInfo, data: bytes | None
    ) -> list[tuple[tarfile.TarInfo, bytes | None]]:
        if info.name == "database.sql" and data is not None:
            data = data.replace(b"INSERT", b"insert", 1) + b"\n-- tampered\n"
            info.size = len(data)
        if info.name == "manifest.json" and data is not None:
            manifest = json.loads(data)
            manifest["database"]["size"] += 0
            data = json.dumps(manifest).encode()
            info.size = len(data)
        return [(info, data)]

    _retar(path, out, edit)


def _extra_member(path: Path, out: Path) -> None:
    def edit(
        info: tarfile.TarInfo, data: bytes | None
    ) -> list[tuple[tarfile.TarInfo, bytes | None]]:
        result = [(info, data)]
        if info.name == "database.sql":
            extra = tarfile.TarInfo("uploads/not-in-manifest.txt")
            extra.size = 3
            result.append((extra, b"bad"))
        return result

    _retar(path, out, edit)


def _dotdot_member(path: Path, out: Path) -> None:
    def edit(
        info: tarfile.TarInfo, data: bytes | None
    ) -> list[tuple[tarfile.TarInfo, bytes | None]]:
        result = [(info, data)]
        if info.name == "database.sql":
            evil = tarfile.TarInfo("uploads/../../escaped.txt")
            evil.size = 4
            result.insert(0, (evil, b"evil"))
        return result

    _retar(path, out, edit)


def _symlink_member(path: Path, out: Path) -> None:
    def edit(
        info: tarfile.TarInfo, data: bytes | None
    ) -> list[tuple[tarfile.TarInfo, bytes | None]]:
        result = [(info, data)]
        if info.name == "database.sql":
            link = tarfile.TarInfo("uploads/link-to-etc")
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc"
            result.insert(0, (link, None))
        return result

    _retar(path, out, edit)


@pytest.mark.parametrize(
    "damage",
    [_bit_flip, _truncate, _tamper_manifest, _extra_member, _dotdot_member, _symlink_member],
    ids=["bit-flip", "truncated", "tampered", "extra-member", "dotdot-member", "symlink-member"],
)
def test_damaged_archive_is_refused_before_anything_changes(app: App, damage: object) -> None:
    good = Path(app.cli("backup", "good").stdout.strip())
    bad = app.root / "outside" / "bad.tar.gz"
    bad.parent.mkdir()
    damage(good, bad)  # type: ignore[operator]
    if damage is not _bit_flip and damage is not _truncate:
        # A re-made archive gets a sidecar matching it, so only the content checks can catch it.
        digest = hashlib.sha256(bad.read_bytes()).hexdigest()
        (bad.parent / "bad.tar.gz.sha256").write_text(f"{digest}  bad.tar.gz\n")
    else:
        shutil.copy(good.with_name(good.name + ".sha256"), bad.parent / "bad.tar.gz.sha256")
    _mess_up(app)
    before = tree_state(app.uploads), database_state(app), _archives(app)
    parent_before = sorted(os.listdir(app.uploads.parent))

    result = app.cli("restore", str(bad), "--yes", check=False)

    assert result.returncode != 0, result.stdout
    assert result.stderr.strip(), "a refusal must say why"
    assert (tree_state(app.uploads), database_state(app), _archives(app)) == before
    assert sorted(os.listdir(app.uploads.parent)) == parent_before, "staging left behind"
    assert not (app.root / "escaped.txt").exists()
    assert [b["type"] for b in _catalog(app)] == ["manual"], "no pre_restore before verification"


def test_catalogued_archive_must_match_the_catalog_checksum(app: App) -> None:
    path = Path(app.cli("backup", "pinned").stdout.strip())
    # Replace the file and its sidecar with another valid archive: only the catalog knows.
    other = Path(app.cli("backup", "other").stdout.strip())
    shutil.copy(other, path)
    shutil.copy(other.with_name(other.name + ".sha256"), path.with_name(path.name + ".sha256"))
    result = app.cli("restore", "pinned", "--yes", check=False)
    assert result.returncode != 0
    assert "catalog" in result.stderr
    verify = app.cli("verify", "pinned", check=False)
    assert verify.returncode != 0
    # Given by path, a catalogued archive is still checked against the catalog, not its sidecar.
    by_path = app.cli("restore", str(path), "--yes", check=False)
    assert by_path.returncode != 0
    assert "catalog" in by_path.stderr


def test_seed_layout_archive_restores(app: App, tmp_path: Path) -> None:
    before = tree_state(app.uploads), database_state(app)
    seed = tmp_path / "seed"
    seed.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = app.cluster.password
    with open(seed / "database.sql", "wb") as handle:
        subprocess.run(
            [
                str(app.cluster.bin("pg_dump")),
                "-h",
                "127.0.0.1",
                "-p",
                str(app.cluster.port),
                "-U",
                "nexus",
                "--exclude-schema=nexus_backup",
                app.database,
            ],
            env=env,
            stdout=handle,
            check=True,
        )
    shutil.copytree(app.uploads, seed / "uploads", copy_function=shutil.copy2)
    shutil.copystat(app.uploads, seed / "uploads")
    digest = hashlib.sha256((seed / "database.sql").read_bytes()).hexdigest()
    (seed / "manifest.json").write_text(
        json.dumps(
            {
                "version": "1.0.0",
                "createdAt": "2025-12-13T00:00:00Z",
                "checksums": {"database": digest},
            }
        )
    )
    archive = tmp_path / "gk-nexus-backup-20241212.tar.gz"
    subprocess.run(
        ["tar", "czf", str(archive), "-C", str(seed), "manifest.json", "database.sql", "uploads"],
        check=True,
    )
    _mess_up(app)
    result = app.cli("restore", str(archive), "--yes")
    assert "restored" in result.stdout
    assert database_state(app) == before[1]
    files_now = {k: v for k, v in tree_state(app.uploads).items() if v[0] == "file"}
    files_then = {k: v for k, v in before[0].items() if v[0] == "file"}
    assert files_now == files_then


def test_pg_dump_failure_gives_a_failed_record_and_no_archive(app: App) -> None:
    # A role that may not read one table: pg_dump itself fails, for real.
    app.sql(
        "CREATE ROLE limited LOGIN PASSWORD 'limited-pw';"
        "GRANT USAGE ON SCHEMA public TO limited;"
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO limited;"
        "REVOKE SELECT ON invoices FROM limited;"
    )
    try:
        limited_url = app.url.replace(
            app.url.split("//", 1)[1].split("@", 1)[0], "limited:limited-pw"
        )
        result = app.cli(
            "backup", "doomed", check=False, DATABASE_URL=limited_url, CATALOG_DATABASE_URL=app.url
        )
        assert result.returncode != 0
        assert "pg_dump failed" in result.stderr
        assert "permission denied" in result.stderr
        assert _archives(app) == []
        assert not [p for p in app.backups.iterdir() if ".partial-" in p.name]
        record = _catalog(app)[0]
        assert record["status"] == "failed"
        assert "permission denied" in str(record["errorMessage"])
        audit = app.sql(
            "SELECT outcome FROM nexus_backup.audit_log"
            " WHERE action = 'backup.run' AND target = 'doomed'"
        )
        assert audit.strip() == "failed"
    finally:
        app.sql("DROP OWNED BY limited; DROP ROLE limited;")


def test_scripts_back_up_and_restore_as_the_seed_describes(app: App) -> None:
    env = app.env()
    backup = subprocess.run(
        [str(ROOT / "scripts" / "backup.sh")],
        cwd=app.root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    path = Path(backup.stdout.strip().splitlines()[-1])
    assert path.parent == app.backups
    assert path.name.startswith("gk-nexus-backup-")
    assert path.name.endswith(".tar.gz")
    before = tree_state(app.uploads), database_state(app)
    _mess_up(app)
    subprocess.run(
        [str(ROOT / "scripts" / "restore.sh"), str(path), "--yes"],
        cwd=app.root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (tree_state(app.uploads), database_state(app)) == before
    named = subprocess.run(
        [str(ROOT / "scripts" / "backup.sh"), "pre-update"],
        cwd=app.root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert named.stdout.strip().endswith("/pre-update.tar.gz")


def test_existing_backup_name_is_never_overwritten(app: App) -> None:
    path = Path(app.cli("backup", "same").stdout.strip())
    original = path.read_bytes()
    again = app.cli("backup", "same", check=False)
    assert again.returncode != 0
    assert "already exists" in again.stderr
    assert path.read_bytes() == original


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "x" * 200, "bad name"])
def test_unsafe_backup_names_are_refused(app: App, name: str) -> None:
    result = app.cli("backup", name, check=False)
    assert result.returncode != 0
    assert "invalid backup name" in result.stderr
    assert not app.backups.exists() or _archives(app) == []


def test_missing_database_url_names_the_setting(app: App) -> None:
    result = app.cli("list", check=False, DATABASE_URL="")
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_database_url_scheme_names_the_setting_and_fix(app: App) -> None:
    result = app.cli("list", check=False, DATABASE_URL="mysql://x@y/z")
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr
    assert "postgresql://" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_uploads_dir_fails_the_backup_with_the_setting_named(app: App) -> None:
    result = app.cli("backup", "nouploads", check=False, UPLOADS_DIR=str(app.root / "nope"))
    assert result.returncode != 0
    assert "UPLOADS_DIR" in result.stderr
    assert _archives(app) == []


def test_password_never_reaches_output_logs_or_archive(app: App) -> None:
    password = app.cluster.password
    result = app.cli("-v", "backup", "secretless")
    assert password not in result.stdout + result.stderr
    path = app.backups / "secretless.tar.gz"
    assert password.encode() not in gzip.decompress(path.read_bytes())
    failed = app.cli("restore", "nothing-like-this", "--yes", check=False)
    assert password not in failed.stdout + failed.stderr


def test_odd_file_names_modes_and_empty_folders_round_trip(app: App) -> None:
    odd = os.fsencode(app.uploads) + b"/caf\xe9-\xff-not-utf8.bin"
    with open(odd, "wb") as handle:
        handle.write(b"latin-1 name")
    deep = app.uploads
    for n in range(5):
        deep = deep / (f"{n}" + "d" * 240)
    deep.mkdir(parents=True)
    (deep / ("f" * 250)).write_bytes(b"deep")
    (app.uploads / "empty-folder").mkdir()
    private = app.uploads / "private.txt"
    private.write_text("secret-ish")
    os.chmod(private, 0o600)
    os.utime(private, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    before = tree_state(app.uploads)

    app.cli("backup", "odd")
    shutil.rmtree(app.uploads)
    app.uploads.mkdir()
    app.cli("restore", "odd", "--yes")

    assert tree_state(app.uploads) == before


def test_symlinks_in_uploads_are_not_followed(app: App) -> None:
    (app.uploads / "passwd-link").symlink_to("/etc/passwd")
    (app.uploads / "etc-link").symlink_to("/etc")
    path = Path(app.cli("backup", "links").stdout.strip())
    with tarfile.open(path, "r:gz") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert not any("link" in name for name in names)
    assert sorted(manifest["uploads"]["skipped"]) == ["etc-link", "passwd-link"]


def test_catalog_migrations_are_reversible(app: App) -> None:
    app.cli("migrate")
    app.cli("migrate", "--downgrade", "base")
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'nexus_backup'"
    assert app.sql(tables).strip() == "1"  # only alembic_version is left
    app.cli("migrate")
    assert int(app.sql(tables)) >= 6


def test_settings_are_read_from_a_dotenv_file(app: App) -> None:
    (app.root / ".env").write_text(
        f"DATABASE_URL={app.url}\nUPLOADS_DIR={app.uploads}\nBACKUP_DIR={app.backups}\n"
    )
    result = app.cli("backup", "from-dotenv", DATABASE_URL="", UPLOADS_DIR="", BACKUP_DIR="")
    assert Path(result.stdout.strip()) == app.backups / "from-dotenv.tar.gz"
