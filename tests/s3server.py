"""A real S3 protocol for tests: moto's server on 127.0.0.1, plus a fault-injecting reverse
proxy in front of it.

    server = S3Server().start()
    server.endpoint        # moto itself, http://127.0.0.1:PORT
    server.proxy_endpoint  # the proxy, http://127.0.0.1:OTHER_PORT, forwarding to moto
    server.fail("PUT", "partNumber=2", times=5)            # answer 500 to the next 5 matches
    server.fail("PUT", "partNumber=", mode="drop")         # close the connection, no answer
    server.fail("PUT", "partNumber=", mode="hang")         # hold the request until reset()
    server.fail("POST", "uploads", status=501, code="NotImplemented")  # a named S3 error
    server.wait_until_held(count=2)                        # block until 2 requests are held
    server.rewrite("GET", drop_request_headers=("Range",))  # forward the request changed
    server.rewrite("HEAD", edit=lambda answer: ...)        # change moto's answer on its way back
    server.advance_clock(seconds)  # the proxy judges presigned URLs this long after signing
    server.part_sizes()    # {part number: bytes} of the parts moto accepted, via the proxy
    server.reset()         # forget rules, release held requests
    server.stop()

Nothing in the product is mocked: the client speaks HTTP to the proxy, the proxy speaks HTTP
to moto. The proxy also enforces what moto does not: presigned URLs expire (S3 answers 403
"Request has expired" after X-Amz-Date + X-Amz-Expires).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import sys
import threading
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aioboto3
from botocore.config import Config
from moto.core import enable_iam_authentication
from moto.server import ThreadedMotoServer

ACCESS_KEY = "AKIAMOTOTESTKEY00001"
SECRET_KEY = "moto-test-secret-do-not-leak-0123456789"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "content-length",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed right after it was picked)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Answer:
    """moto's answer as the proxy is about to send it back; a rewrite rule's `edit` changes
    it in place (the Content-Length of a body is recomputed after the edit)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def set_header(self, name: str, value: str | None) -> None:
        """Replace the header `name` (or remove it, with None)."""
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        if value is not None:
            self.headers.append((name, value))


@dataclass
class Rule:
    method: str
    query_contains: str
    times: int
    mode: str  # "status" | "drop" | "hang" | "rewrite"
    status: int
    skip: int  # let this many matching requests through first
    code: str = "InternalError"  # the S3 error code of mode "status"
    drop_request_headers: tuple[str, ...] = ()  # "rewrite": forwarded without these headers
    edit: Callable[[Answer], None] | None = None  # "rewrite": changes moto's answer


@dataclass
class Seen:
    """One request the proxy received, and what became of it."""

    method: str
    path: str
    query: str
    size: int
    status: int | None = None  # the status sent back; None when dropped or held
    injected: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # the request's, names lower-case


@dataclass
class _State:
    rules: list[Rule] = field(default_factory=list)
    log: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    held: int = 0  # requests held by "hang" rules since the last reset()
    changed: threading.Condition = field(default_factory=threading.Condition)  # held grew
    clock_offset: float = 0.0  # seconds added to the proxy's clock (advance_clock)


class S3Server:
    """moto over HTTP on 127.0.0.1 with one bucket, and a fault-injecting proxy before it."""

    def __init__(self, bucket: str = "nexus-test") -> None:
        self.bucket = bucket
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.region = "us-east-1"
        self._moto: ThreadedMotoServer | None = None
        self._proxy: _ProxyServer | None = None
        self._proxy_thread: threading.Thread | None = None
        self._state = _State()
        self.endpoint = ""
        self.proxy_endpoint = ""

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> S3Server:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self._proxy = _ProxyServer(("127.0.0.1", 0), _Handler)
        self._proxy.upstream = (host, port)
        self._proxy.state = self._state
        self._proxy_thread = threading.Thread(target=self._proxy.serve_forever, daemon=True)
        self._proxy_thread.start()
        self.proxy_endpoint = f"http://127.0.0.1:{self._proxy.server_address[1]}"
        self.create_bucket(self.bucket)
        return self

    def stop(self) -> None:
        self._state.release.set()
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()
            assert self._proxy_thread is not None
            self._proxy_thread.join(timeout=10)
            self._proxy = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket in moto (a plain HTTP PUT: moto checks no signature by default)."""
        name = name or f"b-{uuid.uuid4().hex[:16]}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", data=b"", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, f"moto refused to create bucket {name}"
        return name

    # -- fault injection ------------------------------------------------------------------

    def fail(
        self,
        method: str,
        query_contains: str = "",
        times: int = 1,
        *,
        status: int = 500,
        mode: str = "status",
        skip: int = 0,
        code: str = "InternalError",
    ) -> None:
        """Make the proxy misbehave for the next `times` requests whose method is `method` and
        whose query string contains `query_contains` (after letting `skip` of them through):
        answer `status` with an S3 error body naming `code` (mode "status"), close the
        connection without an answer ("drop"), or hold the request unanswered until reset()
        ("hang")."""
        assert mode in ("status", "drop", "hang"), mode
        with self._state.lock:
            self._state.rules.append(
                Rule(method.upper(), query_contains, times, mode, status, skip, code)
            )

    def rewrite(
        self,
        method: str,
        query_contains: str = "",
        times: int = 1,
        *,
        skip: int = 0,
        drop_request_headers: tuple[str, ...] = (),
        edit: Callable[[Answer], None] | None = None,
    ) -> None:
        """Forward the next `times` matching requests (after `skip`) to moto without the
        headers `drop_request_headers`, and pass moto's answer through `edit` before it goes
        back: a store that answers wrongly, seen over real HTTP."""
        with self._state.lock:
            self._state.rules.append(
                Rule(
                    method.upper(),
                    query_contains,
                    times,
                    "rewrite",
                    0,
                    skip,
                    drop_request_headers=tuple(h.lower() for h in drop_request_headers),
                    edit=edit,
                )
            )

    def reset(self) -> None:
        """Forget every rule and release held requests (they are dropped, never forwarded)."""
        with self._state.lock:
            self._state.rules.clear()
            self._state.release.set()
            self._state.release = threading.Event()
            self._state.clock_offset = 0.0
        with self._state.changed:
            self._state.held = 0

    def clear_log(self) -> None:
        with self._state.lock:
            self._state.log.clear()

    def wait_until_held(self, timeout: float = 10, count: int = 1) -> bool:
        """Block until `count` requests matched a "hang" rule since the last reset() (call via
        asyncio.to_thread); False if `timeout` seconds pass first."""
        state = self._state
        with state.changed:
            return state.changed.wait_for(lambda: state.held >= count, timeout)

    def advance_clock(self, seconds: float) -> None:
        """Judge presigned URLs' expiry `seconds` later than their signing (until reset())."""
        with self._state.lock:
            self._state.clock_offset += seconds

    @property
    def requests(self) -> list[Seen]:
        with self._state.lock:
            return list(self._state.log)

    def part_sizes(self) -> dict[int, int]:
        """{part number: size} of the UploadPart requests moto accepted through the proxy."""
        sizes: dict[int, int] = {}
        for seen in self.requests:
            if seen.method == "PUT" and "partNumber=" in seen.query and seen.status == 200:
                number = int(parse_qs(seen.query)["partNumber"][0])
                sizes[number] = seen.size
        return dict(sorted(sizes.items()))

    # -- looking behind the product's back (aioboto3, straight to moto) --------------------

    @contextlib.asynccontextmanager
    async def client(self, service: str = "s3") -> AsyncIterator[Any]:
        session = aioboto3.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
        async with session.client(service, endpoint_url=self.endpoint, config=config) as client:
            yield client

    async def raw_keys(self, bucket: str | None = None) -> list[str]:
        """Every object key in the bucket, as moto has it."""
        keys: list[str] = []
        async with self.client() as s3:
            async for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket or self.bucket
            ):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    async def pending_uploads(self, bucket: str | None = None) -> list[dict[str, Any]]:
        """Multipart uploads started but neither completed nor aborted."""
        async with self.client() as s3:
            response = await s3.list_multipart_uploads(Bucket=bucket or self.bucket)
        return list(response.get("Uploads", []))

    async def create_access_key(self) -> tuple[str, str]:
        """A real IAM user's (access key id, secret) in moto, for the authentication tests."""
        async with self.client("iam") as iam:
            user = f"nexus-{uuid.uuid4().hex[:8]}"
            await iam.create_user(UserName=user)
            key = (await iam.create_access_key(UserName=user))["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    @staticmethod
    @contextlib.contextmanager
    def authentication() -> Iterator[None]:
        """Make moto check every request's signature (process-wide, so only inside this
        block): unknown keys get InvalidAccessKeyId, wrong secrets SignatureDoesNotMatch."""
        with enable_iam_authentication():
            yield


# -- the proxy ------------------------------------------------------------------------------


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    upstream: tuple[str, int]
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer (it refused what it was reading) is expected."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            pieces: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(pieces)
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _match(self, seen: Seen) -> Rule | None:
        state = self.server.state
        with state.lock:
            state.log.append(seen)
            for rule in state.rules:
                if (
                    rule.times > 0
                    and rule.method == seen.method
                    and rule.query_contains in seen.query
                ):
                    if rule.skip > 0:
                        rule.skip -= 1
                        return None
                    rule.times -= 1
                    return rule
        return None

    def _handle(self) -> None:
        body = self._read_body()
        url = urlsplit(self.path)
        seen = Seen(self.command, url.path, url.query, len(body))
        seen.headers = {name.lower(): value for name, value in self.headers.items()}
        rule = self._match(seen)
        if rule is not None and rule.mode == "rewrite":
            seen.injected = True
            self._forward(seen, body, rule)
            return
        if rule is not None:
            seen.injected = True
            if rule.mode == "status":
                self._answer(seen, rule.status, rule.code, "injected failure")
            elif rule.mode == "hang":
                state = self.server.state
                release = state.release
                with state.changed:
                    state.held += 1
                    state.changed.notify_all()
                release.wait(60)
                self.close_connection = True
            else:
                self.close_connection = True
            return
        # The proxy's clock stands at the moment a link was signed, plus the offset a test
        # advanced it by (advance_clock): no outcome depends on when or how fast a test runs.
        if _presign_expired(url.query, self.server.state.clock_offset):
            self._answer(seen, 403, "AccessDenied", "Request has expired")
            return
        self._forward(seen, body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    def _answer(self, seen: Seen, status: int, code: str, message: str) -> None:
        payload = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            "<RequestId>proxy</RequestId></Error>"
        ).encode()
        seen.status = status  # before sending: a client may act on it before this thread goes on
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _forward(self, seen: Seen, body: bytes, rule: Rule | None = None) -> None:
        host, port = self.server.upstream
        dropped = rule.drop_request_headers if rule is not None else ()
        upstream = http.client.HTTPConnection(host, port, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() not in dropped:
                    upstream.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            length = response.getheader("Content-Length")
            if self.command == "HEAD" and length is not None:
                headers.append(("Content-Length", length))
            payload = b"" if self.command == "HEAD" else response.read()
            answer = Answer(response.status, response.reason, headers, payload)
            if rule is not None and rule.edit is not None:
                rule.edit(answer)
            seen.status = answer.status  # before sending (see _answer)
            self.send_response_only(answer.status, answer.reason)
            for name, value in answer.headers:
                self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if answer.body and self.command != "HEAD":
                self.wfile.write(answer.body)
        finally:
            upstream.close()


def _presign_expired(query: str, since_signed: float) -> bool:
    """Whether a presigned URL has expired `since_signed` seconds after it was signed."""
    params = parse_qs(query)
    if "X-Amz-Expires" not in params or "X-Amz-Date" not in params:
        return False
    return since_signed > int(params["X-Amz-Expires"][0])
