"""One Settings object, read from the environment and `.env`."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.errors import ConfigError

CATALOG_SCHEMA = "nexus_backup"


class Compression(StrEnum):
    gzip = "gzip"
    zstd = "zstd"


class Environment(StrEnum):
    development = "development"
    production = "production"


class LogFormat(StrEnum):
    auto = "auto"  # json in production, text in development
    json = "json"
    text = "text"


class SmtpSecurity(StrEnum):
    starttls = "starttls"
    tls = "tls"
    none = "none"


def _check_postgres_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise ValueError(
            f"{name} must start with postgresql:// (got scheme {parts.scheme or 'none'!r}); "
            "example: postgresql://user:password@localhost:5432/gk_nexus"
        )
    if not parts.path.strip("/"):
        raise ValueError(f"{name} must name a database, e.g. postgresql://user@host:5432/gk_nexus")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", hide_input_in_errors=True, env_ignore_empty=True
    )

    database_url: SecretStr | None = Field(default=None)
    catalog_database_url: SecretStr | None = Field(default=None)
    uploads_dir: Path = Path("data/uploads")
    backup_dir: Path = Path("backups")
    backup_compression: Compression = Compression.gzip
    # gzip 1-9 (default 6), zstd 1-19 (default 3); the fast setting is zstd at level 1.
    backup_compression_level: int | None = Field(default=None, ge=1, le=19)
    app_version: str | None = None
    post_restore_command: str | None = None
    # Restore drills: semicolon-separated queries run (read-only, with a statement timeout) in
    # the scratch database a deep verify restored; each must return one row whose first column
    # is true, or the drill fails.
    verify_sql: str | None = None
    pg_bin_dir: Path | None = None
    log_level: str = "INFO"
    nexus_jwt_secret: SecretStr | None = None
    nexus_jwt_issuer: str | None = None
    nexus_jwt_audience: str | None = None
    jwt_max_lifetime_seconds: int = Field(default=24 * 3600, ge=60, le=30 * 24 * 3600)
    # Roles that may restore and delete backups (OWNER always may), e.g.
    # DESTRUCTIVE_ROLES=OWNER,GCMC_MANAGER,KAJ_MANAGER. Safety (pre_restore) backups stay
    # OWNER-only to delete.
    destructive_roles: str = "OWNER"
    login_max_failures_per_account: int = Field(default=5, ge=1, le=1000)
    login_max_failures_per_address: int = Field(default=20, ge=1, le=100_000)
    login_throttle_seconds: int = Field(default=900, ge=1, le=24 * 3600)
    # Distinct refusal rows per audit action and minute; more are counted in one summary row.
    audit_refusal_rows_per_minute: int = Field(default=100, ge=1, le=100_000)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    http_header_timeout_seconds: float = Field(default=10, gt=0, le=600)
    http_body_timeout_seconds: float = Field(default=30, gt=0, le=3600)
    http_keep_alive_seconds: int = Field(default=5, ge=1, le=600)
    http_limit_concurrency: int = Field(default=200, ge=2, le=100_000)
    # Proxies whose X-Forwarded-Proto/-For are believed (uvicorn's setting): comma-separated
    # addresses or networks, or "*".
    forwarded_allow_ips: str = "127.0.0.1,::1"
    session_hours: int = Field(default=12, ge=1, le=24 * 30)
    download_link_seconds: int = Field(default=300, ge=10, le=24 * 3600)
    cookie_secure: bool | None = None
    scheduler_enabled: bool = True
    backup_s3_endpoint: str | None = None
    backup_s3_access_key_id: SecretStr | None = None
    backup_s3_secret_access_key: SecretStr | None = None
    backup_s3_bucket: str | None = None
    backup_s3_region: str = "auto"
    backup_s3_prefix: str = ""
    backup_s3_part_size_mb: int = Field(default=16, ge=5, le=512)
    scheduler_tick_seconds: float = Field(default=60, gt=0, le=3600)
    # NEXUS_ENV=production: startup refuses default/short secrets, an unreachable database, an
    # unwritable BACKUP_DIR and a pg_dump older than the server; logs are JSON.
    nexus_env: Environment = Environment.development
    log_format: LogFormat = LogFormat.auto
    # SIGTERM: how long running operations get to stop (pg_dump killed, partials removed).
    shutdown_timeout_seconds: float = Field(default=25, gt=0, le=600)
    # Notifications (failed backup, sync, restore, drill; success when NOTIFY_ON_SUCCESS).
    notify_webhook_url: SecretStr | None = None
    notify_smtp_host: str | None = None
    notify_smtp_port: int = Field(default=587, ge=1, le=65535)
    notify_smtp_security: SmtpSecurity = SmtpSecurity.starttls
    notify_smtp_username: str | None = None
    notify_smtp_password: SecretStr | None = None
    notify_email_from: str | None = None
    notify_email_to: str = ""  # comma-separated addresses
    notify_on_success: bool = False
    # Alert when no backup has completed for this many hours (unset: no such alert).
    alert_no_backup_hours: int | None = Field(default=None, ge=1, le=24 * 366)

    @field_validator("database_url", "catalog_database_url")
    @classmethod
    def _valid_url(cls, value: SecretStr | None, info: object) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        name = getattr(info, "field_name", "DATABASE_URL").upper()
        _check_postgres_url(name, value.get_secret_value())
        return value

    @field_validator("destructive_roles")
    @classmethod
    def _destructive_roles(cls, value: str) -> str:
        from api.auth.models import ADMIN_ROLES

        roles = [role.strip() for role in value.split(",") if role.strip()]
        unknown = [role for role in roles if role not in ADMIN_ROLES]
        if unknown:
            raise ValueError(
                f"DESTRUCTIVE_ROLES may only name {', '.join(ADMIN_ROLES)} (exact, comma-"
                f"separated); got {', '.join(unknown)}"
            )
        return ",".join(dict.fromkeys(["OWNER", *roles]))

    @model_validator(mode="after")
    def _level_fits_compression(self) -> Settings:
        level = self.backup_compression_level
        top = 9 if self.backup_compression is Compression.gzip else 19
        if level is not None and level > top:
            raise ValueError(
                f"BACKUP_COMPRESSION_LEVEL {level} is out of range for "
                f"{self.backup_compression.value}: use 1-{top}"
            )
        return self

    @property
    def destructive_role_set(self) -> frozenset[str]:
        return frozenset(self.destructive_roles.split(","))

    @field_validator("nexus_jwt_issuer", "nexus_jwt_audience")
    @classmethod
    def _blank_claim_is_none(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    def check_serving(self) -> None:
        """What the HTTP service refuses to start with (the CLI's other commands do not care)."""
        secret = self.nexus_jwt_secret
        if secret is not None and len(secret.get_secret_value().encode()) < 32:
            raise ConfigError(
                "NEXUS_JWT_SECRET must be at least 32 bytes: generate one with "
                "`openssl rand -hex 32`"
            )

    @property
    def production(self) -> bool:
        return self.nexus_env is Environment.production

    @field_validator("backup_s3_endpoint", "backup_s3_bucket")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    @field_validator("backup_s3_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip().strip("/")
        if ".." in value.split("/"):
            raise ValueError("BACKUP_S3_PREFIX must not contain '..'")
        return value + "/" if value else ""

    @property
    def cloud_configured(self) -> bool:
        return bool(
            self.backup_s3_bucket
            and self.backup_s3_access_key_id
            and self.backup_s3_secret_access_key
        )

    @field_validator(
        "app_version",
        "post_restore_command",
        "notify_smtp_host",
        "notify_smtp_username",
        "notify_email_from",
    )
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ConfigError(
                "DATABASE_URL is not set: set it to the application database's URL, e.g. "
                "DATABASE_URL=postgresql://user:password@localhost:5432/gk_nexus "
                "(in the environment or .env), or run `make run` for a throwaway demo "
                "(then `source .data/demo.env` for its settings)"
            )
        return self.database_url.get_secret_value()

    def catalog_url(self) -> str:
        if self.catalog_database_url is not None:
            return self.catalog_database_url.get_secret_value()
        return self.require_database_url()

    @property
    def catalog_is_app_database(self) -> bool:
        return self.catalog_database_url is None or (
            self.database_url is not None
            and self.catalog_database_url.get_secret_value() == self.database_url.get_secret_value()
        )


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]).upper() or "settings"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {message}")
    return "; ".join(lines)


@lru_cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError(f"invalid setting: {_describe(error)}") from None
