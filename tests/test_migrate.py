"""Commands skip Alembic when the catalog is at the newest revision, and only then."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from api import migrate
from api.services import Services
from tests.conftest import App


def test_the_head_read_from_the_files_is_alembics_head() -> None:
    assert (
        migrate.head() == ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    )


async def test_an_older_catalog_is_migrated_and_a_current_one_is_left_alone(
    services: Services, app: App
) -> None:
    engine = services.engine
    assert await migrate.current(engine) == migrate.head()
    await migrate.downgrade(engine, "2026_12_03_backup_purge")  # one revision behind
    assert await migrate.current(engine) == "2026_12_03_backup_purge"
    assert "ix_system_backup_visible" not in app.sql("SELECT indexname FROM pg_indexes")
    await migrate.upgrade(engine)
    assert await migrate.current(engine) == migrate.head()
    assert "ix_system_backup_visible" in app.sql("SELECT indexname FROM pg_indexes")
