"""Typed settings shared by every service (environment prefix ``TESSERA_``).

One ``Settings`` object is built at process start and passed down; no module reads the
environment by itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _comma_list(value: Any) -> Any:
    """``a, b,c`` (or a JSON list) from the environment -> ``["a", "b", "c"]``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
"""A list setting written in the environment as comma-separated values."""


class Settings(BaseSettings):
    """Configuration for one Tessera process.

    Embedded mode (``tessera serve``) fills ``nats_url`` itself; distributed mode reads every
    value from the environment, e.g. ``TESSERA_NATS_URL=nats://nats:4222``.
    """

    model_config = SettingsConfigDict(env_prefix="TESSERA_", extra="ignore")

    data_dir: Path = Field(default=Path("tessera-data"), description="embedded-mode data dir")
    host: str = "127.0.0.1"
    port: int = 8080
    base_path: str = "/dicom-web"
    public_url: str | None = Field(
        default=None,
        description="externally visible URL of the DICOMweb root, used in Retrieve URLs and "
        "BulkDataURIs; derived from the request's Host when unset",
    )

    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="port of /metrics, /healthz and /readyz for the bus-only services (store, "
        "query, render, codec); unset: none (embedded mode runs them all on one host)",
    )

    render_workers: int = Field(
        default=0,
        ge=0,
        le=32,
        description="render processes 'tessera serve' starts (each joins the render queue "
        "group); 0: one per CPU, 1 to 4",
    )
    analysis_workers: int = Field(
        default=0,
        ge=0,
        le=32,
        description="worker processes a store service parses uploads in (parsing holds the GIL, "
        "so threads use one core); 0: one per CPU, 1 to 4, and none (threads) on a single CPU",
    )
    gateway_workers: int = Field(
        default=0,
        ge=0,
        le=32,
        description="gateway processes 'tessera serve' starts, sharing the HTTP port "
        "(SO_REUSEPORT); 0: one per CPU, 1 to 4. One event loop saturates a core on small "
        "requests (frames, QIDO)",
    )
    reuse_port: bool = Field(
        default=False,
        description="bind the gateway's port with SO_REUSEPORT so that several gateway "
        "processes on this host share it (the kernel spreads connections over them); "
        "'tessera serve' sets it when it starts more than one",
    )
    render_threads: int = Field(
        default=1,
        ge=1,
        le=16,
        description="threads one render process renders in; more processes scale better "
        "(measured: 2 processes x 1 thread render 2.4x what 1 x 1 does, 1 x 2 threads 1.5x)",
    )

    stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="copies JetStream keeps of Tessera's streams (events, audit); 1 in embedded "
        "mode, 3 on a NATS cluster (docs/DEPLOY.md)",
    )

    nats_url: str = "nats://127.0.0.1:4222"
    request_timeout: float = Field(default=60.0, description="seconds a bus request may take")

    blob_backend: Literal["local", "s3"] = "local"
    blob_root: Path | None = Field(
        default=None, description="LocalStore root; defaults to <data_dir>/objects"
    )
    s3_bucket: str = "tessera"
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_allow_http: bool = False

    index_backend: Literal["sqlite", "mongodb"] = "sqlite"
    sqlite_path: Path | None = Field(default=None, description="defaults to <data_dir>/index.db")
    mongodb_uri: str = "mongodb://127.0.0.1:27017"
    mongodb_database: str = "tessera"

    max_part_bytes: int = Field(default=4 * 1024**3, description="largest STOW part accepted")
    max_parts: int = Field(default=10_000, description="most parts in one STOW request")

    # --- limits and shutdown (docs/CONFORMANCE.md, Errors) -------------------------------------
    max_request_bytes: int = Field(
        default=64 * 1024**3, gt=0, description="largest STOW request body (413 beyond it)"
    )
    max_part_header_bytes: int = Field(
        default=16 * 1024, gt=0, description="largest header section of one STOW part (400)"
    )
    max_request_line_bytes: int = Field(
        default=8190, gt=0, description="longest HTTP request line (URL and query) accepted"
    )
    max_request_header_bytes: int = Field(
        default=16 * 1024, gt=0, description="longest single HTTP request header accepted"
    )
    request_idle_timeout: float = Field(
        default=60.0,
        gt=0,
        description="seconds a STOW client may send nothing before the request is aborted",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="seconds in-flight requests get to finish on SIGTERM (new ones get 503)",
    )

    # --- durability: duplicates and orphan collection (docs/DURABILITY.md) ---------------------
    duplicate_policy: Literal["overwrite", "reject"] = Field(
        default="overwrite",
        description="a re-stored SOP Instance UID whose bytes differ: 'overwrite' (latest wins) "
        "or 'reject' (Failure Reason 0111H); the same bytes twice always succeed",
    )
    prebuild_metadata: bool = Field(
        default=True,
        description="build each series' /metadata document a few seconds after the series "
        "last changed (query service), so that a viewer's first request finds it ready",
    )
    instance_locks: Literal["cluster", "process"] = Field(
        default="cluster",
        description="how store processes keep two changes of one SOP Instance apart: 'cluster' "
        "(a lease per instance in a NATS key-value bucket, for several store replicas) or "
        "'process' (in-process locks; enough for one store process, as in embedded mode)",
    )
    orphan_grace_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="age after which an upload left in incoming/, or an instance object or "
        "sidecar without its partner, counts as orphaned; must exceed the longest STOW request",
    )
    orphan_interval_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="seconds between the store service's orphan collections; 0: no timer",
    )
    orphan_instances: Literal["ignore", "report", "remove"] = Field(
        default="report",
        description="what the store's timer does with instance objects or sidecars lacking "
        "their partner: leave them unscanned, log them, or delete them",
    )

    # --- security: authentication, CORS and audit (docs/SECURITY.md) ---------------------------
    auth_enabled: bool = Field(
        default=False,
        description="require a bearer token (OIDC JWT or API key) on every DICOMweb request",
    )
    allow_insecure_bind: bool = Field(
        default=False,
        description="allow listening on a non-loopback address with authentication off",
    )
    auth_realm: str = Field(default="tessera", description="realm of WWW-Authenticate challenges")
    auth_scope_claim: str = Field(
        default="scope",
        description="JWT claim holding the granted scopes: a space-separated string or a list; "
        "a dotted path reaches into objects (e.g. realm_access.roles)",
    )
    auth_scope_prefix: str = Field(
        default="",
        description="prefix of Tessera's scope names at the IdP, e.g. 'tessera:' for "
        "'tessera:read'",
    )
    auth_protect_metrics: bool = Field(
        default=False, description="require the admin scope for /metrics (public by default)"
    )
    oidc_issuer: str | None = Field(default=None, description="expected 'iss' of bearer JWTs")
    oidc_audience: str | None = Field(default=None, description="expected 'aud' of bearer JWTs")
    oidc_jwks_url: str | None = Field(
        default=None,
        description="JWKS URL; unset: discovered from <issuer>/.well-known/openid-configuration",
    )
    oidc_algorithms: CommaList = Field(
        default=["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"],
        description="JWS algorithms accepted (asymmetric only; 'none' and HS* are refused)",
    )
    oidc_leeway: float = Field(
        default=30.0, ge=0, le=300, description="clock skew (s) allowed on exp / nbf / iat"
    )
    oidc_jwks_cache_seconds: float = Field(
        default=3600.0, gt=0, description="seconds a fetched JWKS is used before it is refetched"
    )
    oidc_jwks_refresh_interval: float = Field(
        default=30.0,
        ge=0,
        description="least seconds between two JWKS fetches (an unknown 'kid' asks for one)",
    )
    oidc_allow_http: bool = Field(
        default=False, description="allow a plain-http JWKS / discovery URL off loopback"
    )
    api_keys_file: Path | None = Field(
        default=None, description="hashed API keys; defaults to <data_dir>/api-keys.json"
    )
    cors_allowed_origins: CommaList = Field(
        default=[],
        description="origins of browser viewers allowed by CORS ('*' only with auth off); "
        "empty: no CORS headers",
    )
    cors_allowed_methods: CommaList = Field(default=["GET", "HEAD", "POST", "DELETE"])
    cors_allowed_headers: CommaList = Field(
        default=["Authorization", "Accept", "Content-Type", "If-None-Match", "Range"]
    )
    cors_exposed_headers: CommaList = Field(
        default=[
            "Content-Location",
            "ETag",
            "Warning",
            "Content-Range",
            "Content-Length",
            "WWW-Authenticate",
            "Retry-After",
        ]
    )
    cors_allow_credentials: bool = Field(
        default=False,
        description="send Access-Control-Allow-Credentials (cookies / client certificates); "
        "bearer tokens do not need it",
    )
    cors_max_age: int = Field(default=600, ge=0, description="seconds a preflight may be cached")
    audit_enabled: bool = Field(
        default=True, description="publish an audit event per request and log it"
    )
    audit_max_age_days: float = Field(
        default=90.0, gt=0, description="days the TESSERA_AUDIT stream keeps an event"
    )
    audit_max_bytes: int = Field(
        default=1024**3, gt=0, description="size at which the TESSERA_AUDIT stream drops its oldest"
    )

    # --- the OHIF viewer at /viewer (docs/OHIF.md) --------------------------------------------
    viewer_dir: Path | None = Field(
        default=None,
        description="OHIF's built viewer (the dist/ of @ohif/app; scripts/install-viewer.sh "
        "prints its path), served at /viewer; unset: no viewer",
    )
    viewer_app_config: Path | None = Field(
        default=None,
        description="a file served as the viewer's app-config.js instead of the one Tessera "
        "generates (e.g. with an oidc section when authentication is on)",
    )

    # --- change feed webhooks (docs/EVENTS.md) -----------------------------------------------
    webhook_urls: CommaList = Field(
        default=[],
        description="http(s) URLs that receive each change-feed entry by POST; empty: none",
    )
    webhook_secret: str | None = Field(
        default=None,
        repr=False,
        description="key of the HMAC-SHA256 Tessera-Signature header on webhook deliveries",
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=100, description="deliveries of one event to one URL before giving up"
    )
    webhook_backoff_seconds: float = Field(
        default=2.0, gt=0, description="delay before the first retry; doubles with each attempt"
    )
    webhook_backoff_max_seconds: float = Field(
        default=300.0, gt=0, description="longest delay between two attempts"
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="seconds one webhook POST may take"
    )

    @property
    def resolved_blob_root(self) -> Path:
        return self.blob_root if self.blob_root is not None else self.data_dir / "objects"

    @property
    def resolved_sqlite_path(self) -> Path:
        return self.sqlite_path if self.sqlite_path is not None else self.data_dir / "index.db"
