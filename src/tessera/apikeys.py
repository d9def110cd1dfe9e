"""``tessera apikey create|list|revoke``: manage the gateway's API keys.

The key file holds hashes only (``tessera_gateway.api_keys``); a key is shown once, when it is
created, and cannot be recovered afterwards — create another and revoke the lost one. A running
gateway notices changes within a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tessera_common.settings import Settings
from tessera_gateway.access import Scope
from tessera_gateway.api_keys import (
    ApiKeyError,
    ApiKeyRecord,
    api_keys_path,
    check_name,
    hash_key,
    locked,
    new_key,
    now_iso,
    read_key_file,
    write_key_file,
)

__all__ = ["ApiKeyError", "CreatedKey", "create_key", "format_keys", "list_keys", "revoke_key"]

DEFAULT_SCOPES = (Scope.READ,)


@dataclass(frozen=True)
class CreatedKey:
    """A new key: ``key`` is the secret to hand to the client, shown this once."""

    record: ApiKeyRecord
    key: str


def parse_scopes(names: Iterable[str]) -> tuple[Scope, ...]:
    """``["read", "write"]`` -> scopes, in a stable order; raises ``ApiKeyError``."""
    scopes: set[Scope] = set()
    for name in names:
        try:
            scopes.add(Scope(name.strip().lower()))
        except ValueError:
            known = ", ".join(scope.value for scope in Scope)
            raise ApiKeyError(f"unknown scope {name!r} (known: {known})") from None
    return tuple(scope for scope in Scope if scope in scopes)


def create_key(settings: Settings, name: str, scopes: Iterable[str] = ("read",)) -> CreatedKey:
    """Create a key called ``name`` with ``scopes`` and store its hash."""
    record_scopes = parse_scopes(scopes) or DEFAULT_SCOPES
    path = api_keys_path(settings)
    with locked(path):
        content = read_key_file(path)
        key_id, key = new_key()
        while any(record.key_id == key_id for record in content.keys):
            key_id, key = new_key()
        record = ApiKeyRecord(
            key_id=key_id,
            name=check_name(name),
            scopes=record_scopes,
            sha256=hash_key(key),
            created_at=now_iso(),
        )
        content.keys.append(record)
        write_key_file(path, content)
    return CreatedKey(record=record, key=key)


def list_keys(settings: Settings, *, include_revoked: bool = True) -> list[ApiKeyRecord]:
    """The stored keys (never their secrets), oldest first."""
    keys = read_key_file(api_keys_path(settings)).keys
    return [record for record in keys if include_revoked or record.active]


def revoke_key(settings: Settings, key_id: str) -> ApiKeyRecord:
    """Revoke the key ``key_id`` (kept in the file, marked revoked); raises ``ApiKeyError``
    when there is no such key. Revoking twice keeps the first revocation time."""
    path = api_keys_path(settings)
    with locked(path):
        content = read_key_file(path)
        for index, record in enumerate(content.keys):
            if record.key_id == key_id:
                if record.active:
                    record = record.model_copy(update={"revoked_at": now_iso()})
                    content.keys[index] = record
                    write_key_file(path, content)
                return record
    raise ApiKeyError(f"no API key with id {key_id!r} in {path}")


def format_keys(records: Iterable[ApiKeyRecord]) -> list[str]:
    """One line per key for ``tessera apikey list``."""
    lines = [f"{'KEY ID':<14}{'NAME':<24}{'SCOPES':<28}{'CREATED':<27}REVOKED"]
    for record in records:
        scopes = ",".join(scope.value for scope in record.scopes)
        lines.append(
            f"{record.key_id:<14}{record.name:<24}{scopes:<28}{record.created_at:<27}"
            f"{record.revoked_at or '-'}"
        )
    return lines
