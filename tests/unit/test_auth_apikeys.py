"""API keys: the key format, the hashed key file, ``tessera apikey`` functions and the gateway's
verification (valid, revoked, garbage, tampered, reloaded after a change)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tessera.apikeys import create_key, format_keys, list_keys, parse_scopes, revoke_key
from tessera_common.settings import Settings
from tessera_gateway.access import Scope
from tessera_gateway.api_keys import (
    ApiKeyError,
    ApiKeyStore,
    api_keys_path,
    key_id_of,
    new_key,
    read_key_file,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def test_new_keys_are_random_and_well_formed() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    for key_id, key in keys:
        assert key_id_of(key) == key_id
        assert len(key) == len("tsk_") + 12 + 1 + 43


def test_create_stores_only_the_hash(settings: Settings) -> None:
    created = create_key(settings, "ct-scanner-3", ["write", "read"])
    path = api_keys_path(settings)
    assert path == settings.data_dir / "api-keys.json"
    text = path.read_text()
    assert created.key not in text
    assert created.key.split("_")[-1] not in text
    assert created.record.sha256 in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert created.record.scopes == (Scope.READ, Scope.WRITE)
    assert [r.key_id for r in list_keys(settings)] == [created.record.key_id]


def test_revoke_and_list(settings: Settings) -> None:
    first = create_key(settings, "viewer")
    second = create_key(settings, "pacs-bridge", ["read", "write", "delete"])
    revoked = revoke_key(settings, first.record.key_id)
    assert revoked.revoked_at is not None
    assert revoke_key(settings, first.record.key_id).revoked_at == revoked.revoked_at
    assert [r.key_id for r in list_keys(settings, include_revoked=False)] == [second.record.key_id]
    lines = format_keys(list_keys(settings))
    assert len(lines) == 3 and "read,write,delete" in lines[2]
    with pytest.raises(ApiKeyError):
        revoke_key(settings, "000000000000")


@pytest.mark.parametrize(
    ("name", "scopes"),
    [("", ["read"]), ("Jane Doe's key\n", ["read"]), ("x" * 65, ["read"]), ("ok", ["superuser"])],
    ids=["empty-name", "control-character", "too-long", "unknown-scope"],
)
def test_create_refuses_bad_input(settings: Settings, name: str, scopes: list[str]) -> None:
    with pytest.raises(ApiKeyError):
        create_key(settings, name, scopes)
    assert not api_keys_path(settings).exists() or list_keys(settings) == []


def test_parse_scopes_orders_and_dedupes() -> None:
    assert parse_scopes(["admin", "READ", "read"]) == (Scope.READ, Scope.ADMIN)


def test_corrupt_file_is_an_error(settings: Settings) -> None:
    path = api_keys_path(settings)
    path.write_text('{"keys": [{"key_id": "nope"}]}')
    with pytest.raises(ApiKeyError):
        read_key_file(path)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_store_verifies_valid_revoked_and_garbage(settings: Settings) -> None:
    clock = FakeClock()
    store = ApiKeyStore(api_keys_path(settings), clock=clock)
    created = create_key(settings, "script", ["read"])
    record = store.verify(created.key)
    assert record is not None and record.principal().subject == f"apikey:{created.record.key_id}"
    assert record.principal().scopes == {Scope.READ}

    key_id, secret = created.record.key_id, created.key.rsplit("_", 1)[1]
    tampered = f"tsk_{key_id}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
    other_id = f"tsk_{'0' * 12}_{secret}"
    for garbage in (tampered, other_id, "tsk_", "tsk_zz_zz", created.key + "x", ""):
        assert store.verify(garbage) is None, garbage

    revoke_key(settings, key_id)
    assert store.verify(created.key) is not None, "re-read at most once a second"
    clock.now += 1.5
    assert store.verify(created.key) is None, "a revoked key is refused after the re-read"


def test_store_keeps_keys_when_the_file_turns_unreadable(settings: Settings) -> None:
    clock = FakeClock()
    store = ApiKeyStore(api_keys_path(settings), clock=clock)
    created = create_key(settings, "script")
    assert store.verify(created.key) is not None
    api_keys_path(settings).write_text("{half a file")
    clock.now += 2
    assert store.verify(created.key) is not None


def test_store_without_file_knows_no_keys(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "absent.json")
    _, key = new_key()
    assert store.verify(key) is None
