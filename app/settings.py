"""Lodge's configuration: one pydantic-settings class, read once by the CLI or the app factory."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev", "development", "please-change"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True)

    environment: Literal["development", "test", "production"] = Field(
        "development",
        validation_alias="LODGE_ENV",
        description="Outside development a placeholder SECRET_KEY is refused.",
    )
    database_url: str | None = Field(
        None,
        description="postgresql+asyncpg://... ; unset means an embedded PostgreSQL under LODGE_DATA_DIR.",
    )
    broadcast_url: str = Field("memory://", description="memory:// (one process) or redis://host:port/db.")
    secret_key: str | None = Field(
        None,
        description="Signs access tokens. Unset with the embedded database: generated once and kept in LODGE_DATA_DIR.",
    )
    data_dir: Path = Field(Path(".lodge"), validation_alias="LODGE_DATA_DIR")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    log_format: Literal["auto", "json", "text"] = Field(
        "auto",
        validation_alias="LODGE_LOG_FORMAT",
        description="json: one JSON object per line; text: readable lines; auto: text on a terminal, else json.",
    )
    otel_enabled: bool = Field(
        False,
        validation_alias="LODGE_OTEL",
        description="OpenTelemetry spans for operations and SQL (needs the otel extra; OTEL_EXPORTER_OTLP_*).",
    )
    otel_service_name: str = Field("lodge", validation_alias="OTEL_SERVICE_NAME")
    metrics_enabled: bool = Field(True, validation_alias="LODGE_METRICS", description="Serve Prometheus metrics.")
    metrics_port: int | None = Field(
        None,
        validation_alias="LODGE_METRICS_PORT",
        description="Serve /metrics on this port (LODGE_METRICS_HOST) instead of the API's port.",
    )
    metrics_host: str = Field("127.0.0.1", validation_alias="LODGE_METRICS_HOST")
    rate_limit_api_key_per_second: float = Field(
        200.0,
        ge=0,
        validation_alias="LODGE_RATE_LIMIT_API_KEY",
        description="Requests per second per API key (token bucket; 0 turns the limit off).",
    )
    rate_limit_api_key_burst: int = Field(2000, ge=0, validation_alias="LODGE_RATE_LIMIT_API_KEY_BURST")
    rate_limit_user_per_second: float = Field(
        20.0, ge=0, validation_alias="LODGE_RATE_LIMIT_USER", description="Requests per second per signed-in user."
    )
    rate_limit_user_burst: int = Field(200, ge=0, validation_alias="LODGE_RATE_LIMIT_USER_BURST")
    rate_limit_anonymous_per_second: float = Field(
        5.0,
        ge=0,
        validation_alias="LODGE_RATE_LIMIT_ANONYMOUS",
        description="Requests per second per client address without credentials (login, register, public reads).",
    )
    rate_limit_anonymous_burst: int = Field(100, ge=0, validation_alias="LODGE_RATE_LIMIT_ANONYMOUS_BURST")
    rate_limit_login_address_per_minute: float = Field(
        30.0,
        ge=0,
        validation_alias="LODGE_RATE_LIMIT_LOGIN_ADDRESS_PER_MINUTE",
        description="login and register attempts per minute per client address, whatever credential the "
        "request carries (0 turns the limit off).",
    )
    rate_limit_login_address_burst: int = Field(60, ge=0, validation_alias="LODGE_RATE_LIMIT_LOGIN_ADDRESS_BURST")
    rate_limit_login_email_per_minute: float = Field(
        10.0,
        ge=0,
        validation_alias="LODGE_RATE_LIMIT_LOGIN_EMAIL_PER_MINUTE",
        description="login and register attempts per minute per email address, from any client (0: off).",
    )
    rate_limit_login_email_burst: int = Field(10, ge=0, validation_alias="LODGE_RATE_LIMIT_LOGIN_EMAIL_BURST")
    shutdown_grace_seconds: int = Field(
        20,
        validation_alias="LODGE_SHUTDOWN_GRACE_SECONDS",
        description="On SIGTERM, how long requests in flight may take to finish before they are cancelled.",
    )

    db_pool_size: int = Field(20, validation_alias="LODGE_DB_POOL_SIZE")
    db_max_overflow: int = Field(
        0,
        validation_alias="LODGE_DB_MAX_OVERFLOW",
        description="Connections beyond the pool are opened and closed per use: under load, a queue is cheaper.",
    )
    db_statement_cache_size: int = Field(
        256,
        validation_alias="LODGE_DB_STATEMENT_CACHE_SIZE",
        description="Prepared statements kept per connection (compiled reads add one per query shape and page "
        "size); set 0 behind PgBouncer in transaction mode.",
    )
    db_ping_idle_seconds: float = Field(
        1.0,
        ge=0,
        validation_alias="LODGE_DB_PING_IDLE_SECONDS",
        description="A pooled connection idle longer than this is pinged before use (0: before every use).",
    )
    statement_timeout_ms: int = Field(
        30_000,
        ge=0,
        validation_alias="LODGE_STATEMENT_TIMEOUT_MS",
        description="PostgreSQL cancels a statement running longer than this (0: no limit).",
    )
    migrate_on_start: bool = Field(True, validation_alias="LODGE_MIGRATE_ON_START")

    access_token_ttl_seconds: int = Field(900, validation_alias="LODGE_ACCESS_TOKEN_TTL")
    refresh_token_ttl_seconds: int = Field(30 * 24 * 3600, validation_alias="LODGE_REFRESH_TOKEN_TTL")
    session_ttl_seconds: int = Field(
        7 * 24 * 3600, validation_alias="LODGE_SESSION_TTL", description="Default lifetime of createSession tokens."
    )
    session_sweep_seconds: float = Field(
        300.0,
        validation_alias="LODGE_SESSION_SWEEP_SECONDS",
        description="How often expired sessions are deleted and ended billing subscriptions expired.",
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, validation_alias="LODGE_MAX_BODY_BYTES")
    email_sender: str = Field(
        "console",
        validation_alias="LODGE_EMAIL_SENDER",
        description="`console` (log each message) or `module:attribute`, an object with `async send(message)`.",
    )
    oidc_issuer: str | None = Field(
        None,
        validation_alias="LODGE_OIDC_ISSUER",
        description="The identity provider whose tokens signInWithProvider takes (a Clerk frontend API URL, say).",
    )
    oidc_jwks_url: str | None = Field(
        None, validation_alias="LODGE_OIDC_JWKS_URL", description="Its keys; ISSUER/.well-known/jwks.json if unset."
    )
    oidc_audience: str | None = Field(
        None, validation_alias="LODGE_OIDC_AUDIENCE", description="The `aud` its tokens must carry, if any."
    )
    oidc_refresh_cooldown_seconds: float = Field(
        30.0,
        ge=0,
        validation_alias="LODGE_OIDC_REFRESH_COOLDOWN_SECONDS",
        description="At most one fetch of the keys per this long for key ids not seen yet.",
    )
    billing_webhook_secret: str | None = Field(
        None,
        validation_alias="LODGE_BILLING_WEBHOOK_SECRET",
        description="Signs POST /webhooks/billing events (HMAC-SHA256); unset: the endpoint is off.",
    )
    billing_webhook_tolerance_seconds: int = Field(
        300, ge=1, validation_alias="LODGE_BILLING_WEBHOOK_TOLERANCE_SECONDS"
    )
    files_dir: Path | None = Field(
        None,
        validation_alias="LODGE_FILES_DIR",
        description="Where uploaded file contents are kept; LODGE_DATA_DIR/files if unset.",
    )
    file_max_bytes: int = Field(
        100 * 1024 * 1024, ge=0, validation_alias="LODGE_FILE_MAX_BYTES", description="The largest file upload."
    )
    file_url_seconds: int = Field(
        900,
        ge=1,
        validation_alias="LODGE_FILE_URL_SECONDS",
        description="Signed upload and download URLs work for between this and twice this long.",
    )
    max_query_depth: int = Field(12, validation_alias="LODGE_MAX_QUERY_DEPTH")
    max_query_tokens: int = Field(5000, validation_alias="LODGE_MAX_QUERY_TOKENS")
    max_aliases: int = Field(30, validation_alias="LODGE_MAX_ALIASES")
    persisted_operations_dir: Path | None = Field(
        Path("graphql"),
        validation_alias="LODGE_PERSISTED_OPERATIONS_DIR",
        description="Operation documents registered at start-up (every named operation of every .graphql file).",
    )
    persisted_only: bool = Field(
        False,
        validation_alias="LODGE_PERSISTED_ONLY",
        description="Run registered operations only (by hash or in full); anything else is FORBIDDEN.",
    )
    apq: bool = Field(
        True,
        validation_alias="LODGE_APQ",
        description="Automatic persisted queries: clients may register a query by its SHA-256 and then send the hash.",
    )
    auth_cache_seconds: float = Field(
        10.0,
        ge=0,
        le=60,  # an API key's lastUsedAt is kept to the minute by the reads the cache lets through
        validation_alias="LODGE_AUTH_CACHE_SECONDS",
        description="How long a process remembers a verified caller (live login, session, API key) without "
        "asking PostgreSQL; revocations through the API are announced and take effect at once. 0: always ask.",
    )
    lean_pipeline: bool = Field(
        True,
        validation_alias="LODGE_LEAN_PIPELINE",
        description="Run ordinary HTTP queries and mutations on the lean path (README: How requests run); "
        "off: every request goes through strawberry's extension stack.",
    )
    compiled_reads: bool = Field(
        True,
        validation_alias="LODGE_COMPILED_READS",
        description="Run each compilable root field of a query as one SQL statement that writes its JSON "
        "(README: How queries run); off: every field runs its resolver.",
    )
    log_plans: bool = Field(
        False,
        validation_alias="LODGE_LOG_PLANS",
        description="Log the SQL of each compiled statement once (logger lodge.plans, level INFO).",
    )
    max_query_cost: int = Field(
        250_000,
        ge=0,
        validation_alias="LODGE_MAX_QUERY_COST",
        description="Most objects one operation may ask for, from its page sizes and nesting (0: no limit).",
    )
    max_log_bytes: int = Field(256 * 1024, validation_alias="LODGE_MAX_LOG_BYTES")
    max_batch_size: int = Field(1000, validation_alias="LODGE_MAX_BATCH_SIZE")
    # Shippers send whole buffers (Fluent Bit: one chunk of up to ~2 MB a request) and drop a batch
    # answered with a 4xx: /ingest takes more records than one GraphQL call, still bounded by the body size.
    max_ingest_records: int = Field(20_000, ge=1, validation_alias="LODGE_MAX_INGEST_RECORDS")
    subscriber_queue_bytes: int = Field(
        1 << 20,
        validation_alias="LODGE_SUBSCRIBER_QUEUE_BYTES",
        description="Bus messages buffered per subscriber; past it the subscriber catches up from PostgreSQL.",
    )

    reservation_sweep_seconds: float = Field(
        5.0,
        validation_alias="LODGE_RESERVATION_SWEEP_SECONDS",
        description="How often expired gateway reservations are released.",
    )
    retention_sweep_seconds: float = Field(
        300.0,
        validation_alias="LODGE_RETENTION_SWEEP_SECONDS",
        description="How often logs older than their project's retention are deleted.",
    )
    file_sweep_seconds: float = Field(
        300.0,
        validation_alias="LODGE_FILE_SWEEP_SECONDS",
        description="How often the stored content of deleted files is removed (a minute after deletion).",
    )
    lease_sweep_seconds: float = Field(
        5.0,
        validation_alias="LODGE_LEASE_SWEEP_SECONDS",
        description="How often executions whose runner's lease ran out are handed back.",
    )
    execution_max_attempts: int = Field(
        3,
        ge=1,
        validation_alias="LODGE_EXECUTION_MAX_ATTEMPTS",
        description="How many runners may claim an execution before a lease that runs out fails it.",
    )
    tail_poll_seconds: float = Field(
        10.0,
        validation_alias="LODGE_TAIL_POLL_SECONDS",
        description="An idle live tail checks PostgreSQL this often, in case a bus message was lost.",
    )

    cors_origins: list[str] = Field(default_factory=list, validation_alias="LODGE_CORS_ORIGINS")
    websocket_origins: list[str] = Field(
        default_factory=list,
        validation_alias="LODGE_WEBSOCKET_ORIGINS",
        description="Browser origins allowed to open websockets; empty allows same-origin and non-browser clients.",
    )
    legacy_graphql_ws: bool = Field(False, validation_alias="LODGE_LEGACY_GRAPHQL_WS")
    gc_threshold: int = Field(
        50_000,
        ge=0,
        validation_alias="LODGE_GC_THRESHOLD",
        description="Allocations between young-generation garbage collections (CPython's default is 700); "
        "objects alive at start-up are frozen out of collection. 0 leaves the collector as it is.",
    )
    websocket_compression: bool = Field(
        False,
        validation_alias="LODGE_WS_COMPRESSION",
        description="permessage-deflate on websockets: less bandwidth, much more CPU per delivered frame.",
    )
    connection_init_timeout_seconds: float = Field(5.0, validation_alias="LODGE_CONNECTION_INIT_TIMEOUT")

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if self.environment != "development" and (self.secret_key or "").strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("SECRET_KEY must be set to a real secret outside development (LODGE_ENV)")
        return self

    def resolved_files_dir(self) -> Path:
        return self.files_dir if self.files_dir is not None else self.data_dir / "files"

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once and kept under the data directory."""
        if self.secret_key and self.secret_key.strip().lower() not in PLACEHOLDER_SECRETS:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key
