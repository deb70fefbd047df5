"""How `nexus-backup serve` runs uvicorn: timeouts and limits a public server needs."""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.config import Settings

MAX_HEADER_BYTES = 16 * 1024


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for a request's line and headers: a client that
    has not sent them all within `header_timeout` seconds of connecting (or of the previous
    response) is disconnected. uvicorn has none of its own: its keep-alive timer stops at the
    first byte, so a client trickling a header byte at a time (slowloris) would hold the
    connection forever."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closed a connection that sent no complete request headers in time")
            self.transport.close()


def protocol_for(settings: Settings) -> type[HeaderTimeoutProtocol]:
    return type(
        "HeaderTimeoutProtocol",
        (HeaderTimeoutProtocol,),
        {"header_timeout": settings.http_header_timeout_seconds},
    )


def uvicorn_config(app: FastAPI, settings: Settings, host: str, port: int) -> uvicorn.Config:
    # access_log off: uvicorn would log query strings (signed download links); the app logs
    # method, path and status itself.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # uvicorn's lines go to the root handler (api.logs): ids, redaction
        log_level=None,  # and LOG_LEVEL
        access_log=False,
        http=protocol_for(settings),
        timeout_keep_alive=settings.http_keep_alive_seconds,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),  # then the lifespan
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=settings.http_limit_concurrency,
        # X-Forwarded-Proto/-For only from these proxies: behind a TLS proxy the request is
        # https (the session cookie gets Secure) and the client address is the real one.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


class Server(uvicorn.Server):
    """uvicorn's server, whose SIGTERM (or Ctrl-C) also starts stopping the app's operations at
    once (`Operations.stop`: new work refused, running work cancelled, cleaned up and recorded),
    instead of only after uvicorn's graceful wait for open connections."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        operations = getattr(getattr(self.config.app, "state", None), "operations", None)
        if operations is not None:
            with contextlib.suppress(RuntimeError):  # no loop running: nothing to stop
                operations.stop_soon(asyncio.get_running_loop())
