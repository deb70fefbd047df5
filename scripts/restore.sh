#!/usr/bin/env bash
# Restore the GK-Nexus database and uploads from an archive (verified first; a pre_restore
# safety backup is taken before anything changes; all or nothing).
#   scripts/restore.sh backups/gk-nexus-backup-20241212.tar.gz [--yes] [--dry-run] [--force]
# ARCHIVE may also be the name or id of a catalogued backup (see: nexus-backup list).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -lt 1 ]]; then
  echo "usage: scripts/restore.sh ARCHIVE [--yes] [--dry-run] [--force]" >&2
  exit 2
fi
if [[ -x "$here/.venv/bin/nexus-backup" ]]; then
  cli=("$here/.venv/bin/nexus-backup")
elif command -v nexus-backup >/dev/null 2>&1; then
  cli=(nexus-backup)
else
  echo "restore.sh: nexus-backup is not installed: run 'make install' in $here" >&2
  exit 1
fi
exec "${cli[@]}" restore "$@"
