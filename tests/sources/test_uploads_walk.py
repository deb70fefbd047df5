"""The uploads walk (api.sources.uploads): what it yields, what it skips, what it never follows.

Everything here runs on real files in tmp_path; no database is needed.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api.errors import ConfigError
from api.sources.uploads import UploadEntry, check_root, open_file, walk

SECRET = b"outside the uploads root: must never be read\n"
BASE_NS = 1_700_000_000_000_000_000


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the uploads root, holding a secret file and a sub-folder."""
    folder = tmp_path / "outside"
    (folder / "private").mkdir(parents=True)
    (folder / "secret.txt").write_bytes(SECRET)
    (folder / "private" / "key.pem").write_bytes(SECRET)
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


def _run_with_deadline(
    action: Callable[[], object], fifos: list[Path], seconds: float = 5.0
) -> tuple[bool, object]:
    """Run `action` in a thread; return (finished_in_time, result or exception).

    If it is still blocked after `seconds` (typically in open() on a FIFO), every FIFO in
    `fifos` is opened for writing so that the blocked open returns and the test can end.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = action()
        except BaseException as error:  # reported to the test, not swallowed
            outcome["value"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    finished = not thread.is_alive()
    if not finished:
        for fifo in fifos:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            os.close(fd)
        thread.join(seconds)
    return finished, outcome.get("value")


def _rels(root: Path, skipped: list[str]) -> list[str]:
    return [entry.rel for entry in walk(root, skipped)]


# --- links and special files are never followed -------------------------------------------------


def test_symlinks_to_outside_files_folders_and_dangling_targets_are_skipped_not_followed(
    root: Path, outside: Path, tmp_path: Path
) -> None:
    (root / "real.txt").write_bytes(b"inside")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_bytes(b"inside too")
    (root / "link-to-file").symlink_to(outside / "secret.txt")
    (root / "link-to-folder").symlink_to(outside)
    (root / "dangling").symlink_to(tmp_path / "does-not-exist")
    (root / "sub" / "loop").symlink_to(root)
    (root / "sub" / "relative-up").symlink_to("../../outside/private")

    skipped: list[str] = []
    entries = list(walk(root, skipped))

    assert sorted(skipped) == [
        "dangling",
        "link-to-file",
        "link-to-folder",
        "sub/loop",
        "sub/relative-up",
    ], f"every symbolic link must be reported in `skipped`, got {skipped}"
    assert [e.rel for e in entries] == ["", "real.txt", "sub", "sub/inner.txt"], (
        "the walk must yield only the real files and folders under the root, never a link "
        f"or anything behind one; got {[e.rel for e in entries]}"
    )
    names = {part for entry in entries for part in entry.rel.split("/")}
    assert not names & {"secret.txt", "private", "key.pem"}, (
        f"the walk followed a link out of the uploads root: {sorted(names)}"
    )


def test_a_symlinked_folder_is_not_descended_into(root: Path, outside: Path) -> None:
    (root / "docs").symlink_to(outside, target_is_directory=True)

    skipped: list[str] = []
    rels = _rels(root, skipped)

    assert rels == [""], f"nothing behind the folder link may be yielded, got {rels}"
    assert skipped == ["docs"], f"the folder link must be reported as skipped, got {skipped}"


@pytest.mark.timeout(60)
def test_a_fifo_is_skipped_without_being_opened(root: Path) -> None:
    (root / "a.txt").write_bytes(b"a")
    fifo = root / "pipe"
    os.mkfifo(fifo)
    (root / "z.txt").write_bytes(b"z")

    skipped: list[str] = []
    finished, result = _run_with_deadline(lambda: _rels(root, skipped), [fifo])

    assert finished, "walk() blocked on the FIFO: it opened it instead of skipping it"
    assert result == ["", "a.txt", "z.txt"], f"the FIFO must not be yielded, got {result!r}"
    assert skipped == ["pipe"], f"the FIFO must be reported in `skipped`, got {skipped}"


def test_a_unix_socket_is_skipped(root: Path) -> None:
    import socket

    # AF_UNIX paths are limited to ~107 bytes; bind relative to the folder to stay short.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    try:
        os.chdir(root)
        sock.bind("s.sock")
    finally:
        os.chdir(cwd)
    try:
        skipped: list[str] = []
        rels = _rels(root, skipped)
    finally:
        sock.close()

    assert rels == [""], f"a socket must not be yielded, got {rels}"
    assert skipped == ["s.sock"], f"a socket must be reported in `skipped`, got {skipped}"


# --- order and metadata ------------------------------------------------------------------------


def _build_tree(root: Path) -> dict[str, tuple[str, int, int]]:
    """A small tree with distinctive modes and nanosecond mtimes; returns what was set."""
    layout: list[tuple[str, str, int]] = [
        ("b", "dir", 0o750),
        ("a", "dir", 0o755),
        ("a/sub", "dir", 0o700),
        ("a/sub/deep.bin", "file", 0o600),
        ("a/z.txt", "file", 0o644),
        ("a-b.txt", "file", 0o640),
        ("c.txt", "file", 0o755),
        ("B-upper.txt", "file", 0o444),
    ]
    for rel, kind, _mode in layout:
        path = root / rel
        if kind == "dir":
            path.mkdir()
        else:
            path.write_bytes(rel.encode() * 3)
    expected: dict[str, tuple[str, int, int]] = {}
    # Deepest first, so that setting a child's metadata does not disturb its parent's mtime.
    for index, (rel, kind, mode) in enumerate(sorted(layout, key=lambda i: -i[0].count("/"))):
        path = root / rel
        mtime_ns = BASE_NS + index * 1_000_000_007 + 123_456_789
        os.chmod(path, mode)
        os.utime(path, ns=(mtime_ns, mtime_ns))
        expected[rel] = (kind, mode, mtime_ns)
    return expected


def test_walk_order_is_sorted_per_folder_with_parents_before_children(root: Path) -> None:
    _build_tree(root)

    skipped: list[str] = []
    rels = _rels(root, skipped)

    assert rels == [
        "",
        "B-upper.txt",
        "a",
        "a/sub",
        "a/sub/deep.bin",
        "a/z.txt",
        "a-b.txt",
        "b",
        "c.txt",
    ], f"unexpected walk order {rels}"
    assert skipped == []
    seen: set[str] = set()
    for rel in rels:
        if rel:
            parent = rel.rpartition("/")[0]
            assert parent in seen, f"{rel!r} was yielded before its folder {parent!r}"
        seen.add(rel)


def test_walk_order_is_the_same_on_every_walk(root: Path) -> None:
    _build_tree(root)
    first = _rels(root, [])
    second = _rels(root, [])
    assert first == second, f"two walks of an unchanged tree differ:\n{first}\n{second}"


def test_walk_reports_kind_size_mode_and_mtime_as_lstat_gives_them(root: Path) -> None:
    expected = _build_tree(root)

    entries: list[UploadEntry] = list(walk(root, []))

    assert {e.rel for e in entries} == {"", *expected}
    for entry in entries:
        info = os.lstat(root / entry.rel) if entry.rel else os.lstat(root)
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
        assert entry.kind == kind, f"{entry.rel!r}: kind {entry.kind}, lstat says {kind}"
        assert entry.mode == stat.S_IMODE(info.st_mode), (
            f"{entry.rel!r}: mode {oct(entry.mode)}, lstat says {oct(stat.S_IMODE(info.st_mode))}"
        )
        assert entry.mtime_ns == info.st_mtime_ns, (
            f"{entry.rel!r}: mtime_ns {entry.mtime_ns}, lstat says {info.st_mtime_ns}"
        )
        if entry.kind == "file":
            assert entry.size == info.st_size, f"{entry.rel!r}: size {entry.size}"
        if entry.rel in expected:
            _kind, mode, mtime_ns = expected[entry.rel]
            assert (entry.mode, entry.mtime_ns) == (mode, mtime_ns), (
                f"{entry.rel!r}: walk reports mode {oct(entry.mode)} mtime {entry.mtime_ns}, "
                f"the test set {oct(mode)} and {mtime_ns}"
            )


def test_the_root_itself_is_the_first_entry_with_an_empty_rel(root: Path) -> None:
    os.chmod(root, 0o751)
    os.utime(root, ns=(BASE_NS + 5, BASE_NS + 5))

    first = next(iter(walk(root, [])))

    assert (first.rel, first.kind) == ("", "dir")
    assert (first.mode, first.mtime_ns) == (0o751, BASE_NS + 5), (
        "the root entry must carry the uploads folder's own mode and mtime"
    )


def test_names_that_are_not_utf8_are_walked_and_opened(root: Path) -> None:
    raw = os.fsencode(root) + b"/caf\xe9.txt"
    with open(raw, "wb") as handle:
        handle.write(b"latin-1 name")

    entries = [e for e in walk(root, []) if e.kind == "file"]

    assert [e.name for e in entries] == [b"caf\xe9.txt"]
    assert entries[0].rel == os.fsdecode(b"caf\xe9.txt"), "rel must surrogate-escape the bytes"


def test_open_file_reads_the_listed_file(root: Path) -> None:
    (root / "doc.txt").write_bytes(b"hello")
    for entry in walk(root, []):
        if entry.kind == "file":
            fd, info = open_file(entry)
            with os.fdopen(fd, "rb") as handle:
                assert handle.read() == b"hello"
            assert info.st_size == 5


# --- check_root --------------------------------------------------------------------------------


def test_check_root_refuses_a_missing_folder_naming_uploads_dir(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-uploads"
    with pytest.raises(ConfigError) as caught:
        check_root(missing)
    assert "UPLOADS_DIR" in caught.value.detail, "the message must name the setting to fix"
    assert str(missing) in caught.value.detail
    assert "does not exist" in caught.value.detail


def test_check_root_refuses_a_file_naming_uploads_dir(tmp_path: Path) -> None:
    a_file = tmp_path / "uploads.txt"
    a_file.write_text("not a folder")
    with pytest.raises(ConfigError) as caught:
        check_root(a_file)
    assert "UPLOADS_DIR" in caught.value.detail, "the message must name the setting to fix"
    assert "not a folder" in caught.value.detail


def test_check_root_accepts_a_folder(root: Path) -> None:
    assert check_root(root) == root


# --- races: the tree changes after it was listed ------------------------------------------------


def _positioned_on(root: Path, rel: str) -> Iterator[UploadEntry]:
    """Walk until `rel` and yield it while the walk is positioned on it (its fds are open)."""
    for entry in walk(root, []):
        if entry.rel == rel:
            yield entry
            return
    raise AssertionError(f"{rel!r} was not listed by the walk")


def _open_and_close(entry: UploadEntry) -> None:
    fd, _info = open_file(entry)
    os.close(fd)


def _open_and_read(entry: UploadEntry) -> bytes:
    fd, _info = open_file(entry)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def test_open_file_refuses_a_file_replaced_by_a_symlink_after_listing(
    root: Path, outside: Path
) -> None:
    (root / "doc.txt").write_bytes(b"original")

    for entry in _positioned_on(root, "doc.txt"):
        (root / "doc.txt").unlink()
        (root / "doc.txt").symlink_to(outside / "secret.txt")
        with pytest.raises(OSError, match="symbolic links") as caught:
            _open_and_read(entry)  # DID NOT RAISE here means the planted link was followed
        assert caught.value.errno == errno.ELOOP, (
            f"a planted link must be refused by O_NOFOLLOW (ELOOP), got {caught.value!r}"
        )


def test_open_file_refuses_a_file_replaced_by_a_folder_after_listing(root: Path) -> None:
    (root / "doc.txt").write_bytes(b"original")

    for entry in _positioned_on(root, "doc.txt"):
        (root / "doc.txt").unlink()
        (root / "doc.txt").mkdir()
        with pytest.raises(OSError, match="no longer a regular file"):
            _open_and_close(entry)


def test_open_file_reports_a_file_deleted_after_listing_as_missing(root: Path) -> None:
    (root / "doc.txt").write_bytes(b"original")

    for entry in _positioned_on(root, "doc.txt"):
        (root / "doc.txt").unlink()
        # The backup runner treats FileNotFoundError as "deleted since listed: not backed up".
        with pytest.raises(FileNotFoundError):
            open_file(entry)


@pytest.mark.timeout(60)
def test_open_file_refuses_a_file_replaced_by_a_fifo_without_blocking(root: Path) -> None:
    (root / "doc.txt").write_bytes(b"original")
    fifo = root / "doc.txt"

    for entry in _positioned_on(root, "doc.txt"):
        fifo.unlink()
        os.mkfifo(fifo)
        finished, result = _run_with_deadline(functools.partial(open_file, entry), [fifo], 3.0)
        if isinstance(result, tuple):
            os.close(result[0])
        assert finished, (
            "open_file blocked on a FIFO planted after the walk listed a regular file "
            "(a backup would hang holding the lock)"
        )
        assert isinstance(result, OSError), f"expected a refusal, got {result!r}"
