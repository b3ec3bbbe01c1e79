"""Service configuration, read from ``CDS_*`` environment variables (or a ``.env`` file).

Clinical thresholds live in :mod:`cds_service.thresholds`; this module is about running the service.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.cwd() / "data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDS_", env_file=".env", extra="ignore")

    # --- HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    # Public base URL as the EHR sees it (behind a proxy); used for the JWT `aud` check.
    public_base_url: str | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    max_body_bytes: int = 5 * 1024 * 1024
    max_json_depth: int = 64
    max_array_length: int = 20_000
    # Draft orders evaluated per call; more is a 413 (cds_service.workload).
    max_draft_orders: int = Field(default=1000, ge=1)

    # --- FHIR fallback
    # One deadline for all prefetch fallback queries of a request (seconds).
    fhir_deadline_seconds: float = 0.5
    fhir_max_pages: int = 5
    fhir_page_size: int = 100

    # --- security (see README "Security")
    # JSON object: issuer -> JWKS URL, or issuer -> {"jwks_url": ..., "fhir_servers": [...]}.
    trusted_issuers: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)
    allow_insecure: bool = False
    jwt_leeway_seconds: int = 30
    redis_url: str | None = None
    # When authentication is on, the developer evaluate endpoint is off unless enabled explicitly.
    enable_fixture_endpoint: bool | None = None

    # --- storage / audit
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    audit_retention_days: int = 365
    # Key for the pseudonymous patient key (HMAC of the patient id). Generated and kept in
    # data_dir when not given, so it survives restarts of a single instance.
    patient_key_secret: str | None = None

    # --- logging
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                import json

                return json.loads(v)
            return [o.strip() for o in v.split(",") if o.strip()]
        return v

    @field_validator("trusted_issuers", mode="before")
    @classmethod
    def _check_issuers(cls, v: Any) -> Any:
        # Checked here (cds_service.auth.issuers) so a typo stops start-up with a message naming the
        # issuer and key, instead of surfacing as 401s at the first request.
        from cds_service.auth.issuers import parse_trusted_issuers

        if isinstance(v, str):
            import json

            if not v.strip():
                return {}
            try:
                v = json.loads(v)
            except ValueError as exc:
                raise ValueError(f"CDS_TRUSTED_ISSUERS is not valid JSON ({exc}).") from exc
        parse_trusted_issuers(v)
        return v

    @property
    def auth_enabled(self) -> bool:
        return bool(self.trusted_issuers)

    @property
    def fixture_endpoint_enabled(self) -> bool:
        if self.enable_fixture_endpoint is not None:
            return self.enable_fixture_endpoint
        return not self.auth_enabled

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL; a plain ``postgresql://`` URL gets the psycopg driver."""
        url = self.database_url
        if not url:
            return f"sqlite+aiosqlite:///{self.data_dir / 'cds_service.db'}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain) :]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
        return url


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
