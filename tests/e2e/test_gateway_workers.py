"""Several gateway processes share the HTTP port (``TESSERA_GATEWAY_WORKERS=2``): both take
connections, and what one of them stores, replaces or deletes is what the other serves at
once (each remembers instance locations, dropped by the store's events)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from tests.support.http import stow
from tests.support.system import RunningTessera, start_tessera

from bench.synthetic import SyntheticInstance, ct_series

OCTET_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
#: Each request on a new connection, so the kernel spreads them over the gateways.
REQUESTS = 80


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(
        tmp_path_factory.mktemp("gateways") / "data", env={"TESSERA_GATEWAY_WORKERS": "2"}
    )
    yield running
    assert running.stop() == 0, running.log_tail()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def _frame_url(tessera: RunningTessera, instance: SyntheticInstance) -> str:
    return (
        f"{tessera.root}/studies/{instance.study_uid}/series/{instance.series_uid}"
        f"/instances/{instance.sop_uid}/frames/1"
    )


def _pixels(data: bytes) -> bytes:
    return bytes(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).PixelData)


def _frame(response: requests.Response) -> bytes:
    """The one part of a multipart/related frames response."""
    boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    part = response.content.split(f"--{boundary}".encode())[1]
    return part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")


def test_both_gateways_take_connections(tessera: RunningTessera) -> None:
    pids = {name: pid for name, pid in tessera.child_pids().items() if name.startswith("gateway")}
    assert set(pids) == {"gateway", "gateway-2"}
    (instance,) = ct_series(1, seed=3, rows=64, columns=64)
    assert stow(tessera.root, [instance.data]).status_code == 200
    before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    for _ in range(REQUESTS):
        response = requests.get(_frame_url(tessera, instance), headers={"Accept": OCTET_ANY})
        assert response.status_code == 200
    used = {name: _cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    assert all(seconds > 0.01 for seconds in used.values()), used


def _same_uids(instance: SyntheticInstance, donor: SyntheticInstance) -> bytes:
    """``donor``'s pixels under ``instance``'s UIDs: a replacement of ``instance``."""
    dataset = pydicom.dcmread(pydicom.filebase.DicomBytesIO(donor.data))
    dataset.StudyInstanceUID = instance.study_uid
    dataset.SeriesInstanceUID = instance.series_uid
    dataset.SOPInstanceUID = instance.sop_uid
    dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(instance.sop_uid)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_a_replacement_or_deletion_is_seen_by_every_gateway(tessera: RunningTessera) -> None:
    first, donor = ct_series(2, seed=5, rows=64, columns=64)
    replacement = _same_uids(first, donor)
    assert _pixels(replacement) != _pixels(first.data)
    url = _frame_url(tessera, first)
    assert stow(tessera.root, [first.data]).status_code == 200
    for _ in range(REQUESTS // 4):  # every gateway now remembers where the instance is
        assert _frame(requests.get(url, headers={"Accept": OCTET_ANY})) == _pixels(first.data)
    assert stow(tessera.root, [replacement]).status_code == 200
    for _ in range(REQUESTS // 4):
        assert _frame(requests.get(url, headers={"Accept": OCTET_ANY})) == _pixels(replacement)
    instance_url = url.removesuffix("/frames/1")
    assert requests.delete(instance_url).status_code in (200, 202, 204)
    for _ in range(REQUESTS // 4):
        assert requests.get(url, headers={"Accept": OCTET_ANY}).status_code == 404
