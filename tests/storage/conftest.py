"""The S3 server (moto behind the fault proxy) the storage tests share: one per module, its
rules and request log reset around each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3server import S3Server


@pytest.fixture(scope="module")
def s3server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def server(s3server: S3Server) -> Iterator[S3Server]:
    s3server.reset()
    s3server.clear_log()
    yield s3server
    s3server.reset()
