""".env.production.example holds every setting of api/config.py, each explained with its default,
loads as it is, and holds no real secret (issue #12, item 2)."""

from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from api.config import Environment, Settings
from tests.deploy.files import (
    COMPOSE_SECRETS,
    COMPOSE_VARIABLES,
    ENV_EXAMPLE,
    SECRET_SETTINGS,
    SETTINGS,
    EnvEntry,
    env_example,
    read_env_file,
)

URL_SECRETS = {"DATABASE_URL", "CATALOG_DATABASE_URL", "NOTIFY_WEBHOOK_URL"}


def _default_text(default: object) -> str:
    """How the example writes a field's default in its comment."""
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if default == "":
        return "empty"
    return str(default)


def test_every_setting_is_in_the_example() -> None:
    keys = {entry.key for entry in read_env_file()}
    missing = sorted(SETTINGS - keys)
    assert not missing, f"settings of api/config.py missing from {ENV_EXAMPLE.name}: {missing}"


def test_every_key_is_a_setting_or_a_compose_variable() -> None:
    unknown = sorted({entry.key for entry in read_env_file()} - SETTINGS - COMPOSE_VARIABLES)
    assert not unknown, (
        f"{ENV_EXAMPLE.name} has keys that are neither settings nor compose variables: {unknown}"
    )
    assert not COMPOSE_VARIABLES & SETTINGS


def test_every_compose_variable_is_in_the_example() -> None:
    keys = {entry.key for entry in read_env_file()}
    assert keys >= COMPOSE_VARIABLES, sorted(COMPOSE_VARIABLES - keys)


def test_no_key_is_written_twice() -> None:
    keys = [entry.key for entry in read_env_file()]
    assert sorted({key for key in keys if keys.count(key) > 1}) == []


def test_every_key_has_a_comment_naming_its_default() -> None:
    fields = Settings.model_fields
    for entry in read_env_file():
        assert len(entry.comment) >= 10, f"{entry.key} (line {entry.line}) has no comment above it"
        if entry.key in SETTINGS:
            field = fields[entry.key.lower()]
            default = _default_text(field.default)
            assert re.search(rf"Default: {re.escape(default)}\b", entry.comment), (
                f"{entry.key}'s comment must say `Default: {default}`: {entry.comment!r}"
            )
        else:
            assert "Default:" in entry.comment or "Required." in entry.comment, entry


def test_the_example_loads_into_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the working tree
    settings = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    assert settings.nexus_env is Environment.production
    assert settings.backup_dir == Path("/backups")
    assert settings.uploads_dir == Path("/uploads")
    assert settings.database_url is not None
    assert settings.nexus_jwt_secret is not None
    # Long enough that what refuses it is the change-me check, not the length check.
    assert len(settings.nexus_jwt_secret.get_secret_value()) >= 32


def test_empty_values_mean_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    for entry in read_env_file():
        if entry.key in SETTINGS and entry.value == "":
            field = Settings.model_fields[entry.key.lower()]
            assert getattr(settings, entry.key.lower()) == field.default, entry.key


def test_secret_placeholders_start_with_change_me() -> None:
    values = env_example()
    for key in [*SECRET_SETTINGS, *sorted(COMPOSE_SECRETS)]:
        value = values[key]
        if not value:
            continue
        if key in URL_SECRETS and urlsplit(value).password is not None:
            value = str(urlsplit(value).password)
        assert value.startswith("change-me"), (
            f"{key} must be empty or a placeholder starting with change-me (which production "
            f"startup refuses), not {value!r}"
        )


def test_the_url_secrets_are_secret_settings() -> None:
    assert set(SECRET_SETTINGS) >= URL_SECRETS


def _entropy(text: str) -> float:
    counts = {char: text.count(char) for char in set(text)}
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


SECRET_SHAPES = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY"),
    re.compile(r"xox[abprs]-"),  # Slack tokens
    re.compile(r"hooks\.slack\.com/services/T"),
    re.compile(r"\bnxb_[A-Za-z0-9]"),  # our API tokens
    re.compile(r"eyJ[A-Za-z0-9_-]{10,}\."),  # a JWT
]


@pytest.mark.parametrize("entry", read_env_file(), ids=lambda entry: entry.key)
def test_no_value_looks_like_a_real_secret(entry: EnvEntry) -> None:
    value = entry.value
    for shape in SECRET_SHAPES:
        assert not shape.search(value), f"{entry.key} looks like a real credential"
    password = urlsplit(value).password if "://" in value else None
    if password is not None:
        assert password.startswith("change-me"), f"{entry.key} holds a real-looking password"
    for token in re.findall(r"[A-Za-z0-9+/=_-]{16,}", value):
        assert not _random_looking(token), f"{entry.key} holds a random-looking string {token!r}"


def _random_looking(token: str) -> bool:
    """Letters and digits mixed with the spread of a generated key (hex or base64)."""
    if token.startswith("change-me"):
        return False
    mixed = any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
    return mixed and _entropy(token) >= 3.3


def test_the_secret_check_catches_a_generated_key() -> None:
    assert _random_looking("3f9c1a7e55b2d08e4c6a9b1f0e7d2c8a")  # openssl rand -hex 16
    assert _random_looking("kT9sQ2vX7mL4pW8zR1nB6yC3hJ5dF0gA")  # base64
    assert not _random_looking("gk-nexus-uploads")
    assert not _random_looking("change-me-run-openssl-rand-hex-32-and-paste-it-here")


def test_an_unedited_copy_of_the_example_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Copying the example without filling it in must not start: every placeholder secret in it
    (the JWT secret, the database password inside DATABASE_URL) is one production refuses."""
    from api.startup import secret_problems

    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    problems = " ".join(secret_problems(settings))
    assert "NEXUS_JWT_SECRET" in problems
    assert "DATABASE_URL" in problems
    filled = settings.model_copy(
        update={
            "nexus_jwt_secret": SecretStr("k7Qp2vX9" * 8),
            "database_url": SecretStr("postgresql://nexus:Zt4r9Wq2Lm8x@postgres:5432/gk_nexus"),
        }
    )
    assert secret_problems(filled) == [], "a filled-in copy must pass the secret checks"
