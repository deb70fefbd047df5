"""The measured rows, run side by side on one dataset, round-robin over N runs.

Databases in the dataset's cluster:
  bench_src    the generated data (template, never measured against);
  bench_app    copied from bench_src per harness run, migrated: what every backup row reads;
  bench_live   per run: copy of bench_app (data and catalog), the live database our restore
               replaces;
  bench_catalog an empty database with only the catalog (migrated once);
  bench_empty  per run: copy of bench_catalog (restore onto a new machine);
  bench_seed   per run: dropped and created empty (the seed's own drop script), psql -f target.
Uploads: backups read the cached tree in place (read only); restores get their own copies.
The restore rows restore the archives the first run's `ours_gzip` and `seed_backup` rows made.
Untimed around each row: creating/dropping those databases, copying uploads, deleting archives.
Every restore is checked afterwards (row counts of every table, blob bytes, uploads file
count and bytes): a restore that is fast but wrong aborts the harness.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.dataset import SOURCE_DB, Dataset, table_counts, tree_totals
from bench.measure import Sample, ServerCpu, run
from nexus_dev.cluster import LocalCluster, quote_ident

APP_DB, LIVE_DB, EMPTY_DB, SEED_DB = "bench_app", "bench_live", "bench_empty", "bench_seed"
CATALOG_DB = "bench_catalog"
APP_VERSION = "1.0.0"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    kind: str  # backup | restore | floor
    how: str  # the command, as the report shows it


SEED_BACKUP = (
    'pg_dump > "$STAGE/database.sql" '
    '&& tar czf "$OUT/archive.tar.gz" -C "$STAGE" database.sql -C "$UPLOADS_PARENT" uploads '
    '&& rm -f "$STAGE/database.sql"'
)
PGBACKWEB = 'pg_dump | gzip > "$OUT/dump.sql.gz"'
DATABASUS = 'pg_dump -Fc -Z5 -f "$OUT/dump.bin"'
# GNU tar does not read file contents when its archive is /dev/null: pipe through cat.
FLOOR = 'pg_dump > /dev/null; tar cf - -C "$UPLOADS_PARENT" uploads | cat > /dev/null'
SEED_RESTORE = (
    'tar xzf "$ARCHIVE" -C "$STAGE" '
    '&& psql -X -q -v ON_ERROR_STOP=1 -f "$STAGE/database.sql" > /dev/null '
    '&& cp -a "$STAGE/uploads" "$TARGET_PARENT/"'
)


ROWS: tuple[Row, ...] = (
    Row(
        "ours_gzip",
        "ours: backup, gzip (default)",
        "backup",
        "nexus-backup backup NAME -q  (BACKUP_COMPRESSION=gzip)",
    ),
    Row(
        "ours_zstd",
        "ours: backup, zstd",
        "backup",
        "nexus-backup backup NAME -q  (BACKUP_COMPRESSION=zstd)",
    ),
    Row(
        "ours_zstd_fast",
        "ours: backup, fast setting (zstd level 1)",
        "backup",
        "nexus-backup backup NAME -q  (BACKUP_COMPRESSION=zstd BACKUP_COMPRESSION_LEVEL=1)",
    ),
    Row(
        "seed_backup",
        "seed: pg_dump > database.sql; tar czf",
        "backup",
        SEED_BACKUP,
    ),
    Row(
        "pgbackweb",
        "pgbackweb-style: plain dump, zipped",
        "backup",
        PGBACKWEB + "  (database only)",
    ),
    Row(
        "databasus",
        "Databasus-style: pg_dump -Fc -Z5",
        "backup",
        DATABASUS + "  (database only)",
    ),
    Row(
        "floor",
        "read floor: pg_dump > /dev/null; tar cf - uploads",
        "floor",
        FLOOR,
    ),
    Row(
        "ours_restore",
        "ours: restore into the live app (verified, with safety backup)",
        "restore",
        "nexus-backup restore ARCHIVE --yes -q  (live database and uploads)",
    ),
    Row(
        "ours_restore_empty",
        "ours: restore onto an empty machine (safety backup trivial)",
        "restore",
        "nexus-backup restore ARCHIVE --yes -q  (empty database with the catalog, empty uploads)",
    ),
    Row(
        "seed_restore",
        "seed: tar xzf; psql -f database.sql; cp -a uploads",
        "restore",
        SEED_RESTORE + "  (database dropped and created before, untimed)",
    ),
)


@dataclass
class Harness:
    dataset: Dataset
    work: Path
    log: Callable[[str], None] = print
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    verified: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cluster: LocalCluster = self.dataset.cluster
        self.server = ServerCpu(self.cluster.pgdata)
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.ref = self.work / "ref"
        self.ref.mkdir(exist_ok=True)
        self.expected = {
            **{k: int(v) for k, v in self.dataset.info["rows"].items()},
        }
        self.expected_tree = (
            int(self.dataset.info["uploads_files"]),
            int(self.dataset.info["uploads_bytes"]),
        )

    # -- environment ---------------------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "BACKUP_"))}
        env["PATH"] = f"{self.cluster.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def ours_env(self, database: str, uploads: Path, backups: Path, **extra: str) -> dict[str, str]:
        env = self._base_env()
        env.update(
            DATABASE_URL=self.cluster.url(database),
            UPLOADS_DIR=str(uploads),
            BACKUP_DIR=str(backups),
            APP_VERSION=APP_VERSION,
            BACKUP_COMPRESSION="gzip",
        )
        env.update(extra)
        return env

    def shell_env(self, database: str, **extra: str) -> dict[str, str]:
        env = self._base_env()
        env.update(
            PGHOST="127.0.0.1",
            PGPORT=str(self.cluster.port),
            PGUSER="nexus",
            PGPASSWORD=self.cluster.password,
            PGDATABASE=database,
        )
        env.update(extra)
        return env

    def _ours(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "api", *args]

    def _shell(self, script: str) -> list[str]:
        return ["bash", "-c", f"set -euo pipefail; {script}"]

    def _plain(self, argv: list[str], env: dict[str, str], name: str) -> str:
        """An untimed helper command; its output, or an error with its log."""
        result = subprocess.run(
            argv, env=env, cwd=self.work, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr[-2000:]}")
        return result.stdout

    # -- databases -----------------------------------------------------------------------------

    def fresh_db(self, name: str, template: str | None) -> None:
        self.cluster.drop_database(name)
        if template is None:
            self.cluster.create_database(name)
        else:
            self.cluster.psql(
                "postgres",
                f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)} "
                "STRATEGY FILE_COPY;",
            )

    def migrate(self, database: str) -> None:
        """Create the catalog in database, as `nexus-backup migrate` does (in-process: saves a
        CLI start-up per call)."""
        from api import migrate as migrations
        from api.db import make_engine

        async def go() -> None:
            engine = make_engine(self.cluster.url(database))
            try:
                await migrations.upgrade(engine)
            finally:
                await engine.dispose()

        asyncio.run(go())

    def setup(self) -> None:
        """bench_app for the backups, bench_catalog (catalog only), one warm-up read."""
        self.fresh_db(APP_DB, SOURCE_DB)
        self.migrate(APP_DB)
        self.cluster.psql(APP_DB, "VACUUM (FREEZE, ANALYZE);")
        self.fresh_db(CATALOG_DB, None)
        self.migrate(CATALOG_DB)
        uploads = self.dataset.uploads
        self.log("warm-up: one full read (pg_dump > /dev/null; tar cf - uploads) ...")
        env = self.shell_env(APP_DB, UPLOADS_PARENT=str(uploads.parent))
        self._plain(self._shell(FLOOR), env, "warm-up read")

    def _keep_reference(self, row: Row, out: Path, archive: Path) -> None:
        """The first run's archives of our default backup and of the seed's are what the
        restore rows restore."""
        for path in out.iterdir():
            shutil.move(path, self.ref / path.name)
        if row.key == "ours_gzip":
            self.ref_archive = self.ref / archive.name
        else:
            self.seed_archive = self.ref / archive.name

    def teardown(self) -> None:
        for name in (APP_DB, LIVE_DB, EMPTY_DB, SEED_DB, CATALOG_DB):
            self.cluster.drop_database(name)

    # -- verification --------------------------------------------------------------------------

    def verify(self, key: str, database: str, uploads: Path) -> None:
        counts = table_counts(self.cluster, database)
        tree = tree_totals(uploads)
        wrong = {k: (counts.get(k), v) for k, v in self.expected.items() if counts.get(k) != v}
        if wrong or tree != self.expected_tree:
            raise RuntimeError(
                f"{key}: the restored data is wrong: (got, expected) rows {wrong}, "
                f"uploads (files, bytes) {tree} vs {self.expected_tree}"
            )
        self.verified[key] = (
            f"rows of {len(self.expected) - 1} tables, blob bytes, "
            f"{tree[0]} files / {tree[1]} bytes match"
        )

    # -- one measurement -----------------------------------------------------------------------

    def measure(self, row: Row, run_no: int) -> Sample:
        log = self.logs / f"{row.key}-{run_no}.log"
        out = self.work / "out" / row.key
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        uploads = self.dataset.uploads
        size: int | None = None
        if row.key.startswith("ours_") and row.kind == "backup":
            extra = {
                "ours_gzip": {"BACKUP_COMPRESSION": "gzip"},
                "ours_zstd": {"BACKUP_COMPRESSION": "zstd"},
                "ours_zstd_fast": {"BACKUP_COMPRESSION": "zstd", "BACKUP_COMPRESSION_LEVEL": "1"},
            }[row.key]
            env = self.ours_env(APP_DB, uploads, out, **extra)
            argv = self._ours("backup", f"bench-{row.key}-{run_no}", "-q")
            sample, stdout = run(argv, env=env, cwd=self.work, log=log, server=self.server)
            archive = Path(stdout.strip().splitlines()[-1])
            size = archive.stat().st_size
            if row.key == "ours_gzip" and run_no == 1:
                self._keep_reference(row, out, archive)
        elif row.key in ("seed_backup", "pgbackweb", "databasus", "floor"):
            stage = self.work / "stage"
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir()
            script = {
                "seed_backup": SEED_BACKUP,
                "pgbackweb": PGBACKWEB,
                "databasus": DATABASUS,
                "floor": FLOOR,
            }[row.key]
            env = self.shell_env(
                APP_DB, STAGE=str(stage), OUT=str(out), UPLOADS_PARENT=str(uploads.parent)
            )
            sample, _ = run(
                self._shell(script), env=env, cwd=self.work, log=log, server=self.server
            )
            files = [p for p in out.iterdir() if p.is_file()]
            size = sum(p.stat().st_size for p in files) if files else None
            if row.key == "seed_backup" and run_no == 1:
                self._keep_reference(row, out, out / "archive.tar.gz")
        elif row.key == "ours_restore":
            sample = self._ours_restore(row, run_no, log, empty=False)
        elif row.key == "ours_restore_empty":
            sample = self._ours_restore(row, run_no, log, empty=True)
        elif row.key == "seed_restore":
            sample = self._seed_restore(row, log)
        else:  # pragma: no cover - ROWS and this dispatch are written together
            raise KeyError(row.key)
        shutil.rmtree(out, ignore_errors=True)
        return Sample(sample.wall_s, sample.cpu_s, sample.server_cpu_s, sample.peak_rss_mb, size)

    def _ours_restore(self, row: Row, run_no: int, log: Path, *, empty: bool) -> Sample:
        place = self.work / ("empty" if empty else "live")
        shutil.rmtree(place, ignore_errors=True)
        place.mkdir()
        uploads, backups = place / "uploads", place / "backups"
        backups.mkdir()
        database = EMPTY_DB if empty else LIVE_DB
        if empty:
            self.fresh_db(database, CATALOG_DB)
            uploads.mkdir()
        else:
            self.fresh_db(database, APP_DB)
            subprocess.run(["cp", "-a", str(self.dataset.uploads), str(uploads)], check=True)
        env = self.ours_env(database, uploads, backups)
        argv = self._ours("restore", str(self.ref_archive), "--yes", "-q")
        sample, _ = run(argv, env=env, cwd=self.work, log=log, server=self.server)
        self.verify(row.key, database, uploads)
        self.cluster.drop_database(database)
        shutil.rmtree(place, ignore_errors=True)
        return sample

    def _seed_restore(self, row: Row, log: Path) -> Sample:
        place = self.work / "seed"
        shutil.rmtree(place, ignore_errors=True)
        stage, target = place / "stage", place / "app"
        stage.mkdir(parents=True)
        target.mkdir()
        self.fresh_db(SEED_DB, None)  # the seed's drop script: drop, create empty
        env = self.shell_env(
            SEED_DB, ARCHIVE=str(self.seed_archive), STAGE=str(stage), TARGET_PARENT=str(target)
        )
        sample, _ = run(
            self._shell(SEED_RESTORE), env=env, cwd=self.work, log=log, server=self.server
        )
        self.verify(row.key, SEED_DB, target / "uploads")
        self.cluster.drop_database(SEED_DB)
        shutil.rmtree(place, ignore_errors=True)
        return sample

    def run_all(self, runs: int) -> None:
        for run_no in range(1, runs + 1):
            for row in ROWS:
                self.log(f"run {run_no}/{runs}: {row.label} ...")
                sample = self.measure(row, run_no)
                self.samples.setdefault(row.key, []).append(sample)
                self.log(
                    f"    {sample.wall_s:.2f} s wall, {sample.cpu_s:.2f} s CPU, "
                    f"{sample.server_cpu_s:.2f} s server CPU, {sample.peak_rss_mb:.0f} MB RSS"
                    + (f", {sample.size_bytes / 1e6:.1f} MB" if sample.size_bytes else "")
                )
