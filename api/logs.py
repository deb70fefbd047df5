"""Logging for the service and the CLI: one handler on the root logger (stderr), the request
and operation ids on every line, and every secret redacted.

- Format: JSON lines when LOG_FORMAT=json, or LOG_FORMAT=auto and NEXUS_ENV=production
  (time, level, logger, message, request_id, operation_id, exc_info); readable text otherwise
  (`time level logger [request/operation] message`). Level: LOG_LEVEL.
- Ids: `request_id` is set per HTTP request by the access-log middleware (a sane incoming
  X-Request-ID, else a new one), `operation_id` by the operations engine while an operation's
  work runs (its catalog record's id). Both are contextvars: tasks and `asyncio.to_thread`
  inherit them, so a background operation started by a request keeps the request's id.
- Redaction: a Filter on the handler, so every record that reaches it is covered, third-party
  ones too (botocore, urllib3, asyncio, httpx, uvicorn): its message, its arguments and its
  traceback. Patterns (URL passwords, Authorization/Cookie headers, our API tokens and session
  cookie, AWS signatures and credentials, password=/secret=/token= pairs) and the exact value of
  every SecretStr setting become `***`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import traceback
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlsplit

from pydantic import SecretStr

from api.errors import ConfigError

if TYPE_CHECKING:
    from api.config import Settings

MASK = "***"
SESSION_COOKIE = "nexus_session"  # api.deps.SESSION_COOKIE (a test keeps them equal)
TOKEN_PREFIX = "nxb_"  # api.auth.service.TOKEN_PREFIX (a test keeps them equal)
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_MAX = 64
SHORTEST_SECRET = 4  # shorter exact values would mask ordinary words; startup refuses them
WEBHOOK_PART = 16  # the shortest part of a webhook URL's path masked on its own

request_id: ContextVar[str | None] = ContextVar("nexus_request_id", default=None)
operation_id: ContextVar[str | None] = ContextVar("nexus_operation_id", default=None)

_SANE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{REQUEST_ID_MAX}}}")

# SQL statements, their parameters and result rows hold password hashes, session digests and
# the download-link signing key: never logged, whatever LOG_LEVEL says.
CAPPED = {"sqlalchemy.engine": logging.WARNING, "sqlalchemy.pool": logging.WARNING}


def new_request_id() -> str:
    return secrets.token_hex(16)


def sane_request_id(value: bytes | str | None) -> str:
    """The client's X-Request-ID when it is 1-64 of [A-Za-z0-9._-], else a new id."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


# -- redaction --------------------------------------------------------------------------------

_SCHEMES = r"(?:Bearer|Basic|Digest|Token|AWS4-HMAC-SHA256|AWS)"
_HEADERS = (
    r"(?:Proxy-)?Authorization|X-Amz-Security-Token|X-Amz-Credential|X-Amz-Signature|"
    r"Set-Cookie|Cookie|X-CSRF-Token|X-Api-Key"
)
_KEYS = r"[\w.-]*(?:password|passwd|secret|token|access_key|api_key|apikey)[\w.-]*"


def _scheme_mask(match: re.Match[str]) -> str:
    scheme = match.group("scheme")
    return f"{scheme} {MASK}" if scheme else MASK


_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # A header in a dict or repr (botocore's request dumps): 'Authorization': b'AWS4-... '.
    (
        re.compile(
            rf"""(?P<head>['"]?\b(?:{_HEADERS})['"]?\s*[:=]\s*b?)(?P<q>['"])"""
            rf"""(?:(?P<scheme>{_SCHEMES})\s+)?(?:\\.|(?!(?P=q))[^\\\n])*(?P=q)""",
            re.IGNORECASE,
        ),
        lambda m: f"{m['head']}{m['q']}{_scheme_mask(m)}{m['q']}",
    ),
    # A header line: `Authorization: Bearer abc` (the value runs to the end of the line).
    (
        re.compile(
            rf"(?P<head>\b(?:{_HEADERS})\s*:[ \t]*)(?:(?P<scheme>{_SCHEMES})[ \t]+)?"
            rf"(?!\*\*\*)[^\s'\"][^\r\n'\"]*",
            re.IGNORECASE,
        ),
        lambda m: f"{m['head']}{_scheme_mask(m)}",
    ),
    # A bearer or basic credential anywhere.
    (re.compile(r"\b(Bearer)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\1 {MASK}"),
    (re.compile(r"\b(Basic)\s+[A-Za-z0-9+/]{8,}={0,2}"), rf"\1 {MASK}"),
    # AWS: presigned query parameters and the parts of a SigV4/V2 Authorization value.
    (
        re.compile(
            r"\b(X-Amz-Credential|X-Amz-Signature|X-Amz-Security-Token|AWSAccessKeyId|"
            r"Credential|Signature)=(?!\*\*\*)[^&\s'\",;>]+",
            re.IGNORECASE,
        ),
        rf"\1={MASK}",
    ),
    # botocore's debug line "Signature:\n<hex>".
    (
        re.compile(r"\b(Signature:\s*)(?:[0-9a-f]{16,}|[A-Za-z0-9+/]{20,}={0,2})", re.IGNORECASE),
        rf"\1{MASK}",
    ),
    # user:password@ in any URL.
    (
        re.compile(r"\b([a-z][a-z0-9+.-]*://[^:/?#@\s'\"]*:)(?!\*\*\*@)[^@\s'\"/]+@", re.I),
        rf"\1{MASK}@",
    ),
    # Our API tokens and the session cookie.
    (re.compile(rf"\b{TOKEN_PREFIX}[A-Za-z0-9_-]+"), f"{TOKEN_PREFIX}{MASK}"),
    (re.compile(rf"\b({SESSION_COOKIE}=)(?!\*\*\*)[^;\s'\",]+"), rf"\1{MASK}"),
    # password=..., secret: '...', "token": "..." (a colon only before a quoted value: prose
    # such as "token: expired" stays).
    (
        re.compile(
            rf"""(\b{_KEYS}['"]?\s*=\s*|['"]{_KEYS}['"]\s*:\s*)"""
            r"""(?:b?'[^']*'|b?"[^"]*"|(?<=[=])(?!\*\*\*)[^\s&,;'")\]}]+)""",
            re.IGNORECASE,
        ),
        rf"\1{MASK}",
    ),
]


def secret_values(settings: Settings | None) -> list[str]:
    """Every SecretStr setting's value, and what of it may appear on its own: a URL's password
    (as written and decoded), a webhook URL's path and query (the secret part)."""
    if settings is None:
        return []
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if not isinstance(value, SecretStr):
            continue
        text = value.get_secret_value()
        found.append(text)
        if "://" in text:
            try:
                parts = urlsplit(text)
                password = parts.password
            except ValueError:
                continue
            if parts.scheme.startswith("postgres"):  # the password is the secret, not the name
                found += [password, unquote(password)] if password else []
                found += parse_qs(parts.query).get("password", [])
                continue
            # A webhook URL: its path and query are the secret (long parts only: a short one
            # would mask ordinary words).
            secret = parts.path + (f"?{parts.query}" if parts.query else "")
            found += [part for part in (secret, parts.query) if len(part) >= WEBHOOK_PART]
            found += [part for part in parts.path.split("/") if len(part) >= WEBHOOK_PART]
    return found


class Redactor(logging.Filter):
    """Masks secrets in every record that reaches the handler: message (arguments merged in),
    traceback and stack; adds the record's request and operation ids."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        super().__init__()
        exact: set[str] = set()
        for value in values:
            for form in (value, quote(value, safe=""), quote_plus(value)):
                if len(form) >= SHORTEST_SECRET:
                    exact.add(form)
        ordered = sorted(exact, key=len, reverse=True)
        self._exact = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        if self._exact is not None:
            text = self._exact.sub(MASK, text)
        for pattern, replacement in _RULES:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        if not hasattr(record, "operation_id"):
            record.operation_id = operation_id.get()
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: keep both, redacted
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact("".join(traceback.format_exception(*record.exc_info)))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_default = Redactor()
_installed: logging.Handler | None = None
_before: dict[str, int] = {}  # the levels configure() changed, as they were


def redact(text: str) -> str:
    """`text` with what the installed handler masks masked (for output that is not a log
    record: the CLI's error line and traceback)."""
    redactor = next(
        (f for f in (_installed.filters if _installed else []) if isinstance(f, Redactor)),
        _default,
    )
    return redactor.redact(text)


def scrub(settings: Settings | None, text: str) -> str:
    """`text` with every secret of `settings` and every secret pattern masked: for what is
    stored and answered rather than logged (a failure's reason in the catalog, the audit log
    and the API)."""
    return Redactor(secret_values(settings)).redact(text)


# -- formats ----------------------------------------------------------------------------------


def _time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return (record.exc_text or "").rstrip("\n") or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "operation_id": getattr(record, "operation_id", None),
        }
        error = _exception(self, record)
        if error:
            line["exc_info"] = error
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`2026-01-02T03:04:05.678Z INFO nexus_backup.http [request/operation] message`."""

    def format(self, record: logging.LogRecord) -> str:
        ids = (getattr(record, "request_id", None), getattr(record, "operation_id", None))
        where = f" [{ids[0] or '-'}/{ids[1] or '-'}]" if any(ids) else ""
        text = f"{_time(record)} {record.levelname} {record.name}{where} {record.getMessage()}"
        error = _exception(self, record)
        if error:
            text += "\n" + error
        if record.stack_info:
            text += "\n" + record.stack_info
        return text


def json_format(settings: Settings | None) -> bool:
    if settings is None:
        return False
    from api.config import LogFormat

    if settings.log_format is LogFormat.auto:
        return settings.production
    return settings.log_format is LogFormat.json


def level(settings: Settings | None) -> int:
    name = (settings.log_level if settings is not None else "INFO").strip().upper()
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        raise ConfigError(
            f"LOG_LEVEL {name!r} is not a level: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return value


def configure(
    settings: Settings | None, *, verbose: bool = True, stream: IO[str] | None = None
) -> logging.Handler:
    """Install the one root handler (replacing the one installed before, if any): JSON or
    text, redacting, at LOG_LEVEL (`verbose=False`: only critical lines, the CLI without -v).
    uvicorn's loggers reach it too when it runs with log_config=None."""
    global _installed, _before
    root = logging.getLogger()
    lowest = level(settings) if verbose else logging.CRITICAL
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(Redactor(secret_values(settings)))
    handler.setFormatter(JsonFormatter() if json_format(settings) else TextFormatter())
    if _installed is not None:
        root.removeHandler(_installed)
    else:
        _before = {name: logging.getLogger(name).level for name in ("", *CAPPED)}
    root.addHandler(handler)
    root.setLevel(lowest)
    for name, cap in CAPPED.items():
        logging.getLogger(name).setLevel(max(cap, lowest))
    _installed = handler
    return handler


def uninstall() -> None:
    """Remove the handler `configure` installed and put the levels it set back (the CLI run
    in-process, tests)."""
    global _installed
    if _installed is not None:
        logging.getLogger().removeHandler(_installed)
        _installed = None
        for name, value in _before.items():
            logging.getLogger(name or None).setLevel(value)
