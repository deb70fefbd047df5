"""docs/RELIABILITY.md is true: every test it cites exists, and every invariant of the
specification's section 8 has its section.

Citation rules the page follows (and these tests read):
- a test is written `tests/path/test_x.py::test_name`;
- an invariant's section is headed `## Invariant N: ...`, N as numbered in the specification.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOC = ROOT / "docs" / "RELIABILITY.md"
# The specification lives beside the repository (../shared/SPEC.md) on the machines that have it.
SPEC = ROOT.parent / "shared" / "SPEC.md"
# Section 8 of the specification numbers eleven invariants; the page must keep all of them even
# where the specification is not at hand.
KNOWN_INVARIANTS = set(range(1, 12))

CITED_TEST = re.compile(r"(tests/(?:\w+/)*test_\w+\.py)::(test_\w+)")
SECTION = re.compile(r"^## Invariant (\d+):", re.M)
SPEC_ITEM = re.compile(r"^(\d+)\. ", re.M)


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _test_functions(path: Path) -> set[str]:
    """The names of the module-level test functions (sync or async) that `path` defines."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def _tests_missing(text: str) -> list[str]:
    missing = []
    for file, name in sorted(set(CITED_TEST.findall(text))):
        path = ROOT / file
        if not path.is_file() or name not in _test_functions(path):
            missing.append(f"{file}::{name}")
    return missing


def _spec_invariants(spec: str) -> set[int]:
    """The item numbers of the specification's section 8."""
    match = re.search(r"^## 8\. .*?$(.*?)(?=^## \d+\. |\Z)", spec, re.M | re.S)
    assert match is not None, "the specification has no section 8"
    return {int(number) for number in SPEC_ITEM.findall(match.group(1))}


def test_every_test_the_page_cites_exists() -> None:
    cited = CITED_TEST.findall(_text())
    assert len(cited) >= 50, f"the page's tests were not found: {cited}"
    missing = _tests_missing(_text())
    assert missing == [], f"RELIABILITY.md cites tests that do not exist: {missing}"


def test_every_invariant_has_its_section_with_tests() -> None:
    text = _text()
    sections = [int(n) for n in SECTION.findall(text)]
    assert sorted(sections) == sorted(set(sections)), f"an invariant has two sections: {sections}"
    assert set(sections) >= KNOWN_INVARIANTS, KNOWN_INVARIANTS - set(sections)
    bodies = SECTION.split(text)[1:]
    for number, body in zip(bodies[::2], bodies[1::2], strict=True):
        assert CITED_TEST.search(body), f"invariant {number} cites no test"


def test_every_invariant_of_the_specification_has_its_section() -> None:
    if not SPEC.is_file():
        pytest.skip(f"the specification is not at {SPEC}")
    numbers = _spec_invariants(SPEC.read_text(encoding="utf-8"))
    assert len(numbers) >= 11, f"the specification's invariants were not found: {numbers}"
    sections = {int(n) for n in SECTION.findall(_text())}
    assert numbers - sections == set(), f"RELIABILITY.md has no section for {numbers - sections}"


def test_the_page_has_a_gaps_list() -> None:
    assert re.search(r"^## Gaps$", _text(), re.M), "RELIABILITY.md has no Gaps section"


def test_a_misspelled_or_missing_citation_is_caught(tmp_path: Path) -> None:
    # The control: the checks above must notice a test that is not there, and a section 8 item
    # without its section.
    assert _tests_missing("`tests/backups/test_router.py::test_no_such_test`") == [
        "tests/backups/test_router.py::test_no_such_test"
    ]
    assert _tests_missing("`tests/backups/test_nowhere.py::test_x`") == [
        "tests/backups/test_nowhere.py::test_x"
    ]
    assert (
        _tests_missing(
            "`tests/operations/test_crash.py::test_two_backups_started_together_one_runs_one_is_refused`"
        )
        == []
    )
    # A name that exists only as a nested helper, not as a test function, does not count.
    module = tmp_path / "test_m.py"
    module.write_text("def helper():\n    def test_inner():\n        pass\n", encoding="utf-8")
    assert _test_functions(module) == set()
    spec = (
        "## 7. X\n1. a\n## 8. Invariants\n\n1. one\n2. two\n   more\n12. twelve\n## 9. Y\n3. no\n"
    )
    assert _spec_invariants(spec) == {1, 2, 12}
