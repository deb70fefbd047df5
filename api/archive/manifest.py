"""The archive format, version 1: the manifest and the pure checks made against it.

An archive is a POSIX tar (gzip or zstd) of `database.sql`, `uploads/...` and, written last as
its commit point, `manifest.json`, which lists every other member with its size and SHA-256.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.dataclasses import dataclass as validated_dataclass

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATABASE_NAME = "database.sql"
UPLOADS_PREFIX = "uploads"
# A manifest lists every file (about 270 bytes each): 64 MiB is room for 200,000 files. It is
# parsed only once the members are known, and only if its number of JSON values is in proportion
# to them (`check_manifest_size`), so parsing it stays within bounded memory.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MANIFEST_VALUES_PER_MEMBER = 16  # a file entry has 13 (`{`, 6 `:`, 6 `,`)
MANIFEST_VALUES_SLACK = 4096  # the header fields, the table counts, a seed layout's checksums

# Restored uploads keep the owner's bits and at most read and search for group and others:
# never setuid, setgid or sticky, never writable by group or others, whatever the archive says.
SAFE_MODE_MASK = 0o755


def safe_mode(mode: int) -> int:
    """The mode a restored upload gets for the `mode` recorded in its archive."""
    return mode & SAFE_MODE_MASK


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class ToolInfo(_Model):
    name: str
    version: str


class PostgresInfo(_Model):
    server_version: str
    pg_dump_version: str
    database: str


class DatabaseInfo(_Model):
    path: str = DATABASE_NAME
    size: int
    sha256: str
    table_count: int
    record_count: int
    tables: dict[str, int]


class UploadsInfo(_Model):
    file_count: int
    total_bytes: int
    skipped: list[str] = Field(default_factory=list)


# File and folder entries are validated dataclasses with slots, not models: a manifest may list
# 100,000 of them, and a model instance costs three times the memory.
_ENTRY_CONFIG = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


@validated_dataclass(config=_ENTRY_CONFIG, slots=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    mode: int
    mtime: float
    mtime_ns: int | None = None


@validated_dataclass(config=_ENTRY_CONFIG, slots=True)
class DirectoryEntry:
    path: str
    mode: int
    mtime: float
    mtime_ns: int | None = None


class Manifest(_Model):
    format_version: int = FORMAT_VERSION
    name: str
    type: str
    created_at: datetime
    completed_at: datetime
    app_version: str | None
    schema_version: str | None
    tool: ToolInfo
    postgres: PostgresInfo
    database: DatabaseInfo
    uploads: UploadsInfo
    files: list[FileEntry]
    directories: list[DirectoryEntry] = Field(default_factory=list)

    def to_json(self) -> bytes:
        """The manifest as ASCII JSON. The entries are written one at a time, so the transient
        memory is the text itself, not a second tree of dicts (100,000 entries: ~20 MB)."""
        # ensure_ascii keeps file names that are not UTF-8 (surrogate-escaped) representable.
        head = self.model_dump(mode="json", by_alias=True, exclude={"files", "directories"})
        out = io.StringIO()
        out.write(json.dumps(head, ensure_ascii=True)[:-1])  # all but its closing brace
        lists: tuple[tuple[str, Sequence[FileEntry | DirectoryEntry]], ...] = (
            ("files", self.files),
            ("directories", self.directories),
        )
        for key, entries in lists:
            out.write(f', "{key}": [')
            for n, entry in enumerate(entries):
                out.write(", " if n else "")
                out.write(json.dumps(_entry_json(entry), ensure_ascii=True))
            out.write("]")
        out.write("}\n")
        return out.getvalue().encode("ascii")


def _entry_json(entry: FileEntry | DirectoryEntry) -> dict[str, object]:
    if isinstance(entry, FileEntry):
        return {
            "path": entry.path,
            "size": entry.size,
            "sha256": entry.sha256,
            "mode": entry.mode,
            "mtime": entry.mtime,
            "mtimeNs": entry.mtime_ns,
        }
    return {"path": entry.path, "mode": entry.mode, "mtime": entry.mtime, "mtimeNs": entry.mtime_ns}


@dataclass(slots=True)
class MemberDigest:
    """What the reader saw of one member: its kind, size and SHA-256."""

    name: str
    kind: str  # "file" or "dir"
    size: int = 0
    sha256: str | None = None
    mode: int = 0o644
    mtime_ns: int = 0


def parse_manifest(raw: bytes) -> dict[str, Any]:
    """Parse manifest.json into a dict, or raise ValueError saying why it is not one."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"manifest.json is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError("manifest.json is not a JSON object")
    return data


_FILE_ENTRY = TypeAdapter(FileEntry)
_DIRECTORY_ENTRY = TypeAdapter(DirectoryEntry)


def validate_manifest(data: dict[str, Any]) -> Manifest:
    """The Manifest in `data`, or ValueError naming the first invalid field.

    `data`'s file and folder entries are replaced by validated ones one by one, so that the
    parsed JSON and the validated entries are never both held whole. (Validating the bytes
    instead is not an option: pydantic's JSON parser refuses the surrogate escapes that file
    names which are not UTF-8 are written with.)
    """
    try:
        for key, adapter in (("files", _FILE_ENTRY), ("directories", _DIRECTORY_ENTRY)):
            entries = data.get(key)
            if isinstance(entries, list):
                for index, entry in enumerate(entries):
                    try:
                        entries[index] = adapter.validate_python(entry)
                    except ValidationError as error:
                        raise _invalid(error, (key, index)) from None
        return Manifest.model_validate(data)
    except ValidationError as error:
        raise _invalid(error, ()) from None


def _invalid(error: ValidationError, where: tuple[str | int, ...]) -> ValueError:
    first = error.errors()[0]
    location = ".".join(str(part) for part in (*where, *first["loc"]))
    return ValueError(f"manifest.json is invalid at {location}: {first['msg']}")


def check_manifest_size(raw: bytes, members: int, name_punctuation: int) -> str | None:
    """Why `raw` is too large to parse for an archive of `members` members, or None.

    json.loads makes one object per value, and a crafted manifest can pack one value into two
    bytes (`[0,0,...`): the values, counted from the `[ { : ,` that precede each of them, must be
    in proportion to the members (`name_punctuation` counts those characters in member names).
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        limit = MAX_MANIFEST_BYTES >> 20
        return f"manifest.json is {len(raw)} bytes, more than the {limit} MiB allowed"
    values = sum(raw.count(mark) for mark in (b"[", b"{", b":", b","))
    allowed = MANIFEST_VALUES_PER_MEMBER * members + MANIFEST_VALUES_SLACK + name_punctuation
    if values > allowed:
        return (
            f"manifest.json holds about {values} JSON values, far more than {members} members "
            "need: it was crafted or corrupted"
        )
    return None


def check_v1(manifest: Manifest, members: dict[str, MemberDigest]) -> list[str]:
    """Every problem between a v1 manifest and the members actually read; empty when they match.

    The member list must be exactly the manifest's: database.sql, every file and directory it
    lists, nothing more.
    """
    problems: list[str] = []
    expected: dict[str, tuple[str, int | None, str | None]] = {
        manifest.database.path: ("file", manifest.database.size, manifest.database.sha256)
    }
    for entry in manifest.files:
        listed = expected.get(entry.path)
        if listed is not None and listed != ("file", entry.size, entry.sha256):
            problems.append(f"manifest lists {entry.path!r} twice, with different sizes or hashes")
        expected[entry.path] = ("file", entry.size, entry.sha256)
    for directory in manifest.directories:
        expected[directory.path] = ("dir", None, None)
    if manifest.database.path != DATABASE_NAME:
        problems.append(f"manifest names the database {manifest.database.path!r}, not database.sql")
    for name, (kind, size, sha) in expected.items():
        member = members.get(name)
        if member is None:
            problems.append(f"{name!r} is listed in the manifest but missing from the archive")
            continue
        if member.kind != kind:
            problems.append(
                f"{name!r} is a {member.kind} in the archive but a {kind} in the manifest"
            )
        elif kind == "file" and member.size != size:
            problems.append(f"{name!r} is {member.size} bytes, the manifest says {size}")
        elif kind == "file" and member.sha256 != sha:
            problems.append(f"{name!r} has SHA-256 {member.sha256}, the manifest says {sha}")
    for name in members:
        if name not in expected:
            problems.append(f"{name!r} is in the archive but not listed in the manifest")
    uploads = [entry for entry in manifest.files if entry.path.startswith(UPLOADS_PREFIX + "/")]
    if len(uploads) != manifest.uploads.file_count:
        problems.append(
            f"manifest counts {manifest.uploads.file_count} uploaded files but lists {len(uploads)}"
        )
    return problems


def seed_checksums(data: dict[str, Any]) -> dict[str, str]:
    """Checksums a manifest in the seed's layout (no formatVersion) offers, by member name.

    The seed's shell script wrote `checksums` as a map of member (or "database") to SHA-256, and
    may list `files` with `path` and `sha256`. Whatever is there is checked; nothing is invented.
    """
    found: dict[str, str] = {}
    checksums = data.get("checksums")
    if isinstance(checksums, dict):
        for key, value in checksums.items():
            if not isinstance(value, str) or not value.split():
                raise ValueError(f"manifest.json has an empty or non-text checksum for {key!r}")
            digest = value.split()[0].lower().removeprefix("sha256:")
            name = DATABASE_NAME if key in ("database", "db", "database.sql") else str(key)
            found[name.removeprefix("./")] = digest
    files = data.get("files")
    if isinstance(files, list):
        for entry in files:
            if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
                found[str(entry.get("path", "")).removeprefix("./")] = entry["sha256"].lower()
    database = data.get("database")
    if isinstance(database, dict) and isinstance(database.get("sha256"), str):
        found[DATABASE_NAME] = database["sha256"].lower()
    return found


def seed_app_version(data: dict[str, Any]) -> str | None:
    for key in ("appVersion", "app_version", "version"):
        value = data.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    return None
