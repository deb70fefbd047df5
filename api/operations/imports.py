"""A catalog import's life: under the mutation lock (no backup publishes or deletion purges an
archive meanwhile), add every verified archive of BACKUP_DIR and the bucket that the catalog
does not list (the work: api.backups.importer)."""

from __future__ import annotations

from api.backups.importer import ImportReport, import_archives
from api.operations.backup import Mutation
from api.operations.engine import Context
from api.states import OperationKind


class ImportOp(Mutation[ImportReport]):
    """Import what the catalog does not list; the result says what was imported or refused."""

    kind = OperationKind.catalog_import

    async def run(self, ctx: Context) -> ImportReport:
        return await import_archives(ctx.services)
