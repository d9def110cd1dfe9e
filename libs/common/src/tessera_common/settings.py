"""Typed settings shared by every service (environment prefix ``TESSERA_``).

One ``Settings`` object is built at process start and passed down; no module reads the
environment by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @property
    def resolved_blob_root(self) -> Path:
        return self.blob_root if self.blob_root is not None else self.data_dir / "objects"

    @property
    def resolved_sqlite_path(self) -> Path:
        return self.sqlite_path if self.sqlite_path is not None else self.data_dir / "index.db"
