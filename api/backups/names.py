"""Backup names, checked in one place: a name is also the archive's file name.

The API schema refuses what the pattern refuses (422) before anything runs; `check_name` is the
whole rule, applied by the runner and the importer to every name whatever its source (400), and
`is_plain_name` lets recovery refuse a catalog name that is not one before it touches a file.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from api.errors import BadRequest

NAME_MAX_LENGTH = 128
NAME_REGEX = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{NAME_MAX_LENGTH - 1}}}$"
NAME_PATTERN = re.compile(NAME_REGEX)
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.zst", ".tgz")

BackupName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_REGEX,
        description="Becomes the archive's file name; default gk-nexus-backup-YYYYMMDD-HHMMSS",
    ),
]


def is_plain_name(name: str) -> bool:
    """Letters, digits, '.', '_', '-', starting with a letter or digit; no '..'; 1-128."""
    return NAME_PATTERN.fullmatch(name) is not None and ".." not in name


def check_name(name: str) -> str:
    """The name without an archive suffix, or BadRequest saying what a name may be."""
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if not is_plain_name(name):
        raise BadRequest(
            f"invalid backup name {name!r}: use 1-{NAME_MAX_LENGTH} letters, digits, '.', '_' or "
            "'-', starting with a letter or digit (it becomes the archive's file name)"
        )
    return name
