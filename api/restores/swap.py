"""Swap the uploads tree in, with a journal so a crash can be finished or undone.

Two modes, chosen at restore time and recorded in the journal:

- `rename` (UPLOADS_DIR is a plain folder): the tree is staged beside UPLOADS_DIR and
  `exchange` swaps the two with renameat2(RENAME_EXCHANGE): both trees exist at every instant,
  one under each name. The journal records which inode is the new tree.
- `contents` (UPLOADS_DIR is a mount point, e.g. a Docker volume: a rename cannot move it): the
  tree is staged inside it, in `.nexus-restore-<id>/uploads`, and the top-level entries are
  moved, never the mount: first every old entry into `.nexus-restore-<id>/old` (phase
  `parking`), then every staged entry into UPLOADS_DIR (phase `placing`). The journal says
  which phase runs, so every entry's side is known at every instant: while parking, whatever is
  in UPLOADS_DIR is old; while placing, it is new. After the commit the parked tree is dropped
  and UPLOADS_DIR gets the archive's mode and mtime.

At the next start, `recover` (api.restores.runner) asks the database whether the restore
committed and finishes (`finish`) or undoes (`swap_back`) the swap; both may be stopped and
run again at any point.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import logging
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from api.archive.manifest import UPLOADS_PREFIX, safe_mode
from api.archive.writer import fsync_dir
from api.errors import UnsafePath
from api.sources.uploads import STAGING_PREFIX, is_restore_staging

log = logging.getLogger("nexus_backup.restores")

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
RENAME, CONTENTS = "rename", "contents"  # journal modes
PARKING, PLACING = "parking", "placing"  # phases of a contents swap
PARKED_NAME = "old"
_MAX_NS = 2**63 - 1
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def is_mount_point(path: Path) -> bool:
    """Whether a filesystem is mounted at `path` (a Docker volume, a bind mount): a rename can
    move what is inside it, never the folder itself. A link is not a mount point (it is what
    a rename swap replaces). os.path.ismount misses a bind mount of a folder of the same
    filesystem, so the kernel's mount table is read too."""
    if os.path.islink(path) or not path.is_dir():
        return False
    if os.path.ismount(path):
        return True
    try:
        table = Path("/proc/self/mountinfo").read_text(errors="surrogateescape")
    except OSError:
        return False
    real = os.path.realpath(path)
    for line in table.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and _unescape(fields[4]) == real:
            return True
    return False


def _unescape(field: str) -> str:
    """A mountinfo path: space, tab, newline and backslash are written as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def staging_root(uploads_dir: Path, restore_id: str) -> Path:
    """The one staging folder of a restore, beside UPLOADS_DIR. The runner stages there and
    recovery accepts a journal only if it names exactly this: the two cannot drift."""
    return uploads_dir.parent / f".{uploads_dir.name}.restore-{restore_id}"


def staged_uploads(uploads_dir: Path, restore_id: str) -> Path:
    return staging_root(uploads_dir, restore_id) / UPLOADS_PREFIX


def contents_root(uploads_dir: Path, restore_id: str) -> Path:
    """The staging folder of a contents swap: inside the mount-point UPLOADS_DIR, on its
    filesystem (`api.sources.uploads.walk` never takes it for uploads)."""
    return uploads_dir / f"{STAGING_PREFIX}{restore_id}"


def contents_staged(uploads_dir: Path, restore_id: str) -> Path:
    return contents_root(uploads_dir, restore_id) / UPLOADS_PREFIX


def contents_parked(uploads_dir: Path, restore_id: str) -> Path:
    """Where a contents swap parks the old top-level entries until the commit."""
    return contents_root(uploads_dir, restore_id) / PARKED_NAME


@dataclass
class Journal:
    restore_id: str
    uploads_dir: str
    staged: str
    staged_inode: int
    uploads_existed: bool
    # A contents swap's fields; a rename swap leaves them at these defaults (and a journal
    # written before contents swaps existed has only the five fields above: a rename swap).
    mode: str = RENAME
    phase: str = ""
    parked: str = ""
    old_mtime_ns: int = 0  # UPLOADS_DIR's mtime before, put back by an undo
    new_mode: int = 0  # the staged tree's root mode and mtime, given to UPLOADS_DIR at the end
    new_mtime_ns: int = 0

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


def new_journal(uploads_dir: Path, restore_id: str, mode: str) -> Journal:
    """The journal of a restore whose tree is staged (at the path its mode derives from the id)
    and whose database is loaded, written by `swap_in` before anything moves."""
    if mode == CONTENTS:
        staged = os.stat(contents_staged(uploads_dir, restore_id))
        return Journal(
            restore_id=restore_id,
            uploads_dir=str(uploads_dir),
            staged=str(contents_staged(uploads_dir, restore_id)),
            staged_inode=staged.st_ino,
            uploads_existed=True,
            mode=CONTENTS,
            phase=PARKING,
            parked=str(contents_parked(uploads_dir, restore_id)),
            old_mtime_ns=os.stat(uploads_dir).st_mtime_ns,
            new_mode=stat.S_IMODE(staged.st_mode),
            new_mtime_ns=staged.st_mtime_ns,
        )
    return Journal(
        restore_id=restore_id,
        uploads_dir=str(uploads_dir),
        staged=str(staged_uploads(uploads_dir, restore_id)),
        staged_inode=os.stat(staged_uploads(uploads_dir, restore_id)).st_ino,
        uploads_existed=uploads_dir.exists(),
    )


def journal_path(folder: Path, restore_id: str) -> Path:
    return folder / f".restore-{restore_id}.journal"


def journal_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".restore-*.journal"))


def load(path: Path) -> Journal:
    """Read one journal file. Refused (UnsafePath): anything but a regular file (a link is not
    followed) owned by this process's user with mode 0600 and one link, holding exactly the
    journal's fields (a rename swap's five, or all of them) with values its mode allows, whose
    restore id is a plain id matching the file name."""
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
        if not isinstance(data, dict) or set(data) not in _FIELD_SETS:
            raise ValueError("its fields are not a journal's")
        journal = Journal(**data)
    except (ValueError, TypeError) as error:
        raise UnsafePath(
            f"refused journal {path}: it is not a journal ({error})", str(path)
        ) from None
    types = {f.name: _TYPES[str(f.type)] for f in fields(Journal)}
    if not all(type(getattr(journal, k)) is t for k, t in types.items()):
        raise UnsafePath(f"refused journal {path}: a field has the wrong type", str(path))
    problem = _mode_problem(journal)
    if problem:
        raise UnsafePath(f"refused journal {path}: {problem}", str(path))
    if not RESTORE_ID.fullmatch(journal.restore_id) or path.name != (
        journal_path(path.parent, journal.restore_id).name
    ):
        raise UnsafePath(
            f"refused journal {path}: its restore id {journal.restore_id!r} is not a plain id "
            "matching its file name",
            str(path),
        )
    return journal


_TYPES: dict[str, type] = {"str": str, "int": int, "bool": bool}
_ALL_FIELDS = frozenset(f.name for f in fields(Journal))
_FIELD_SETS = (
    _ALL_FIELDS,
    frozenset(["restore_id", "uploads_dir", "staged", "staged_inode", "uploads_existed"]),
)


def _mode_problem(journal: Journal) -> str | None:
    """Why the journal's mode and the values of its mode's fields are impossible, if they are."""
    if journal.mode == RENAME:
        defaults = Journal(journal.restore_id, "", "", 0, False)
        extra = [
            name
            for name in ("phase", "parked", "old_mtime_ns", "new_mode", "new_mtime_ns")
            if getattr(journal, name) != getattr(defaults, name)
        ]
        return f"a rename swap's journal with contents-swap fields {extra}" if extra else None
    if journal.mode != CONTENTS:
        return f"its mode {journal.mode!r} is neither {RENAME!r} nor {CONTENTS!r}"
    if journal.phase not in (PARKING, PLACING):
        return f"its phase {journal.phase!r} is neither {PARKING!r} nor {PLACING!r}"
    if not journal.uploads_existed:
        return "a contents swap's UPLOADS_DIR always exists (it is a mount point)"
    if not 0 <= journal.new_mode <= 0o777 or journal.new_mode != safe_mode(journal.new_mode):
        return (
            f"its mode for UPLOADS_DIR {journal.new_mode:o} would grant what a restored "
            "upload never gets (setuid, setgid, sticky, write for group or others)"
        )
    if not all(0 <= t <= _MAX_NS for t in (journal.old_mtime_ns, journal.new_mtime_ns)):
        return "an mtime is out of range"
    return None


def check_paths(journal: Journal, uploads_dir: Path) -> None:
    """UnsafePath unless the journal's mode is the one UPLOADS_DIR calls for (contents for a
    mount point, rename otherwise) and it names exactly the paths its restore uses: UPLOADS_DIR
    and the staging folder derived from its id, a real folder (not a link) of this user (on
    UPLOADS_DIR's filesystem, for a contents swap)."""
    mount = is_mount_point(uploads_dir)
    if mount != (journal.mode == CONTENTS):
        raise UnsafePath(
            f"refused journal of restore {journal.restore_id}: it is a {journal.mode} swap's "
            f"but UPLOADS_DIR {uploads_dir} is {'' if mount else 'not '}a mount point",
            journal.uploads_dir,
        )
    if journal.mode == CONTENTS:
        _check_contents_paths(journal, uploads_dir)
        return
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


def _check_contents_paths(journal: Journal, uploads_dir: Path) -> None:
    root = contents_root(uploads_dir, journal.restore_id)
    staged, parked = root / UPLOADS_PREFIX, root / PARKED_NAME
    if (journal.uploads_dir, journal.staged, journal.parked) != (
        str(uploads_dir),
        str(staged),
        str(parked),
    ):
        raise UnsafePath(
            f"refused journal of restore {journal.restore_id}: it names {journal.uploads_dir}, "
            f"{journal.staged} and {journal.parked}, not UPLOADS_DIR {uploads_dir} and its "
            f"staging folders {staged} and {parked}",
            journal.staged,
        )
    device = os.stat(uploads_dir).st_dev
    for folder in (root, staged, parked):
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            continue  # not made yet, or already removed
        problem = _folder_problem(info, device)
        if problem is None and folder == staged and info.st_ino != journal.staged_inode:
            problem = "is not the folder this restore staged (another inode)"
        if problem:
            raise UnsafePath(
                f"refused journal of restore {journal.restore_id}: {folder} {problem}",
                str(folder),
            )


def _folder_problem(info: os.stat_result, device: int) -> str | None:
    """Why a staging folder of a contents swap must not be used, if it must not."""
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        return "is not a folder of this service's user (a link or a file planted there?)"
    if info.st_dev != device:
        return "is on another filesystem than UPLOADS_DIR (something is mounted there)"
    return None


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
    """Put the staged tree at uploads_dir; the old tree ends up at the staged path (rename) or
    in the parking folder (contents). The journal is written durably before anything moves."""
    if journal.mode == CONTENTS:
        journal.phase = PARKING
        journal.write(folder)
        _forward(journal, folder)
        return
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


def finish(journal: Journal, folder: Path) -> None:
    """Complete a committed restore's swap wherever it stopped, then drop the old tree."""
    if journal.mode == CONTENTS:
        _forward(journal, folder)
    elif not is_swapped(journal):
        swap_in(journal, folder)
    discard_old(journal)


def swap_back(journal: Journal, folder: Path) -> None:
    """Undo an uncommitted restore's swap wherever it stopped (a contents swap also removes
    its staging folder and gives UPLOADS_DIR its mtime back)."""
    if journal.mode == CONTENTS:
        _backward(journal, folder)
        return
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
    that is a link nothing is removed but the link. A contents swap removes its staging folder
    (the parked old entries in it) and gives UPLOADS_DIR the archive's mode and mtime."""
    if journal.mode == CONTENTS:
        uploads = Path(journal.uploads_dir)
        remove_tree(contents_root(uploads, journal.restore_id))
        _set_root(uploads, journal.new_mode, journal.new_mtime_ns)
        return
    staged = Path(journal.staged)
    if os.path.islink(staged.parent):
        staged.parent.unlink()
        return
    remove_tree(staged)


# --- the contents swap --------------------------------------------------------------------


@dataclass
class _Folders:
    """UPLOADS_DIR and a contents swap's folders, opened without following a link; every move
    is made relative to these descriptors, so nothing planted later redirects it."""

    root: int
    staging: int | None
    staged: int | None
    parked: int | None

    def close(self) -> None:
        for fd in (self.root, self.staging, self.staged, self.parked):
            if fd is not None:
                os.close(fd)


def _open_folder(name: str, dir_fd: int | None, device: int, create: bool = False) -> int | None:
    """A staging folder's descriptor (None if it is absent), checked like `check_paths` does:
    a real folder of this user on UPLOADS_DIR's filesystem."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=dir_fd)
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(f"refused: {name} is not a folder (a link?)", name) from None
        raise
    problem = _folder_problem(os.fstat(fd), device)
    if problem:
        os.close(fd)
        raise UnsafePath(f"refused: {name} {problem}", name)
    return fd


@contextlib.contextmanager
def _folders(journal: Journal, create_parked: bool = False) -> Iterator[_Folders]:
    uploads = Path(journal.uploads_dir)
    root = os.open(uploads, _DIR_FLAGS)
    folders = _Folders(root, None, None, None)
    try:
        device = os.fstat(root).st_dev
        folders.staging = _open_folder(
            contents_root(uploads, journal.restore_id).name, root, device
        )
        if folders.staging is not None:
            folders.staged = _open_folder(UPLOADS_PREFIX, folders.staging, device)
            if folders.staged is not None and os.fstat(folders.staged).st_ino != (
                journal.staged_inode
            ):
                raise UnsafePath(
                    f"refused: {journal.staged} is not the folder this restore staged",
                    journal.staged,
                )
            folders.parked = _open_folder(PARKED_NAME, folders.staging, device, create_parked)
        yield folders
    finally:
        folders.close()


def _move(source: int, target: int, name: str) -> None:
    """Move one top-level entry between two folders of the one filesystem."""
    os.rename(name, name, src_dir_fd=source, dst_dir_fd=target)


def _move_all(source: int, target: int, skip: Callable[[str], bool] | None = None) -> None:
    """Move every entry of `source` (but those `skip` names) into `target`, then make the
    moves durable before the journal may say they happened."""
    for name in sorted(os.listdir(source)):
        if skip is None or not skip(name):
            _move(source, target, name)
    os.fsync(source)
    os.fsync(target)


def _forward(journal: Journal, folder: Path) -> None:
    """Park what is left of the old entries, then place what is left of the staged ones."""
    with _folders(journal, create_parked=journal.phase == PARKING) as folders:
        if journal.phase == PARKING:
            if folders.staged is None or folders.parked is None:
                raise OSError(
                    f"the staged uploads of restore {journal.restore_id} are gone from "
                    f"{journal.staged}: the swap cannot be completed; see the pre_restore backup"
                )
            _move_all(folders.root, folders.parked, skip=is_restore_staging)
            journal.phase = PLACING
            journal.write(folder)
        if folders.staged is not None:
            _move_all(folders.staged, folders.root)


def _backward(journal: Journal, folder: Path) -> None:
    """Take the placed entries back into the staging folder, then the parked ones back into
    UPLOADS_DIR; remove the staging folder and give UPLOADS_DIR its mtime back."""
    uploads = Path(journal.uploads_dir)
    with _folders(journal) as folders:
        if journal.phase == PLACING:
            if folders.staging is None or folders.parked is None:
                raise OSError(
                    f"the parked uploads of restore {journal.restore_id} are gone from "
                    f"{journal.parked}: the swap cannot be undone; see the pre_restore backup"
                )
            if folders.staged is None:  # it stays (emptied) until the staging folder goes
                raise OSError(f"the staged folder {journal.staged} is gone")
            _move_all(folders.root, folders.staged, skip=is_restore_staging)
            journal.phase = PARKING
            journal.write(folder)
        if folders.parked is not None:
            _move_all(folders.parked, folders.root)
    remove_tree(contents_root(uploads, journal.restore_id))
    _set_root(uploads, None, journal.old_mtime_ns)


def _set_root(uploads: Path, mode: int | None, mtime_ns: int) -> None:
    """Give the mount point a mode and an mtime; a mount point of another user keeps its own
    (logged): its contents are what a restore is about."""
    fd = os.open(uploads, _DIR_FLAGS)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        atime = mtime_ns if mode is not None else os.fstat(fd).st_atime_ns
        os.utime(fd, ns=(atime, mtime_ns))
    except PermissionError as error:
        log.warning("UPLOADS_DIR %s keeps its own mode and mtime: %s", uploads, error)
    finally:
        os.close(fd)


@contextlib.contextmanager
def keeping_mtime(uploads: Path) -> Iterator[None]:
    """Make or remove a staging folder inside UPLOADS_DIR without changing UPLOADS_DIR's mtime
    (what a backup of it records)."""
    before = os.stat(uploads)
    try:
        yield
    finally:
        with contextlib.suppress(PermissionError, FileNotFoundError):
            os.utime(uploads, ns=(before.st_atime_ns, before.st_mtime_ns))
