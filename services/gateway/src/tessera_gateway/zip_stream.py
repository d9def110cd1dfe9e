"""A streaming ZIP writer (APPNOTE.TXT 6.3.10, PKWARE) for WADO-RS ``application/zip``.

Pure: it produces the bytes around each member (local file header, data descriptor, central
directory) and counts what passes, while the caller streams the members' bytes itself, so no
member is ever held in memory. Members are stored (method 0): DICOM files are often compressed
already, and storing keeps the throughput of a plain copy.

Each local header sets general purpose bit 3, so CRC-32 and sizes follow the data in a data
descriptor (APPNOTE §4.3.9) and the CRC is computed on the way. ZIP64 (APPNOTE §4.3.14, §4.5.3)
is used per member when its size or offset does not fit 32 bits, and for the end records when
the archive needs it; ``zip64_threshold`` lowers the limit so tests can exercise it.
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

_LOCAL_HEADER = 0x04034B50
_DATA_DESCRIPTOR = 0x08074B50
_CENTRAL_HEADER = 0x02014B50
_END_OF_CENTRAL_DIRECTORY = 0x06054B50
_ZIP64_END = 0x06064B50
_ZIP64_LOCATOR = 0x07064B50
_ZIP64_EXTRA = 0x0001
_FLAG_DATA_DESCRIPTOR = 0x0008
_FLAG_UTF8 = 0x0800
_VERSION_DEFAULT = 20
_VERSION_ZIP64 = 45
_MAX32 = 0xFFFFFFFF
_MAX16 = 0xFFFF


@dataclass(slots=True)
class _Member:
    name: bytes
    offset: int
    size: int
    crc: int
    zip64: bool
    dos_time: int
    dos_date: int


def _dos_datetime(timestamp: float) -> tuple[int, int]:
    t = time.gmtime(timestamp)
    year = max(t.tm_year, 1980)
    return (
        t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2,
        (year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday,
    )


class ZipWriter:
    """Call ``begin``, pass each data chunk through ``data``, call ``end`` per member, then
    ``finish`` for the central directory. Each returns the bytes to send."""

    def __init__(self, *, zip64_threshold: int = _MAX32, timestamp: float | None = None) -> None:
        self._threshold = zip64_threshold
        self._members: list[_Member] = []
        self._offset = 0
        self._current: _Member | None = None
        self._dos_time, self._dos_date = _dos_datetime(
            time.time() if timestamp is None else timestamp
        )

    @property
    def offset(self) -> int:
        """Bytes produced so far (headers and data)."""
        return self._offset

    def begin(self, name: str, size: int) -> bytes:
        """The local file header of a member of ``size`` bytes (known in advance, so ZIP64 is
        decided here)."""
        if self._current is not None:
            raise RuntimeError("the previous member was not ended")
        encoded = name.encode("utf-8")
        zip64 = size >= self._threshold or self._offset >= self._threshold
        member = _Member(encoded, self._offset, 0, 0, zip64, self._dos_time, self._dos_date)
        extra = struct.pack("<HHQQ", _ZIP64_EXTRA, 16, 0, 0) if zip64 else b""
        header = struct.pack(
            "<LHHHHHLLLHH",
            _LOCAL_HEADER,
            _VERSION_ZIP64 if zip64 else _VERSION_DEFAULT,
            _FLAG_DATA_DESCRIPTOR | _FLAG_UTF8,
            0,  # stored
            member.dos_time,
            member.dos_date,
            0,  # CRC-32, sizes: in the data descriptor
            _MAX32 if zip64 else 0,
            _MAX32 if zip64 else 0,
            len(encoded),
            len(extra),
        )
        self._current = member
        return self._count(header + encoded + extra)

    def data(self, chunk: bytes) -> bytes:
        member = self._current
        if member is None:
            raise RuntimeError("no member was begun")
        member.crc = zlib.crc32(chunk, member.crc)
        member.size += len(chunk)
        return self._count(chunk)

    def end(self) -> bytes:
        member = self._current
        if member is None:
            raise RuntimeError("no member was begun")
        self._current = None
        self._members.append(member)
        if member.zip64:
            descriptor = struct.pack(
                "<LLQQ", _DATA_DESCRIPTOR, member.crc, member.size, member.size
            )
        elif member.size >= _MAX32:
            raise ValueError("a member grew beyond the size it was begun with")
        else:
            descriptor = struct.pack(
                "<LLLL", _DATA_DESCRIPTOR, member.crc, member.size, member.size
            )
        return self._count(descriptor)

    def finish(self) -> bytes:
        """The central directory and the end records."""
        if self._current is not None:
            raise RuntimeError("the last member was not ended")
        start = self._offset
        entries = b"".join(self._central_entry(m) for m in self._members)
        self._count(entries)
        size = len(entries)
        count = len(self._members)
        needs_zip64 = (
            count >= _MAX16
            or start >= self._threshold
            or size >= self._threshold
            or any(m.zip64 for m in self._members)
        )
        tail = b""
        if needs_zip64:
            zip64_end_offset = self._offset
            tail += struct.pack(
                "<LQHHLLQQQQ",
                _ZIP64_END,
                44,  # size of the remaining record
                _VERSION_ZIP64,
                _VERSION_ZIP64,
                0,
                0,
                count,
                count,
                size,
                start,
            )
            tail += struct.pack("<LLQL", _ZIP64_LOCATOR, 0, zip64_end_offset, 1)
        tail += struct.pack(
            "<LHHHHLLH",
            _END_OF_CENTRAL_DIRECTORY,
            0,
            0,
            min(count, _MAX16),
            min(count, _MAX16),
            _MAX32 if needs_zip64 else size,
            _MAX32 if needs_zip64 else start,
            0,
        )
        self._count(tail)
        return entries + tail

    def _central_entry(self, member: _Member) -> bytes:
        extra = b""
        size, offset = member.size, member.offset
        if member.zip64 or member.offset >= self._threshold:
            extra = struct.pack("<HHQQQ", _ZIP64_EXTRA, 24, member.size, member.size, offset)
            size, offset = _MAX32, _MAX32
        return (
            struct.pack(
                "<LHHHHHHLLLHHHHHLL",
                _CENTRAL_HEADER,
                (3 << 8) | (_VERSION_ZIP64 if extra else _VERSION_DEFAULT),  # made by: Unix
                _VERSION_ZIP64 if extra else _VERSION_DEFAULT,
                _FLAG_DATA_DESCRIPTOR | _FLAG_UTF8,
                0,
                member.dos_time,
                member.dos_date,
                member.crc,
                size,
                size,
                len(member.name),
                len(extra),
                0,
                0,
                0,
                0o100644 << 16,  # a regular file, rw-r--r--
                offset,
            )
            + member.name
            + extra
        )

    def _count(self, data: bytes) -> bytes:
        self._offset += len(data)
        return data
