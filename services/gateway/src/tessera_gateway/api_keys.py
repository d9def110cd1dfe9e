"""API keys: high-entropy bearer secrets for scripts and modalities, stored only as hashes.

A key reads ``tsk_<key id>_<secret>``: the key id (12 hex digits) is public and names the key
in listings and in the audit trail; the secret is 32 random bytes (256 bits, base64url). The
key file keeps, per key, its id, a name, its scopes, when it was created and revoked, and the
SHA-256 of the whole key. A slow password hash would add nothing: the secret is random and
long, so a stolen file cannot be brute-forced, and SHA-256 costs the gateway a microsecond per
request. The hash is compared in constant time.

The file (JSON, mode 0600, ``<data_dir>/api-keys.json`` unless ``TESSERA_API_KEYS_FILE``) is
written by ``tessera apikey create|revoke`` atomically (write, fsync, rename) and re-read by the
gateway when it changes, so a revocation takes effect within a second without a restart.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tessera_common.settings import Settings

from .access import Principal, Scope

KEY_PREFIX = "tsk_"
_KEY_PATTERN = re.compile(r"tsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME_PATTERN = re.compile(r"[\w.@ -]{1,64}")
RELOAD_CHECK_SECONDS = 1.0

log = logging.getLogger(__name__)


class ApiKeyError(ValueError):
    """A key file that cannot be used, or a request that cannot be carried out on it."""


class ApiKeyRecord(BaseModel):
    """One key as stored: never the key itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str = Field(pattern=r"^[0-9a-f]{12}$")
    name: str
    scopes: tuple[Scope, ...]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def principal(self) -> Principal:
        return Principal(
            subject=f"apikey:{self.key_id}", method="api-key", scopes=frozenset(self.scopes)
        )


class ApiKeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    keys: list[ApiKeyRecord] = Field(default_factory=list)


def api_keys_path(settings: Settings) -> Path:
    if settings.api_keys_file is not None:
        return settings.api_keys_file
    return settings.data_dir / "api-keys.json"


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, key): a fresh key from the operating system's CSPRNG."""
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}"


def key_id_of(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = _KEY_PATTERN.fullmatch(key)
    return match.group(1) if match else None


def check_name(name: str) -> str:
    if not _NAME_PATTERN.fullmatch(name):
        raise ApiKeyError(
            "a key name is 1 to 64 letters, digits, spaces or . _ @ - (it names a client, "
            "e.g. 'ct-scanner-3'; never a patient)"
        )
    return name


# --- the file ----------------------------------------------------------------------------------


def read_key_file(path: Path) -> ApiKeyFile:
    """The key file at ``path``; an absent file holds no keys."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ApiKeyFile()
    try:
        return ApiKeyFile.model_validate_json(data)
    except ValidationError as exc:
        raise ApiKeyError(f"{path} is not a Tessera API key file: {exc}") from exc


def write_key_file(path: Path, content: ApiKeyFile) -> None:
    """Replace the key file atomically (readers see the old or the new file, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.model_dump_json(indent=2).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).chmod(0o600)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the key file between ``tessera apikey`` commands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the gateway's view ----------------------------------------------------------------------


class ApiKeyStore:
    """The gateway's read-only view of the key file, re-read when the file changes."""

    def __init__(
        self,
        path: Path,
        *,
        check_seconds: float = RELOAD_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._check_seconds = check_seconds
        self._clock = clock
        self._checked_at: float | None = None
        self._signature: tuple[int, int, int] | None = None
        self._keys: dict[str, ApiKeyRecord] = {}

    def verify(self, key: str) -> ApiKeyRecord | None:
        """The active record of ``key``, or None (unknown, revoked or malformed)."""
        self._reload_if_changed()
        key_id = key_id_of(key)
        record = self._keys.get(key_id) if key_id is not None else None
        expected = record.sha256 if record is not None else "0" * 64
        matches = hmac.compare_digest(hash_key(key), expected)
        if record is None or not matches or not record.active:
            return None
        return record

    def _reload_if_changed(self) -> None:
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._check_seconds:
            return
        self._checked_at = now
        try:
            stat = self._path.stat()
            signature: tuple[int, int, int] | None = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            signature = None
        if signature == self._signature:
            return
        try:
            content = read_key_file(self._path)
        except (ApiKeyError, OSError) as exc:
            # Keep the keys held: an unreadable file must not lock every client out.
            log.warning("cannot read the API key file, keeping the keys held: %s", exc)
            return
        self._signature = signature
        self._keys = {record.key_id: record for record in content.keys}
