"""api.archive.paths.clean_member_name: the only member names the reader accepts are safe
names inside the archive layout (table tests and a hypothesis property).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.archive import manifest as fmt
from api.archive.paths import MAX_NAME_BYTES, clean_member_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("manifest.json", "manifest.json"),
        ("database.sql", "database.sql"),
        ("uploads", "uploads"),
        ("uploads/", "uploads"),
        ("./uploads/a.txt", "uploads/a.txt"),
        ("././database.sql", "database.sql"),
        ("uploads/2024/12/report.pdf", "uploads/2024/12/report.pdf"),
        ("uploads/.hidden", "uploads/.hidden"),
        ("uploads/..not-a-climb", "uploads/..not-a-climb"),
        ("uploads/a..b/c", "uploads/a..b/c"),
        ("uploads/résumé €.pdf", "uploads/résumé €.pdf"),
        ("uploads/caf\udce9.txt", "uploads/caf\udce9.txt"),
    ],
)
def test_clean_member_name_accepts_layout_names(name: str, expected: str) -> None:
    assert clean_member_name(name) == expected


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty name"),
        (".", "empty name"),
        ("./", "empty name"),
        ("/etc/passwd", "absolute path"),
        ("//uploads/x", "absolute path"),
        ("../evil", "climbs out"),
        ("./../evil", "climbs out"),
        ("uploads/../../x", "climbs out"),
        ("uploads/a/..", "climbs out"),
        ("uploads/./x", "'.' path component"),
        ("uploads//x", "empty or '.' path component"),
        ("uploads/a\x00b", "NUL byte"),
        ("etc/passwd", "outside the archive layout"),
        ("Uploads/x", "outside the archive layout"),
        ("uploads-old/x", "outside the archive layout"),
        ("database.sql/x", "outside the archive layout"),
        ("manifest.json/x", "outside the archive layout"),
        (".env", "outside the archive layout"),
        ("uploads/" + "x" * MAX_NAME_BYTES, "longer than"),
    ],
)
def test_clean_member_name_refuses_unsafe_names(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        clean_member_name(name)


_COMPONENTS = st.sampled_from(
    [
        "uploads",
        "manifest.json",
        "database.sql",
        "..",
        ".",
        "",
        "a",
        "b.txt",
        "\x00",
        "\udce9",
        "\ud800",
    ]
)
_PATHLIKE = st.builds(
    lambda prefix, parts, suffix: prefix + "/".join(parts) + suffix,
    st.sampled_from(["", "/", "./", "././", "//"]),
    st.lists(st.one_of(_COMPONENTS, st.text(max_size=5)), max_size=6),
    st.sampled_from(["", "/", "//"]),
)


@given(st.one_of(st.text(), _PATHLIKE))
def test_clean_member_name_returns_only_safe_layout_names_or_raises(name: str) -> None:
    try:
        cleaned = clean_member_name(name)
    except ValueError:
        return
    parts = cleaned.split("/")
    assert ".." not in parts, f"{name!r} -> {cleaned!r} climbs out"
    assert not cleaned.startswith("/"), f"{name!r} -> {cleaned!r} is absolute"
    assert "" not in parts, f"{name!r} -> {cleaned!r} has an empty component"
    assert "." not in parts, f"{name!r} -> {cleaned!r} has a '.' component"
    assert "\x00" not in cleaned
    assert cleaned in (fmt.MANIFEST_NAME, fmt.DATABASE_NAME) or parts[0] == fmt.UPLOADS_PREFIX, (
        f"{name!r} -> {cleaned!r} is outside the archive layout"
    )
    assert clean_member_name(cleaned) == cleaned, "cleaning must be idempotent"
