"""The streaming ZIP writer (APPNOTE.TXT) read back by Python's zipfile, with and without ZIP64."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from tessera_gateway.zip_stream import ZipWriter


def _archive(members: dict[str, bytes], *, threshold: int, chunk: int = 333) -> bytes:
    writer = ZipWriter(zip64_threshold=threshold)
    out = io.BytesIO()
    for name, data in members.items():
        out.write(writer.begin(name, len(data)))
        for start in range(0, len(data), chunk):
            out.write(writer.data(data[start : start + chunk]))
        out.write(writer.end())
    out.write(writer.finish())
    assert writer.offset == out.tell()
    return out.getvalue()


@pytest.mark.parametrize(
    "threshold",
    [pytest.param(0xFFFFFFFF, id="classic"), pytest.param(64, id="zip64 forced")],
)
def test_members_read_back(threshold: int) -> None:
    members = {f"1.2.3/4.5/{i}.dcm": os.urandom(100 * i + 7) for i in range(1, 6)}
    members["1.2.3/4.5/empty.dcm"] = b""
    data = _archive(members, threshold=threshold)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == list(members)
        assert {n: archive.read(n) for n in archive.namelist()} == members
        infos = archive.infolist()
    assert all(info.compress_type == zipfile.ZIP_STORED for info in infos)


def test_zip64_for_many_members() -> None:
    members = {f"{i}.dcm": bytes([i % 256]) for i in range(70_000)}
    writer = ZipWriter()
    out = io.BytesIO()
    for name, data in members.items():
        out.write(writer.begin(name, 1) + writer.data(data) + writer.end())
    out.write(writer.finish())
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        assert len(archive.infolist()) == 70_000
        assert archive.read("69999.dcm") == bytes([69999 % 256])


def test_misuse_is_refused() -> None:
    writer = ZipWriter()
    with pytest.raises(RuntimeError):
        writer.data(b"x")
    writer.begin("a", 1)
    with pytest.raises(RuntimeError):
        writer.begin("b", 1)
    with pytest.raises(RuntimeError):
        writer.finish()
