"""api.archive.sqlscan: what a pg_dump plain dump may hold before psql sees it. Pure: no database.

Real pg_dump output is checked in tests/sources/test_dump_security.py (it needs the test
cluster).
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.archive.sqlscan import RESET_MARK, DumpError, DumpFacts, DumpScanner

KEY = b"AbC123xyz"
HEAD = b"--\n-- PostgreSQL database dump\n--\n\n\\restrict " + KEY + b"\n\n"
TAIL = b"\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict " + KEY + b"\n\n"

BODY = rb"""SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);

CREATE FUNCTION public.tricky() RETURNS text
    LANGUAGE plpgsql
    AS $_$
BEGIN
  -- COMMIT; \! touch /tmp/pwned
  RAISE NOTICE 'COMMIT; \! id';
  EXECUTE $x$ SELECT 1 $x$;
  RETURN E'\\';
END
$_$;

CREATE FUNCTION public.f_atomic(a integer) RETURNS integer
    LANGUAGE sql
    BEGIN ATOMIC
 SELECT
         CASE
             WHEN (a > 0) THEN 1
             ELSE 2
         END AS "case";
 SELECT (a + 1);
END;

CREATE TABLE "my schema"."we.ird ""name"" x" (id integer, b bytea, t text);
COMMENT ON TABLE public.t IS 'C:\path\';
/* a /* nested */ comment with \! inside */
SELECT 'it''s', E'a\'b\\', "col""x", U&'\0041', b'01', x'ff', $1::text, :foo, :'bar';

COPY public.t (id, b, t) FROM stdin;
1	\\x00ff	back\\slash
2	\N	line\nbreak \\.
\.

COPY public.empty (id) FROM stdin;
\.

COPY "my schema"."we.ird ""name"" x" (id, b, t) FROM stdin;
1	\\x5c	COPY x FROM stdin;
\.

SELECT pg_catalog.lo_create('16484');

BEGIN;

SELECT pg_catalog.lo_open('16484', 131072);
SELECT pg_catalog.lowrite(0, '\x68656c6c6f');
SELECT pg_catalog.lo_close(0);

COMMIT;
"""
DUMP = HEAD + BODY + TAIL
COUNTS = {"public.t": 2, "public.empty": 0, 'my schema.we.ird "name" x': 1}


def scan(data: bytes, size: int | None = None) -> tuple[bytes, DumpFacts]:
    scanner = DumpScanner()
    step = size or max(len(data), 1)
    out = b"".join(scanner.feed(data[i : i + step]) for i in range(0, len(data), step))
    return out, scanner.finish()


def refused(data: bytes) -> str:
    with pytest.raises(DumpError) as caught:
        scan(data)
    return str(caught.value)


def test_a_pg_dump_shaped_dump_passes_counted_with_our_lines_blanked() -> None:
    out, facts = scan(DUMP)

    assert facts.tables == COUNTS
    expected = (
        DUMP.replace(b"\\restrict " + KEY + b"\n", b"\n")
        .replace(b"\\unrestrict " + KEY + b"\n", b"\n")
        .replace(b"\nBEGIN;\n", b"\n\n")
        .replace(b"\nCOMMIT;\n", b"\n\n")
    )
    resets = [line for line in out.split(b"\n") if line.endswith(RESET_MARK)]
    assert resets, "psql's lexing settings are set back after statements"
    out = b"\n".join(line for line in out.split(b"\n") if not line.endswith(RESET_MARK))
    assert out == expected, "only the restrict lines and the large-object BEGIN/COMMIT go"
    assert out.count(b"\n") == DUMP.count(b"\n"), "no line of the file is lost"


def test_psql_lexing_settings_are_set_back_on_the_line_after_each_statement() -> None:
    sql = (
        b"SET client_encoding = 'UTF8';\n"
        b"DO $$ BEGIN EXECUTE 'SET standard_conforming_strings = off'; END $$; SELECT 1;\n"
        b"SELECT '\\'' ; COMMIT; --'\n;\n"
        b"COPY public.t (a) FROM stdin;\n1\n\\.\n"
    )
    out, facts = scan(sql)
    lines = out.split(b"\n")
    reset = b"SET standard_conforming_strings = on; SET client_encoding = 'UTF8';" + RESET_MARK
    assert lines[1] == reset
    assert lines[3] == reset, "once after a line, however many statements ended on it"
    assert lines[4].startswith(b"SELECT '")
    assert lines[5] == b";"
    assert lines[6] == reset
    assert lines[7].startswith(b"COPY ")
    assert lines[8] == b"1", "nothing between COPY and its data"
    assert facts.tables == {"public.t": 1}


def test_a_dump_without_restrict_lines_passes_as_older_pg_dump_writes_it() -> None:
    _out, facts = scan(BODY)
    assert facts.tables == COUNTS


@given(st.lists(st.integers(min_value=0, max_value=len(DUMP)), max_size=30))
def test_output_and_counts_do_not_depend_on_where_the_stream_is_split(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(DUMP)]
    scanner = DumpScanner()
    out = b"".join(scanner.feed(DUMP[a:b]) for a, b in itertools.pairwise(points))
    assert (out, scanner.finish()) == scan(DUMP)


def test_fed_one_byte_at_a_time_gives_the_same_result() -> None:
    assert scan(DUMP, 1) == scan(DUMP)


@pytest.mark.parametrize(
    ("where", "dump"),
    [
        ("first line", b"\\! touch /tmp/pwned\n" + DUMP),
        ("before restrict", b"\\! touch /tmp/pwned\n\\restrict " + KEY + b"\n" + BODY + TAIL),
        ("mid-line", HEAD + b"SELECT 1; \\! touch /tmp/pwned\n" + BODY + TAIL),
        ("mid-statement", HEAD + b"SELECT 1 \\! touch /tmp/pwned\n;\n" + BODY + TAIL),
        ("middle", HEAD + BODY.replace(b"COPY public.empty", b"\\! id\nCOPY public.empty") + TAIL),
        ("after COPY", HEAD + BODY.replace(b"\\.\n\nCOPY public.empty", b"\\.\n\\! id\n") + TAIL),
        ("after unrestrict", DUMP + b"\\! id\n"),
        ("gset", HEAD + b"SELECT 1 \\gset\n" + BODY + TAIL),
        ("semicolon", HEAD + b"SELECT 1 \\;\n" + BODY + TAIL),
        ("copy", HEAD + b"\\copy t from program 'id'\n" + BODY + TAIL),
        ("include", HEAD + b"\\i /etc/passwd\n" + BODY + TAIL),
        ("second restrict", HEAD + b"\\restrict " + KEY + b"\n" + BODY + TAIL),
        ("other unrestrict", HEAD + BODY + b"\\unrestrict other\n" + TAIL),
        ("after CR comment", HEAD + b"-- comment\r\\! id\n" + BODY + TAIL),
    ],
)
def test_a_meta_command_outside_quotes_and_copy_data_is_refused_with_its_line(
    where: str, dump: bytes
) -> None:
    message = refused(dump)
    assert "meta-command" in message or "after the closing" in message, f"{where}: {message}"
    assert message.startswith("line "), f"{where}: the message must name the line: {message}"


def test_the_refusal_names_the_line_of_the_meta_command() -> None:
    lines = DUMP.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith(b"CREATE TABLE"))
    lines.insert(at, b"SELECT 1; \\! id\n")
    assert refused(b"".join(lines)).startswith(f"line {at + 1}:")


@pytest.mark.parametrize(
    "statement",
    [
        b"COMMIT;",
        b"commit;",
        b"END;",
        b"ROLLBACK;",
        b"ABORT;",
        b"BEGIN;\nINSERT INTO t VALUES (1);",
        b"begin;",
        b"START TRANSACTION;",
        b"SAVEPOINT s;",
        b"RELEASE SAVEPOINT s;",
        b"PREPARE TRANSACTION 'x';",
        b"COMMIT PREPARED 'x';",
        b"/* hidden */ COMMIT;",
        b"SELECT 1; COMMIT;",
        b"SET ROLE postgres;",
        b"SET LOCAL ROLE postgres;",
        b"RESET ROLE;",
        b"SET SESSION AUTHORIZATION postgres;",
        b"SET LOCAL SESSION AUTHORIZATION postgres;",
        b"RESET SESSION AUTHORIZATION;",
        b'SET "role" = postgres;',
        b"SET session_authorization = postgres;",
        b"SET standard_conforming_strings = off;",
        b"SET standard_conforming_strings TO 'off';",
        b"SET client_encoding = 'SJIS';",
        b"SET client_encoding TO 'GBK';",
        b"COPY t FROM '/etc/passwd';",
        b"COPY t FROM PROGRAM 'id';",
        b"COPY t TO PROGRAM 'id';",
        b"COPY t TO stdout;",
        b"COPY t FROM stdin WITH (FORMAT csv);",
        b"COPY t FROM stdin; SELECT 1;",
        b"SELECT (1; COMMIT; SELECT 2);",
        b"CREATE FUNCTION begin() RETURNS int LANGUAGE sql RETURN 1; END;",
        b"SELECT 1E'\\'; COMMIT; --';",
    ],
)
def test_statements_pg_dump_never_writes_are_refused(statement: bytes) -> None:
    message = refused(HEAD + statement + b"\nCOPY x (a) FROM stdin;\n\\.\n" + TAIL)
    assert message.startswith("line "), message


def test_commit_then_insert_is_refused_naming_the_transaction_control() -> None:
    message = refused(HEAD + b"COMMIT;\nINSERT INTO t VALUES (1);\n" + TAIL)
    assert "transaction control (COMMIT)" in message


@pytest.mark.parametrize(
    "block",
    [
        b"BEGIN;\nSELECT pg_catalog.lo_open('1', 131072);\nDROP TABLE t;\nCOMMIT;\n",
        b"BEGIN;\nSELECT pg_catalog.lo_open('1', 131072);\nSELECT pg_catalog.lo_unlink(1);\n",
        b"BEGIN;\nSELECT pg_catalog.lowrite(0, 'x'); SELECT 1;\nCOMMIT;\n",
        b"BEGIN; SELECT pg_catalog.lo_close(0);\nCOMMIT;\n",
    ],
)
def test_a_large_object_block_holding_anything_else_is_refused(block: bytes) -> None:
    refused(HEAD + block + TAIL)


@pytest.mark.parametrize(
    ("ending", "says"),
    [
        (b"SELECT 'open string\n", "quoted string"),
        (b"SELECT $x$ open body\n", "dollar-quoted"),
        (b"/* open comment\n", "comment"),
        (b'SELECT "open identifier\n', "identifier"),
        (b"SELECT 1\n", "no closing semicolon"),
        (b"COPY t (a) FROM stdin;\n1\n", "COPY data"),
        (b"BEGIN;\nSELECT pg_catalog.lo_close(0);\n", "large-object"),
        (b"SELECT 1;", "no newline"),
    ],
)
def test_a_stream_that_ends_badly_is_refused(ending: bytes, says: str) -> None:
    assert says in refused(HEAD + BODY + ending)


def test_a_restricted_dump_without_its_unrestrict_line_is_truncated() -> None:
    assert "truncated" in refused(HEAD + BODY)


def test_a_copy_end_line_with_a_carriage_return_is_refused() -> None:
    # psql ends COPY at `\.\r\n` too: the scanner and psql must agree where data ends.
    refused(HEAD + b"COPY t (a) FROM stdin;\n1\n\\.\r\n\\! id\n\\.\n" + TAIL)


def test_a_nul_byte_is_refused() -> None:
    refused(HEAD + b"SELECT 'a\x00b';\n" + TAIL)


def test_an_e_string_ending_a_line_is_refused_because_psql_may_continue_it() -> None:
    refused(HEAD + b"SELECT E'a'\n'\\'; COMMIT; --';\n" + TAIL)


def test_backslashes_in_strings_comments_and_dollar_bodies_are_data() -> None:
    data = (
        b"SELECT '\\! id', E'\\\\! id', $$ \\! id $$, \"\\!\"; -- \\! id\n"
        b"DO $do$ BEGIN RAISE NOTICE '%', '\\! touch /tmp/x'; END $do$;\n"
    )
    scan(HEAD + data + TAIL)


def test_psql_variables_are_not_refused() -> None:
    scan(HEAD + b"SELECT :foo, :'bar', :\"baz\", a[1:2], 1::int;\n" + TAIL)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=5))
def test_junk_never_raises_anything_but_dump_error(junk: bytes, cuts: list[int]) -> None:
    points = [0, *sorted(min(c, len(junk)) for c in cuts), len(junk)]
    scanner = DumpScanner()
    with contextlib.suppress(DumpError):
        for a, b in itertools.pairwise(points):
            scanner.feed(junk[a:b])
        scanner.finish()


_SQLISH = st.lists(
    st.sampled_from(
        [
            b"SELECT 1;",
            b"'",
            b'"',
            b"$$",
            b"$a$",
            b"/*",
            b"*/",
            b"--",
            b"\n",
            b"\\! id",
            b"E'",
            b";",
            b"(",
            b")",
            b"BEGIN",
            b"ATOMIC",
            b"END",
            b"CASE",
            b"CREATE FUNCTION f() ",
            b"COMMIT",
            b"COPY t (a) FROM stdin;\n",
            b"\\.\n",
            b" ",
        ]
    ),
    max_size=40,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=500)
@given(_SQLISH)
def test_sql_shaped_junk_never_raises_anything_but_dump_error(parts: list[bytes]) -> None:
    data = b"".join(parts) + b"\n"
    with contextlib.suppress(DumpError):
        scan(data)
