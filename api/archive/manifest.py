"""The archive format, version 1: the manifest and the pure checks made against it.

An archive is a POSIX tar (gzip or zstd) of `database.sql`, `uploads/...` and, written last as
its commit point, `manifest.json`, which lists every other member with its size and SHA-256.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATABASE_NAME = "database.sql"
UPLOADS_PREFIX = "uploads"
MAX_MANIFEST_BYTES = 256 * 1024 * 1024


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


class FileEntry(_Model):
    path: str
    size: int
    sha256: str
    mode: int
    mtime: float
    mtime_ns: int | None = None


class DirectoryEntry(_Model):
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
        # ensure_ascii keeps file names that are not UTF-8 (surrogate-escaped) representable.
        data = self.model_dump(mode="json", by_alias=True)
        return (json.dumps(data, indent=2, ensure_ascii=True) + "\n").encode("ascii")


class MemberDigest(BaseModel):
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
