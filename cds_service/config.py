"""Service configuration, read from ``CDS_*`` environment variables (or a ``.env`` file).

Clinical thresholds live in ``cds_service/clinical/thresholds.py``; this module is about running the service. Any
setting can also be read from a file named by ``CDS_<NAME>_FILE`` (Docker and Kubernetes secrets), e.g.
``CDS_PATIENT_KEY_SECRET_FILE=/run/secrets/patient_key``.

:func:`load_configuration` checks every setting the service and the clinical engine read (service
settings, thresholds, the site code file) and turns each mistake into one line that names the setting and
what it expects (:class:`ConfigurationError`), never a traceback. The CLI prints those lines and exits 2.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "CDS_"
ENV_FILE = ".env"
DATABASE_URL_FORMS = "sqlite:///<path> or postgresql://<user>@<host>:<port>/<database>"


def _default_data_dir() -> Path:
    return Path.cwd() / "data"


class ConfigurationError(ValueError):
    """One or more settings are wrong. ``lines`` holds one human sentence per mistake."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


class FileVariables(PydanticBaseSettingsSource):
    """``CDS_<NAME>_FILE=/path``: the value of ``CDS_<NAME>`` read from that file, trailing newline removed.

    Looked up in the environment and in ``.env``. Setting both ``CDS_<NAME>`` and ``CDS_<NAME>_FILE`` is an
    error rather than a silent choice, and so is a file that cannot be read.
    """

    def __init__(self, settings_cls: type[BaseSettings], *variables: Mapping[str, str | None]) -> None:
        super().__init__(settings_cls)
        self.variables = variables

    def _lookup(self, name: str) -> str | None:
        for source in self.variables:
            for key in (name.lower(), name):
                value = source.get(key)
                if value is not None:
                    return value
        return None

    def get_field_value(self, field, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            variable = env_name(name) + "_FILE"
            path = self._lookup(variable)
            if not path:
                continue
            if self._lookup(env_name(name)) is not None:
                raise ConfigurationError([f"Configuration error in {variable}: expected {env_name(name)} or "
                                          f"{variable}, not both."])
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                raise ConfigurationError([f"Configuration error in {variable}: expected a readable file holding "
                                          f"the value of "
                                          f"{env_name(name)} ({path}: {reason.lower()})."]) from None
            values[name] = text.rstrip("\r\n")
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=ENV_FILE, extra="ignore")

    # --- HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Public base URL as the EHR sees it (behind a proxy); used for the JWT `aud` check.
    public_base_url: str | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    # Answer private-network preflights (a page on a public https origin, such as the public CDS Hooks
    # sandbox, calling this service on localhost or a private address) for the allowed origins.
    cors_private_network: bool = True
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(64, ge=4)
    max_array_length: int = Field(20_000, ge=1)
    # Draft orders evaluated per call; more is a 413 (cds_service.workload).
    max_draft_orders: int = Field(1000, ge=1)

    # --- FHIR fallback
    # One deadline for all prefetch fallback queries of a request (seconds).
    fhir_deadline_seconds: float = Field(0.5, gt=0)
    fhir_max_pages: int = Field(5, ge=1)

    # --- security (see README "Security")
    # JSON object: issuer -> JWKS URL, or issuer -> {"jwks_url": ..., "fhir_servers": [...]}.
    trusted_issuers: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)
    allow_insecure: bool = False
    jwt_leeway_seconds: int = Field(30, ge=0)
    redis_url: str | None = None
    # When authentication is on, the developer evaluate endpoint is off unless enabled explicitly.
    enable_fixture_endpoint: bool | None = None

    # --- SMART app: the treatment timeline opened from cards (docs/timeline.md)
    # JSON object: issuer -> {"client_id": ..., "frame_ancestors": [...], ...}; see cds_service/smart/clients.py.
    smart_clients: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)
    # Cards answered without authentication (development, the preview page, `evaluate`) carry the link too.
    smart_links_unauthenticated: bool = False
    smart_launch_ttl_seconds: int = Field(300, ge=30, le=3600)
    # One deadline for every FHIR read of a timeline (longer than the hook fallback's: a person waits for a page).
    smart_fhir_deadline_seconds: float = Field(10.0, gt=0, le=120)
    # Development: a SMART launcher (e.g. the test EHR's /ehr/launch) the preview page opens smart links with.
    smart_preview_launcher: str | None = None

    # --- services: a YAML file of a site's own services, beside the built-in ones (cds_service/services.py)
    extra_services: Path | None = None

    # --- storage / audit
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    audit_retention_days: int = 365
    # Key for the pseudonymous patient key (HMAC of the patient id). Generated and kept in
    # data_dir when not given, so it survives restarts of a single instance.
    patient_key_secret: str | None = None

    # --- rule governance (cds_service/governance): per-rule on | shadow | off, YAML; unset = every rule on
    rules_file: Path | None = None

    # --- logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool = True

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        files = FileVariables(settings_cls, getattr(env_settings, "env_vars", {}),
                              getattr(dotenv_settings, "env_vars", {}))
        return init_settings, env_settings, files, dotenv_settings, file_secret_settings

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                import json

                try:
                    return json.loads(v)
                except ValueError:
                    raise ValueError("a JSON list of origins or a comma-separated list") from None
            return [o.strip() for o in v.split(",") if o.strip()]
        return v

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError("'*' or origins such as https://sandbox.cds-hooks.org (scheme and host, "
                                 "comma-separated)")
        return v

    @field_validator("trusted_issuers", mode="before")
    @classmethod
    def _check_issuers(cls, v: Any) -> Any:
        # Checked here (cds_service.auth.issuers) so a typo stops start-up with a message naming the
        # issuer and key, instead of surfacing as 401s at the first request. Without issuers the auth
        # package (JWT and crypto libraries) is not imported at all.
        if v is None or v == {} or (isinstance(v, str) and not v.strip()):
            return {} if isinstance(v, str) else v
        from cds_service.auth.issuers import parse_trusted_issuers

        if isinstance(v, str):
            import json

            if not v.strip():
                return {}
            try:
                v = json.loads(v)
            except ValueError as exc:
                raise ValueError(f"a JSON object mapping each issuer to its JWKS URL (not valid JSON: "
                                 f"{exc.msg} at line {exc.lineno} column {exc.colno})") from None
        parse_trusted_issuers(v)
        return v

    @field_validator("smart_clients", mode="before")
    @classmethod
    def _parse_smart_clients(cls, v: Any) -> Any:
        if isinstance(v, str):
            import json

            if not v.strip():
                return {}
            try:
                v = json.loads(v)
            except ValueError as exc:
                raise ValueError(f"a JSON object mapping each issuer to its SMART client (not valid JSON: "
                                 f"{exc.msg} at line {exc.lineno} column {exc.colno})") from None
        return v

    @model_validator(mode="after")
    def _check_smart_clients(self) -> Settings:
        # Checked against the trusted issuers here, so a client for an issuer that is not trusted stops start-up.
        if self.smart_clients:
            from cds_service.smart.clients import parse_smart_clients

            parse_smart_clients(self.smart_clients, self.trusted_issuers)
        return self

    @field_validator("smart_preview_launcher")
    @classmethod
    def _check_launcher(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("the http(s) URL of a SMART launcher, such as http://127.0.0.2:9000/ehr/launch")
        return v or None

    @field_validator("extra_services")
    @classmethod
    def _check_extra_services(cls, v: Path | None) -> Path | None:
        # Loaded here, so a mistake in the file stops start-up with one line naming the entry.
        if v is None or not str(v).strip():
            return None
        from cds_service.services import ServicesError, load_registry

        try:
            load_registry(v)
        except ServicesError as exc:
            raise ValueError(f"a YAML file of services like cds_service/data/services.yaml ({exc})") from None
        return v

    @field_validator("data_dir")
    @classmethod
    def _check_data_dir(cls, v: Path) -> Path:
        # Checked here, not at the first write, so a wrong path stops start-up with a line naming the setting.
        if v.exists() and not v.is_dir():
            raise ValueError(f"a directory ({v} is a file)")
        existing = next(p for p in (v, *v.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"a directory this process can create and write ({existing} is not writable)")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("public_base_url")
    @classmethod
    def _check_base_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("the http(s) URL EHRs call, such as https://cds.example.org")
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("a redis://host:6379/0 (or rediss://, unix://) URL")
        return v or None

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(v).get_backend_name()
        except (ArgumentError, ValueError):
            raise ValueError(f"a database URL: {DATABASE_URL_FORMS}") from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"a SQLite or PostgreSQL URL ({DATABASE_URL_FORMS}); '{backend}' is not supported")
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

    @property
    def database_label(self) -> str:
        """Which database this is, for people: the SQLite file, or the server URL without credentials."""
        from sqlalchemy.engine import make_url

        url = make_url(self.sqlalchemy_url)
        if url.get_backend_name() == "sqlite":
            return f"SQLite {url.database or ':memory:'}"
        # user, password and query parameters (which may carry a password) stay out
        port = f":{url.port}" if url.port else ""
        return f"PostgreSQL {url.host or 'localhost'}{port}/{url.database or ''}"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


# --------------------------------------------------------------------------- one line per mistake
def _describe_type(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(annotation))
    args = [a for a in get_args(annotation) if a is not type(None)]
    if args and get_origin(annotation) is not Annotated:
        annotation = args[0]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    if get_origin(annotation) is dict or annotation is dict:
        return "a JSON object"
    if get_origin(annotation) is list:
        return "a list"
    if annotation is Path:
        return "a path"
    return "text"


def _describe_bounds(field) -> str:
    bounds: dict[str, Any] = {}
    for item in field.metadata:
        for key in ("ge", "gt", "le", "lt"):
            value = getattr(item, key, None)
            if value is not None:
                bounds[key] = value
    if "ge" in bounds and "le" in bounds:
        return f" from {bounds['ge']} to {bounds['le']}"
    parts = []
    if "gt" in bounds:
        parts.append(f"above {bounds['gt']}")
    if "ge" in bounds:
        parts.append(f"of at least {bounds['ge']}")
    if "lt" in bounds:
        parts.append(f"below {bounds['lt']}")
    if "le" in bounds:
        parts.append(f"of at most {bounds['le']}")
    return (" " + " and ".join(parts)) if parts else ""


def expected_value(model: type[BaseSettings], field_name: str) -> str:
    """What a setting accepts, in words: 'a whole number from 1 to 65535', 'true or false' ..."""
    field = model.model_fields[field_name]
    return _describe_type(field.annotation) + _describe_bounds(field)


def _where(variable: str, dotenv: Mapping[str, str | None]) -> str:
    if variable in os.environ or variable + "_FILE" in os.environ:
        return ""
    if variable.lower() in dotenv or variable in dotenv:
        return f" (set in {ENV_FILE})"
    return ""


def _dotenv_vars() -> Mapping[str, str | None]:
    if not Path(ENV_FILE).is_file():
        return {}
    from dotenv import dotenv_values

    try:
        return {k.lower(): v for k, v in dotenv_values(ENV_FILE).items()}
    except (OSError, UnicodeDecodeError):
        return {}


def describe_errors(exc: ValidationError, model: type[BaseSettings]) -> list[str]:
    """One line per error: the environment variable, what it expects, and where the value came from.

    The value itself is never repeated: it may be a secret (a database password, the patient key secret).
    """
    dotenv = _dotenv_vars()
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = err.get("loc") or ()
        name = str(loc[0]) if loc else ""
        if name not in model.model_fields:  # a check across settings: its message names them
            message = str(err.get("msg", "")).removeprefix("Value error, ")
            lines.extend(f"Configuration error: {line}" for line in message.splitlines() if line.strip())
            continue
        variable = env_name(name)
        where = _where(variable, dotenv)
        if err.get("type") == "value_error":  # our validators say what they expect
            expected = str(err.get("msg", "")).removeprefix("Value error, ").rstrip(".")
            if expected.startswith(variable):  # a message that already names the setting (and the key in it)
                lines.append(f"Configuration error in {expected}{where}.")
                continue
        else:
            expected = expected_value(model, name)
        lines.append(f"Configuration error in {variable}{where}: expected {expected}.")
    return lines


def _load(model: type[BaseSettings], make=None) -> BaseSettings:
    """``make()`` (by default ``model()``), its validation errors as one line per setting."""
    try:
        return (make or model)()
    except ValidationError as exc:
        raise ConfigurationError(describe_errors(exc, model)) from None


def _check_site_codes() -> None:
    """The site code file (``CDS_EXTRA_CODES``) exists and holds codes the value sets accept."""
    from cds_service.clinical.terminology import SiteCodes, get_terminology

    path = _load(SiteCodes).extra_codes
    if not path:
        return
    where = _where("CDS_EXTRA_CODES", _dotenv_vars())
    if not Path(path).is_file():
        raise ConfigurationError([f"Configuration error in CDS_EXTRA_CODES{where}: expected a YAML or JSON file "
                                  f"of site codes (there is no file at {path})."])
    try:
        get_terminology()
    except Exception as exc:  # noqa: BLE001 - yaml, json, OSError, our own ValueError: all one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigurationError([f"Configuration error in CDS_EXTRA_CODES{where}: expected a YAML or JSON file "
                                  f"of site codes ({reason[:300]})."]) from None


def _check_rule_modes() -> None:
    """The site rule-mode file (``CDS_RULES_FILE``), when set, names existing rules and modes."""
    from cds_service.governance.modes import RuleModesError, load_rule_modes

    try:
        path = _load(Settings, get_settings).rules_file
    except ConfigurationError:
        return  # reported with the other settings
    if not path:
        return
    try:
        load_rule_modes(path)
    except RuleModesError as exc:
        where = _where("CDS_RULES_FILE", _dotenv_vars())
        raise ConfigurationError([f"Configuration error in CDS_RULES_FILE{where}: expected a YAML file of rule "
                                  f"modes (on, shadow, off) ({str(exc)[:300]})."]) from None


def load_configuration() -> Settings:
    """Every setting checked (service, clinical thresholds, site codes); :class:`ConfigurationError` if any
    is wrong. The checked objects are the ones the service then uses (the getters' caches)."""
    from cds_service.clinical import thresholds

    get_settings.cache_clear()
    thresholds.get_thresholds.cache_clear()
    lines: list[str] = []
    settings = None
    for load in (lambda: _load(Settings, get_settings), lambda: _load(thresholds.Thresholds, thresholds.get_thresholds),
                 _check_site_codes, _check_rule_modes):
        try:
            result = load()
        except ConfigurationError as exc:
            lines.extend(exc.lines)
            continue
        if isinstance(result, Settings):
            settings = result
    if lines:
        raise ConfigurationError(lines)
    assert settings is not None
    return get_settings()
