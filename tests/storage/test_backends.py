"""One contract for every storage backend (local folder, S3 over real HTTP against moto), then
what only S3 does: equal multipart parts, aborts on failure and cancellation, presigned links,
bounded timeouts, and error messages that never leak the secret key."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from api.storage import LocalStorage, ObjectInfo, Storage, StorageError
from api.storage.s3 import S3Storage, client_config, content_disposition, detect_provider
from tests.s3server import S3Server, free_port

MiB = 1024 * 1024
PART = 5 * MiB  # S3's (and moto's) minimum size of every part but the last


class Source(io.RawIOBase):
    """A readable source that remembers the largest single read asked of it."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            self.largest_read = max(self.largest_read, 1 << 62)
        else:
            self.largest_read = max(self.largest_read, size)
        return self._data.read(size)


def source(data: bytes) -> BinaryIO:
    return cast(BinaryIO, Source(data))


def payload(size: int) -> bytes:
    return os.urandom(size)


async def put_bytes(storage: Storage, key: str, data: bytes) -> None:
    await storage.put(key, source(data), len(data))


async def get_bytes(storage: Storage, key: str) -> bytes:
    target = io.BytesIO()
    written = await storage.get(key, target)
    assert written == len(target.getvalue()), "get() must return the number of bytes written"
    return target.getvalue()


# -- fixtures ---------------------------------------------------------------------------------


def make_s3(server: S3Server, bucket: str | None = None, **options: object) -> S3Storage:
    settings: dict[str, object] = {
        "endpoint": server.proxy_endpoint,
        "bucket": bucket or server.bucket,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "region": "auto",
        "provider": "minio",
        "part_size": PART,
    }
    settings.update(options)
    return S3Storage(**settings)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    server: S3Server = request.getfixturevalue("server")
    return make_s3(server, bucket=server.create_bucket())


@pytest.fixture
def s3(server: S3Server) -> S3Storage:
    return make_s3(server, bucket=server.create_bucket())


# -- the contract: every backend ----------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, 100_000, PART, PART + 1, 3 * PART + 7],
    ids=["empty", "1B", "100kB", "part", "part+1", "3parts+7"],
)
async def test_put_then_get_returns_the_same_bytes(storage: Storage, size: int) -> None:
    data = payload(size)
    await put_bytes(storage, "backups/archive.tar.gz", data)

    info = await storage.stat("backups/archive.tar.gz")
    assert info is not None, "stat() found nothing right after put()"
    assert info.size == size, f"stat() after put() gave {info}"
    assert await get_bytes(storage, "backups/archive.tar.gz") == data
    assert await storage.sha256("backups/archive.tar.gz") == hashlib.sha256(data).hexdigest()


async def test_stat_reports_key_size_and_a_recent_utc_time(storage: Storage) -> None:
    await put_bytes(storage, "a/b.bin", b"12345")
    info = await storage.stat("a/b.bin")
    assert info is not None
    assert (info.key, info.size) == ("a/b.bin", 5)
    assert info.modified is not None
    assert info.modified.utcoffset() is not None
    assert abs(info.modified.timestamp() - time.time()) < 120


async def test_list_is_sorted_by_key_and_filtered_by_prefix(storage: Storage) -> None:
    for key in ["b/2", "a/1", "a/10", "a/2", "ab", "c", "a/deep/x"]:
        await put_bytes(storage, key, key.encode())

    everything = await storage.list()
    assert [i.key for i in everything] == ["a/1", "a/10", "a/2", "a/deep/x", "ab", "b/2", "c"]
    assert all(isinstance(i, ObjectInfo) and i.size == len(i.key) for i in everything)
    assert [i.key for i in await storage.list("a/")] == ["a/1", "a/10", "a/2", "a/deep/x"]
    assert [i.key for i in await storage.list("a")] == ["a/1", "a/10", "a/2", "a/deep/x", "ab"]
    assert [i.key for i in await storage.list("a/1")] == ["a/1", "a/10"]
    assert await storage.list("zzz/") == []


async def test_delete_removes_the_object_and_is_idempotent(storage: Storage) -> None:
    await put_bytes(storage, "x/y.tar.gz", b"data")
    await storage.delete("x/y.tar.gz")
    assert await storage.stat("x/y.tar.gz") is None
    await storage.delete("x/y.tar.gz")  # again: no error
    await storage.delete("never/existed")
    assert await storage.list() == []


async def test_a_missing_key_has_no_stat_and_cannot_be_read(storage: Storage) -> None:
    assert await storage.stat("missing.tar.gz") is None
    with pytest.raises(StorageError, match="not found"):
        await get_bytes(storage, "missing.tar.gz")
    with pytest.raises(StorageError, match="not found"):
        await storage.sha256("missing.tar.gz")


async def test_put_overwrites_an_existing_object(storage: Storage) -> None:
    await put_bytes(storage, "same", b"first version, longer")
    await put_bytes(storage, "same", b"second")
    assert await get_bytes(storage, "same") == b"second"
    assert [(i.key, i.size) for i in await storage.list()] == [("same", 6)]


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../escape", "a/../../b", "a/..", "a\x00b", "a//b", "./a"]
)
async def test_unsafe_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(StorageError, match="refused"):
        await put_bytes(storage, key, b"x")
    with pytest.raises(StorageError, match="refused"):
        await storage.stat(key)
    with pytest.raises(StorageError, match="refused"):
        await storage.get(key, io.BytesIO())
    with pytest.raises(StorageError, match="refused"):
        await storage.delete(key)
    with pytest.raises(StorageError, match="refused"):
        await storage.sha256(key)
    assert await storage.list() == []


@pytest.mark.parametrize("size", [1000, 2 * PART + 3], ids=["single", "multipart"])
async def test_a_source_shorter_than_its_size_is_refused_and_leaves_nothing(
    storage: Storage, size: int
) -> None:
    data = payload(size)
    with pytest.raises(StorageError, match="source ended"):
        await storage.put("short", source(data), size + 10)
    assert await storage.list() == []


async def test_a_source_longer_than_its_size_is_refused(storage: Storage) -> None:
    with pytest.raises(StorageError, match="more than the declared"):
        await storage.put("long", source(b"0123456789"), 5)
    assert await storage.stat("long") is None


async def test_the_source_is_read_in_chunks_of_at_most_part_size(storage: Storage) -> None:
    data = payload(3 * PART + 7)
    reader = Source(data)
    await storage.put("big", cast(BinaryIO, reader), len(data))
    assert 0 < reader.largest_read <= PART, f"largest single read was {reader.largest_read}"
    assert await storage.sha256("big") == hashlib.sha256(data).hexdigest()


# -- local only ---------------------------------------------------------------------------------


async def test_local_put_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    await put_bytes(store, "a/b.tar.gz", b"complete")
    assert sorted(p.name for p in (tmp_path / "store" / "a").iterdir()) == ["b.tar.gz"]
    assert oct((tmp_path / "store" / "a" / "b.tar.gz").stat().st_mode & 0o777) == "0o600"


async def test_local_listing_hides_temporary_files_of_unfinished_puts(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    await put_bytes(store, "done", b"x")
    (tmp_path / "store" / ".half.partial-0123456789ab").write_bytes(b"partial")
    assert [i.key for i in await store.list()] == ["done"]


async def test_local_keys_never_escape_the_root_through_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not yours")
    root = tmp_path / "store"
    root.mkdir()
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "file-link").symlink_to(outside / "secret.txt")
    store = LocalStorage(root)

    with pytest.raises(StorageError, match="symbolic link"):
        await put_bytes(store, "linked/planted", b"x")
    with pytest.raises(StorageError, match="symbolic link"):
        await get_bytes(store, "linked/secret.txt")
    with pytest.raises(StorageError):
        await get_bytes(store, "file-link")
    with pytest.raises(StorageError):
        await store.stat("file-link")
    assert await store.list() == [], "symlinks are not objects"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]

    await put_bytes(store, "file-link", b"replaces the link, not its target")
    assert (outside / "secret.txt").read_bytes() == b"not yours"


async def test_local_presign_is_not_offered(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    await put_bytes(store, "a", b"x")
    assert await store.presign_get("a", 60, "a.tar.gz") is None


async def test_local_cancelled_put_publishes_nothing(tmp_path: Path) -> None:
    reading, release = threading.Event(), threading.Event()

    class Held(Source):
        """Hands out its first chunk, then holds the put's worker in its next read."""

        def read(self, size: int | None = -1) -> bytes:
            if self._data.tell():
                reading.set()
                assert release.wait(60), "the test never released the read"
            return super().read(size)

    store = LocalStorage(tmp_path / "store")
    data = payload(20 * MiB)
    source = Held(data)
    task = asyncio.create_task(store.put("slow", cast(BinaryIO, source), len(data)))
    assert await asyncio.to_thread(reading.wait, 60), "the put never read past its first chunk"
    assert [p.name for p in (tmp_path / "store").iterdir() if ".partial-" in p.name]
    task.cancel()
    # One turn of the loop: the put's task handles its cancellation (telling its worker to
    # stop) before this one resumes and lets the worker go on.
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source._data.tell() < len(data), "the put read everything despite the cancel"
    assert list((tmp_path / "store").iterdir()) == [], "no object and no temporary file"


# -- S3 only ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "parts"),
    [
        (PART - 1, {}),
        (PART, {1: PART}),
        (PART + 1, {1: PART, 2: 1}),
        (3 * PART + 7, {1: PART, 2: PART, 3: PART, 4: 7}),
    ],
    ids=["single-put", "one-part", "part+1", "3parts+7"],
)
async def test_s3_multipart_parts_are_equal_except_the_last(
    server: S3Server, s3: S3Storage, size: int, parts: dict[int, int]
) -> None:
    await put_bytes(s3, "obj", payload(size))
    assert server.part_sizes() == parts
    single_puts = [
        r for r in server.requests if r.method == "PUT" and not r.query and r.path.endswith("/obj")
    ]
    assert len(single_puts) == (0 if parts else 1)


async def test_s3_keeps_at_most_max_concurrency_parts_in_memory(server: S3Server) -> None:
    store = make_s3(server, bucket=server.create_bucket(), max_concurrency=2)
    data = payload(6 * PART)
    reader = Source(data)
    server.fail("PUT", "partNumber=", times=100, mode="hang")
    task = asyncio.create_task(store.put("obj", cast(BinaryIO, reader), len(data)))
    # Part 2's request starts only once put() waits for a free slot: with both held, put()
    # has read all it will read until one completes.
    assert await asyncio.to_thread(server.wait_until_held, count=2), "2 parts in flight"
    read_ahead = reader._data.tell()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert read_ahead == 2 * PART, f"read {read_ahead} bytes with 2 parts allowed in flight"


async def test_s3_list_follows_every_page(server: S3Server, s3: S3Storage) -> None:
    keys = [f"k{i:02d}" for i in range(7)]
    for key in reversed(keys):
        await put_bytes(s3, key, b"x")
    s3.list_page_size = 2
    server.clear_log()
    assert [i.key for i in await s3.list()] == keys
    pages = [r for r in server.requests if r.method == "GET" and "list-type=2" in r.query]
    assert len(pages) == 4, "7 keys, 2 per page"


async def test_s3_failed_part_aborts_the_upload_and_a_retry_succeeds(
    server: S3Server, s3: S3Storage
) -> None:
    data = payload(3 * PART + 7)
    server.fail("PUT", "partNumber=2", times=10)  # more than the client's 4 attempts

    with pytest.raises(StorageError, match="InternalError") as failure:
        await put_bytes(s3, "nightly.tar.gz", data)
    assert "partNumber=2" not in str(failure.value)
    assert await server.raw_keys(s3.bucket) == [], "a failed upload leaves no object"
    assert await server.pending_uploads(s3.bucket) == [], "a failed upload is aborted"
    attempts = [r for r in server.requests if r.injected]
    assert len(attempts) == 4, "bounded retries: the first attempt and 3 retries"

    server.reset()
    await put_bytes(s3, "nightly.tar.gz", data)
    assert await s3.sha256("nightly.tar.gz") == hashlib.sha256(data).hexdigest()
    assert await server.pending_uploads(s3.bucket) == []


async def test_s3_a_dropped_connection_is_retried(server: S3Server, s3: S3Storage) -> None:
    data = payload(2 * PART)
    server.fail("PUT", "partNumber=1", times=1, mode="drop")
    await put_bytes(s3, "obj", data)
    assert await get_bytes(s3, "obj") == data


async def test_s3_connections_dropped_for_good_fail_and_abort(
    server: S3Server, s3: S3Storage
) -> None:
    server.fail("PUT", "partNumber=", times=100, mode="drop")
    with pytest.raises(StorageError, match="cannot reach"):
        await put_bytes(s3, "obj", payload(2 * PART))
    assert await server.pending_uploads(s3.bucket) == []
    assert await server.raw_keys(s3.bucket) == []


async def test_s3_cancelling_an_upload_mid_part_aborts_it(server: S3Server, s3: S3Storage) -> None:
    data = payload(3 * PART)
    server.fail("PUT", "partNumber=", times=100, mode="hang")
    task = asyncio.create_task(put_bytes(s3, "obj", data))
    assert await asyncio.to_thread(server.wait_until_held), "a part never reached the server"
    assert len(await server.pending_uploads(s3.bucket)) == 1

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await server.pending_uploads(s3.bucket) == [], "cancellation aborts the upload"
    assert await server.raw_keys(s3.bucket) == []


async def test_s3_cancelling_under_a_timeout_still_aborts(server: S3Server, s3: S3Storage) -> None:
    server.fail("PUT", "partNumber=", times=100, mode="hang")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await put_bytes(s3, "obj", payload(2 * PART))
    assert await server.pending_uploads(s3.bucket) == []


async def test_s3_presigned_get_downloads_the_bytes(server: S3Server, s3: S3Storage) -> None:
    data = payload(50_000)
    await put_bytes(s3, "dir/backup.tar.gz", data)
    url = await s3.presign_get("dir/backup.tar.gz", 60, filename="nightly 2026.tar.gz")
    assert url is not None
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert server.secret_key not in url
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-disposition"] == 'attachment; filename="nightly 2026.tar.gz"'


async def test_s3_presigned_get_is_refused_after_it_expires(
    server: S3Server, s3: S3Storage
) -> None:
    await put_bytes(s3, "obj", b"short-lived")
    url = await s3.presign_get("obj", 1)
    assert url is not None
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["1"]
    server.advance_clock(2)  # S3 (the proxy, for moto) judges it 2 s later: expired
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 403
    assert b"expired" in response.content


async def test_s3_presign_refuses_out_of_range_expiry(s3: S3Storage) -> None:
    for seconds in (0, 8 * 24 * 3600):
        with pytest.raises(StorageError, match="expire"):
            await s3.presign_get("obj", seconds)


async def test_s3_an_unreachable_endpoint_fails_fast(server: S3Server) -> None:
    port = free_port()
    store = make_s3(server, endpoint=f"http://127.0.0.1:{port}")
    for attempt in (store.stat("anything"), put_bytes(store, "anything", payload(PART))):
        started = time.monotonic()
        with pytest.raises(StorageError, match=f"cannot reach http://127.0.0.1:{port}"):
            await attempt
        # 3 retries with jittered backoff of at most 1 + 2 + 4 s: no hang.
        assert time.monotonic() - started < 10, "bounded retries and timeouts"


async def test_s3_a_missing_bucket_is_named_in_the_error(server: S3Server) -> None:
    store = make_s3(server, bucket="no-such-bucket")
    with pytest.raises(StorageError, match="bucket no-such-bucket does not exist"):
        await store.list()
    with pytest.raises(StorageError, match="bucket no-such-bucket does not exist"):
        await store.stat("x")
    with pytest.raises(StorageError, match="bucket no-such-bucket does not exist"):
        await put_bytes(store, "x", b"x")


@contextlib.asynccontextmanager
async def authenticating() -> AsyncIterator[None]:
    with S3Server.authentication():
        yield


async def test_s3_wrong_credentials_give_an_error_without_the_secret(
    server: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="nexus_backup")
    access_key, real_secret = await server.create_access_key()
    wrong_secret = "wr0ng-Secret-" + real_secret[::-1]
    cases = [
        ("AKIAUNKNOWNKEY000000", wrong_secret, "InvalidAccessKeyId"),
        (access_key, wrong_secret, "SignatureDoesNotMatch"),
    ]
    for key_id, secret, code in cases:
        store = make_s3(
            server, endpoint=server.endpoint, access_key_id=key_id, secret_access_key=secret
        )
        async with authenticating():
            with pytest.raises(StorageError) as failure:
                await store.list()
            with pytest.raises(StorageError) as upload_failure:
                await put_bytes(store, "x", b"x")
        for error in (failure.value, upload_failure.value):
            message = f"{error} {error!r} {error.__cause__} {error.__cause__!r}"
            assert "access denied" in str(error)
            assert "BACKUP_S3_ACCESS_KEY_ID" in str(error)
            assert secret not in message, "the secret key leaked into an error"
        assert code in str(failure.value)
        assert secret not in repr(store)
        assert secret not in str(store)
        assert secret not in caplog.text


def test_s3_repr_names_the_bucket_but_never_the_secret() -> None:
    store = S3Storage(
        "https://acct.r2.cloudflarestorage.com",
        "backups",
        "AKIAEXAMPLE",
        "super-secret-value",
        "auto",
        "r2",
    )
    assert "backups" in repr(store)
    assert "r2" in repr(store)
    assert "super-secret-value" not in repr(store) + str(store)
    assert "AKIAEXAMPLE" not in repr(store)


async def test_s3_prefix_places_objects_under_it(server: S3Server) -> None:
    bucket = server.create_bucket()
    store = make_s3(server, bucket=bucket, prefix="/nightly/")
    await put_bytes(store, "a.tar.gz", b"x")
    assert await server.raw_keys(bucket) == ["nightly/a.tar.gz"]
    assert [i.key for i in await store.list()] == ["a.tar.gz"]
    assert await store.stat("a.tar.gz") is not None


def test_s3_refuses_parts_below_the_s3_minimum() -> None:
    with pytest.raises(StorageError, match="minimum"):
        S3Storage(None, "b", "k", "s", "us-east-1", "s3", part_size=PART - 1)


def test_s3_grows_the_part_size_only_beyond_ten_thousand_parts() -> None:
    store = S3Storage(None, "b", "k", "s", "us-east-1", "s3", part_size=16 * MiB)
    assert store._part_size_for(100 * 1024 * MiB) == 16 * MiB
    huge = 400 * 1024 * MiB  # 400 GiB: 25,600 parts of 16 MiB
    grown = store._part_size_for(huge)
    assert grown % MiB == 0
    assert huge / grown <= 10_000


# -- configuration: pure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "addressing"), [("r2", "path"), ("minio", "path"), ("s3", "virtual")]
)
def test_client_config_is_pinned(provider: str, addressing: str) -> None:
    config = client_config(provider)
    assert config.signature_version == "s3v4"
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.s3 == {"addressing_style": addressing}
    assert config.retries == {"max_attempts": 3, "mode": "standard"}
    assert 0 < config.connect_timeout <= 10
    assert 0 < config.read_timeout <= 120
    assert config.ignore_configured_endpoint_urls is True


def test_client_config_refuses_an_unknown_provider() -> None:
    with pytest.raises(StorageError, match="unknown storage provider"):
        client_config("gcs")


@pytest.mark.parametrize(
    ("endpoint", "provider"),
    [
        (None, "s3"),
        ("", "s3"),
        ("https://s3.eu-west-1.amazonaws.com", "s3"),
        ("https://S3.AMAZONAWS.COM", "s3"),
        ("https://0123abcd.r2.cloudflarestorage.com", "r2"),
        ("https://0123abcd.eu.r2.cloudflarestorage.com/", "r2"),
        ("http://minio:9000", "minio"),
        ("https://storage.example.com", "minio"),
        ("https://amazonaws.com.evil.example", "minio"),
        ("https://r2.cloudflarestorage.com.evil.example", "minio"),
    ],
)
def test_detect_provider(endpoint: str | None, provider: str) -> None:
    assert detect_provider(endpoint) == provider


def test_signing_region_defaults() -> None:
    assert S3Storage(None, "b", "k", "s", "auto", "s3").region == "us-east-1"
    assert S3Storage("http://m:9000", "b", "k", "s", "", "minio").region == "us-east-1"
    assert S3Storage("https://a.r2.cloudflarestorage.com", "b", "k", "s", "", "r2").region == (
        "auto"
    )
    assert S3Storage(None, "b", "k", "s", "eu-west-1", "s3").region == "eu-west-1"


def test_an_endpoint_must_be_an_http_url() -> None:
    with pytest.raises(StorageError, match="http"):
        S3Storage("minio:9000", "b", "k", "s", "auto", "minio")


def test_content_disposition_keeps_non_ascii_names_exact() -> None:
    assert content_disposition("a.tar.gz") == 'attachment; filename="a.tar.gz"'
    header = content_disposition('../dir/Sauvegarde "été".tar.gz')
    assert header.startswith('attachment; filename="Sauvegarde _')
    assert "filename*=UTF-8''Sauvegarde%20%22%C3%A9t%C3%A9%22.tar.gz" in header
