"""S3 integrity without a second transfer, against moto over real HTTP behind the fault proxy:
SHA-256 checksums sent with every part and kept by the store, confirmation from the store's
checksum (and the fallback when it keeps none), parallel ranged downloads with bounded memory,
and a store that answers wrongly refused at every step."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import threading
from pathlib import Path

import pytest

from api.storage import StorageError
from api.storage.base import CHUNK_SIZE, CONFIRMED_BY_CHECKSUM, CONFIRMED_BY_DOWNLOAD, Stored
from api.storage.s3 import S3Storage
from tests.s3server import Answer, S3Server
from tests.storage.test_backends import PART, get_bytes, make_s3, payload, source

# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def s3(server: S3Server) -> S3Storage:
    return make_s3(server, bucket=server.create_bucket())


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def composite(data: bytes, part: int = PART) -> str:
    """S3's composite SHA-256 of a multipart object: over the parts' binary digests."""
    digests = [hashlib.sha256(data[i : i + part]).digest() for i in range(0, len(data), part)]
    return f"{b64(hashlib.sha256(b''.join(digests)).digest())}-{len(digests)}"


async def put(s3: S3Storage, key: str, data: bytes) -> Stored:
    return await s3.put(key, source(data), len(data))


def requests(server: S3Server, method: str, key: str) -> list[str]:
    return [r.query for r in server.requests if r.method == method and r.path.endswith(f"/{key}")]


class Target(io.BytesIO):
    """A seekable target that remembers the largest single write."""

    def __init__(self) -> None:
        super().__init__()
        self.largest_write = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.largest_write = max(self.largest_write, len(data))
        return super().write(data)


class Pipe(io.BytesIO):
    """A target that cannot seek, as a pipe or socket."""

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise io.UnsupportedOperation("not seekable")


# -- upload: checksums the store verifies and keeps -------------------------------------------


async def test_each_part_carries_its_sha256_and_the_store_keeps_the_composite(
    server: S3Server, s3: S3Storage
) -> None:
    data = payload(3 * PART + 7)
    stored = await put(s3, "obj", data)

    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest(), "the bytes sent, hashed once"
    assert stored.checksum == composite(data)
    create = [r for r in server.requests if r.method == "POST" and r.query == "uploads"]
    assert create[0].headers.get("x-amz-checksum-algorithm") == "SHA256"
    parts = sorted(
        (r for r in server.requests if r.method == "PUT" and "partNumber=" in r.query),
        key=lambda r: int(r.query.split("partNumber=")[1].split("&")[0]),
    )
    for number, request in enumerate(parts):
        piece = data[number * PART : (number + 1) * PART]
        assert request.headers.get("x-amz-checksum-sha256") == b64(hashlib.sha256(piece).digest())
        assert "x-amz-trailer" not in request.headers, "no aws-chunked trailers (R2 refuses them)"
    async with server.client() as client:
        head = await client.head_object(Bucket=s3.bucket, Key="obj", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == composite(data).split("-")[0], "moto computed the same"


async def test_a_single_put_carries_the_objects_sha256(server: S3Server, s3: S3Storage) -> None:
    data = payload(1000)
    stored = await put(s3, "small", data)
    assert stored.checksum == b64(hashlib.sha256(data).digest())
    (request,) = [r for r in server.requests if r.method == "PUT" and r.path.endswith("/small")]
    assert request.headers.get("x-amz-checksum-sha256") == stored.checksum
    assert "x-amz-trailer" not in request.headers


@pytest.mark.parametrize("size", [1000, 2 * PART + 1], ids=["single-put", "multipart"])
async def test_a_store_that_does_not_implement_checksums_gets_the_upload_without_them(
    server: S3Server, s3: S3Storage, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    data = payload(size)
    first = ("POST", "uploads") if size > PART else ("PUT", "")
    server.fail(*first, times=1, status=501, code="NotImplemented")

    with caplog.at_level(logging.WARNING, logger="nexus_backup.storage"):
        stored = await put(s3, "obj", data)

    assert stored.checksum is None
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert s3.checksums is False, "not offered again to a store that refused them"
    assert "does not implement SHA-256 checksums" in caplog.text
    assert await get_bytes(s3, "obj") == data
    assert await s3.confirm("obj", stored) == CONFIRMED_BY_DOWNLOAD
    assert await server.pending_uploads(s3.bucket) == []


# -- confirm: the store's checksum, or reading back -------------------------------------------


@pytest.mark.parametrize("size", [1000, 3 * PART + 7], ids=["single-put", "multipart"])
async def test_confirm_trusts_the_stores_checksum_without_downloading(
    server: S3Server, s3: S3Storage, size: int
) -> None:
    stored = await put(s3, "obj", payload(size))
    server.clear_log()

    assert await s3.confirm("obj", stored) == CONFIRMED_BY_CHECKSUM
    assert requests(server, "GET", "obj") == [], "confirmation downloaded the object"
    assert len(requests(server, "HEAD", "obj")) == 1


async def test_confirm_reads_back_when_the_store_keeps_no_checksum(
    server: S3Server, s3: S3Storage
) -> None:
    stored = await put(s3, "obj", payload(2 * PART + 1))
    server.clear_log()
    server.rewrite("HEAD", edit=lambda answer: answer.set_header("x-amz-checksum-sha256", None))

    assert await s3.confirm("obj", stored) == CONFIRMED_BY_DOWNLOAD
    assert requests(server, "GET", "obj"), "the fallback reads the object back"


async def test_confirm_refuses_a_checksum_that_does_not_match(
    server: S3Server, s3: S3Storage
) -> None:
    stored = await put(s3, "obj", payload(2 * PART + 1))
    other = b64(hashlib.sha256(b"something else").digest())
    server.rewrite("HEAD", edit=lambda answer: answer.set_header("x-amz-checksum-sha256", other))

    with pytest.raises(StorageError, match="not the one sent") as refused:
        await s3.confirm("obj", stored)
    assert other in str(refused.value)


async def test_confirm_accepts_a_whole_object_sha256_for_a_multipart_upload(
    server: S3Server, s3: S3Storage
) -> None:
    data = payload(2 * PART + 1)
    stored = await put(s3, "obj", data)
    whole = b64(hashlib.sha256(data).digest())
    server.rewrite("HEAD", edit=lambda answer: answer.set_header("x-amz-checksum-sha256", whole))

    assert await s3.confirm("obj", stored) == CONFIRMED_BY_CHECKSUM


async def test_confirm_refuses_a_part_count_that_does_not_match(
    server: S3Server, s3: S3Storage
) -> None:
    stored = await put(s3, "obj", payload(2 * PART + 1))  # 3 parts
    assert stored.checksum is not None

    def four_parts(answer: Answer) -> None:
        value = answer.header("x-amz-checksum-sha256")
        answer.set_header("x-amz-checksum-sha256", f"{value}-4")

    server.rewrite("HEAD", edit=four_parts)
    with pytest.raises(StorageError, match="as 4 parts, but it was uploaded in 3"):
        await s3.confirm("obj", stored)


async def test_confirm_refuses_a_multipart_checksum_for_a_single_put(
    server: S3Server, s3: S3Storage
) -> None:
    stored = await put(s3, "obj", payload(1000))
    server.rewrite(
        "HEAD",
        edit=lambda answer: answer.set_header("x-amz-checksum-sha256", f"{stored.checksum}-2"),
    )
    with pytest.raises(StorageError, match="2-part upload"):
        await s3.confirm("obj", stored)


async def test_confirm_refuses_an_object_of_another_size(server: S3Server, s3: S3Storage) -> None:
    stored = await put(s3, "obj", payload(1000))
    server.rewrite("HEAD", edit=lambda answer: answer.set_header("Content-Length", "999"))
    with pytest.raises(StorageError, match="has 999 bytes"):
        await s3.confirm("obj", stored)


async def test_confirm_of_a_missing_object_says_so(s3: S3Storage) -> None:
    stored = Stored(size=1, sha256="0" * 64, checksum=None)
    with pytest.raises(StorageError, match="missing"):
        await s3.confirm("never-uploaded", stored)


# -- downloads: parallel ranges, bounded memory ----------------------------------------------


async def test_download_is_parallel_ranges_of_part_size(server: S3Server, s3: S3Storage) -> None:
    data = payload(3 * PART + 7)
    await put(s3, "obj", data)
    server.clear_log()
    target = Target()

    assert await s3.get("obj", target) == len(data)
    assert target.getvalue() == data
    assert target.tell() == len(data), "the target is left at the end of what was written"
    ranges = sorted(r.headers.get("range", "") for r in server.requests if r.path.endswith("/obj"))
    assert ranges == sorted(
        f"bytes={start}-{min(start + PART, len(data)) - 1}" for start in range(0, len(data), PART)
    )
    assert target.largest_write <= CHUNK_SIZE, "ranges are written in slices, not held whole"


async def test_download_keeps_at_most_max_concurrency_ranges_in_flight(
    server: S3Server,
) -> None:
    store = make_s3(server, bucket=server.create_bucket(), max_concurrency=2)
    await put(store, "obj", payload(6 * PART))
    server.clear_log()
    server.fail("GET", "", times=100, mode="hang", skip=1)  # the first range answers

    task = asyncio.create_task(store.get("obj", Target()))
    assert await asyncio.to_thread(server.wait_until_held, count=2), "2 ranges in flight"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # With both ranges held, get() waits for one to finish before asking for another.
    assert len(requests(server, "GET", "obj")) == 3, "the first range and 2 in flight"


async def test_a_target_that_cannot_seek_gets_one_ordered_stream(
    server: S3Server, s3: S3Storage
) -> None:
    data = payload(2 * PART + 1)
    await put(s3, "obj", data)
    server.clear_log()
    target = Pipe()

    assert await s3.get("obj", target) == len(data)
    assert target.getvalue() == data
    (request,) = [r for r in server.requests if r.method == "GET" and r.path.endswith("/obj")]
    assert "range" not in request.headers


async def test_a_download_into_a_file_matches_and_can_be_resumed_at_an_offset(
    s3: S3Storage, tmp_path: Path
) -> None:
    data = payload(2 * PART + 3)
    await put(s3, "obj", data)
    path = tmp_path / "copy"
    with path.open("wb") as handle:
        handle.write(b"head")
        assert await s3.get("obj", handle) == len(data)
    assert path.read_bytes() == b"head" + data, "written from the target's position"


@pytest.mark.parametrize("skip", [0, 1], ids=["first-range", "later-range"])
async def test_a_range_answered_with_the_whole_object_is_refused(
    server: S3Server, s3: S3Storage, skip: int
) -> None:
    await put(s3, "obj", payload(2 * PART + 1))
    server.rewrite("GET", skip=skip, drop_request_headers=("Range",))  # moto answers 200, whole
    with pytest.raises(StorageError, match="ignored the Range header"):
        await s3.get("obj", Target())


async def test_a_range_with_the_wrong_content_range_is_refused(
    server: S3Server, s3: S3Storage
) -> None:
    size = 2 * PART + 1
    await put(s3, "obj", payload(size))

    def shifted(answer: Answer) -> None:
        answer.set_header("Content-Range", f"bytes 0-{PART - 1}/{size}")

    server.rewrite("GET", skip=1, edit=shifted)
    with pytest.raises(StorageError, match=r"with bytes 0-\d+; refused"):
        await s3.get("obj", Target())


async def test_a_range_of_another_objects_size_is_refused(server: S3Server, s3: S3Storage) -> None:
    size = 2 * PART + 1
    await put(s3, "obj", payload(size))

    def bigger(answer: Answer) -> None:
        value = answer.header("Content-Range") or ""
        answer.set_header("Content-Range", value.rsplit("/", 1)[0] + f"/{size + 1}")

    server.rewrite("GET", skip=1, edit=bigger)
    with pytest.raises(StorageError, match=f"it had {size} bytes"):
        await s3.get("obj", Target())


async def test_a_range_with_a_short_body_is_refused(server: S3Server, s3: S3Storage) -> None:
    await put(s3, "obj", payload(2 * PART + 1))

    def short(answer: Answer) -> None:
        answer.body = answer.body[:-1]

    server.rewrite("GET", skip=1, edit=short)
    with pytest.raises(StorageError, match="body of"):
        await s3.get("obj", Target())


async def test_an_object_replaced_during_a_download_is_refused(
    server: S3Server, s3: S3Storage
) -> None:
    await put(s3, "obj", payload(2 * PART + 1))
    # The first range comes from an object whose ETag the bucket no longer has (it was
    # replaced): the later ranges ask for that ETag (If-Match) and moto answers 412.
    server.rewrite("GET", edit=lambda answer: answer.set_header("ETag", '"replaced-since"'))

    with pytest.raises(StorageError, match="was replaced while it was read"):
        await s3.get("obj", Target())
    later = [r for r in server.requests if r.method == "GET" and r.headers.get("if-match")]
    assert later, "later ranges must be conditional on the first range's ETag"
    # Ranges still in flight when the first 412 stopped the download may have no answer yet.
    answered = [r.status for r in later if r.status is not None]
    assert answered, "no later range was answered"
    assert set(answered) == {412}, answered


async def test_a_range_without_content_range_is_refused(server: S3Server, s3: S3Storage) -> None:
    await put(s3, "obj", payload(2 * PART + 1))
    server.rewrite("GET", edit=lambda answer: answer.set_header("Content-Range", None))
    with pytest.raises(StorageError, match="without a valid Content-Range"):
        await s3.get("obj", Target())


# -- cancellation -------------------------------------------------------------------------------


async def test_an_upload_cancelled_while_the_store_opens_it_is_aborted_once_it_answers(
    server: S3Server, s3: S3Storage
) -> None:
    """A shutdown that lands while CreateMultipartUpload is on its way: the store has opened the
    upload, its answer is still to come. Once it comes, that upload is aborted too (nothing
    but a lifecycle rule would ever remove it otherwise)."""
    reached, go_on = threading.Event(), threading.Event()

    def held(answer: Answer) -> None:  # moto has opened the upload; its answer waits here
        reached.set()
        go_on.wait(timeout=60)

    server.rewrite("POST", "uploads", edit=held)
    data = payload(2 * PART + 1)
    uploading = asyncio.create_task(put(s3, "cut-short.tar.gz", data))
    assert await asyncio.to_thread(reached.wait, 60), "the upload was never opened"
    uploading.cancel()
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await uploading
    assert await server.pending_uploads(s3.bucket) == [], "an opened upload was left behind"
