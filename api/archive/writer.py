"""Stream an archive to disk: tar -> compress -> hash -> hidden temporary file -> rename.

Nothing is held in memory but one chunk per stage. The archive becomes visible under its final
name only once it is complete and fsynced; its sidecar `{archive}.sha256` follows.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import tarfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

from api import faults
from api.archive.streams import CHUNK, Codec, HashingReader, HashingWriter, compressor

PARTIAL_MARK = ".partial-"


def partial_path(final: Path) -> Path:
    """Hidden temporary name beside `final`; crash recovery removes every such file."""
    return final.with_name(f".{final.name}{PARTIAL_MARK}{secrets.token_hex(6)}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temporary: Path, final: Path) -> None:
    """Make `temporary` visible as `final`, never replacing an existing file."""
    try:
        os.link(temporary, final)
    except FileExistsError:
        raise FileExistsError(f"{final} already exists; it is never overwritten") from None
    os.unlink(temporary)
    fsync_dir(final.parent)


def write_sidecar(archive: Path, sha256: str) -> Path:
    """`{archive}.sha256` in sha256sum format, so `sha256sum -c` works in its folder."""
    sidecar = archive.with_name(archive.name + ".sha256")
    temporary = partial_path(sidecar)
    with open(temporary, "wb") as handle:
        handle.write(f"{sha256}  {archive.name}\n".encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, sidecar)
    fsync_dir(sidecar.parent)
    return sidecar


def read_sidecar(archive: Path) -> str | None:
    sidecar = archive.with_name(archive.name + ".sha256")
    try:
        text = sidecar.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    token = text.split(maxsplit=1)[0].lower() if text.strip() else ""
    if len(token) != 64 or any(c not in "0123456789abcdef" for c in token):
        raise ValueError(f"{sidecar} is not in sha256sum format")
    return token


class ArchiveWriter:
    """Writes one archive. Use as a context manager; an exception removes the temporary file."""

    def __init__(self, final: Path, codec: Codec) -> None:
        self.final = final
        self.temporary = partial_path(final)
        fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._hashing = HashingWriter(self._file)
        self._compressed = compressor(cast(BinaryIO, self._hashing), codec)
        self._tar = tarfile.open(  # noqa: SIM115 - closed in commit/abort
            fileobj=self._compressed,
            mode="w|",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
            errors="surrogateescape",
            bufsize=CHUNK,
        )
        self._tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # not 16 KiB at a time
        self._done = False

    @property
    def bytes_written(self) -> int:
        return self._hashing.count

    def _info(self, name: str, kind: bytes, size: int, mode: int, mtime_ns: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = size
        info.mode = mode & 0o7777
        info.mtime = mtime_ns // 1_000_000_000
        seconds, nanos = divmod(abs(mtime_ns), 1_000_000_000)
        if nanos:
            sign = "-" if mtime_ns < 0 else ""
            info.pax_headers = {"mtime": f"{sign}{seconds}.{nanos:09d}"}
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def add_file(self, name: str, source: BinaryIO, size: int, mode: int, mtime_ns: int) -> str:
        """Copy exactly `size` bytes of `source` in as `name`; return their SHA-256."""
        reader = HashingReader(source)
        info = self._info(name, tarfile.REGTYPE, size, mode, mtime_ns)
        try:
            self._tar.addfile(info, cast(BinaryIO, reader))
            self._tar.members.clear()  # type: ignore[attr-defined]  # it keeps every header: ~2 KB each
        except OSError as error:
            if "unexpected end of data" in str(error):
                raise OSError(
                    f"{name} shrank while it was being read (changed during backup)"
                ) from None
            raise
        return reader.sha256.hexdigest()

    def add_bytes(self, name: str, data: bytes, mtime_ns: int, mode: int = 0o644) -> None:
        self._tar.addfile(
            self._info(name, tarfile.REGTYPE, len(data), mode, mtime_ns), io.BytesIO(data)
        )
        self._tar.members.clear()  # type: ignore[attr-defined]

    def add_directory(self, name: str, mode: int, mtime_ns: int) -> None:
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, 0, mode, mtime_ns))
        self._tar.members.clear()  # type: ignore[attr-defined]

    def commit(self) -> tuple[str, int]:
        """Finish, fsync and publish the archive and its sidecar; return (sha256, size)."""
        self._tar.close()
        self._compressed.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        sha256 = self._hashing.sha256.hexdigest()
        size = self._hashing.count
        faults.point("backup.before_publish")
        publish(self.temporary, self.final)
        self._done = True
        write_sidecar(self.final, sha256)
        return sha256, size

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        discard = getattr(self._compressed, "discard", None)  # drop gzip blocks in flight
        for closer in (discard, self._tar.close, self._compressed.close, self._file.close):
            if closer is None:
                continue
            with contextlib.suppress(Exception):
                closer()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None:
            self.abort()
