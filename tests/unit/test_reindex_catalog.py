"""Reading instance keys back into UIDs (``tessera_store.catalog``): only the keys the layout
builds are instances; everything else under studies/ is left alone."""

from __future__ import annotations

import pytest

from tessera_common.layout import instance_object_key, sidecar_key
from tessera_store.catalog import InstanceKey, parse_instance_key

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
BASE = f"studies/{STUDY}/series/{SERIES}/instances"

KEYS: list[tuple[str, str, InstanceKey | None]] = [
    ("object", instance_object_key(STUDY, SERIES, SOP), InstanceKey(STUDY, SERIES, SOP, "dcm")),
    ("sidecar", sidecar_key(STUDY, SERIES, SOP), InstanceKey(STUDY, SERIES, SOP, "json")),
    ("other-suffix", f"{BASE}/{SOP}.tmp", None),
    ("no-suffix", f"{BASE}/{SOP}", None),
    ("bulkdata-path", f"{BASE}/{SOP}/bulkdata/7FE00010", None),
    ("uid-empty-component", f"{BASE}/1..3.dcm", None),
    ("uid-too-long", f"{BASE}/{'1.' * 32}1.dcm", None),
    ("not-numeric", f"{BASE}/abc.dcm", None),
    ("traversal", f"studies/../series/{SERIES}/instances/{SOP}.dcm", None),
    ("wrong-level-name", f"studies/{STUDY}/serie/{SERIES}/instances/{SOP}.dcm", None),
    ("upload", "incoming/0123456789abcdef", None),
    ("derived", f"derived/{'a' * 64}/1.2.840.10008.1.2.1.dcm", None),
]


@pytest.mark.parametrize(("key", "expected"), [k[1:] for k in KEYS], ids=[k[0] for k in KEYS])
def test_parse_instance_key(key: str, expected: InstanceKey | None) -> None:
    assert parse_instance_key(key) == expected
