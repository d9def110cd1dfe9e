"""``tessera_common.lru.Lru``: bounded, least recently used first out."""

from __future__ import annotations

from tessera_common.lru import Lru


def test_reads_and_writes_refresh_and_the_oldest_goes() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "a" is now the most recent
    lru.put("c", 3)
    assert "b" not in lru and len(lru) == 2
    assert lru.pop("a") == 1 and lru.pop("a") is None
    lru.clear()
    assert len(lru) == 0 and lru.get("c") is None
