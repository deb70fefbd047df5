"""Swap the uploads tree in atomically, with a journal so a crash can be finished or undone.

`exchange` uses renameat2(RENAME_EXCHANGE): both trees exist at every instant, one under each
name. The journal records the restore id and which inode is the new tree; at the next start,
`recover` asks the database whether the restore committed and finishes or undoes the swap.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from api.archive.manifest import UPLOADS_PREFIX
from api.archive.writer import fsync_dir
from api.errors import UnsafePath

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def exchange(first: Path, second: Path) -> None:
    """Atomically swap two paths on one filesystem (falls back to three renames)."""
    function = getattr(_libc, "renameat2", None)
    if function is not None:
        result = function(
            _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), str(first))
    parked = first.with_name(first.name + ".swap")
    os.rename(first, parked)
    os.rename(second, first)
    os.rename(parked, second)


RESTORE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
JOURNAL_MODE = 0o600
MAX_JOURNAL_BYTES = 64 * 1024


def staging_root(uploads_dir: Path, restore_id: str) -> Path:
    """The one staging folder of a restore, beside UPLOADS_DIR. The runner stages there and
    recovery accepts a journal only if it names exactly this: the two cannot drift."""
    return uploads_dir.parent / f".{uploads_dir.name}.restore-{restore_id}"


def staged_uploads(uploads_dir: Path, restore_id: str) -> Path:
    return staging_root(uploads_dir, restore_id) / UPLOADS_PREFIX


@dataclass
class Journal:
    restore_id: str
    uploads_dir: str
    staged: str
    staged_inode: int
    uploads_existed: bool

    def path_in(self, folder: Path) -> Path:
        return journal_path(folder, self.restore_id)

    def write(self, folder: Path) -> None:
        """Write the journal durably, mode 0600 whatever the umask, never through a link."""
        target = self.path_in(folder)
        temporary = target.with_name(target.name + ".tmp")
        temporary.unlink(missing_ok=True)
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            JOURNAL_MODE,
        )
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), JOURNAL_MODE)
            json.dump(asdict(self), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        fsync_dir(folder)

    def remove(self, folder: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_in(folder).unlink()


def journal_path(folder: Path, restore_id: str) -> Path:
    return folder / f".restore-{restore_id}.journal"


def journal_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".restore-*.journal"))


def load(path: Path) -> Journal:
    """Read one journal file. Refused (UnsafePath): anything but a regular file (a link is not
    followed) owned by this process's user with mode 0600 and one link, holding exactly the
    journal's fields, whose restore id is a plain id matching the file name."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafePath(f"refused journal {path}: it is a symbolic link", str(path)) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "it is not a regular file"
        elif info.st_uid != os.geteuid():
            problem = f"it is owned by uid {info.st_uid}, not by this service's uid {os.geteuid()}"
        elif stat.S_IMODE(info.st_mode) != JOURNAL_MODE:
            problem = f"its mode is {stat.S_IMODE(info.st_mode):04o}, not 0600"
        elif info.st_nlink != 1:
            problem = "it has other hard links"
        elif info.st_size > MAX_JOURNAL_BYTES:
            problem = "it is too large"
        if problem:
            raise UnsafePath(f"refused journal {path}: {problem}", str(path))
        raw = handle.read(MAX_JOURNAL_BYTES + 1)
    try:
        data = json.loads(raw)
        journal = Journal(**data)
    except (ValueError, TypeError) as error:
        raise UnsafePath(
            f"refused journal {path}: it is not a journal ({error})", str(path)
        ) from None
    types = {"restore_id": str, "uploads_dir": str, "staged": str, "staged_inode": int}
    if not all(type(getattr(journal, k)) is t for k, t in types.items()) or not isinstance(
        journal.uploads_existed, bool
    ):
        raise UnsafePath(f"refused journal {path}: a field has the wrong type", str(path))
    if not RESTORE_ID.fullmatch(journal.restore_id) or path.name != (
        journal_path(path.parent, journal.restore_id).name
    ):
        raise UnsafePath(
            f"refused journal {path}: its restore id {journal.restore_id!r} is not a plain id "
            "matching its file name",
            str(path),
        )
    return journal


def check_paths(journal: Journal, uploads_dir: Path) -> None:
    """UnsafePath unless the journal names exactly the paths its restore uses: UPLOADS_DIR
    and the staging folder derived from its id, a real folder (not a link) of this user."""
    staged = staged_uploads(uploads_dir, journal.restore_id)
    if journal.uploads_dir != str(uploads_dir) or journal.staged != str(staged):
        raise UnsafePath(
            f"refused journal of restore {journal.restore_id}: it names {journal.uploads_dir} and "
            f"{journal.staged}, not UPLOADS_DIR {uploads_dir} and its staging folder {staged}",
            journal.staged,
        )
    for folder in (staged.parent, staged):
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            continue  # nothing staged there (any more): nothing to follow
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise UnsafePath(
                f"refused journal of restore {journal.restore_id}: {folder} is not a folder of "
                "this service's user (a link or a file planted there?)",
                str(folder),
            )


def remove_tree(path: Path) -> None:
    """Remove a folder without ever following a link: a link (or file) there is unlinked."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path, ignore_errors=True)  # fd-based: links inside are unlinked
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def swap_in(journal: Journal, folder: Path) -> None:
    """Put the staged tree at uploads_dir; the old tree ends up at the staged path."""
    uploads, staged = Path(journal.uploads_dir), Path(journal.staged)
    journal.write(folder)
    if journal.uploads_existed:
        exchange(staged, uploads)
    else:
        os.rename(staged, uploads)
    fsync_dir(uploads.parent)


def is_swapped(journal: Journal) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return os.stat(journal.uploads_dir).st_ino == journal.staged_inode
    return False


def swap_back(journal: Journal) -> None:
    uploads, staged = Path(journal.uploads_dir), Path(journal.staged)
    if not is_swapped(journal):
        return
    if journal.uploads_existed:
        exchange(staged, uploads)
    else:
        os.rename(uploads, staged)
    fsync_dir(uploads.parent)


def discard_old(journal: Journal) -> None:
    """After the commit: the old tree (now at the staged path) goes. Through a staging folder
    that is a link nothing is removed but the link."""
    staged = Path(journal.staged)
    if os.path.islink(staged.parent):
        staged.parent.unlink()
        return
    remove_tree(staged)
