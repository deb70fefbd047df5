"""docs/ARCHITECTURE.md is true: every path, code name and test it cites exists, every kind of
operation has its line, and the operation locks are taken only where the page says.

Citation rules the page follows (and these tests read):
- a path is written from the repository root: `api/operations/engine.py`, `api/*/router.py`;
- a code name is written in full, `api.module.attribute`, anywhere on the page;
- a test is written `tests/test_x.py::test_name`.
- a function in the picture (the first fenced block) is written `name()` and is defined in api/.
"""

from __future__ import annotations

import importlib
import re

from tests.conftest import ROOT

DOC = ROOT / "docs" / "ARCHITECTURE.md"

CITED_PATH = re.compile(r"(?<![\w./-])((?:api|tests|docs|migrations|nexus_dev|web)/[\w.*/-]*)")
CITED_NAME = re.compile(r"(?<![\w./])(api(?:\.\w+)+)")
CITED_TEST = re.compile(r"(tests/(?:\w+/)*test_\w+\.py)::(test_\w+)")
BACKTICKED = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _resolve(dotted: str) -> object:
    """The object `dotted` (api.x.y.Name.attr) names: the longest importable module, then
    attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


def _paths_missing(text: str) -> list[str]:
    missing = []
    for cited in sorted(set(CITED_PATH.findall(text))):
        cited = cited.rstrip(".")
        if "*" in cited:
            if not any(ROOT.glob(cited.rstrip("/"))):
                missing.append(cited)
        elif not (ROOT / cited).exists():
            missing.append(cited)
    return missing


def _names_missing(text: str) -> list[str]:
    missing = []
    for dotted in sorted(set(CITED_NAME.findall(text))):
        try:
            _resolve(dotted)
        except (ModuleNotFoundError, AttributeError):
            missing.append(dotted)
    return missing


def test_every_path_the_page_cites_exists() -> None:
    missing = _paths_missing(_text())
    assert missing == [], f"ARCHITECTURE.md cites paths that do not exist: {missing}"


def test_every_code_name_the_page_cites_exists() -> None:
    text = _text()
    names = set(CITED_NAME.findall(text))
    assert len(names) >= 60, f"the page's code names were not found: {sorted(names)}"
    missing = _names_missing(text)
    assert missing == [], f"ARCHITECTURE.md cites code that does not exist: {missing}"


def test_every_function_the_picture_names_is_defined_in_api() -> None:
    picture = _text().split("```")[1]
    called = set(re.findall(r"\b(\w+)\(\)", picture))
    assert len(called) >= 8, f"the picture's functions were not found: {called}"
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "api").rglob("*.py"))
    missing = sorted(name for name in called if not re.search(rf"def {name}\(", source))
    assert missing == [], f"the picture names functions that api/ does not define: {missing}"


def test_every_dotted_name_in_backticks_is_written_in_full() -> None:
    # `runner.archive` would be ambiguous (two runners) and unchecked: write api.x.y in full.
    short = [
        span
        for span in BACKTICKED.findall(_text())
        if DOTTED.fullmatch(span) and not span.startswith("api.") and not span.endswith(".py")
    ]
    assert short == [], f"write these code names as api.module.name: {short}"


def test_every_test_the_page_cites_exists() -> None:
    cited = CITED_TEST.findall(_text())
    assert len(cited) >= 10, f"the page's tests were not found: {cited}"
    missing = []
    for file, name in cited:
        path = ROOT / file
        if not path.is_file() or not re.search(
            rf"^(?:async )?def {name}\(", path.read_text(encoding="utf-8"), re.M
        ):
            missing.append(f"{file}::{name}")
    assert missing == [], f"ARCHITECTURE.md cites tests that do not exist: {missing}"


def test_a_misspelled_citation_is_caught() -> None:
    # The control: the checks above must notice a name, a path or a test that is not there.
    assert _names_missing("`api.operations.engine.Operations.sumbit`") == [
        "api.operations.engine.Operations.sumbit"
    ]
    assert _names_missing("`api.operations.engine.Operations.submit`") == []
    assert _paths_missing("`api/operations/engin.py`") == ["api/operations/engin.py"]
    assert CITED_TEST.findall("`tests/backups/test_router.py::test_x`") == [
        ("tests/backups/test_router.py", "test_x")
    ]


def test_every_module_of_api_operations_has_its_line() -> None:
    text = _text()
    modules = sorted(p.name for p in (ROOT / "api" / "operations").glob("*.py"))
    unnamed = [m for m in modules if m != "__init__.py" and m not in text]
    assert unnamed == [], f"ARCHITECTURE.md does not name these operation modules: {unnamed}"


def test_only_the_engine_takes_the_operation_locks() -> None:
    # "No lock object leaves the engine": the lock class is used only by the engine, and the
    # keys only by the operations that name them.
    uses = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "api").rglob("*.py")
        if re.search(r"\bMutationLock\b", path.read_text(encoding="utf-8"))
    }
    assert uses == {"api/locks.py", "api/operations/engine.py"}, uses
    keys = {
        path.relative_to(ROOT).parent.as_posix()
        for path in (ROOT / "api").rglob("*.py")
        if path.name != "locks.py"
        and re.search(r"\b(MUTATION_LOCK|DEEP_VERIFY_LOCK)\b", path.read_text(encoding="utf-8"))
    }
    assert keys == {"api/operations"}, keys
