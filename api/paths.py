"""Paths and keys read back from the catalog, a journal or a bucket are untrusted input.

Each is checked where it is used, against where it must be: an archive's real path (symbolic
links resolved) inside BACKUP_DIR, a cloud key inside the bucket prefix. A refusal raises
`UnsafePath` and leaves an audit row `security.refused`; the action does nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from api.audit import service as audit
from api.errors import UnsafePath
from api.states import AuditOutcome

if TYPE_CHECKING:
    from api.backups.models import SystemBackup
    from api.services import Services

log = logging.getLogger("nexus_backup.paths")
_T = TypeVar("_T")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def is_inside(path: str, root: str) -> bool:
    """Whether `path` is strictly below `root` (both absolute and already resolved)."""
    return path != root and os.path.commonpath([path, root]) == root


def confined(path: str | os.PathLike[str], root: Path, *, what: str = "archive") -> Path:
    """The real path of `path` (every symbolic link resolved) if it lies inside the real path
    of `root`; else UnsafePath. A link inside `root` pointing outside is refused too."""
    text = os.fspath(path)
    base = os.path.realpath(root)
    if not text or "\x00" in text:
        raise UnsafePath(f"refused: the {what} path {text!r} is empty or has a NUL byte", text)
    real = os.path.realpath(text)
    if not is_inside(real, base):
        raise UnsafePath(
            f"refused: the {what} path {text} resolves to {real}, outside {base}; the catalog "
            f"row was altered or the folder moved: put the {what} back inside {base}",
            text,
        )
    return Path(real)


@contextlib.contextmanager
def _walk(real: Path, root: Path) -> Iterator[int]:
    """A descriptor of `real`'s folder, opened one component at a time from `root` without
    following any symbolic link (one planted after the check is refused, not followed)."""
    base = os.path.realpath(root)
    parts = real.relative_to(base).parts[:-1]
    fd = os.open(base, _DIR_FLAGS)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(
                        f"refused: {real} changed while it was checked (a link appeared in it)",
                        str(real),
                    ) from None
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def open_file(path: str | os.PathLike[str], root: Path, *, what: str = "archive") -> int:
    """A read-only descriptor of the regular file `path`, which must lie inside `root`.

    The file is opened from `root` without following links, and the opened file is checked
    (fstat), so a file swapped for a link between the check and the open is refused.
    Raises FileNotFoundError when it does not exist."""
    real = confined(path, root, what=what)
    with _walk(real, root) as folder:
        try:
            fd = os.open(real.name, _FILE_FLAGS, dir_fd=folder)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UnsafePath(f"refused: {real} became a link", str(path)) from None
            raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafePath(f"refused: the {what} {path} is not a regular file", os.fspath(path))
    return fd


def is_file(path: str | os.PathLike[str], root: Path, *, what: str = "archive") -> bool:
    """Whether `path` (checked inside `root`) is a regular file; UnsafePath if outside."""
    real = confined(path, root, what=what)
    try:
        return stat.S_ISREG(os.lstat(real).st_mode)
    except FileNotFoundError:
        return False


def unlink_file(path: str | os.PathLike[str], root: Path, *, what: str = "archive") -> bool:
    """Remove the regular file `path`, which must lie inside `root`; False if it was missing.
    The unlink goes through a descriptor of its folder opened without following links."""
    real = confined(path, root, what=what)
    with _walk(real, root) as folder:
        try:
            info = os.stat(real.name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(f"refused: the {what} {path} is not a regular file", os.fspath(path))
        os.unlink(real.name, dir_fd=folder)
        return True


def cloud_key(key: str) -> str:
    """`key` if it is a safe object key under the bucket prefix (the storage adds the prefix):
    relative, '/'-separated, no empty, '.' or '..' segment, no backslash or control character.
    Else UnsafePath."""
    problem = None
    if not isinstance(key, str) or not key:
        problem = "it is empty"
    elif any(ord(c) < 32 or ord(c) == 127 for c in key):
        problem = "it contains a control character"
    elif "\\" in key:
        problem = "it contains a backslash"
    elif key.startswith("/"):
        problem = "it is absolute"
    elif any(part in ("", ".", "..") for part in key.split("/")):
        problem = "it has an empty, '.' or '..' segment"
    elif len(key.encode("utf-8", "surrogateescape")) > 1024:
        problem = "it is longer than 1024 bytes"
    if problem:
        raise UnsafePath(
            f"refused: cloud key {key!r} could point outside the bucket prefix ({problem})",
            str(key),
        )
    return key


async def record_refusal(
    services: Services,
    error: UnsafePath,
    *,
    actor: str,
    action: str,
    target: str | None,
    detail: dict[str, Any] | None = None,
    client_address: str | None = None,
) -> None:
    """Audit a refusal in its own transaction: the refused request's own rolls back."""
    await audit.record_apart(
        services.sessions,
        audit.Caller(actor, client_address),
        action="security.refused",
        target=target,
        outcome=AuditOutcome.refused,
        detail={**(detail or {}), "action": action, "path": error.path, "error": error.detail},
    )
    log.warning("refused %s of %s: %s", action, target or "-", error.detail)


async def archive_path(
    services: Services,
    backup: SystemBackup,
    *,
    action: str,
    actor: str,
    client_address: str | None = None,
) -> Path | None:
    """The real path of a catalogued backup's local archive (None if it has none), checked to
    lie inside BACKUP_DIR; a refusal is audited and raised."""
    if not backup.file_path:
        return None
    file_path, folder = backup.file_path, services.settings.backup_dir
    return await _audited(
        services, backup, lambda: confined(file_path, folder), action, actor, client_address
    )


async def archive_key(
    services: Services,
    backup: SystemBackup,
    *,
    action: str,
    actor: str,
    client_address: str | None = None,
) -> str | None:
    """A catalogued backup's cloud key (None if it has none), checked to stay inside the
    bucket prefix; a refusal is audited and raised."""
    if not backup.cloud_path:
        return None
    key = backup.cloud_path
    return await _audited(services, backup, lambda: cloud_key(key), action, actor, client_address)


async def _audited(
    services: Services,
    backup: SystemBackup,
    check: Callable[[], _T],
    action: str,
    actor: str,
    client_address: str | None,
) -> _T:
    """`check()`'s answer; an UnsafePath it raises is audited against `backup`, then raised."""
    try:
        return check()
    except UnsafePath as error:
        await record_refusal(
            services,
            error,
            actor=actor,
            action=action,
            target=backup.name,
            detail={"id": backup.id},
            client_address=client_address,
        )
        raise
