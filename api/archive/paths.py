"""Strict archive member names: what a member may be called, and nothing else."""

from __future__ import annotations

from api.archive.manifest import DATABASE_NAME, MANIFEST_NAME, UPLOADS_PREFIX

MAX_NAME_BYTES = 4096


def clean_member_name(name: str) -> str:
    """Return the canonical member name, or raise ValueError naming what is unsafe about it.

    Refused: empty names, absolute paths, `..` or `.` components, NUL bytes, empty components,
    and anything outside manifest.json, database.sql and uploads/.
    """
    original = name
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if not name or name == ".":
        raise ValueError(f"member {original!r} has an empty name")
    if "\x00" in name:
        raise ValueError(f"member {original!r} contains a NUL byte")
    if name.startswith("/"):
        raise ValueError(f"member {original!r} has an absolute path")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ValueError(f"member name is longer than {MAX_NAME_BYTES} bytes")
    parts = name.split("/")
    for part in parts:
        if part == "..":
            raise ValueError(f"member {original!r} climbs out with '..'")
        if part in ("", "."):
            raise ValueError(f"member {original!r} has an empty or '.' path component")
    if name in (MANIFEST_NAME, DATABASE_NAME, UPLOADS_PREFIX):
        return name
    if parts[0] != UPLOADS_PREFIX:
        raise ValueError(
            f"member {original!r} is outside the archive layout "
            "(only manifest.json, database.sql and uploads/ are allowed)"
        )
    return name
