"""States, types and phases are defined once (api/states.py) and reach the OpenAPI document, the
CLI's choices and the catalog's CHECK constraints unchanged; backup names follow one rule
(api/backups/names.py) in the schema and in the service."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import CheckConstraint, Table, text
from sqlalchemy.exc import IntegrityError

from api.backups import names
from api.backups.models import SystemBackup
from api.backups.schemas import BackupCreate
from api.config import Settings
from api.db import transaction
from api.errors import BadRequest
from api.main import create_app
from api.services import Services
from api.states import (
    API_BACKUP_TYPES,
    CLI_BACKUP_TYPES,
    AuditOutcome,
    BackupPhase,
    BackupStatus,
    BackupType,
    Compression,
    RestorePhase,
    RestoreStatus,
    SyncStatus,
)

ENUMS: tuple[type[StrEnum], ...] = (
    AuditOutcome,
    BackupPhase,
    BackupStatus,
    BackupType,
    Compression,
    RestorePhase,
    RestoreStatus,
    SyncStatus,
)


def values(enum: type[StrEnum] | tuple[StrEnum, ...]) -> list[str]:
    return [member.value for member in enum]


def ref(enum: type[StrEnum]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{enum.__name__}"}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app(Settings(_env_file=None)).openapi()


def test_openapi_publishes_every_state_enum_with_its_stored_values(
    openapi: dict[str, Any],
) -> None:
    schemas = openapi["components"]["schemas"]
    for enum in ENUMS:
        assert schemas[enum.__name__]["enum"] == values(enum), enum.__name__


def test_api_schemas_refer_to_the_enums_for_states_types_and_phases(
    openapi: dict[str, Any],
) -> None:
    schemas = openapi["components"]["schemas"]
    backup = schemas["BackupOut"]["properties"]
    assert backup["status"] == ref(BackupStatus)
    assert backup["type"] == ref(BackupType)
    assert backup["compression"] == ref(Compression)
    assert backup["syncStatus"] == ref(SyncStatus)
    assert ref(BackupPhase) in schemas["Progress"]["properties"]["phase"]["anyOf"]
    restore = schemas["RestoreOut"]["properties"]
    assert restore["status"] == ref(RestoreStatus)
    assert ref(RestorePhase) in restore["phase"]["anyOf"]
    assert schemas["AuditOut"]["properties"]["outcome"] == ref(AuditOutcome)


def test_backup_create_offers_exactly_the_api_backup_types(openapi: dict[str, Any]) -> None:
    kind = openapi["components"]["schemas"]["BackupCreate"]["properties"]["type"]
    assert kind["enum"] == values(API_BACKUP_TYPES)
    assert kind["default"] == BackupType.manual


def test_backup_list_filters_take_the_status_and_type_enums(openapi: dict[str, Any]) -> None:
    parameters = openapi["paths"]["/backups"]["get"]["parameters"]
    schema = {parameter["name"]: parameter["schema"] for parameter in parameters}
    assert ref(BackupStatus) in schema["status"]["anyOf"]
    assert ref(BackupType) in schema["type"]["anyOf"]


def _choices(command: click.Command, name: str) -> list[str]:
    option = next(param for param in command.params if param.name == name)
    assert isinstance(option.type, click.Choice), f"--{name} is not a choice"
    return list(option.type.choices)


def test_cli_choices_are_the_enum_values() -> None:
    from api.cli import backup, list_command

    assert _choices(list_command, "status") == values(BackupStatus)
    assert _choices(list_command, "kind") == values(BackupType)
    assert _choices(backup, "kind") == values(CLI_BACKUP_TYPES)


COLUMNS: dict[str, type[StrEnum]] = {
    "type": BackupType,
    "status": BackupStatus,
    "sync_status": SyncStatus,
}


def constraint_names() -> dict[str, str]:
    """Each enum column's CHECK constraint name, as the model declares it."""
    found: dict[str, str] = {}
    table = SystemBackup.__table__
    assert isinstance(table, Table)
    for constraint in table.constraints:
        if isinstance(constraint, CheckConstraint):
            column = str(constraint.sqltext).split(" IN ", 1)[0]
            found[column] = str(constraint.name)
    return found


async def test_catalog_check_constraints_list_exactly_the_enum_values(
    services: Services,
) -> None:
    async with transaction(services.sessions) as session:
        rows = (
            await session.execute(
                text(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conname = ANY(:names)"
                ),
                {"names": list(constraint_names().values())},
            )
        ).all()
    found = {name: sorted(re.findall(r"'([^']*)'", definition)) for name, definition in rows}
    assert found == {
        constraint_names()[column]: sorted(values(enum)) for column, enum in COLUMNS.items()
    }, "the model's CHECK constraints differ from the catalog's: names or values"


def _backup(number: int, column: str, value: str) -> SystemBackup:
    columns: dict[str, str] = {
        "type": BackupType.manual,
        "status": BackupStatus.completed,
        "sync_status": SyncStatus.none,
        column: value,
    }
    return SystemBackup(
        id=f"00000000-0000-0000-0000-{number:012d}",
        name=f"states-{number}",
        created_at=datetime(2026, 12, 3, 12, 0, tzinfo=UTC),
        **columns,
    )


async def test_catalog_stores_every_enum_member_and_refuses_any_other_value(
    services: Services,
) -> None:
    members = [(column, member) for column, enum in COLUMNS.items() for member in enum]
    async with transaction(services.sessions) as session:
        session.add_all(_backup(n, column, member) for n, (column, member) in enumerate(members))
    async with transaction(services.sessions) as session:
        stored = (
            await session.execute(text("SELECT type, status, sync_status FROM system_backup"))
        ).all()
    for column, enum in COLUMNS.items():
        assert {getattr(row, column) for row in stored} == set(values(enum)), column

    for column in COLUMNS:
        with pytest.raises(IntegrityError, match=constraint_names()[column]):
            async with transaction(services.sessions) as session:
                session.add(_backup(999, column, "done"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="aZ09._-/ \n", max_size=140))
def test_the_schema_and_the_service_accept_the_same_names_but_dotdot(name: str) -> None:
    try:
        BackupCreate(name=name)
        schema_accepts = True
    except ValidationError:
        schema_accepts = False
    try:
        names.check_name(name)
        service_accepts = True
    except BadRequest:
        service_accepts = False
    # The schema refuses what the pattern refuses (422); the service also refuses '..' (400).
    assert service_accepts == (schema_accepts and ".." not in name), name
    assert names.is_plain_name(name) == service_accepts, name


def test_a_name_may_carry_its_archive_suffix() -> None:
    assert names.check_name("nightly.tar.zst") == "nightly"
    with pytest.raises(BadRequest, match="1-128 letters"):
        names.check_name("a..b.tar.gz")
