"""A deterministic benchmark dataset: an app database and an uploads tree, from a seed.

Sizes (decimal MB, about half database, half uploads): quick 5 MB, small 200 MB, large 2 GB.

Database (`bench_src`, used as a template; never touched by a measurement):
  clients, invoices, invoice_lines  generated server-side (generate_series, hash functions);
  documents                         metadata plus an extracted-text body (100-400 words);
  blobs                             binary rows (256..1,536 random bytes each), COPY'd in.
Uploads:
  ~50% many small files (1 KB..300 KB, most under 24 KB): text/CSV/JSON (compressible),
        PDF-like (text streams plus a random "image" stream), JPEG/PNG-like (random);
  ~30% one large text log; ~20% three large random files (video-like).

Everything is a function of (size, seed): random.Random(f"{seed}-...") in Python, and
hashint8extended(i, seed) in SQL (parallel query off). The dataset is cached in
DATA_DIR/<size>-<seed>/ (cluster in pg/, uploads in uploads/, dataset.json written last);
a cache made by another generator version or PostgreSQL major is rebuilt.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from nexus_dev.cluster import LocalCluster

GENERATOR_VERSION = 2
SOURCE_DB = "bench_src"
TABLES = ("clients", "invoices", "invoice_lines", "documents", "blobs")
SIZES: dict[str, int] = {"quick": 5_000_000, "small": 200_000_000, "large": 2_000_000_000}
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

_WORD_TEXT = (
    "the of and to in is for on that with as by at from this be are or an it which was not "
    "invoice client payment due amount total balance tax account service period report "
    "document signed contract agreement terms conditions schedule delivery order receipt "
    "company limited registration certificate compliance filing annual return revenue "
    "authority income statement quarter year month date number reference attached please "
    "find review approve submit update record office manager director department branch "
    "street road avenue georgetown berbice essequibo demerara national insurance scheme "
    "employee salary wages deduction pension benefit claim form application renewal permit "
    "license business name trade mark property transfer deed mortgage bank loan credit "
    "debit transaction statement audit financial consolidated notes policy procedure"
)
_WORDS = tuple(_WORD_TEXT.split())
_FIRST = "Ava Ben Cara Dev Eli Fay Gus Hana Ivan Jade Kofi Lena Mo Nia Omar Pia Ravi Sara Tom Uma"
_LAST = "Singh Persaud Williams Baptiste Khan Ramdass Da Silva Chung Adams Baksh Thomas Jones"
_STATUSES = ("draft", "sent", "paid", "overdue", "void")
_ITEMS = (
    "Bookkeeping",
    "Tax return preparation",
    "Payroll processing",
    "Company registration",
    "Audit support",
    "Consultation hour",
    "Filing fee",
    "Certified copy",
    "Immigration paperwork",
    "Annual compliance review",
)
_MIMES = (
    ("application/pdf", ".pdf"),
    ("image/jpeg", ".jpg"),
    ("text/plain", ".txt"),
    ("text/csv", ".csv"),
    ("application/json", ".json"),
)


@dataclass(frozen=True)
class Spec:
    size: str
    seed: int

    @property
    def total_bytes(self) -> int:
        return SIZES[self.size]

    @property
    def key(self) -> str:
        return f"{self.size}-{self.seed}"

    def rows(self) -> dict[str, int]:
        """Rows per table, scaled so the database holds about half the total."""
        scale = self.total_bytes / 2 / 100_000_000
        return {
            "clients": max(20, int(10_000 * scale)),
            "invoices": max(50, int(50_000 * scale)),
            "invoice_lines": max(100, int(125_000 * scale)),
            "documents": max(30, int(8_000 * scale)),
            "blobs": max(100, int(50_000 * scale)),
        }


@dataclass
class Dataset:
    spec: Spec
    folder: Path
    cluster: LocalCluster
    info: dict[str, Any]

    @property
    def uploads(self) -> Path:
        return self.folder / "uploads"


def _sql_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _array(items: tuple[str, ...] | list[str]) -> str:
    return "(ARRAY[" + ",".join(_sql_quote(item) for item in items) + "])"


def _schema_sql() -> str:
    return """
    CREATE TABLE clients (id bigserial, name text NOT NULL, email text NOT NULL,
        phone text, address text, created_at timestamptz NOT NULL);
    CREATE TABLE invoices (id bigserial, client_id bigint NOT NULL, number text NOT NULL,
        issued_on date NOT NULL, due_on date, status text NOT NULL, currency char(3) NOT NULL,
        total numeric(12,2) NOT NULL, notes text);
    CREATE TABLE invoice_lines (id bigserial, invoice_id bigint NOT NULL,
        position int NOT NULL, description text NOT NULL, quantity numeric(10,2) NOT NULL,
        unit_price numeric(12,2) NOT NULL);
    CREATE TABLE documents (id bigserial, client_id bigint NOT NULL, title text NOT NULL,
        path text NOT NULL, mime_type text NOT NULL, size_bytes bigint NOT NULL,
        sha256 text NOT NULL, body text, created_at timestamptz NOT NULL);
    CREATE TABLE blobs (id bigserial, document_id bigint NOT NULL, kind text NOT NULL,
        data bytea NOT NULL);
    """


def _constraints_sql() -> str:
    parts = [f"ALTER TABLE {table} ADD PRIMARY KEY (id);" for table in TABLES]
    parts += [
        "ALTER TABLE clients ADD UNIQUE (email);",
        "ALTER TABLE invoices ADD FOREIGN KEY (client_id) REFERENCES clients;",
        "ALTER TABLE invoices ADD UNIQUE (number);",
        "ALTER TABLE invoice_lines ADD FOREIGN KEY (invoice_id) REFERENCES invoices;",
        "ALTER TABLE documents ADD FOREIGN KEY (client_id) REFERENCES clients;",
        "ALTER TABLE blobs ADD FOREIGN KEY (document_id) REFERENCES documents;",
        "CREATE INDEX ON invoices (client_id, issued_on);",
        "CREATE INDEX ON invoice_lines (invoice_id);",
        "CREATE INDEX ON documents (client_id);",
        "CREATE INDEX ON documents (created_at);",
        "CREATE INDEX ON blobs (document_id);",
    ]
    parts += [
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}));"
        for table in TABLES
    ]
    return "\n".join(parts)


def _server_side_sql(spec: Spec, rows: dict[str, int]) -> str:
    """clients, invoices and invoice_lines from generate_series: h(i, k) is a deterministic
    non-negative pseudo-random bigint."""
    seed = spec.seed

    def h(expr: str, k: int) -> str:
        return f"(hashint8extended(({expr})::bigint, {seed * 64 + k}) & 9223372036854775807)"

    first, last = _FIRST.split(), _LAST.split()
    words = _array(list(_WORDS))
    n_words = len(_WORDS)
    return f"""
    SET max_parallel_workers_per_gather = 0;
    INSERT INTO clients
    SELECT i,
      ({_array(first)})[1 + {h("i", 1)} % {len(first)}] || ' '
        || ({_array(last)})[1 + {h("i", 2)} % {len(last)}]
        || CASE WHEN {h("i", 3)} % 3 = 0 THEN ' Holdings Ltd' ELSE '' END,
      'client' || i || '@' || ({_array(["example.com", "mail.test", "firm.gy"])})
        [1 + {h("i", 4)} % 3],
      '+592 ' || lpad(({h("i", 5)} % 10000000)::text, 7, '0'),
      ({h("i", 6)} % 999 + 1)::text || ' '
        || {words}[1 + {h("i", 7)} % {n_words}] || ' Street, '
        || ({_array(["Georgetown", "Linden", "New Amsterdam", "Bartica", "Anna Regina"])})
        [1 + {h("i", 8)} % 5],
      timestamptz '2020-01-01 00:00:00+00' + make_interval(secs => {h("i", 9)} % 157680000)
    FROM generate_series(1, {rows["clients"]}) AS i;

    INSERT INTO invoices
    SELECT i, 1 + {h("i", 11)} % {rows["clients"]},
      'INV-' || lpad(i::text, 9, '0'),
      date '2021-01-01' + ({h("i", 12)} % 1800)::int,
      date '2021-01-31' + ({h("i", 12)} % 1800)::int,
      ({_array(list(_STATUSES))})[1 + {h("i", 13)} % {len(_STATUSES)}],
      CASE WHEN {h("i", 14)} % 5 = 0 THEN 'USD' ELSE 'GYD' END,
      ({h("i", 15)} % 100000000) / 100.0,
      CASE WHEN {h("i", 16)} % 4 = 0 THEN NULL ELSE
        {words}[1 + {h("i", 17)} % {n_words}] || ' ' || {words}[1 + {h("i", 18)} % {n_words}]
        || ' ' || {words}[1 + {h("i", 19)} % {n_words}] || ' ' || {words}[1 + {h("i", 20)}
        % {n_words}] || ' for period ' || (1 + {h("i", 21)} % 12) END
    FROM generate_series(1, {rows["invoices"]}) AS i;

    INSERT INTO invoice_lines
    SELECT i, 1 + {h("i", 31)} % {rows["invoices"]}, 1 + {h("i", 32)} % 12,
      ({_array(list(_ITEMS))})[1 + {h("i", 33)} % {len(_ITEMS)}] || ' - '
        || {words}[1 + {h("i", 34)} % {n_words}],
      1 + {h("i", 35)} % 40,
      ({h("i", 36)} % 5000000) / 100.0
    FROM generate_series(1, {rows["invoice_lines"]}) AS i;
    """


def _documents(spec: Spec, rows: dict[str, int]) -> Iterator[tuple[object, ...]]:
    rng = random.Random(f"{spec.seed}-documents")
    for i in range(1, rows["documents"] + 1):
        mime, ext = _MIMES[rng.randrange(len(_MIMES))]
        body = " ".join(rng.choices(_WORDS, k=rng.randint(100, 400)))
        yield (
            i,
            1 + rng.randrange(rows["clients"]),
            " ".join(rng.choices(_WORDS, k=4)).title(),
            f"{2021 + i % 5}/{1 + i % 12:02d}/client-{rng.randrange(rows['clients'])}/doc-{i}{ext}",
            mime,
            rng.randint(2_000, 3_000_000),
            rng.randbytes(32).hex(),
            body,
            _EPOCH - timedelta(seconds=rng.randrange(150_000_000)),
        )


def _blobs(spec: Spec, rows: dict[str, int]) -> Iterator[tuple[object, ...]]:
    rng = random.Random(f"{spec.seed}-blobs")
    kinds = ("thumbnail", "preview", "signature", "scan-page")
    for i in range(1, rows["blobs"] + 1):
        yield (
            i,
            1 + rng.randrange(rows["documents"]),
            kinds[rng.randrange(len(kinds))],
            rng.randbytes(rng.randint(256, 1536)),
        )


async def _load(url: str, spec: Spec, rows: dict[str, int]) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(_schema_sql())
        await connection.execute(_server_side_sql(spec, rows))
        await connection.copy_records_to_table(
            "documents",
            records=_documents(spec, rows),
            columns=[
                "id",
                "client_id",
                "title",
                "path",
                "mime_type",
                "size_bytes",
                "sha256",
                "body",
                "created_at",
            ],
        )
        await connection.copy_records_to_table(
            "blobs", records=_blobs(spec, rows), columns=["id", "document_id", "kind", "data"]
        )
        await connection.execute(_constraints_sql())
        await connection.execute("VACUUM (FREEZE, ANALYZE)")
    finally:
        await connection.close()


# -- uploads -----------------------------------------------------------------------------------


def _text_file(rng: random.Random, size: int, ext: str) -> bytes:
    if ext == ".csv":
        lines = ["date,client,reference,amount,status"]
        total = len(lines[0])
        while total < size:
            lines.append(
                f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},client-"
                f"{rng.randrange(5000)},INV-{rng.randrange(10**9):09d},"
                f"{rng.randrange(10**7) / 100:.2f},{rng.choice(_STATUSES)}"
            )
            total += len(lines[-1]) + 1
        return ("\n".join(lines) + "\n").encode()[:size]
    if ext == ".json":
        items: list[str] = []
        total = 0
        while total < size:
            items.append(
                json.dumps(
                    {
                        "id": rng.randrange(10**9),
                        "title": " ".join(rng.choices(_WORDS, k=5)),
                        "amount": rng.randrange(10**7) / 100,
                        "tags": rng.choices(_WORDS, k=3),
                    }
                )
            )
            total += len(items[-1]) + 2
        return ("[" + ",\n".join(items) + "]").encode()[:size]
    words = []
    total = 0
    while total < size:
        chunk = " ".join(rng.choices(_WORDS, k=200)) + ".\n"
        words.append(chunk)
        total += len(chunk)
    return "".join(words).encode()[:size]


def _pdf_file(rng: random.Random, size: int) -> bytes:
    head = b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n"
    text_part = int(size * 0.6)
    text = _text_file(rng, text_part, ".txt")
    image = rng.randbytes(max(0, size - text_part - 200))
    body = (
        head
        + b"1 0 obj\n<< /Length "
        + str(len(text)).encode()
        + b" >>\nstream\nBT /F1 11 Tf 72 720 Td ("
        + text
        + b") Tj ET\nendstream\nendobj\n2 0 obj\n<< /Type /XObject /Subtype /Image "
        + b"/Filter /DCTDecode >>\nstream\n"
        + image
        + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )
    return body


def _binary_file(rng: random.Random, size: int, ext: str) -> bytes:
    header = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" if ext == ".jpg" else b"\x89PNG\r\n\x1a\n"
    return header + rng.randbytes(max(0, size - len(header)))


def _small_size(rng: random.Random) -> int:
    if rng.random() < 0.85:
        return int(1_000 * 24 ** rng.random())  # 1..24 KB, log-uniform
    return int(24_000 * 12.5 ** rng.random())  # 24..300 KB


def _log_file(path: Path, rng: random.Random, size: int) -> None:
    levels = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
    routes = (
        "GET /api/invoices",
        "POST /api/invoices",
        "GET /api/clients",
        "GET /api/documents",
        "PUT /api/documents",
        "POST /api/login",
        "GET /health",
    )
    start = _EPOCH
    written = 0
    second = 0
    with path.open("w") as out:
        while written < size:
            lines = []
            for _ in range(2000):
                second += rng.randrange(3)
                stamp = (start + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")
                lines.append(
                    f"{stamp}.{rng.randrange(1000):03d}Z {rng.choice(levels)} "
                    f"[worker-{rng.randrange(8)}] {rng.choice(routes)}/{rng.randrange(10**6)} "
                    f"{rng.choice((200, 200, 200, 201, 204, 304, 404, 500))} "
                    f"{rng.randrange(400)}ms user={rng.randrange(5000)} "
                    f"req={rng.getrandbits(64):016x}\n"
                )
            chunk = "".join(lines)
            chunk = chunk[: size - written]
            out.write(chunk)
            written += len(chunk)


def make_uploads(root: Path, spec: Spec) -> dict[str, int]:
    """Write the uploads tree; return its composition."""
    rng = random.Random(f"{spec.seed}-uploads")
    budget = spec.total_bytes // 2
    small_budget, log_size = budget // 2, budget * 3 // 10
    big_size = (budget - small_budget - log_size) // 3
    root.mkdir(parents=True)
    mtime_base = int(_EPOCH.timestamp())
    small_files = small_bytes = 0
    while small_bytes < small_budget:
        size = min(_small_size(rng), small_budget - small_bytes) or 1
        client = rng.randrange(max(20, spec.total_bytes // 2_000_000))
        folder = root / f"{2021 + rng.randrange(5)}" / f"{1 + rng.randrange(12):02d}"
        folder = folder / f"client-{client}"
        folder.mkdir(parents=True, exist_ok=True)
        kind = rng.random()
        if kind < 0.4:
            ext = rng.choice((".txt", ".csv", ".json"))
            data = _text_file(rng, size, ext)
        elif kind < 0.7:
            ext = ".pdf"
            data = _pdf_file(rng, size)
        else:
            ext = rng.choice((".jpg", ".png"))
            data = _binary_file(rng, size, ext)
        path = folder / f"file-{small_files:06d}{ext}"
        path.write_bytes(data)
        stamp = mtime_base - rng.randrange(100_000_000)
        os.utime(path, (stamp, stamp))
        small_files += 1
        small_bytes += len(data)
    (root / "exports").mkdir()
    _log_file(root / "exports" / "audit-2025.log", rng, log_size)
    (root / "media").mkdir()
    for n in range(3):
        with (root / "media" / f"walkthrough-{n + 1}.mp4").open("wb") as out:
            left = big_size
            while left > 0:
                piece = min(left, 8 << 20)
                out.write(rng.randbytes(piece))
                left -= piece
    for walked, _, _ in sorted(os.walk(root), reverse=True):
        os.utime(walked, (mtime_base, mtime_base))
    return {
        "small_files": small_files,
        "small_bytes": small_bytes,
        "log_bytes": log_size,
        "large_random_files": 3,
        "large_random_bytes": big_size * 3,
    }


def tree_totals(root: Path) -> tuple[int, int]:
    """(file count, total bytes) of a tree."""
    files = total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            files += 1
            total += os.lstat(os.path.join(folder, name)).st_size
    return files, total


_USER_TABLES = (
    "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'nexus_backup') ORDER BY 1;"
)


def table_counts(cluster: LocalCluster, database: str) -> dict[str, int]:
    """Rows of every user table (and bytes of `blobs.data` when the generated table is there)."""
    names = [line for line in cluster.psql(database, _USER_TABLES).splitlines() if line]
    if not names:
        return {}
    parts = [f"SELECT {_sql_quote(n)}, count(*) FROM {n}" for n in names]
    if "public.blobs" in names and database_has_column(cluster, database, "blobs", "data"):
        parts.append("SELECT 'blob_bytes', coalesce(sum(octet_length(data)), 0) FROM blobs")
    out = cluster.psql(database, " UNION ALL ".join(parts) + ";")
    counts: dict[str, int] = {}
    for line in out.splitlines():
        name, _, value = line.rpartition("|")
        counts[name.removeprefix("public.")] = int(value)
    return counts


def database_has_column(cluster: LocalCluster, database: str, table: str, column: str) -> bool:
    sql = (
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' "
        f"AND table_name = {_sql_quote(table)} AND column_name = {_sql_quote(column)};"
    )
    return cluster.psql(database, sql).strip() == "1"


def import_external(url: str, uploads: Path, data_dir: Path, log: Any = print) -> Dataset:
    """A dataset the generator did not make: the database at `url` copied into a throwaway
    cluster (pg_dump | psql, untimed) and the uploads folder copied beside it. Nothing at `url`
    or in `uploads` is changed."""
    if not uploads.is_dir():
        raise SystemExit(f"--uploads {uploads} is not a folder")
    digest = hashlib.sha256(f"{url}\0{uploads.resolve()}".encode()).hexdigest()[:12]
    spec = Spec("external", 0)
    folder = data_dir / f"external-{digest}"
    if folder.exists():
        LocalCluster(folder / "pg").stop()
        shutil.rmtree(folder)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o755)
    folder.mkdir()
    folder.chmod(0o755)
    cluster = LocalCluster(folder / "pg")
    cluster.start()
    target = cluster.create_database(SOURCE_DB)
    log(f"dataset external: copying the database into {folder} ...")
    dump = subprocess.Popen(
        [str(cluster.bin("pg_dump")), "--no-owner", "--no-privileges", "--dbname", url],
        stdout=subprocess.PIPE,
    )
    load = subprocess.run(
        [str(cluster.bin("psql")), "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", target],
        stdin=dump.stdout,
        check=False,
    )
    if dump.wait() != 0 or load.returncode != 0:
        raise SystemExit("copying the --database-url database failed (see the messages above)")
    log("dataset external: copying the uploads ...")
    subprocess.run(["cp", "-a", str(uploads), str(folder / "uploads")], check=True)
    files, total = tree_totals(folder / "uploads")
    info: dict[str, Any] = {
        "generator": "external",
        "pg_major": _pg_major(cluster),
        "size": "external",
        "seed": 0,
        "rows": table_counts(cluster, SOURCE_DB),
        "table_bytes": {},
        "db_bytes": int(cluster.psql(SOURCE_DB, f"SELECT pg_database_size('{SOURCE_DB}');")),
        "uploads_files": files,
        "uploads_bytes": total,
        "uploads": {},
    }
    return Dataset(spec, folder, cluster, info)


def _pg_major(cluster: LocalCluster) -> str:
    return cluster.bin_dir.parent.name


def prepare(spec: Spec, data_dir: Path, log: Any = print) -> Dataset:
    """The cached dataset for spec (cluster started), generated first if missing or stale."""
    folder = data_dir / spec.key
    marker = folder / "dataset.json"
    cluster = LocalCluster(folder / "pg")
    if marker.is_file():
        cached: dict[str, Any] = json.loads(marker.read_text())
        if cached.get("generator") == GENERATOR_VERSION and cached.get("pg_major") == _pg_major(
            cluster
        ):
            log(f"dataset {spec.key}: cached in {folder}")
            cluster.start()
            return Dataset(spec, folder, cluster, cached)
    if folder.exists():
        LocalCluster(folder / "pg").stop()
        shutil.rmtree(folder)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o755)  # the postgres OS user must traverse it
    folder.mkdir()
    folder.chmod(0o755)
    log(f"dataset {spec.key}: generating in {folder} ...")
    started = datetime.now(UTC)
    cluster.start()
    rows = spec.rows()
    url = cluster.create_database(SOURCE_DB)
    asyncio.run(_load(url, spec, rows))
    composition = make_uploads(folder / "uploads", spec)
    counts = table_counts(cluster, SOURCE_DB)
    files, total = tree_totals(folder / "uploads")
    db_bytes = int(cluster.psql(SOURCE_DB, f"SELECT pg_database_size('{SOURCE_DB}');"))
    table_bytes = {
        t: int(cluster.psql(SOURCE_DB, f"SELECT pg_total_relation_size('{t}');")) for t in TABLES
    }
    info: dict[str, Any] = {
        "generator": GENERATOR_VERSION,
        "pg_major": _pg_major(cluster),
        "size": spec.size,
        "seed": spec.seed,
        "rows": counts,
        "table_bytes": table_bytes,
        "db_bytes": db_bytes,
        "uploads_files": files,
        "uploads_bytes": total,
        "uploads": composition,
        "generated_in_s": round((datetime.now(UTC) - started).total_seconds(), 1),
    }
    marker.write_text(json.dumps(info, indent=2) + "\n")
    log(f"dataset {spec.key}: generated in {info['generated_in_s']} s")
    return Dataset(spec, folder, cluster, info)
