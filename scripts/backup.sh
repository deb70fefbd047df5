#!/usr/bin/env bash
# Back up the GK-Nexus database and uploads to backups/{name}.tar.gz and print its path.
#   scripts/backup.sh [name]        default name: gk-nexus-backup-YYYYMMDD-HHMMSS
#   scripts/backup.sh pre-update    e.g. before a deploy
# Settings: DATABASE_URL, UPLOADS_DIR, BACKUP_DIR, ... from the environment or .env.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$here/.venv/bin/nexus-backup" ]]; then
  cli=("$here/.venv/bin/nexus-backup")
elif command -v nexus-backup >/dev/null 2>&1; then
  cli=(nexus-backup)
else
  echo "backup.sh: nexus-backup is not installed: run 'make install' in $here" >&2
  exit 1
fi
name="${1:-gk-nexus-backup-$(date -u +%Y%m%d-%H%M%S)}"
shift || true
exec "${cli[@]}" backup "$name" "$@"
