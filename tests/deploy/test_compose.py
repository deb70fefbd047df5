"""docker-compose.prod.yml is a valid compose file and a working stack: what the compose
schema cannot see (variables, references, mounts against the settings, healthchecks, restart
policies, scaling, the minio profile), checked as `docker compose --env-file
.env.production.example` would read it (issue #12, item 2)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.files import (
    COMPOSE,
    SECRET_SETTINGS,
    SETTINGS,
    InterpolationError,
    all_strings,
    compose,
    compose_raw,
    dockerfile_args,
    dockerfile_instructions,
    env_example,
    interpolate,
    references,
)

LONG_RUNNING = ("app", "postgres", "minio")


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration):
        total += float(number) * units[unit]
    assert total, f"not a compose duration: {duration!r}"
    return total


def _volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Named volume -> container path, for the short `name:/path` syntax."""
    mounts = {}
    for item in service.get("volumes", []):
        assert isinstance(item, str), "use the short volume syntax: NAME:/path"
        source, target = item.split(":")[:2]
        mounts[source] = target
    return mounts


def test_the_compose_schema_accepts_the_file() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_variable_is_in_the_example_or_has_a_default() -> None:
    example = env_example()
    for text in all_strings(compose_raw()):
        for ref in references(text):
            if ref.operator in (":-", "-"):
                continue
            assert ref.operator in (":?", "?"), (
                f"${{{ref.name}{ref.operator}}}: give it a default (:-) or a message (:?)"
            )
            assert example.get(ref.name), (
                f"${{{ref.name}}} is required by {COMPOSE.name} but empty or missing in "
                ".env.production.example"
            )


def test_required_variables_say_what_to_set() -> None:
    for text in all_strings(compose_raw()):
        for ref in references(text):
            if ref.operator in (":?", "?"):
                assert ref.name in ref.argument, ref
                assert ".env.production" in ref.argument, ref


def test_every_example_key_is_used_by_the_compose_file() -> None:
    used = {ref.name for text in all_strings(compose_raw()) for ref in references(text)}
    unused = sorted(set(env_example()) - used)
    assert not unused, f"keys of .env.production.example that compose never reads: {unused}"


def test_the_stack_resolves_with_the_example() -> None:
    resolved = compose()
    assert set(resolved["services"]) == {"app", "postgres", "minio", "minio-setup"}


def test_a_missing_required_variable_stops_compose() -> None:
    env = env_example()
    del env["POSTGRES_PASSWORD"]
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        compose(env)
    assert interpolate("$${x} ${A:-b}", {}) == "${x} b"


def test_the_app_gets_every_setting_and_only_from_its_own_variable() -> None:
    environment = compose_raw()["services"]["app"]["environment"]
    expected = SETTINGS | {"PORT"} | {f"{name}_FILE" for name in SECRET_SETTINGS}
    assert set(environment) == expected, (
        f"missing: {sorted(expected - set(environment))}, "
        f"unexpected: {sorted(set(environment) - expected)}"
    )
    for key, value in environment.items():
        assert [ref.name for ref in references(value)] == [key], f"{key}: {value}"


def test_the_app_gets_no_other_service_secret() -> None:
    app = compose_raw()["services"]["app"]
    assert "env_file" not in app
    names = {ref.name for text in all_strings(app) for ref in references(text)}
    assert not names & {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"}


def test_the_app_mounts_the_volumes_where_the_settings_point() -> None:
    example = env_example()
    app = compose()["services"]["app"]
    mounts = _volume_mounts(app)
    assert mounts["backups"] == example["BACKUP_DIR"] == app["environment"]["BACKUP_DIR"]
    assert mounts["uploads"] == example["UPLOADS_DIR"] == app["environment"]["UPLOADS_DIR"]
    # Without them in the env file, compose, the entrypoint and the image agree on the defaults.
    bare = {
        key: value for key, value in example.items() if key not in ("BACKUP_DIR", "UPLOADS_DIR")
    }
    defaults = compose(bare)["services"]["app"]
    image_env = " ".join(rest for word, rest in dockerfile_instructions() if word == "ENV")
    for volume, key in (("backups", "BACKUP_DIR"), ("uploads", "UPLOADS_DIR")):
        target = _volume_mounts(defaults)[volume]
        assert defaults["environment"][key] == target
        assert f"{key}={target}" in image_env, f"Dockerfile.prod ENV {key} is not {target}"


def test_named_volumes_and_services_referenced_exist() -> None:
    resolved = compose()
    services = resolved["services"]
    declared = set(resolved["volumes"])
    used = set()
    for name, service in services.items():
        for source in _volume_mounts(service):
            assert not source.startswith(("/", ".")), f"{name} bind-mounts {source}"
            assert source in declared, f"{name} mounts undeclared volume {source}"
            used.add(source)
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
    assert used == declared, f"declared but unused volumes: {sorted(declared - used)}"


def test_long_running_services_have_healthchecks_and_restart() -> None:
    services = compose()["services"]
    for name in LONG_RUNNING:
        service = services[name]
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name}'s healthcheck is disabled"
        for key in ("interval", "timeout", "start_period"):
            assert _seconds(check[key]) > 0, (name, key)
    assert services["minio-setup"]["restart"] == "no"  # a one-shot helper


def test_the_app_scales_and_stops_gracefully() -> None:
    app = compose()["services"]["app"]
    assert "container_name" not in app, "a fixed container_name breaks --scale app=N"
    assert _seconds(app["stop_grace_period"]) >= 40, "shutdown takes up to 30 s"
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/health/live" in " ".join(app["healthcheck"]["test"])
    (port,) = app["ports"]
    published, _, container = port.rpartition(":")
    assert container == app["environment"]["PORT"] == env_example()["PORT"]
    assert re.fullmatch(r"[\d.]+:\d+-\d+", published), "a host port range: one per replica"


def test_postgres_takes_its_name_and_credentials_from_the_env() -> None:
    raw = compose_raw()["services"]["postgres"]
    assert raw["container_name"] == "${POSTGRES_CONTAINER:-gk-nexus-postgres}"
    postgres = compose()["services"]["postgres"]
    example = env_example()
    for key in ("POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"):
        assert postgres["environment"][key] == example[key]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert _volume_mounts(postgres) == {"postgres": "/var/lib/postgresql/data"}


def test_the_example_database_url_reaches_the_postgres_service() -> None:
    example = env_example()
    url = urlsplit(example["DATABASE_URL"])
    assert url.hostname == "postgres"  # the compose service's name on the stack's network
    assert url.port == 5432
    assert url.username == example["POSTGRES_USER"]
    assert url.password == example["POSTGRES_PASSWORD"]
    assert url.path.strip("/") == example["POSTGRES_DB"]


def test_the_client_is_new_enough_for_the_server() -> None:
    example = env_example()
    raw_app = compose_raw()["services"]["app"]
    assert raw_app["build"]["dockerfile"] == "Dockerfile.prod"
    client = int(example["PG_MAJOR"])
    assert int(dockerfile_args()["PG_MAJOR"]) == client
    assert raw_app["build"]["args"]["PG_MAJOR"] == f"${{PG_MAJOR:-{client}}}"
    server = compose()["services"]["postgres"]["image"]
    match = re.fullmatch(r"postgres:(\d+)[\w.-]*", server)
    assert match, f"POSTGRES_IMAGE {server} names no major version"
    assert int(match[1]) <= client, f"{server} is newer than pg_dump {client}"


def test_the_uploads_volume_has_a_fixed_name_to_share() -> None:
    volumes = compose()["volumes"]
    assert volumes["uploads"]["name"] == env_example()["UPLOADS_VOLUME"]
    assert "external: true" in COMPOSE.read_text(), "the comment shows how GK-Nexus mounts it"


def test_minio_is_an_optional_profile() -> None:
    services = compose()["services"]
    for name in ("minio", "minio-setup"):
        assert services[name]["profiles"] == ["minio"], name
    for name in ("app", "postgres"):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    setup = services["minio-setup"]
    assert setup["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(setup["command"])
    assert 'mc mb --ignore-existing "minio/$BACKUP_S3_BUCKET"' in script
    assert set(setup["environment"]) >= {"BACKUP_S3_BUCKET", "BACKUP_S3_ACCESS_KEY_ID"}
