"""ASGI middleware around the whole app: a request body limit, security headers, the access
log and request id."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import logs

log = logging.getLogger("nexus_backup.http")

# The admin page and the API: only this origin's scripts, styles and images; never framed.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# /docs and /redoc load Swagger UI / ReDoc from a CDN and start them with an inline script.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")


def too_large(limit: int) -> str:
    return (
        f"the request body is larger than {limit} bytes (MAX_BODY_BYTES): send less; no "
        "route of this API takes more"
    )


class BodyTooLarge(HTTPException):
    """Raised from receive() once a body passes the limit: an HTTPException, so FastAPI's body
    parsing passes it on to the app's 413 handler (JSON) instead of calling it a bad body."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit))


class BodyTooSlow(HTTPException):
    def __init__(self, timeout: float) -> None:
        super().__init__(
            408,
            f"the request body did not arrive within {timeout:.0f} seconds "
            "(HTTP_BODY_TIMEOUT_SECONDS): send it at once",
        )


class BodyLimit:
    """Refuses a body over `limit` bytes with 413: a declared Content-Length before the app
    runs (no auth, no routing, nothing read), a chunked body as it streams in (receive() raises
    once past the limit), so no more than `limit` bytes of a body are ever read. A body still
    incomplete `timeout` seconds after the request began is refused with 408 (a client
    trickling its body would otherwise hold the request forever).

    Not FastAPI(max_body_size=...): it answers text/plain when the route does not read the
    body, and this API's errors are JSON."""

    def __init__(self, app: ASGIApp, limit: int, timeout: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope["headers"]:
            if name != b"content-length":
                continue
            declared = int(value) if value.isdigit() else None
            if declared is None or declared > limit:
                log.warning(
                    "refused %s %s: Content-Length %r (limit %d bytes)",
                    scope["method"],
                    scope["path"],
                    value[:20].decode("latin-1"),
                    limit,
                )
                if declared is None:
                    await _send_json(
                        send, 400, "BadRequest", "Content-Length must be a number of bytes"
                    )
                else:
                    await _send_json(send, 413, "TooLarge", too_large(limit))
                return
        received = 0
        complete = False
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def limited() -> Message:
            nonlocal received, complete
            if complete:  # the body is in; later calls wait for a disconnect, untimed
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                log.warning(
                    "refused %s %s: body not complete after %.0f s",
                    scope["method"],
                    scope["path"],
                    self.timeout,
                )
                raise BodyTooSlow(self.timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    log.warning(
                        "refused %s %s: body over %d bytes", scope["method"], scope["path"], limit
                    )
                    raise BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)


class SecurityHeaders:
    """CSP (frame-ancestors 'none'), nosniff, no referrer and no framing on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        docs = any(path == p or path.startswith(p + "/") for p in DOCS_PATHS)
        extra = [
            (b"content-security-policy", (DOCS_CSP if docs else PAGE_CSP).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if scope.get("scheme") == "https":  # also behind a trusted TLS proxy
            extra.append((b"strict-transport-security", b"max-age=31536000"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in extra if n not in names),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


async def _send_json(send: Send, status: int, kind: str, detail: str) -> None:
    body = json.dumps({"error": kind, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One log line per request: method, path (never the query: it may carry a signed download
    link's signature), status and duration. Sets the request id (`api.logs.request_id`: a sane
    incoming X-Request-ID, else a new one) for every line logged while the request is served,
    background work it starts included, and answers it in X-Request-ID. Plain ASGI, not
    `@app.middleware("http")`, which costs a task and a stream per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before it starts a response
        incoming = next((v for n, v in scope["headers"] if n == b"x-request-id"), None)
        request_id = logs.sane_request_id(incoming)
        token = logs.request_id.set(request_id)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *(h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info(
                "%s %s %d %.0fms",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
            )
        # Not reset when the app raised: the 500 handler, outside this middleware, logs the
        # traceback with the id (uvicorn serves each request in a task of its own anyway).
        logs.request_id.reset(token)
