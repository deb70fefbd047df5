"""DumpScanner counts the rows of every COPY block of a plain dump, however the stream is split
(a hand-written dump with tricky quoting, and generated COPY blocks). Pure: no database.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.archive.sqlscan import DumpScanner

PLAIN_DUMP = rb'''--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);

CREATE SCHEMA "my schema";

CREATE FUNCTION public.export_clients() RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
COPY public.clients TO '/tmp/clients.csv';
COPY (SELECT 1) TO STDOUT;
END;
$$;

CREATE TABLE public.clients (id integer, name text, notes text);
CREATE TABLE public.empty_table (id integer);
CREATE TABLE "my schema"."Weird ""Name""" (id integer, "odd column" text);
CREATE TABLE public.notes (body text);

--
-- Data for Name: clients; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.clients (id, name, notes) FROM stdin;
1	Acme Ltd	first line\nsecond line
2	Back\\slash & Co	ends with an escaped backslash-dot \\.
3	\N	tab\there
\.


--
-- Data for Name: empty_table; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.empty_table (id) FROM stdin;
\.


COPY "my schema"."Weird ""Name""" (id, "odd column") FROM stdin;
1	a
2	COPY looks like a header FROM stdin;
\.


COPY public.notes (body) FROM stdin;
COPY public.fake (id) FROM stdin;
\\.
\\.\\.
plain
\.


SELECT pg_catalog.setval('public.clients_id_seq', 3, true);

--
-- PostgreSQL database dump complete
--

'''

PLAIN_DUMP_COUNTS = {
    "public.clients": 3,
    "public.empty_table": 0,
    'my schema.Weird "Name"': 2,
    "public.notes": 4,
}


def _count(chunks: list[bytes]) -> dict[str, int]:
    scanner = DumpScanner()
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner.finish().tables


def test_copy_counter_counts_rows_of_every_copy_block_of_a_plain_dump() -> None:
    assert _count([PLAIN_DUMP]) == PLAIN_DUMP_COUNTS


def test_copy_counter_gives_the_same_counts_fed_one_byte_at_a_time() -> None:
    chunks = [PLAIN_DUMP[i : i + 1] for i in range(len(PLAIN_DUMP))]
    assert _count(chunks) == PLAIN_DUMP_COUNTS


@given(st.lists(st.integers(min_value=0, max_value=len(PLAIN_DUMP)), max_size=40))
def test_copy_counter_counts_do_not_depend_on_where_the_stream_is_split(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(PLAIN_DUMP)]
    chunks = [PLAIN_DUMP[a:b] for a, b in itertools.pairwise(points)]
    assert _count(chunks) == _count([PLAIN_DUMP]) == PLAIN_DUMP_COUNTS


def _copy_escape(value: str) -> str:
    # COPY text format: backslash, newline, carriage return and tab are escaped.
    return (
        value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )


# PostgreSQL text never holds NUL, so a dump never does (and the scanner refuses one).
_VALUE = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_ROWS = st.lists(st.lists(_VALUE, min_size=1, max_size=3), max_size=8)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), _ROWS, max_size=4),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
def test_copy_counter_counts_generated_copy_blocks_however_split(
    tables: dict[str, list[list[str]]], cuts: list[int]
) -> None:
    lines = ["SET client_encoding = 'UTF8';", ""]
    for table, rows in tables.items():
        lines.append(f"COPY public.{table} (c) FROM stdin;")
        lines.extend("\t".join(_copy_escape(v) for v in row) for row in rows)
        lines.extend(["\\.", "", ""])
    dump = ("\n".join(lines) + "\n").encode()
    points = [0, *sorted(min(c, len(dump)) for c in cuts), len(dump)]

    counts = _count([dump[a:b] for a, b in itertools.pairwise(points)])

    assert counts == {f"public.{t}": len(rows) for t, rows in tables.items()}
