#!/bin/sh
# The image's entrypoint, run under tini (PID 1), which forwards SIGTERM to it. It reads the
# secrets' *_FILE variants, refuses root, defaults NEXUS_ENV to production, then execs:
#   (nothing) | serve [OPTIONS]   nexus-backup serve on 0.0.0.0:${PORT:-8000}: API, page, scheduler
#   sh | bash [ARGS]              a shell
#   nexus-backup ARGS             the same as ARGS alone
#   anything else                 nexus-backup ARGS, e.g. `backup nightly`, `restore NAME --yes`
# exec keeps the process's PID, so the signal reaches the server itself, not this shell.
set -eu

die() {
  printf 'nexus-backup entrypoint: %s\n' "$*" >&2
  exit 1
}

# The settings that are secrets (SecretStr in api/config.py). VAR_FILE=/run/secrets/x sets VAR
# to the file's contents (trailing newlines dropped), as the official postgres image does.
SECRET_VARS="DATABASE_URL CATALOG_DATABASE_URL NEXUS_JWT_SECRET BACKUP_S3_ACCESS_KEY_ID
BACKUP_S3_SECRET_ACCESS_KEY NOTIFY_SMTP_PASSWORD NOTIFY_WEBHOOK_URL"

file_env() {
  var=$1
  eval "value=\${$var:-}"
  eval "file=\${${var}_FILE:-}"
  if [ -n "$value" ] && [ -n "$file" ]; then
    die "both $var and ${var}_FILE are set: set only one of them"
  fi
  if [ -n "$file" ]; then
    [ -f "$file" ] && [ -r "$file" ] || die "${var}_FILE=$file is not a readable file"
    value=$(cat -- "$file")
    export "$var=$value"
  fi
  unset "${var}_FILE"
}

if [ "$(id -u)" = 0 ]; then
  die "refusing to run as root: run as the image's user (10001), e.g. drop \`user: root\` / \`-u 0\`"
fi

for var in $SECRET_VARS; do
  file_env "$var"
done
unset var value file

export NEXUS_ENV="${NEXUS_ENV:-production}"

if [ "$#" -eq 0 ]; then
  set -- serve
fi

case "$1" in
  serve)
    shift
    exec nexus-backup serve --host 0.0.0.0 --port "${PORT:-8000}" "$@"
    ;;
  sh | bash | nexus-backup)
    exec "$@"
    ;;
  *)
    exec nexus-backup "$@"
    ;;
esac
