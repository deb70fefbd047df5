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
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from api.archive.writer import fsync_dir

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
        target = self.path_in(folder)
        temporary = target.with_name(target.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
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


def journals(folder: Path) -> list[Journal]:
    found = []
    for path in sorted(folder.glob(".restore-*.journal")):
        with contextlib.suppress(ValueError, TypeError, OSError):
            found.append(Journal(**json.loads(path.read_text(encoding="utf-8"))))
    return found


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
    """After the commit: the old tree (now at the staged path) goes."""
    shutil.rmtree(journal.staged, ignore_errors=True)
