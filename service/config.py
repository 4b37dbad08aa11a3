"""Settings from the environment (prefix ``STAFETT_``), one object for the whole service."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consent import ConsentPolicy

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every runtime setting of Stafett; see docs/OPERATIONS.md for the full list."""

    model_config = SettingsConfigDict(env_prefix="STAFETT_", extra="ignore")

    environment: str = Field(default="development", description="development | test | production")
    data_dir: Path = Field(
        default=Path(".stafett"), description="Folder for the embedded database and dev keys."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; PostgreSQL in production. Unset: SQLite under data_dir.",
    )
    database_pool_size: int = Field(
        default=10, ge=1, description="PostgreSQL connections per worker (as many again overflow)."
    )
    auto_migrate: bool = Field(
        default=False,
        description="Run database migrations at start (always on for the embedded SQLite).",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Public base URL; FHIR links and Location headers are built on it + /fhir.",
    )
    dev_auth: bool = Field(
        default=False,
        description="Trust the local dev token issuer (stafett token). Never in production.",
    )
    audience: str = Field(default="stafett", description="Required `aud` of bearer tokens.")
    trusted_issuers: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object issuer -> JWKS URL, e.g. {"https://helseid-sts.nhn.no": "..."}.',
    )
    jwks_cache_seconds: int = Field(
        default=300, ge=0, description="How long fetched JWKS keys and verified tokens are cached."
    )
    jwks_min_refresh_seconds: float = Field(
        default=15, ge=0, description="Least time between two JWKS fetches for unknown key ids."
    )
    auth_leeway_seconds: int = Field(default=30, ge=0, description="Clock skew allowed on exp/nbf.")
    access_policy: Literal["consent", "scopes-only"] = Field(
        default="consent",
        description="consent: the family's Consents decide every access (always in production);"
        " scopes-only: SMART scopes alone, for tests of FHIR mechanics and benchmarks.",
    )
    consent_age: dict[str, int] = Field(
        default_factory=lambda: {"default": 16},
        description="JSON object legal domain -> age from which the youth consents alone, e.g. "
        '{"default": 16, "health": 16, "child-welfare": 15}.',
    )
    guardians_required: Literal["one", "all"] = Field(
        default="one",
        description="one: one guardian with parental responsibility consents; all: every "
        "guardian with joint responsibility (felles) must sign.",
    )
    youth_read_age: int = Field(
        default=12, ge=0, description="Age from which the child reads their own log."
    )
    parental_codes: list[str] = Field(
        default_factory=lambda: ["felles", "mor", "far", "medmor"],
        description="Parental-responsibility codes (no-basis) that let a guardian read and "
        "consent; andre/ukjent do not by default.",
    )
    family_write_types: list[str] = Field(
        default_factory=list,
        description='Log types the family may write besides Consent, e.g. ["Communication"].',
    )
    audit_batch_size: int = Field(
        default=200, ge=1, description="Most audit events committed together (group commit)."
    )
    audit_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="How long the audit committer waits for more events before committing.",
    )
    audit_signing_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) the worker's sealer signs audit checkpoints "
        "with; unset: STAFETT_AUDIT_SIGNING_KEY, else a development key under data_dir "
        "(refused in production).",
    )
    audit_signing_key: SecretStr | None = Field(
        default=None,
        description="The audit signing key as PEM text, instead of a file.",
    )
    audit_verify_keys: list[Path] = Field(
        default_factory=list,
        description="Public keys (PEM files) of retired audit signing keys that "
        "`stafett audit verify` still accepts.",
    )
    audit_seal_interval_s: float = Field(
        default=1.0, gt=0, description="How often the sealer chains newly committed AuditEvents."
    )
    audit_checkpoint_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest time between signed audit checkpoints while AuditEvents arrive.",
    )
    audit_seal_lookback_s: float = Field(
        default=60.0,
        gt=0,
        description="How far back each sealing pass looks for late-committed AuditEvents; "
        "longer than the longest write transaction.",
    )
    audit_seal_grace_s: float = Field(
        default=900.0,
        gt=0,
        description="After this long an unsealed or out-of-order AuditEvent is suspect to "
        "`stafett audit verify`.",
    )
    role_claim: str = Field(
        default="stafett_roles",
        description='Token claim listing Stafett roles; "dpo" marks a data protection officer.',
    )
    scope_aliases: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object IdP scope -> SMART scopes, e.g. {"kommune:stafett.les": '
        '"system/*.rs"}: Maskinporten/HelseID scopes are named <prefix>:<name>.',
    )
    max_request_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    max_json_depth: int = Field(
        default=100,
        ge=8,
        le=200,
        description="Deepest nesting of objects and arrays in a JSON request body (400 beyond); "
        "capped at 200, below where validation would run out of stack.",
    )
    max_search_params: int = Field(
        default=60,
        ge=1,
        description="Most search parameters (name=value pairs, URL and form together) in one "
        "search; more get 400.",
    )
    max_search_values: int = Field(
        default=200,
        ge=1,
        description="Most comma-separated values over all parameters of one search; more get 400.",
    )
    max_bundle_entries: int = Field(
        default=1000, ge=1, description="Most entries in a batch or transaction Bundle (413 over)."
    )
    rate_limit: bool = Field(
        default=True,
        description="Throttle each caller with a token bucket (429 + Retry-After); per process.",
    )
    rate_limit_per_second: float = Field(
        default=50,
        gt=0,
        description="Requests per second each authenticated principal may sustain, per process.",
    )
    rate_limit_burst: int = Field(
        default=300, ge=1, description="Requests an authenticated principal may make at once."
    )
    rate_limit_anonymous_per_second: float = Field(
        default=10,
        gt=0,
        description="Requests per second per client IP without a valid token, per process.",
    )
    rate_limit_anonymous_burst: int = Field(
        default=60, ge=1, description="Requests a client IP without a valid token may make at once."
    )
    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API cross-origin, e.g. "
        '["https://app.kommune.no"]; empty: no CORS headers at all.',
    )
    hsts_seconds: int = Field(
        default=0,
        ge=0,
        description="Strict-Transport-Security max-age sent on every response; 0: none (set "
        "31536000 in production behind TLS).",
    )
    default_page_size: int = Field(default=20, ge=1, description="Search page size without _count.")
    max_page_size: int = Field(default=500, ge=1, description="Upper limit of _count.")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port,host:port) for `stafett worker`; "
        "unset: the in-process bus (one process, nothing leaves it).",
    )
    kafka_client_config: dict[str, Any] = Field(
        default_factory=dict,
        description='Extra kafka-python client settings as JSON, e.g. {"security_protocol": '
        '"SSL", "ssl_cafile": "/etc/kafka/ca.pem"}.',
    )
    outbox: bool = Field(
        default=True,
        description="Write a change event to the outbox with every write of a child's log.",
    )
    subscribers: list[str] = Field(
        default_factory=list,
        description="Org numbers that get every change of the logs they may see, besides the "
        "CareTeam members and Task owners of each log.",
    )
    ingest_scopes: str = Field(
        default="system/*.crus",
        description="SMART scopes granted to a message from stafett.inbound (the sending "
        "organisation's Kafka ACL is its authentication); consent still decides.",
    )
    relay_batch_size: int = Field(default=500, ge=1, description="Outbox rows published at once.")
    relay_poll_ms: float = Field(
        default=20, ge=1, description="How often the relay looks for new outbox rows when idle."
    )
    consumer_fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        description="How long the broker holds a fetch for more data: the floor of end-to-end "
        "latency (kafka-python's default 500 adds half a second).",
    )
    consumer_session_timeout_ms: int = Field(
        default=10_000, ge=1000, description="Kafka consumer group session timeout."
    )
    consumer_max_poll_interval_ms: int = Field(
        default=300_000, ge=1000, description="Kafka consumer max.poll.interval.ms."
    )
    connectors_admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the connectors' admin API (`stafett connectors run`) "
        "requires; unset: no token (bind the admin port to a private network).",
    )
    scheduler_interval_s: float = Field(
        default=60, gt=0, description="How often the worker looks for time-based events."
    )
    consent_expiry_notice_days: int = Field(
        default=30, ge=1, description='Days before a Consent ends that "expires soon" is sent.'
    )
    retention_years: int = Field(
        default=3,
        ge=0,
        description="Years after a child's last log was closed (CarePlan completed/revoked, "
        "period.end) before everything about the child is deleted (municipal policy; "
        "docs/security/data-lifecycle.md).",
    )
    retention_require_archive: bool = Field(
        default=True,
        description="Delete only children whose closed log was archived first "
        "(`stafett lifecycle archive`), so nothing leaves before the archive has it.",
    )
    lifecycle_interval_s: float = Field(
        default=3600,
        gt=0,
        description="How often the worker's lifecycle component looks for logs past retention.",
    )
    encryption_at_rest: bool = Field(
        default=True,
        description="Encrypt notes, descriptions, messages and attachments in the database "
        "(docs/security/encryption-at-rest.md). Off only on purpose, e.g. for a throwaway demo.",
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="Key encryption keys as `kid:base64` pairs, comma-separated (32-byte keys; "
        "`stafett keys generate` makes one). Old keys stay listed until retired.",
    )
    encryption_keyring: Path | None = Field(
        default=None,
        description="JSON keyring file with the key encryption keys and the active one; "
        "`stafett keys rotate` adds keys to it. Unset outside production: one is made under "
        "data_dir.",
    )
    encryption_active_key: str | None = Field(
        default=None,
        description="Key id new data is encrypted with; unset: the keyring's active key, else "
        "the last of STAFETT_ENCRYPTION_KEYS.",
    )
    log_json: bool = Field(default=True, description="One JSON object per log line.")
    otel_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP endpoint of an OpenTelemetry collector, e.g. "
        "http://otel-collector:4318: traces FHIR requests and bus messages (needs the otel "
        "extra); unset: no tracing.",
    )

    @model_validator(mode="after")
    def _refuse_insecure_production(self) -> Self:
        if self.environment == "production":
            if self.dev_auth:
                raise ValueError("STAFETT_DEV_AUTH must not be on in production")
            if self.database_url is None or self.database_url.startswith("sqlite"):
                raise ValueError("production needs STAFETT_DATABASE_URL pointing at PostgreSQL")
            if not self.trusted_issuers:
                raise ValueError("production needs STAFETT_TRUSTED_ISSUERS")
            if self.access_policy != "consent":
                raise ValueError("STAFETT_ACCESS_POLICY must be consent in production")
        return self

    @cached_property
    def effective_database_url(self) -> str:
        """Return the configured database URL, or the embedded SQLite file under data_dir."""
        if self.database_url:
            url = self.database_url
            # Accept plain libpq URLs; SQLAlchemy needs the psycopg 3 driver named.
            for prefix in ("postgresql://", "postgres://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{(self.data_dir / 'stafett.db').resolve()}"

    def consent_policy(self) -> ConsentPolicy:
        """Return the municipal consent policy these settings describe."""
        return ConsentPolicy(
            consent_age=dict(self.consent_age),
            guardians_required=self.guardians_required,
            youth_read_age=self.youth_read_age,
            parental_codes=frozenset(self.parental_codes),
            family_write_types=frozenset(self.family_write_types),
            revision=f"settings:{hash_settings(self)}",
        )

    @property
    def fhir_base(self) -> str:
        """Return the public FHIR base URL."""
        return self.base_url.rstrip("/") + "/fhir"


def hash_settings(settings: Settings) -> str:
    """Return a short fingerprint of the consent settings, recorded with every decision."""
    text = "|".join(
        str(value)
        for value in (
            sorted(settings.consent_age.items()),
            settings.guardians_required,
            settings.youth_read_age,
            sorted(settings.parental_codes),
            sorted(settings.family_write_types),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]
