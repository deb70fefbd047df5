"""Scan a pg_dump plain-SQL stream before psql sees it: refuse what pg_dump never writes, count
the rows of every COPY block, and filter out the few lines we replace with our own.

Pure: bytes in, bytes out, no I/O. The scanner reads the stream the way psql's lexer does
(standard-conforming strings, E'' strings, dollar quotes, quoted identifiers, nested comments,
COPY data up to its `\\.` line) and refuses, with the line number:

- a psql meta-command (a backslash outside quotes, comments and COPY data), except the dump's own
  leading `\\restrict KEY` and trailing `\\unrestrict KEY`, which are dropped (the loader puts its
  own random key around the dump instead);
- transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE ...), except pg_dump's
  large-object blocks (`BEGIN;`, lo_open/lowrite/lo_close, `COMMIT;`), whose BEGIN and COMMIT
  lines are dropped so the writes run inside the restore's own transaction;
- SET/RESET ROLE and SESSION AUTHORIZATION, `standard_conforming_strings` other than on, and
  client encodings whose multibyte characters can hide a quote or backslash from a byte lexer;
- COPY other than `COPY name (columns) FROM stdin;` on one line, and statements that psql and the
  server would split differently (semicolons inside parentheses, BEGIN ... END misuse);
- a stream that ends inside a string, comment, COPY block, large-object block or statement.

Dropped lines are replaced by empty lines, so psql's line numbers stay those of the file.
What runs on the server (functions, triggers, dynamic SQL) is not judged here: that is the
loading role's rights. The loader still runs psql behind its own `\\restrict`: this scanner is a
second line, and the one that counts rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LINE = 64 * 1024 * 1024

_NORMAL, _SQUOTE, _EQUOTE, _DQUOTE, _DOLLAR, _BLOCK = range(6)
_WHAT = {
    _SQUOTE: "a quoted string",
    _EQUOTE: "an E'' string",
    _DQUOTE: 'a "quoted" identifier',
    _DOLLAR: "a dollar-quoted body",
    _BLOCK: "a /* */ comment",
}

_TOKEN = re.compile(
    rb"""
    (?P<space>[ \t\r\n\f\v]+)
  | (?P<comment>--[^\n\r]*)
  | (?P<block>/\*)
  | (?P<estring>[eE]')
  | (?P<squote>(?:[bBxXnN]|[uU]&)?')
  | (?P<dquote>(?:[uU]&)?")
  | (?P<word>[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)
  | (?P<dollar>\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$)
  | (?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<backslash>\\)
  | (?P<semi>;)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<other>[^\\;()'"$\-/0-9A-Za-z_\x80-\xff \t\r\n\f\v.]+|.)
    """,
    re.X | re.S,
)
_JUNK_AFTER_NUMBER = re.compile(rb"[A-Za-z_\x80-\xff'\"$0-9]")
_EBODY = re.compile(rb"(?:[^\\']|\\[\s\S])*")
_BLOCK_MARK = re.compile(rb"/\*|\*/")
_CONTINUATION = re.compile(rb"[ \t\f\v]*(?:--[^\n\r]*)?[\n\r]")
_RESTRICT = re.compile(rb"\\(un)?restrict ([A-Za-z0-9]{1,256})[ \t]*\n")
_NAME = rb'(?:"(?:[^"\n]|"")+"|[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*)'
_COPY = re.compile(
    rb"COPY (" + _NAME + rb"(?:\." + _NAME + rb")?)"
    rb' +(?:\((?:[^()"\n]|"(?:[^"\n]|"")*")*\) +)?FROM stdin;'
)
_LO_LINE = re.compile(
    rb"SELECT pg_catalog\.(?:lo_open\('[0-9]+', [0-9]+\)|lowrite\(0, '\\x[0-9a-f]*'\)"
    rb"|lo_close\(0\));\n|[ \t]*\n"
)
_TRANSACTION = {
    b"BEGIN",
    b"START",
    b"COMMIT",
    b"END",
    b"ROLLBACK",
    b"ABORT",
    b"SAVEPOINT",
    b"RELEASE",
    b"PREPARE",
}
# Client encodings psql lexes byte by byte safely: no multibyte character holds an ASCII byte.
_SAFE_ENCODINGS = {
    "utf8",
    "unicode",
    "sqlascii",
    "eucjp",
    "eucjis2004",
    "euccn",
    "euckr",
    "euctw",
    "mulecinternal",
    "koi8",
    "koi8r",
    "koi8u",
    "win",
    "alt",
    "tcvn",
    "tcvn5712",
    "vscii",
    *(f"latin{n}" for n in range(1, 11)),
    *(f"iso8859{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)),
    *(f"win{n}" for n in (866, 874, 1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258)),
    *(f"windows{n}" for n in (866, 874, 1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258)),
    *(f"cp{n}" for n in (866, 874, 1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258)),
}
_ALTERED = "this is not pg_dump output: the archive was altered, restore another backup"


RESET_MARK = b" -- set back by nexus-backup"


class DumpError(ValueError):
    """database.sql holds something a pg_dump plain dump never does; the message says where."""


@dataclass
class DumpFacts:
    tables: dict[str, int] = field(default_factory=dict)


class DumpScanner:
    """Feed a plain dump in chunks of any size; hand what `feed` returns to psql."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._line = 1  # line number at self._lpos of self._buf
        self._lpos = 0
        self._copy: str | None = None  # the table whose COPY data is being read
        self._copy_line_start = True
        self._lo = False  # inside a large-object BEGIN; ... COMMIT; block
        self._state = _NORMAL
        self._open_line = 0
        self._open_at = 0
        self._tag = b""
        self._depth = 0  # nesting of /* */ comments
        self._restrict: bytes | None = None
        self._closed = False  # the trailing \unrestrict was seen
        self._statements = 0
        self._reset_due = False  # a statement ended: set psql's lexing back at its line end
        self._encoding: bytes | None = None  # the client_encoding the dump set, as written
        self.tables: dict[str, int] = {}
        self._reset_statement()

    # --- public ----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Scan `data`; return the bytes to pass on (whole lines, filtered). Raises DumpError."""
        if b"\0" in data:
            raise DumpError(f"line {self._line_at(len(self._buf))}+: a NUL byte; {_ALTERED}")
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        while pos < len(buf):
            if self._copy is not None:
                new = self._scan_copy(buf, pos, out)
                if new == pos or self._copy is not None:
                    pos = new
                    break
                pos = new
                continue
            end = buf.rfind(b"\n", pos) + 1
            if end <= pos:
                break
            pos = self._scan_sql(buf, pos, end, out)
        self._line = self._line_at(pos)
        self._lpos = 0
        del buf[:pos]
        if self._copy is None and len(buf) > MAX_LINE:
            raise DumpError(
                f"line {self._line}: longer than {MAX_LINE // (1024 * 1024)} MiB outside COPY "
                f"data; {_ALTERED}"
            )
        return b"".join(out)

    def finish(self) -> DumpFacts:
        """The facts of a stream that ended well; DumpError if it ended badly."""
        line = self._line
        if self._buf:
            raise DumpError(f"line {line}: the last line has no newline: database.sql is truncated")
        if self._copy is not None:
            raise DumpError(
                f"line {line}: database.sql ends inside the COPY data of {self._copy}: "
                "it is truncated"
            )
        if self._lo:
            raise DumpError(f"line {line}: database.sql ends inside a large-object block")
        if self._state != _NORMAL:
            raise DumpError(
                f"line {self._open_line}: {_WHAT[self._state]} opened here never ends: "
                "database.sql is truncated or altered"
            )
        if self._in_statement:
            raise DumpError(
                f"line {self._stmt_line}: the statement starting here has no closing "
                "semicolon: database.sql is truncated or altered"
            )
        if self._restrict is not None and not self._closed:
            raise DumpError(
                f"line {line}: database.sql ends without the \\unrestrict line its "
                "\\restrict line calls for: it is truncated"
            )
        return DumpFacts(tables=dict(self.tables))

    # --- helpers ---------------------------------------------------------------------------------

    def _line_at(self, pos: int) -> int:
        if pos >= self._lpos:
            self._line += self._buf.count(b"\n", self._lpos, pos)
        else:
            self._line -= self._buf.count(b"\n", pos, self._lpos)
        self._lpos = pos
        return self._line

    def _fail(self, pos: int, message: str) -> DumpError:
        return DumpError(f"line {self._line_at(pos)}: {message}")

    def _reset_statement(self) -> None:
        self._in_statement = False
        self._stmt_line = 0
        self._stmt_at = -1  # where the statement starts in the buffer (this chunk), or -1
        self._tokens: list[bytes] = []  # the first significant tokens, words upper-cased
        self._piece_empty = True  # no token yet since the statement start or an inner ';'
        self._paren = 0
        self._psql_ids: list[str] = []  # psql's CREATE [OR REPLACE] FUNCTION heuristic
        self._psql_id_count = 0
        self._psql_begin = 0
        self._atomic = 0  # depth inside BEGIN ATOMIC ... END, as the server parses it
        self._after_begin = False
        self._routine = False

    # --- COPY data -------------------------------------------------------------------------------

    def _scan_copy(self, buf: bytearray, pos: int, out: list[bytes]) -> int:
        """Skip COPY data; return where it stopped: after the end line, or where more is needed."""
        assert self._copy is not None
        self._line_at(pos)
        start, n, rows, lines = pos, len(buf), 0, 0
        while pos < n:
            if not self._copy_line_start:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    pos = n
                    break
                rows += 1
                pos = nl + 1
                self._copy_line_start = True
                continue
            head = bytes(buf[pos : pos + 4])
            if head.startswith(b"\\.\n"):
                self.tables[self._copy] += rows
                lines, rows = lines + rows + 1, 0
                self._copy = None
                pos += 3
                break
            if head == b"\\.\r\n":
                raise self._fail(
                    pos,
                    "a COPY block ends with \\.\\r\\n, which psql and pg_dump read apart; "
                    + _ALTERED,
                )
            if len(head) < 4 and b"\n" not in head and (b"\\.\r\n".startswith(head)):
                break  # could still become the end line: wait for more
            found = buf.find(b"\n\\.", pos)
            if found >= 0:
                rows += buf.count(b"\n", pos, found + 1)
                pos = found + 1
                continue
            last = buf.rfind(b"\n", pos)
            if last >= 0:
                rows += buf.count(b"\n", pos, last + 1)
                pos = last + 1
            if n - pos >= 4:
                pos = n  # a partial line that cannot be the end line
                self._copy_line_start = False
            break
        if self._copy is not None:
            self.tables[self._copy] += rows
            lines += rows
        self._line += lines
        self._lpos = pos
        if pos > start:
            out.append(bytes(buf[start:pos]))
        return pos

    # --- SQL -------------------------------------------------------------------------------------

    def _scan_sql(self, buf: bytearray, pos: int, end: int, out: list[bytes]) -> int:
        """Lex whole lines buf[pos:end]; return where it stopped: end, or where COPY data starts."""
        emitted = pos
        self._stmt_at = pos if self._in_statement else -1
        while pos < end:
            state = self._state
            if self._lo:
                line_end = buf.index(b"\n", pos) + 1
                if buf.startswith(b"COMMIT;\n", pos):
                    out.append(bytes(buf[emitted:pos]) + b"\n")
                    emitted = pos = line_end
                    self._lo = False
                    continue
                if _LO_LINE.fullmatch(buf, pos, line_end) is None:
                    raise self._fail(
                        pos,
                        "only lo_open, lowrite and lo_close may stand between pg_dump's "
                        "BEGIN; and COMMIT; of large objects; " + _ALTERED,
                    )
                pos = line_end
                continue
            if state == _SQUOTE:
                pos = self._close_quote(buf, pos, end, b"'")
                continue
            if state == _DQUOTE:
                pos = self._close_quote(buf, pos, end, b'"')
                continue
            if state == _EQUOTE:
                pos = self._close_estring(buf, pos, end)
                continue
            if state == _DOLLAR:
                found = buf.find(self._tag, pos, end)
                if found < 0:
                    pos = end
                else:
                    pos = found + len(self._tag)
                    self._state = _NORMAL
                continue
            if state == _BLOCK:
                pos = self._close_block(buf, pos, end)
                continue
            match = _TOKEN.match(buf, pos, end)
            assert match is not None
            kind = match.lastgroup
            token_at, pos = pos, match.end()
            if kind == "space" or kind == "comment":
                if self._reset_due and kind == "space" and not self._in_statement:
                    newline = buf.find(b"\n", token_at, pos)
                    if newline >= 0 and self._state == _NORMAL and not self._lo:
                        out.append(bytes(buf[emitted : newline + 1]) + self._reset_line())
                        emitted = newline + 1
                        self._reset_due = False
                continue
            if self._closed:
                raise self._fail(token_at, "SQL after the closing \\unrestrict line; " + _ALTERED)
            if kind == "backslash":
                drop = self._restrict_line(buf, token_at, end)
                if drop is None:
                    raise self._meta_command(buf, token_at, end)
                out.append(bytes(buf[emitted:token_at]) + b"\n")
                emitted = pos = drop
                continue
            if kind == "block":
                self._state, self._depth = _BLOCK, 1
                self._opened(token_at)
                continue
            if not self._in_statement:
                self._in_statement = True
                self._stmt_at = token_at
                self._stmt_line = self._line_at(token_at)
            if kind == "word":
                lo_end = self._word(buf, token_at, pos, end)
                if lo_end is not None:
                    out.append(bytes(buf[emitted:token_at]) + b"\n")
                    emitted = pos = lo_end
                continue
            self._piece_empty = False
            self._after_begin = False
            if kind == "semi":
                copy_end = self._semicolon(buf, token_at, end)
                if copy_end is not None:
                    out.append(bytes(buf[emitted:copy_end]))
                    return copy_end
                continue
            elif kind == "squote":
                self._state = _SQUOTE
                self._opened(token_at)
            elif kind == "estring":
                self._state = _EQUOTE
                self._opened(token_at)
            elif kind == "dquote":
                self._state = _DQUOTE
                self._opened(token_at)
            elif kind == "dollar":
                self._state, self._tag = _DOLLAR, bytes(match.group())
                self._opened(token_at)
            elif kind == "open":
                self._paren += 1
            elif kind == "close":
                self._paren = max(0, self._paren - 1)
            elif kind == "number" and _JUNK_AFTER_NUMBER.match(buf, pos, end):
                raise self._fail(pos, "a number runs straight into a name or quote; " + _ALTERED)
            if len(self._tokens) < 8 and kind not in ("squote", "estring", "dquote", "dollar"):
                self._tokens.append(bytes(match.group()))
        if self._state != _NORMAL and self._open_at >= 0:
            self._open_line = self._line_at(self._open_at)
            self._open_at = -1
        out.append(bytes(buf[emitted:end]))
        return end

    def _opened(self, at: int) -> None:
        self._open_at = at
        self._string_at = at

    def _string_token(self, buf: bytearray, end_pos: int) -> None:
        if len(self._tokens) < 8 and self._in_statement:
            start = self._string_at if self._open_at >= 0 else -1
            self._tokens.append(bytes(buf[start:end_pos]) if start >= 0 else b"'...'")

    def _close_quote(self, buf: bytearray, pos: int, end: int, quote: bytes) -> int:
        while True:
            found = buf.find(quote, pos, end)
            if found < 0:
                return end
            if buf[found + 1 : found + 2] == quote:
                pos = found + 2
                continue
            self._state = _NORMAL
            self._string_token(buf, found + 1)
            return found + 1

    def _close_estring(self, buf: bytearray, pos: int, end: int) -> int:
        while True:
            body = _EBODY.match(buf, pos, end)
            assert body is not None
            found = body.end()
            if re.search(rb"[\x80-\xff]\\", buf[pos:found]):
                raise self._fail(
                    pos, "an E'' string with a backslash after a non-ASCII byte; " + _ALTERED
                )
            if found >= end:
                return end
            if buf[found + 1 : found + 2] == b"'":
                pos = found + 2
                continue
            if _CONTINUATION.match(buf, found + 1, end):
                raise self._fail(
                    found,
                    "an E'' string followed only by a line end (psql may continue it on "
                    "the next line); " + _ALTERED,
                )
            self._state = _NORMAL
            self._string_token(buf, found + 1)
            return found + 1

    def _close_block(self, buf: bytearray, pos: int, end: int) -> int:
        for mark in _BLOCK_MARK.finditer(buf, pos, end):
            if mark.group() == b"/*":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self._state = _NORMAL
                    return mark.end()
        return end

    def _restrict_line(self, buf: bytearray, at: int, end: int) -> int | None:
        """The end of the dump's own \\restrict or \\unrestrict line, or None if it is not one."""
        if self._in_statement or (at > 0 and buf[at - 1 : at] != b"\n"):
            return None
        match = _RESTRICT.match(buf, at, end)
        if match is None:
            return None
        key = bytes(match.group(2))
        if match.group(1) is None:
            if self._restrict is not None or self._statements:
                return None
            self._restrict = key
        else:
            if self._restrict != key or self._closed:
                return None
            self._closed = True
        return match.end()

    def _meta_command(self, buf: bytearray, at: int, end: int) -> DumpError:
        line_end = buf.find(b"\n", at, end)
        command = bytes(buf[at : min(line_end, at + 40)]).decode("utf-8", "replace")
        return self._fail(
            at,
            f"a psql meta-command ({command!r}) outside COPY data; psql must only ever "
            "run SQL from a backup: " + _ALTERED,
        )

    def _word(self, buf: bytearray, at: int, pos: int, end: int) -> int | None:
        """Track one word; return the end of a large-object BEGIN; line to drop, else None."""
        word = bytes(buf[at:pos]).upper()
        after_begin, self._after_begin = self._after_begin, False
        first = self._piece_empty
        self._piece_empty = False
        if len(self._tokens) < 8:
            self._tokens.append(word)
        # psql's own heuristic for CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ... END.
        lower = word.lower().decode("latin-1")
        if self._psql_id_count < 4:
            short = lower in ("create", "function", "procedure", "or", "replace")
            self._psql_ids.append(lower[0] if short else "")
        self._psql_id_count += 1
        ids = [*self._psql_ids, "", "", "", ""]
        if (
            ids[0] == "c"
            and (ids[1] in ("f", "p") or (ids[1] == "o" and ids[2] == "r" and ids[3] in ("f", "p")))
            and self._paren == 0
        ):
            if lower == "begin":
                self._psql_begin += 1
            elif lower == "case":
                if self._psql_begin >= 1:
                    self._psql_begin += 1
            elif lower == "end" and self._psql_begin > 0:
                self._psql_begin -= 1
        # The server's view: BEGIN ATOMIC ... END bodies, with CASE ... END inside.
        if self._psql_id_count <= 4:
            self._routine = ids[0] == "c" and (
                ids[1] in ("f", "p") or (ids[1] == "o" and ids[2] == "r" and ids[3] in ("f", "p"))
            )
        if first and word in _TRANSACTION and not (word == b"END" and self._atomic > 0):
            if word == b"BEGIN" and self._tokens == [b"BEGIN"] and self._atomic == 0:
                lo_end = self._large_object_begin(buf, at, end)
                if lo_end is not None:
                    return lo_end
            raise self._fail(
                at,
                f"transaction control ({word.decode('latin-1')}) would end the restore's own "
                "transaction; " + _ALTERED,
            )
        if word == b"ATOMIC" and after_begin:
            self._atomic += 1
        elif word == b"BEGIN" and self._routine and (self._atomic > 0 or self._paren == 0):
            self._after_begin = True
        elif self._atomic > 0 and word == b"CASE":
            self._atomic += 1
        elif self._atomic > 0 and word == b"END":
            self._atomic -= 1
        return None

    def _large_object_begin(self, buf: bytearray, at: int, end: int) -> int | None:
        if (at > 0 and buf[at - 1 : at] != b"\n") or not buf.startswith(b"BEGIN;\n", at):
            return None
        self._lo = True
        self._reset_statement()
        return at + len(b"BEGIN;\n")

    def _semicolon(self, buf: bytearray, at: int, end: int) -> int | None:
        """End a statement (or a piece of a BEGIN ATOMIC body); return where COPY data starts."""
        if self._paren:
            raise self._fail(at, "a semicolon inside parentheses; " + _ALTERED)
        psql_splits = self._psql_begin == 0
        if psql_splits != (self._atomic == 0):
            raise self._fail(
                at,
                "psql and the server would end this statement in different places "
                "(BEGIN/CASE/END outside a BEGIN ATOMIC body); " + _ALTERED,
            )
        if self._atomic:
            self._piece_empty = True
            return None
        tokens = self._tokens
        copy_end = None
        if tokens and tokens[0] == b"COPY":
            copy_end = self._copy_header(buf, at)
        elif tokens and tokens[0] in (b"SET", b"RESET"):
            self._check_set(tokens, at)
        self._statements += 1
        self._reset_statement()
        self._reset_due = copy_end is None
        return copy_end

    def _reset_line(self) -> bytes:
        """What follows the line that ends a statement: the settings psql lexes by, set back.

        Server-side code (a DO block) can switch standard_conforming_strings off or change the
        client encoding; psql would then read the next lines differently from this scanner (a
        COMMIT this scanner saw inside a string could run). psql takes both settings at the
        start of each line, so setting them back on a line of their own after every statement
        keeps its reading and ours the same.
        """
        line = b"SET standard_conforming_strings = on;"
        if self._encoding is not None:
            line += b" SET client_encoding = " + self._encoding + b";"
        return line + RESET_MARK + b"\n"

    def _copy_header(self, buf: bytearray, at: int) -> int:
        start = self._stmt_at
        line_start = buf.rfind(b"\n", 0, at) + 1
        match = None
        if start == line_start and buf[at + 1 : at + 2] == b"\n":
            match = _COPY.fullmatch(buf, start, at + 1)
        if match is None:
            raise self._fail(
                at,
                "only `COPY name (columns) FROM stdin;` on a line of its own may copy data "
                "(no files, programs or options); " + _ALTERED,
            )
        self._copy = copy_table(bytes(match.group(1)))
        self.tables.setdefault(self._copy, 0)
        self._copy_line_start = True
        return at + 2

    def _check_set(self, tokens: list[bytes], at: int) -> None:
        rest = [_setting_name(token) for token in tokens[1:4]] + tokens[4:]
        if rest[:1] in ([b"SESSION"], [b"LOCAL"]) and rest[1:2] != [b"="]:
            rest = rest[1:] if rest[1:2] != [b"AUTHORIZATION"] else rest
        if not rest:
            return
        name = rest[0]
        if name in (b"ROLE", b"SESSION_AUTHORIZATION", b"U&") or rest[:2] == [
            b"SESSION",
            b"AUTHORIZATION",
        ]:
            raise self._fail(
                at,
                f"{tokens[0].decode()} {name.decode('latin-1')} would change who the restore "
                "runs as; " + _ALTERED,
            )
        if tokens[0] != b"SET":
            return
        value = rest[2:3] if rest[1:2] in ([b"="], [b"TO"]) else []
        if name == b"STANDARD_CONFORMING_STRINGS" and value not in ([b"ON"], [b"'on'"]):
            raise self._fail(
                at,
                "standard_conforming_strings must stay on (pg_dump always sets it on); " + _ALTERED,
            )
        if name == b"CLIENT_ENCODING":
            text = value[0].strip(b"'").decode("latin-1").lower() if value else ""
            if re.sub(r"[^a-z0-9]", "", text) not in _SAFE_ENCODINGS:
                raise self._fail(
                    at,
                    f"client_encoding {text!r} can hide quotes and backslashes inside "
                    "multibyte characters; back up with a UTF8 client encoding",
                )
            self._encoding = b"'" + re.sub(rb"[^A-Za-z0-9_-]", b"", value[0]) + b"'"


def _setting_name(token: bytes) -> bytes:
    """A SET/RESET word as the server reads it: "quoted" names unquoted, all upper-case."""
    if token.startswith(b'"'):
        return token[1:-1].replace(b'""', b'"').upper()
    if token[:2].upper() == b"U&":
        return b"U&"
    return token


def copy_table(name: bytes) -> str:
    """'schema.table' from the name in `COPY "schema"."table" (cols) FROM stdin;`, unquoted."""
    text = name.decode("utf-8", "replace")
    parts: list[str] = []
    i = 0
    while i < len(text) and len(parts) < 2:
        if text[i] == '"':
            j = i + 1
            buf = []
            while j < len(text):
                if text[j] == '"':
                    if j + 1 < len(text) and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < len(text) and text[j] not in ". (":
                j += 1
            parts.append(text[i:j])
            i = j
        if i < len(text) and text[i] == ".":
            i += 1
        else:
            break
    return ".".join(parts)
