"""Readers for the deployment files, as Docker Compose and Docker read them (no engine here)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from api.config import Settings
from tests.conftest import ROOT

ENV_EXAMPLE = ROOT / ".env.production.example"
COMPOSE = ROOT / "docker-compose.prod.yml"
DOCKERFILE = ROOT / "Dockerfile.prod"
DOCKERIGNORE = ROOT / ".dockerignore"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"

SETTINGS = {name.upper() for name in Settings.model_fields}
SECRET_SETTINGS = sorted(
    name.upper()
    for name, field in Settings.model_fields.items()
    if "SecretStr" in str(field.annotation)
)
# The compose file's own variables (not settings of the service), all in the example.
COMPOSE_VARIABLES = {
    "NEXUS_IMAGE",
    "PG_MAJOR",
    "PORT",
    "HTTP_PUBLISH",
    "UPLOADS_VOLUME",
    "NEXUS_NETWORK",
    "POSTGRES_IMAGE",
    "POSTGRES_CONTAINER",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "MINIO_IMAGE",
    "MINIO_MC_IMAGE",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
}
COMPOSE_SECRETS = {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"}


@dataclass
class EnvEntry:
    key: str
    value: str
    comment: str  # the comment lines right above the key, without their "# "
    line: int


_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def read_env_file(path: Path = ENV_EXAMPLE) -> list[EnvEntry]:
    """KEY=VALUE lines with the comment block directly above each (a blank line ends a block).
    Values are taken literally: the example quotes nothing."""
    entries: list[EnvEntry] = []
    comment: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            comment.append(line.lstrip("#").strip())
        elif not line.strip():
            comment = []
        else:
            match = _ASSIGNMENT.match(line)
            assert match, f"{path.name}:{number} is neither a comment nor KEY=VALUE: {line!r}"
            entries.append(EnvEntry(match[1], match[2], " ".join(comment), number))
            comment = []
    return entries


def env_example() -> dict[str, str]:
    return {entry.key: entry.value for entry in read_env_file()}


# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}; $$ is "$".
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Reference:
    name: str
    operator: str  # "", ":-", "-", ":?", "?", ":+", "+"
    argument: str


def references(value: str) -> list[Reference]:
    found = []
    for match in _VARIABLE.finditer(value):
        if match[0] == "$$":
            continue
        found.append(Reference(match[1] or match[4], match[2] or "", match[3] or ""))
    return found


class InterpolationError(Exception):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """One string as Compose interpolates it from the --env-file `env`."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match[1] or match[4], match[2] or "", match[3] or ""
        current = env.get(name)
        empty = not current
        if operator == ":-":
            return argument if empty else str(current)
        if operator == "-":
            return argument if current is None else current
        if operator in (":?", "?") and (empty if operator == ":?" else current is None):
            raise InterpolationError(f"{name}: {argument}")
        if operator == ":+":
            return "" if empty else argument
        if operator == "+":
            return "" if current is None else argument
        if current is None:
            raise InterpolationError(f"{name} is not set and has no default")
        return current

    return _VARIABLE.sub(replace, value)


def walk_strings(node: Any, env: dict[str, str]) -> Any:
    """The parsed compose file with every string value interpolated (keys stay as written)."""
    if isinstance(node, dict):
        return {key: walk_strings(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [walk_strings(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def all_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [text for value in node.values() for text in all_strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in all_strings(value)]
    return [node] if isinstance(node, str) else []


def compose_raw() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as `docker compose --env-file .env.production.example` sees it."""
    resolved: dict[str, Any] = walk_strings(compose_raw(), env_example() if env is None else env)
    return resolved


# -- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += (" " if pending else "") + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = pending.partition(" ")
            instructions.append((word.upper(), rest.strip()))
            pending = ""
    return instructions


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """The instructions of each named stage (`FROM image AS name`)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            name = rest.split()[-1] if " AS " in rest.upper() else rest
            current = stages.setdefault(name, [])
        elif current is not None:
            current.append((word, rest))
    return stages


def dockerfile_args() -> dict[str, str]:
    """Every ARG with a default, wherever it is declared."""
    args = {}
    for word, rest in dockerfile_instructions():
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    return args


# -- .dockerignore (moby/patternmatcher semantics) --------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            index += 2
            if pattern.startswith("/", index):
                out += "(?:.*/)?"
                index += 1
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        else:
            out += re.escape(char)
        index += 1
    return re.compile(out + r"\Z")


def dockerignore_excludes() -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, pattern) in file order."""
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((exception, _pattern_regex(pattern)))
    return rules


def in_build_context(path: str) -> bool:
    """Whether Docker sends `path` (relative to the repository root) with the build context:
    the last rule matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    excluded = False
    for exception, regex in dockerignore_excludes():
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not exception
    return not excluded
