"""database.sql is untrusted: it never runs a psql meta-command, never ends the restore's own
transaction, and its row counts are counted, not taken from the manifest.

Hostile archives here are consistent forgeries: database.sql is edited and manifest.json and the
.sha256 sidecar are re-made to match, as anyone who can write the backup folder could.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.archive.reader import read_archive
from api.archive.sqlscan import DumpScanner
from api.errors import ArchiveError, ConfigError, SourceError
from api.sources import postgres
from tests.conftest import Api, App, database_state, tree_state

Edit = Callable[[bytes], bytes]


def _backup(app: App, name: str) -> Path:
    return Path(app.cli("backup", name).stdout.strip())


def forge(good: Path, out: Path, edit: Edit) -> Path:
    """`good` re-made with database.sql edited; manifest.json and the sidecar match it."""
    with tarfile.open(good, "r:gz") as old:
        members = [
            (info, old.extractfile(info).read() if info.isfile() else None)  # type: ignore[union-attr]
            for info in old
        ]
    sql = edit(next(data for info, data in members if info.name == "database.sql") or b"")
    digest = hashlib.sha256(sql).hexdigest()
    with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as new:
        for info, data in members:
            if info.name == "database.sql":
                data = sql
            elif info.name == "manifest.json":
                manifest = json.loads(data or b"{}")
                manifest["database"].update(size=len(sql), sha256=digest)
                for entry in manifest["files"]:
                    if entry["path"] == "database.sql":
                        entry.update(size=len(sql), sha256=digest)
                data = json.dumps(manifest).encode()
            if data is not None:
                info.size = len(data)
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    whole = hashlib.sha256(out.read_bytes()).hexdigest()
    out.with_name(out.name + ".sha256").write_text(f"{whole}  {out.name}\n")
    return out


def _forge_in_place(api: Api, backup: dict[str, object], edit: Edit) -> None:
    """Replace a catalogued archive with a forgery, and its catalog checksum to match."""
    path = Path(str(backup["filePath"]))
    os.replace(forge(path, api.app.root / "forged.tar.gz", edit), path)
    whole = hashlib.sha256(path.read_bytes()).hexdigest()
    api.app.sql(
        f"UPDATE nexus_backup.system_backup SET checksum = '{whole}' WHERE id = '{backup['id']}'"
    )


def _after_first(marker: bytes, extra: bytes) -> Edit:
    def edit(sql: bytes) -> bytes:
        at = sql.index(marker) + len(marker)
        return sql[:at] + extra + sql[at:]

    return edit


def _before_unrestrict(extra: bytes) -> Edit:
    def edit(sql: bytes) -> bytes:
        at = sql.rindex(b"\\unrestrict ")
        return sql[:at] + extra + sql[at:]

    return edit


def _hostile_edits(marker: Path) -> dict[str, Edit]:
    shell = b"\\! touch " + str(marker).encode()
    return {
        "first line": lambda sql: shell + b"\n" + sql,
        "mid-line": lambda sql: sql.replace(
            b"SET statement_timeout = 0;", b"SET statement_timeout = 0; " + shell, 1
        ),
        "middle": _after_first(b"\nCREATE TABLE", b" x (id int);\n" + shell + b"\nCREATE TABLE"),
        "after a COPY block": _after_first(b"\n\\.\n", shell + b"\n"),
        "after an unterminated string": _before_unrestrict(b"SELECT 'open\n" + shell + b"\n"),
        "COMMIT then INSERT": _after_first(
            b"SET row_security = off;\n", b"COMMIT;\nINSERT INTO clients (name) VALUES ('x');\n"
        ),
    }


HOSTILE = list(_hostile_edits(Path("/x")))


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a shell command from database.sql ran"


@pytest.mark.parametrize("case", HOSTILE)
def test_restore_of_a_dump_with_a_meta_command_or_commit_is_refused_before_anything_changes(
    app: App, marker: Path, case: str
) -> None:
    good = _backup(app, "good")
    bad = forge(good, app.root / "bad.tar.gz", _hostile_edits(marker)[case])
    app.sql("UPDATE clients SET name = 'live' WHERE id < 5")
    before = tree_state(app.uploads), database_state(app)

    result = app.cli("restore", str(bad), "--yes", check=False)

    assert result.returncode != 0, result.stdout
    assert "database.sql line " in result.stderr, f"the refusal must name the line: {result.stderr}"
    assert (tree_state(app.uploads), database_state(app)) == before
    types = app.sql("SELECT string_agg(type, ',') FROM nexus_backup.system_backup").strip()
    assert types == "manual", "nothing (not even a pre_restore backup) may happen before the check"


@pytest.mark.parametrize("case", HOSTILE)
def test_cli_verify_refuses_a_dump_with_a_meta_command_or_commit(
    app: App, marker: Path, case: str
) -> None:
    bad = forge(_backup(app, "good"), app.root / "bad.tar.gz", _hostile_edits(marker)[case])

    result = app.cli("verify", str(bad), check=False)

    assert result.returncode != 0
    assert "database.sql line " in result.stderr, result.stderr


@pytest.mark.parametrize("case", ["first line", "mid-line", "after an unterminated string"])
async def test_deep_verify_of_a_dump_with_a_meta_command_reports_it_and_runs_nothing(
    api: Api, marker: Path, case: str
) -> None:
    headers = await api.headers()
    body = (await api.client.post("/backups?wait=true", headers=headers, json={"name": "d"})).json()
    _forge_in_place(api, body, _hostile_edits(marker)[case])

    result = (
        await api.client.post(f"/backups/{body['id']}/verify?deep=true", headers=headers)
    ).json()

    assert result["ok"] is False, result
    assert "database.sql line " in result["problem"], result


def test_a_meta_command_inside_a_dollar_quoted_body_is_data_and_the_restore_works(
    app: App, marker: Path
) -> None:
    body = f"DO $do$ BEGIN RAISE NOTICE '%', '\\! touch {marker}'; END $do$;\n".encode()
    before = tree_state(app.uploads), database_state(app)
    good = _backup(app, "good")
    bad = forge(good, app.root / "do.tar.gz", _after_first(b"SET row_security = off;\n", body))
    app.sql("UPDATE clients SET name = 'live' WHERE id < 5")

    app.cli("restore", str(bad), "--yes")

    assert (tree_state(app.uploads), database_state(app)) == before


class _PassThrough:
    """A scanner that checks nothing: what psql's own \\restrict must still stop."""

    def __init__(self) -> None:
        self.tables: dict[str, int] = {}

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> object:
        return type("Facts", (), {"tables": {}})()


def _hostile_sql(tmp_path: Path, marker: Path, app: App) -> Path:
    folder = tmp_path / "scratch"
    folder.mkdir(mode=0o700)
    sql = folder / "database.sql"
    sql.write_bytes(f"SELECT 1;\n\\! touch {marker}\n".encode())
    return sql


async def test_psql_restrict_stops_a_meta_command_the_scanner_missed(
    app: App, marker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "DumpScanner", _PassThrough)
    sql = _hostile_sql(tmp_path, marker, app)

    with pytest.raises(SourceError, match="restricted"):
        await postgres.load_sql(app.url, app.settings(), sql)
    assert [p.name for p in sql.parent.iterdir()] == ["database.sql"], "the FIFO must be removed"


async def test_restore_behind_restrict_stops_a_meta_command_the_scanner_missed(
    api: Api, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.archive.reader as reader

    headers = await api.headers()
    body = (await api.client.post("/backups?wait=true", headers=headers, json={"name": "r"})).json()
    _forge_in_place(
        api,
        body,
        _after_first(b"SET row_security = off;\n", f"\\! touch {marker}\n".encode()),
    )
    monkeypatch.setattr(reader, "DumpScanner", _PassThrough)
    monkeypatch.setattr(postgres, "DumpScanner", _PassThrough)
    monkeypatch.setattr(reader, "_check_counts", lambda result: None)
    api.app.sql("UPDATE clients SET name = 'live' WHERE id < 5")
    before = tree_state(api.app.uploads), database_state(api.app)

    started = await api.client.post(
        f"/backups/{body['id']}/restore", headers=headers, json={"confirm": "r"}
    )
    assert started.status_code == 202, started.text
    done = await api.wait_restore(started.json()["id"], headers)

    assert done["status"] == "failed", done
    assert "restricted" in str(done["errorMessage"]), done
    assert (tree_state(api.app.uploads), database_state(api.app)) == before


async def test_the_loader_refuses_what_the_scanner_refuses_and_kills_psql_first(
    app: App, marker: Path, tmp_path: Path
) -> None:
    sql = _hostile_sql(tmp_path, marker, app)

    with pytest.raises(ArchiveError, match=r"refused while loading: line 2: a psql meta-command"):
        await postgres.load_sql(app.url, app.settings(), sql)


# --- large objects: pg_dump's own BEGIN; ... COMMIT; runs inside the restore's transaction ------


def _add_large_objects(app: App) -> None:
    app.sql(
        "SELECT lo_from_bytea(0, 'hello large object');"
        "SELECT lo_from_bytea(0, decode(repeat('00ff5c27', 20000), 'hex'));"
    )


def _large_objects(app: App) -> str:
    return app.sql(
        "SELECT string_agg(md5(lo_get(oid)), ',' ORDER BY oid) FROM pg_largeobject_metadata"
    ).strip()


def test_a_database_with_large_objects_restores_them(app: App) -> None:
    _add_large_objects(app)
    before = database_state(app), _large_objects(app)
    good = _backup(app, "lo")
    app.sql("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
    app.sql("UPDATE clients SET name = 'live' WHERE id < 5")

    app.cli("restore", str(good), "--yes")

    assert (database_state(app), _large_objects(app)) == before
    assert before[1].count(",") == 1, "both large objects must be there"


def test_a_restore_failing_after_the_large_objects_leaves_the_live_database_unchanged(
    app: App,
) -> None:
    _add_large_objects(app)
    good = _backup(app, "lo")
    failing = forge(good, app.root / "fails.tar.gz", _before_unrestrict(b"SELECT 1/0;\n"))
    app.sql("UPDATE clients SET name = 'live' WHERE id < 5")
    app.sql("SELECT lo_unlink(min(oid)) FROM pg_largeobject_metadata")
    before = tree_state(app.uploads), database_state(app), _large_objects(app)

    result = app.cli("restore", str(failing), "--yes", check=False)

    assert result.returncode != 0
    assert "division by zero" in result.stderr, result.stderr
    after = tree_state(app.uploads), database_state(app), _large_objects(app)
    assert after == before, "pg_dump's COMMIT of the large objects must not commit the restore"


# --- counts: real pg_dump output is accepted, and counted exactly -------------------------------

RICH_SQL = r"""
CREATE SCHEMA "odd.schema";
CREATE TABLE "odd.schema"."we.ird ""name"" x" (id int, b bytea, t text);
INSERT INTO "odd.schema"."we.ird ""name"" x" VALUES
  (1, '\x00ff5c0a', 'back\slash'), (2, NULL, E'line\nbreak\\.\ttab'), (3, '\x5c2e', '\.');
CREATE TABLE empty_table (x int);
CREATE FUNCTION tricky() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'COMMIT; \! id';
  RETURN E'\\';
END $$;
CREATE FUNCTION atomic_one(a int) RETURNS int LANGUAGE sql
  BEGIN ATOMIC SELECT CASE WHEN a > 0 THEN 1 ELSE 2 END; SELECT a + 1; END;
COMMENT ON TABLE empty_table IS 'C:\path\';
SELECT lo_from_bytea(0, 'a large object');
"""


def _pg_dump(app: App) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = app.cluster.password
    return subprocess.run(
        [
            str(app.cluster.bin("pg_dump")),
            *("-h", "127.0.0.1", "-p", str(app.cluster.port), "-U", "nexus"),
            "--exclude-schema=nexus_backup",
            app.database,
        ],
        env=env,
        capture_output=True,
        check=True,
    ).stdout


async def test_real_pg_dump_output_is_accepted_and_counted_exactly(app: App) -> None:
    app.sql(RICH_SQL)
    dump = _pg_dump(app)
    assert b"\\restrict " in dump, "pg_dump 15.14+ writes its own \\restrict line"

    scanner = DumpScanner()
    out = scanner.feed(dump)
    facts = scanner.finish()

    assert facts.tables == await postgres.table_row_counts(app.url)
    assert facts.tables['odd.schema.we.ird "name" x'] == 3
    assert b"\\restrict" not in out
    assert b"\\unrestrict" not in out
    assert not re.search(rb"^(BEGIN|COMMIT);$", out, re.M), "the LO BEGIN/COMMIT must go"


def test_every_backup_verifies_with_counts_matching_the_manifest(app: App) -> None:
    app.sql(RICH_SQL)
    path = _backup(app, "rich")

    verified = read_archive(path)

    assert verified.manifest is not None
    assert verified.dump_tables == verified.manifest.database.tables
    app.cli("restore", str(path), "--yes")
    app.cli("verify", "rich")


def test_a_manifest_whose_counts_disagree_with_database_sql_is_refused(app: App) -> None:
    good = _backup(app, "good")
    bad = app.root / "counts.tar.gz"

    def edit(sql: bytes) -> bytes:  # one row fewer in the first COPY block
        start = sql.index(b"FROM stdin;\n", sql.index(b"COPY public.clients")) + 12
        return sql[:start] + sql[sql.index(b"\n", start) + 1 :]

    forge(good, bad, edit)

    with pytest.raises(ArchiveError, match=r"holds 59 rows of public\.clients but manifest"):
        read_archive(bad)
    result = app.cli("restore", str(bad), "--dry-run", check=False)
    assert result.returncode != 0


_VALUES = st.lists(
    st.tuples(
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
        st.binary(max_size=12),
    ),
    max_size=12,
)


@settings(
    deadline=None,
    max_examples=12,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(_VALUES)
def test_random_table_contents_round_trip_through_pg_dump_and_are_counted_exactly(
    app: App, rows: list[tuple[str, bytes]]
) -> None:
    app.sql('DROP TABLE IF EXISTS "fuzz.t"; CREATE TABLE "fuzz.t" (t text, b bytea);')
    if rows:
        values = ", ".join(
            "('{}', '\\x{}')".format(text.replace("'", "''"), data.hex()) for text, data in rows
        )
        app.sql(f'INSERT INTO "fuzz.t" VALUES {values}')

    scanner = DumpScanner()
    scanner.feed(_pg_dump(app))

    assert scanner.finish().tables["public.fuzz.t"] == len(rows)


# --- psql without \restrict -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("15.13", False),
        ("15.14", True),
        ("15.18", True),
        ("16.9", False),
        ("16.10", True),
        ("17.5", False),
        ("17.6", True),
        ("13.22", True),
        ("14.18", False),
        ("12.22", False),
        ("18.0", True),
        ("18beta1", True),
    ],
)
def test_check_psql_restrict_accepts_only_releases_with_restrict(version: str, ok: bool) -> None:
    if ok:
        postgres.check_psql_restrict(version)
        return
    with pytest.raises(ConfigError) as caught:
        postgres.check_psql_restrict(version)
    assert f"psql {version} cannot load dumps safely" in caught.value.detail
    assert "PG_BIN_DIR" in caught.value.detail


def _old_psql(tmp_path: Path, app: App) -> Path:
    folder = tmp_path / "oldbin"
    folder.mkdir()
    psql = folder / "psql"
    psql.write_text("#!/bin/sh\necho 'psql (PostgreSQL) 15.13'\n")
    psql.chmod(0o755)
    (folder / "pg_dump").symlink_to(app.cluster.bin("pg_dump"))
    return folder


async def test_an_old_psql_is_refused_by_deep_verify_with_the_fix(
    app: App, tmp_path: Path, marker: Path
) -> None:
    sql = _hostile_sql(tmp_path, marker, app)

    with pytest.raises(ConfigError, match=r"psql 15\.13 cannot load dumps safely.*15\.14"):
        await postgres.load_sql(app.url, app.settings(pg_bin_dir=_old_psql(tmp_path, app)), sql)


def test_an_old_psql_is_refused_by_restore_and_nothing_changes(app: App, tmp_path: Path) -> None:
    good = _backup(app, "good")
    app.sql("UPDATE clients SET name = 'live' WHERE id < 5")
    before = tree_state(app.uploads), database_state(app)

    result = app.cli(
        "restore", str(good), "--yes", check=False, PG_BIN_DIR=str(_old_psql(tmp_path, app))
    )

    assert result.returncode != 0
    assert "psql 15.13 cannot load dumps safely (no \\restrict)" in result.stderr, result.stderr
    assert (tree_state(app.uploads), database_state(app)) == before
