"""The uploads tree: walked through folder descriptors, never following a link.

Every folder is opened relative to its parent with O_NOFOLLOW, and every file relative to its
folder, so a link planted while a backup runs cannot lead the walk out of the uploads root.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from api.errors import ConfigError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW

# A restore into a mount-point UPLOADS_DIR stages inside it, in `.nexus-restore-<restore id>`
# (api.restores.swap): that folder is never an upload, wherever a walk meets it at the top.
STAGING_PREFIX = ".nexus-restore-"
_STAGING_NAME = re.compile(rb"\.nexus-restore-[A-Za-z0-9_-]{1,64}")


def is_restore_staging(name: str | bytes) -> bool:
    """Whether a top-level entry of UPLOADS_DIR is (named as) a restore's staging folder."""
    return _STAGING_NAME.fullmatch(os.fsencode(name)) is not None


@dataclass(frozen=True)
class UploadEntry:
    """One file or folder below the uploads root; `rel` is '' for the root itself.

    `parent_fd` and `name` open the entry (`open_file`) while the walk is positioned on it.
    """

    rel: str
    kind: str  # "file" or "dir"
    size: int
    mode: int
    mtime_ns: int
    parent_fd: int
    name: bytes


def check_root(root: Path) -> Path:
    if not root.exists():
        raise ConfigError(
            f"UPLOADS_DIR {root} does not exist: set UPLOADS_DIR to the application's uploads "
            "folder, or create it if the application has no uploads yet"
        )
    if not root.is_dir():
        raise ConfigError(f"UPLOADS_DIR {root} is not a folder: point it at the uploads folder")
    return root


def walk(root: Path, skipped: list[str]) -> Iterator[UploadEntry]:
    """Every folder and regular file under `root`, parents before children, in a stable order.

    Links, sockets, devices and FIFOs are never followed or read: their paths go to `skipped`.
    A restore's staging folder at the top (`is_restore_staging`) is not part of the tree.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        info = os.fstat(fd)
        yield UploadEntry("", "dir", 0, stat.S_IMODE(info.st_mode), info.st_mtime_ns, -1, b"")
        yield from _walk(fd, b"", skipped)
    finally:
        os.close(fd)


def _walk(folder_fd: int, rel: bytes, skipped: list[str]) -> Iterator[UploadEntry]:
    names = sorted(os.fsencode(name) for name in os.listdir(folder_fd))
    for name in names:
        if not rel and is_restore_staging(name):
            continue
        child = rel + b"/" + name if rel else name
        try:
            info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed since the folder was listed
        path = os.fsdecode(child)
        if stat.S_ISDIR(info.st_mode):
            try:
                sub_fd = os.open(name, _DIR_FLAGS, dir_fd=folder_fd)
            except OSError:
                skipped.append(path)
                continue
            try:
                yield UploadEntry(
                    path, "dir", 0, stat.S_IMODE(info.st_mode), info.st_mtime_ns, folder_fd, name
                )
                yield from _walk(sub_fd, child, skipped)
            finally:
                os.close(sub_fd)
        elif stat.S_ISREG(info.st_mode):
            yield UploadEntry(
                path,
                "file",
                info.st_size,
                stat.S_IMODE(info.st_mode),
                info.st_mtime_ns,
                folder_fd,
                name,
            )
        else:
            skipped.append(path)


def open_file(entry: UploadEntry) -> tuple[int, os.stat_result]:
    """Open a file of the walk without following a link planted since it was listed."""
    # O_NONBLOCK: a FIFO planted since the walk must not block the backup (no effect on files).
    fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=entry.parent_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OSError(f"{entry.rel} is no longer a regular file")
    return fd, info
