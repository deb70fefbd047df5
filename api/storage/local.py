"""Objects as files under one root folder.

Every path is resolved one component at a time from a descriptor of the root with O_NOFOLLOW,
so no key reaches outside the root, not even through a symbolic link planted inside it. A put
writes a hidden temporary file beside the target, fsyncs it, renames it into place and fsyncs
the folder: a reader sees the old object or the new one, never a partial one. File I/O runs in
worker threads; a cancelled operation stops at the next chunk and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat as stat_module
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar

from api.storage.base import (
    CHUNK_SIZE,
    ObjectInfo,
    StorageError,
    Stored,
    check_key,
    check_prefix,
    confirm_by_download,
    ensure_exhausted,
    read_exactly,
    write_all,
)

T = TypeVar("T")

# Same shape as the archive writer's temporary names (`.{name}.partial-{hex}`), so crash
# recovery and humans recognise them; listings never show them.
PARTIAL_MARK = ".partial-"
_PARTIAL = re.compile(r"^\..*\.partial-[0-9a-f]{12}$")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Stopped(Exception):
    """The awaiting task was cancelled; the worker thread stops and cleans up."""


class LocalStorage:
    """Objects stored as files under `root` (created on first write, mode 0700)."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage(root={str(self.root)!r})"

    # -- protocol -----------------------------------------------------------------------

    async def put(self, key: str, source: BinaryIO, size: int) -> Stored:
        check_key(key)
        if _PARTIAL.match(key.rsplit("/", 1)[-1]):
            raise StorageError(f"refused storage key {key!r}: it looks like a temporary file")
        if size < 0:
            raise StorageError(f"cannot store {key}: negative size {size}")
        return await _in_thread(self._put, key, source, size)

    async def get(self, key: str, target: BinaryIO) -> int:
        check_key(key)
        return await _in_thread(self._read, key, lambda data: write_all(target, data))

    async def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        return await asyncio.to_thread(self._stat, key)

    async def delete(self, key: str) -> None:
        check_key(key)
        await asyncio.to_thread(self._delete, key)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        check_prefix(prefix)
        return await asyncio.to_thread(self._list, prefix)

    async def presign_get(
        self, key: str, expires_seconds: int, filename: str | None = None
    ) -> str | None:
        check_key(key)
        return None

    async def sha256(self, key: str) -> str:
        check_key(key)
        digest = hashlib.sha256()
        await _in_thread(self._read, key, digest.update)
        return digest.hexdigest()

    async def confirm(self, key: str, stored: Stored) -> str:
        check_key(key)
        return await confirm_by_download(self, key, stored)

    # -- worker-thread halves -------------------------------------------------------------

    def _put(self, key: str, source: BinaryIO, size: int, stop: threading.Event) -> Stored:
        with self._folder(key, create=True) as found:
            assert found is not None  # create=True makes every folder
            folder, name = found
            temporary = f".{name}{PARTIAL_MARK}{secrets.token_hex(6)}"
            try:
                fd = os.open(
                    temporary,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=folder,
                )
            except OSError as exc:
                raise self._error("write", key, exc) from exc
            digest = hashlib.sha256()
            try:
                with os.fdopen(fd, "wb", buffering=0) as out:
                    remaining = size
                    while remaining:
                        if stop.is_set():
                            raise _Stopped
                        data = read_exactly(source, min(CHUNK_SIZE, remaining))
                        digest.update(data)
                        write_all(out, data)
                        remaining -= len(data)
                    ensure_exhausted(source, size)
                    os.fsync(out.fileno())
                if stop.is_set():
                    raise _Stopped
                os.rename(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
                os.fsync(folder)
            except BaseException as exc:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=folder)
                if isinstance(exc, OSError):
                    raise self._error("write", key, exc) from exc
                raise
        return Stored(size=size, sha256=digest.hexdigest())

    def _read(self, key: str, sink: Callable[[bytes], object], stop: threading.Event) -> int:
        with self._folder(key, create=False) as found:
            if found is None:
                raise StorageError(f"object {key} not found under {self.root}")
            folder, name = found
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            except FileNotFoundError:
                raise StorageError(f"object {key} not found under {self.root}") from None
            except OSError as exc:
                raise self._error("read", key, exc) from exc
            with os.fdopen(fd, "rb", buffering=0) as handle:
                if not stat_module.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise StorageError(f"object {key} not found under {self.root}")
                written = 0
                while True:
                    if stop.is_set():
                        raise _Stopped
                    try:
                        data = handle.read(CHUNK_SIZE)
                    except OSError as exc:
                        raise self._error("read", key, exc) from exc
                    if not data:
                        return written
                    sink(data)
                    written += len(data)

    def _stat(self, key: str) -> ObjectInfo | None:
        with self._folder(key, create=False) as found:
            if found is None:
                return None
            folder, name = found
            try:
                info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise self._error("inspect", key, exc) from exc
            if stat_module.S_ISLNK(info.st_mode):
                raise StorageError(f"refused {key}: it is a symbolic link under {self.root}")
            if not stat_module.S_ISREG(info.st_mode):
                return None
            return ObjectInfo(key=key, size=info.st_size, modified=_mtime(info))

    def _delete(self, key: str) -> None:
        with self._folder(key, create=False) as found:
            if found is None:
                return
            folder, name = found
            try:
                os.unlink(name, dir_fd=folder)
            except (FileNotFoundError, IsADirectoryError):
                return  # nothing stored under this exact key
            except OSError as exc:
                if exc.errno in (errno.EISDIR, errno.EPERM):
                    return
                raise self._error("delete", key, exc) from exc
            os.fsync(folder)

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        found: builtins.list[ObjectInfo] = []
        with self._folder(f"{base}/x" if base else "x", create=False) as start:
            if start is None:
                return found
            folder, _ = start
            walk = os.fwalk(".", dir_fd=folder, follow_symlinks=False)
            for path, _dirs, files, fd in walk:
                relative = path[2:] if path.startswith("./") else ""
                here = "/".join(p for p in (base, relative) if p)
                for file_name in files:
                    if _PARTIAL.match(file_name):
                        continue
                    key = f"{here}/{file_name}" if here else file_name
                    if not key.startswith(prefix):
                        continue
                    try:
                        info = os.stat(file_name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat_module.S_ISREG(info.st_mode):
                        found.append(ObjectInfo(key=key, size=info.st_size, modified=_mtime(info)))
        found.sort(key=lambda item: item.key)
        return found

    # -- confinement ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _folder(self, key: str, *, create: bool) -> Iterator[tuple[int, str] | None]:
        """Yield (descriptor of the key's folder, file name), walking from the root one
        component at a time without following symbolic links; None if a folder is missing
        (and `create` is false)."""
        *folders, name = key.split("/")
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:
                raise StorageError(f"cannot create the storage folder {self.root}") from None
            yield None
            return
        except OSError as exc:
            raise StorageError(
                f"cannot open the storage folder {self.root}: {exc.strerror}; "
                "check that it exists, is a folder and is writable"
            ) from exc
        try:
            for index, part in enumerate(folders):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if create:
                        raise
                    yield None
                    return
                except OSError as exc:
                    where = "/".join(folders[: index + 1])
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise StorageError(
                            f"refused {key}: {where} under {self.root} is a symbolic link or a "
                            "file, not a folder"
                        ) from None
                    raise self._error("open", key, exc) from exc
                os.close(fd)
                fd = child
            yield fd, name
        finally:
            os.close(fd)

    def _error(self, action: str, key: str, exc: OSError) -> StorageError:
        hint = {
            errno.ENOSPC: "free some space",
            errno.EDQUOT: "free some space",
            errno.EACCES: "check the folder's owner and permissions",
            errno.EPERM: "check the folder's owner and permissions",
            errno.EROFS: "the file system is read-only",
            errno.ELOOP: "it is a symbolic link, which is never followed",
            errno.EISDIR: "a folder has that name",
        }.get(exc.errno or 0, "check the storage folder")
        return StorageError(f"cannot {action} {key} under {self.root}: {exc.strerror}; {hint}")


def _mtime(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, UTC)


async def _in_thread(function: Callable[..., T], *args: object) -> T:
    """Run `function(*args, stop)` in a worker thread. If the caller is cancelled, tell the
    worker to stop, wait until it has cleaned up, then re-raise the cancellation."""
    stop = threading.Event()
    work = asyncio.ensure_future(asyncio.to_thread(function, *args, stop))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(_Stopped, Exception):
            await work
        raise
