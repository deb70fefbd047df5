"""docs/DEPLOY.md is true: the tests it names exist, the variables it names are read by the
stack, and its versions, ports and names are the files' own."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT
from tests.deploy.files import (
    COMPOSE_VARIABLES,
    SECRET_SETTINGS,
    SETTINGS,
    compose,
    dockerfile_args,
    env_example,
)

DOC = ROOT / "docs" / "DEPLOY.md"


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def test_the_tests_it_cites_exist() -> None:
    cited = re.findall(r"(tests/(?:\w+/)*test_\w+\.py)::(test_\w+)", _text())
    assert len(cited) >= 10
    for path, name in cited:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in names, f"docs/DEPLOY.md cites {path}::{name}, which does not exist"


def test_the_variables_it_names_exist() -> None:
    known = (
        SETTINGS
        | COMPOSE_VARIABLES
        | {f"{name}_FILE" for name in SECRET_SETTINGS}
        | set(dockerfile_args())
        | {"VAR", "VAR_FILE"}  # the convention's placeholders
    )
    for name in set(re.findall(r"`([A-Z][A-Z0-9_]{2,})(?:=[^`]*)?`", _text())):
        assert name in known, f"docs/DEPLOY.md names {name}, which nothing reads"


def test_its_versions_and_defaults_are_the_files() -> None:
    text = _text()
    example = env_example()
    client = int(dockerfile_args()["PG_MAJOR"])
    assert f"`postgresql-client-{client}`" in text
    assert f"PostgreSQL 13 to {client}**" in text
    assert f"default {client})" in text
    assert f"`{example['POSTGRES_IMAGE']}`" in text
    assert f"`{example['HTTP_PUBLISH']}`" in text
    assert f"named `{example['UPLOADS_VOLUME']}`" in text
    assert f"default `{example['NEXUS_NETWORK']}`" in text
    app = compose()["services"]["app"]
    assert f"allows {app['stop_grace_period'].removesuffix('s')} s" in text
    assert "docker compose -f docker-compose.prod.yml --env-file .env.production up -d" in text


def test_the_readme_links_it() -> None:
    assert "(docs/DEPLOY.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
