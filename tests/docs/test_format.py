"""docs/FORMAT.md is true: a reader written from it alone reads the product's archives, and the
constants, code names and tests it cites are the code's.

`read_per_format_md` uses only the standard library and `zstandard`, and nothing from `api/`:
it is what someone holding only FORMAT.md would write. Keep it that way; if it needs to learn
something new, the page must say it first.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib
import io
import json
import re
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import pytest
import zstandard

from api.archive.reader import read_archive
from tests.conftest import ROOT, App

DOC = ROOT / "docs" / "FORMAT.md"


# --- a reader written from FORMAT.md only ---------------------------------------------------------

SIDECAR_LINE = re.compile(r"([0-9a-f]{64})  ([^\n]+)\n")  # section 1
ZSTD_WINDOW_LIMIT = 32 * 1024 * 1024  # section 2
COPY_LINE = re.compile(rb"COPY ([^ ]+) .*FROM stdin;")  # section 5 (plain table names)


class FormatError(Exception):
    """The archive breaks a rule of FORMAT.md."""


def _require(condition: bool, why: str) -> None:
    if not condition:
        raise FormatError(why)


def _whole_file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _open_tar(handle: BinaryIO) -> tarfile.TarFile:
    """Section 2: the compression is told by the first bytes, never by the suffix."""
    magic = handle.read(4)
    handle.seek(0)
    if magic[:2] == b"\x1f\x8b":  # one or more gzip members, read as one stream
        return tarfile.open(fileobj=gzip.GzipFile(fileobj=handle, mode="rb"), mode="r|")
    if magic == b"\x28\xb5\x2f\xfd":
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW_LIMIT)
        stream = decompressor.stream_reader(handle, read_across_frames=True)
        return tarfile.open(fileobj=stream, mode="r|")
    raise FormatError("unknown file signature")


def _phase(name: str) -> int:
    """Section 3, Order: uploads/... (0), then database.sql (1), then manifest.json (2)."""
    if name == "uploads" or name.startswith("uploads/"):
        return 0
    if name == "database.sql":
        return 1
    if name == "manifest.json":
        return 2
    raise FormatError(f"member {name!r} is outside the layout")


def _check_path(name: str) -> None:
    """Section 3, Member paths."""
    _require(not name.startswith("/"), f"{name!r} is absolute")
    _require("\x00" not in name, f"{name!r} holds a NUL")
    _require(all(part not in ("", ".", "..") for part in name.split("/")), f"{name!r} is not clean")
    _require(len(name.encode("utf-8", "surrogateescape")) <= 4096, f"{name!r} is too long")


def _copy_row_counts(dump: bytes) -> dict[str, int]:
    """Section 5, Row counts: data lines of each COPY block up to its `\\.` line."""
    counts: dict[str, int] = {}
    table: str | None = None
    for line in dump.split(b"\n"):
        if table is not None:
            if line == b"\\.":
                table = None
            else:
                counts[table] += 1
            continue
        match = COPY_LINE.fullmatch(line)
        if match:
            table = match.group(1).decode().replace('"', "")
            counts.setdefault(table, 0)
    return counts


def read_per_format_md(path: Path) -> dict[str, bytes]:
    """Verify `path` as FORMAT.md says and return its uploads' files, by path under uploads/."""
    # Section 1: the sidecar is one sha256sum line naming the archive; it covers the whole file.
    sidecar = path.with_name(path.name + ".sha256").read_text(encoding="utf-8")
    line = SIDECAR_LINE.fullmatch(sidecar)
    if line is None:
        raise FormatError(f"sidecar is not one sha256sum line: {sidecar!r}")
    _require(line.group(2) == path.name, "sidecar names another file")
    _require(_whole_file_sha256(path) == line.group(1), "whole-file SHA-256 differs from sidecar")

    seen: dict[str, tuple[str, int, str | None]] = {}  # name -> (kind, size, sha256)
    order: list[str] = []
    uploads: dict[str, bytes] = {}
    dump = b""
    manifest_raw: bytes | None = None
    with open(path, "rb") as handle, _open_tar(handle) as tar:
        for member in tar:  # streaming: one member at a time, never extractall
            name = member.name.rstrip("/")
            _check_path(name)
            _require(name not in seen and name not in order, f"{name!r} appears twice")
            _require(manifest_raw is None, "manifest.json is not the last member")
            order.append(name)
            if member.isdir():
                seen[name] = ("dir", 0, None)
                continue
            _require(member.type in (tarfile.REGTYPE, tarfile.AREGTYPE), f"{name!r}: bad type")
            source = tar.extractfile(member)
            assert source is not None
            data = source.read()
            _require(len(data) == member.size, f"{name!r} is truncated")
            if name == "manifest.json":
                manifest_raw = data
                continue
            seen[name] = ("file", len(data), hashlib.sha256(data).hexdigest())
            if name == "database.sql":
                dump = data
            else:
                uploads[name.removeprefix("uploads/")] = data
    if manifest_raw is None:
        raise FormatError("no manifest.json: not an archive")
    phases = [_phase(name) for name in order]
    _require(phases == sorted(phases), f"members out of order: {order}")
    _require(order[0] == "uploads" and order[-2:] == ["database.sql", "manifest.json"], "order")

    # Section 4: formatVersion 1; the members are exactly database.sql, files and directories.
    manifest: dict[str, Any] = json.loads(manifest_raw)
    _require(manifest.get("formatVersion") == 1, "not format version 1")
    database = manifest["database"]
    expected: dict[str, tuple[str, int, str | None]] = {
        "database.sql": ("file", database["size"], database["sha256"])
    }
    for entry in manifest["files"]:
        _require(
            expected.get(entry["path"], ("file", entry["size"], entry["sha256"]))
            == ("file", entry["size"], entry["sha256"]),
            f"{entry['path']!r} listed twice with different values",
        )
        expected[entry["path"]] = ("file", entry["size"], entry["sha256"])
        _require(isinstance(entry["mode"], int), "mode is not an integer")
        _require(isinstance(entry["mtime"], int | float), "mtime is not a number")
    for entry in manifest.get("directories", []):
        expected[entry["path"]] = ("dir", 0, None)
    _require(seen == expected, "members differ from the manifest's files and directories")
    upload_entries = [e for e in manifest["files"] if e["path"].startswith("uploads/")]
    _require(manifest["uploads"]["fileCount"] == len(upload_entries), "uploads.fileCount")

    # Section 5: row counts are present, add up, and are the COPY blocks' own.
    tables = database["tables"]
    _require(isinstance(tables, dict) and bool(tables), "database.tables is missing")
    _require(all(isinstance(rows, int) for rows in tables.values()), "a row count is not an int")
    _require(database["tableCount"] == len(tables), "tableCount")
    _require(database["recordCount"] == sum(tables.values()), "recordCount")
    _require(_copy_row_counts(dump) == tables, "database.tables differs from the COPY blocks")
    return uploads


def _files_under(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
    }


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_reader_written_from_format_md_reads_the_products_archive(
    app: App, compression: str
) -> None:
    path = Path(app.cli("backup", f"doc-{compression}", BACKUP_COMPRESSION=compression).stdout)
    path = Path(str(path).strip())

    uploads = read_per_format_md(path)

    assert uploads == _files_under(app.uploads), (
        "the uploads read by the FORMAT.md reader are not the uploads that were backed up"
    )
    assert uploads, "the demo uploads must not be empty, or this test proves little"


def test_the_format_md_reader_refuses_an_archive_whose_member_differs_from_the_manifest(
    app: App, tmp_path: Path
) -> None:
    # The control: the same reader must notice a change, or its success above means nothing.
    path = Path(app.cli("backup", "doc-tampered").stdout.strip())
    tampered = tmp_path / path.name
    _repack(path, tampered, lambda name, data: data + b"!" if name == "database.sql" else data)

    with pytest.raises(FormatError, match="members differ from the manifest"):
        read_per_format_md(tampered)


def _repack(source: Path, target: Path, change: Any) -> None:
    """Copy a .tar.gz member by member through `change(name, bytes)`, with a fresh sidecar."""
    with (
        tarfile.open(str(source), mode="r:gz") as old,
        tarfile.open(str(target), mode="w|gz", format=tarfile.PAX_FORMAT) as new,
    ):
        for member in old:
            if member.isdir():
                new.addfile(member)
                continue
            handle = old.extractfile(member)
            assert handle is not None
            data = change(member.name, handle.read())
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))
    digest = _whole_file_sha256(target)
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")


def test_unknown_manifest_fields_are_ignored_by_the_reader(app: App, tmp_path: Path) -> None:
    path = Path(app.cli("backup", "doc-future").stdout.strip())
    future = tmp_path / path.name

    def add_fields(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        manifest["futureField"] = {"added": "in a later minor version"}
        manifest["database"]["futureCount"] = 3
        for entry in [*manifest["files"], *manifest["directories"]]:
            entry["futureKey"] = 1
        return json.dumps(manifest).encode()

    _repack(path, future, add_fields)

    verified = read_archive(future)

    assert verified.layout == "v1"
    assert verified.raw_manifest["futureField"] == {"added": "in a later minor version"}


# --- the page cites the code as it is -------------------------------------------------------------

LIMIT_ROW = re.compile(r"^\| `(api(?:\.\w+)+)` \| ([^|]+?) \| [^|]+\|$", re.M)
CITED_NAME = re.compile(r"`((?:api|manifest|writer|reader|streams|paths|sqlscan)(?:\.\w+)+)`")
CITED_TEST = re.compile(r"`(test_\w+)`")
UNITS = {"KiB": 1024, "MiB": 1024 * 1024}


def _value(text: str) -> object:
    """`64 MiB`, `120,000`, `0o755`, `"manifest.json"` -> the Python value."""
    amount, _, unit = text.partition(" ")
    if unit in UNITS:
        return int(amount) * UNITS[unit]
    if re.fullmatch(r"[0-9,]+", text):
        return int(text.replace(",", ""))
    return ast.literal_eval(text)


def _resolve(dotted: str) -> object:
    """The object `dotted` names: `api.x.y.NAME`, or `module.NAME` for api/archive modules."""
    parts = dotted.split(".")
    if parts[0] != "api":
        parts = ["api", "archive", *parts]
    for split in range(len(parts), 1, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


def test_the_limits_table_matches_the_code() -> None:
    rows = LIMIT_ROW.findall(DOC.read_text(encoding="utf-8"))
    assert len(rows) >= 15, f"the limits table of FORMAT.md section 9 was not found: {rows}"
    wrong = {
        constant: (text, _resolve(constant))
        for constant, text in rows
        if _value(text) != _resolve(constant)
    }
    assert wrong == {}, f"FORMAT.md states (doc text, code value) that disagree: {wrong}"


def test_every_code_name_the_page_cites_exists() -> None:
    missing = []
    for dotted in sorted(set(CITED_NAME.findall(DOC.read_text(encoding="utf-8")))):
        if dotted.endswith((".json", ".sql")):
            continue  # member names, not code
        try:
            found = _resolve(dotted)
        except (ModuleNotFoundError, AttributeError):
            missing.append(dotted)
            continue
        assert found is not None or isinstance(found, ModuleType)
    assert missing == [], f"FORMAT.md cites code that does not exist: {missing}"


def test_every_test_the_page_cites_exists() -> None:
    defined = set()
    for test_file in (ROOT / "tests").rglob("test_*.py"):
        defined |= set(re.findall(r"def (test_\w+)", test_file.read_text(encoding="utf-8")))
    cited = set(CITED_TEST.findall(DOC.read_text(encoding="utf-8")))
    assert cited - defined == set(), f"FORMAT.md cites tests that do not exist: {cited - defined}"
