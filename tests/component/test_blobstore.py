"""One contract suite for the ``BlobStore`` port, run on ``LocalStore`` and on ``S3Store``
against a real SeaweedFS (ARCHITECTURE invariant 4: object storage is the system of record).

The contract, as these tests state it:

* ``put`` and ``put_stream`` are atomic: the object appears only complete, and a stream that
  fails halfway leaves the key as it was (absent, or the previous object).
* ``get``, ``get_range``, ``stream`` and ``open_reader`` raise ``BlobNotFoundError`` for a
  missing key; ``head`` returns ``None``; ``delete`` is idempotent.
* Ranges are half-open ``[start, end)`` and non-empty.
* ``rename`` replaces an existing destination; a missing source raises ``BlobNotFoundError``.
* ``list(prefix)`` matches whole key segments, like a directory: ``studies/1.2`` lists the keys
  under ``studies/1.2/`` and never those under ``studies/1.23/``; a trailing slash changes
  nothing, an object's own key lists nothing and ``""`` lists everything.
* Every method refuses a key ``check_key`` refuses, before any I/O.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.seaweed import SeaweedServer, listening_addresses

from tessera_common.blobstore import (
    BlobInfo,
    BlobNotFoundError,
    LocalBlobs,
    ObjectStoreBlobs,
    check_key,
)

KEY = "studies/1.2.840.1/series/1.2.840.1.2/instances/1.2.840.1.2.3"
MISSING = "incoming/never-written"
READER_BUFFER = 256 * 1024
"""``open_reader``'s fetch size: the reads below straddle its boundaries."""

PAYLOAD = random.Random(20240).randbytes(4 * READER_BUFFER + 12_345)

CHUNK = 64 * 1024
STREAM_CHUNKS = 320
"""20 MiB in 64 KiB chunks: several multipart parts of 8 MiB, the last one short."""


def numbered_chunk(index: int) -> bytes:
    """A chunk whose bytes say where it belongs, so reordering cannot go unnoticed."""
    return index.to_bytes(4, "big") * (CHUNK // 4)


async def numbered_chunks(count: int, *, fail_at: int | None = None) -> AsyncIterator[bytes]:
    for index in range(count):
        if index == fail_at:
            raise ConnectionResetError("client went away")
        yield numbered_chunk(index)
        await asyncio.sleep(0)


async def read_stream(chunks: AsyncIterator[bytes]) -> bytes:
    parts = [chunk async for chunk in chunks]
    assert all(isinstance(part, bytes) for part in parts)
    return b"".join(parts)


async def listed(blobs: ObjectStoreBlobs, prefix: str) -> set[BlobInfo]:
    return {info async for info in blobs.list(prefix)}


# --- put, put_stream, get, head --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00", id="one-byte"),
        pytest.param(PAYLOAD, id="1MiB-and-a-bit"),
    ],
)
async def test_put_then_get_and_head(blobs: ObjectStoreBlobs, data: bytes) -> None:
    await blobs.put(KEY, data)
    assert await blobs.get(KEY) == data
    assert await blobs.head(KEY) == BlobInfo(key=KEY, size=len(data))


async def test_put_replaces_the_object(blobs: ObjectStoreBlobs) -> None:
    await blobs.put(KEY, b"first version, longer")
    await blobs.put(KEY, b"second")
    assert await blobs.get(KEY) == b"second"


async def test_head_of_a_missing_key_is_none(blobs: ObjectStoreBlobs) -> None:
    assert await blobs.head(MISSING) is None


async def test_put_stream_of_many_chunks(blobs: ObjectStoreBlobs) -> None:
    written = await blobs.put_stream(KEY, numbered_chunks(STREAM_CHUNKS))

    expected = hashlib.sha256()
    for index in range(STREAM_CHUNKS):
        expected.update(numbered_chunk(index))
    assert written == STREAM_CHUNKS * CHUNK
    assert await blobs.head(KEY) == BlobInfo(key=KEY, size=written)
    actual = hashlib.sha256()
    async for chunk in blobs.stream(KEY):
        actual.update(chunk)
    assert actual.hexdigest() == expected.hexdigest()


async def test_put_stream_of_nothing_writes_an_empty_object(blobs: ObjectStoreBlobs) -> None:
    assert await blobs.put_stream(KEY, numbered_chunks(0)) == 0
    assert await blobs.head(KEY) == BlobInfo(key=KEY, size=0)
    assert await blobs.get(KEY) == b""


@pytest.mark.parametrize(
    "fail_at",
    [
        pytest.param(3, id="before-the-first-part"),
        pytest.param(160, id="after-a-part-was-sent"),
    ],
)
@pytest.mark.parametrize(
    "previous", [pytest.param(None, id="new-key"), pytest.param(b"previous", id="existing-key")]
)
async def test_a_failed_put_stream_leaves_the_key_as_it_was(
    blobs: ObjectStoreBlobs, fail_at: int, previous: bytes | None
) -> None:
    if previous is not None:
        await blobs.put(KEY, previous)

    with pytest.raises(ConnectionResetError, match="client went away"):
        await blobs.put_stream(KEY, numbered_chunks(STREAM_CHUNKS, fail_at=fail_at))

    if previous is None:
        assert await blobs.head(KEY) is None
        assert await listed(blobs, "") == set()
    else:
        assert await blobs.get(KEY) == previous
        assert await listed(blobs, "") == {BlobInfo(key=KEY, size=len(previous))}


# --- ranges and streams ----------------------------------------------------------------------

SIZE = len(PAYLOAD)

RANGES = [
    pytest.param(0, 100, id="start"),
    pytest.param(READER_BUFFER - 7, 3 * READER_BUFFER + 11, id="middle"),
    pytest.param(SIZE - 100, SIZE, id="end"),
    pytest.param(0, SIZE, id="whole"),
    pytest.param(SIZE - 1, SIZE, id="last-byte"),
]


@pytest.mark.parametrize(("start", "end"), RANGES)
async def test_get_range(blobs: ObjectStoreBlobs, start: int, end: int) -> None:
    await blobs.put(KEY, PAYLOAD)
    assert await blobs.get_range(KEY, start, end) == PAYLOAD[start:end]


async def test_get_range_stops_at_the_end_of_the_object(blobs: ObjectStoreBlobs) -> None:
    await blobs.put(KEY, PAYLOAD)
    assert await blobs.get_range(KEY, SIZE - 10, SIZE + 1000) == PAYLOAD[-10:]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(None, None, id="whole"),
        pytest.param(0, None, id="from-zero"),
        pytest.param(READER_BUFFER + 1, None, id="from-the-middle"),
        pytest.param(None, 5000, id="up-to"),
        pytest.param(SIZE - 1, None, id="last-byte"),
        *RANGES,
    ],
)
async def test_stream(blobs: ObjectStoreBlobs, start: int | None, end: int | None) -> None:
    await blobs.put(KEY, PAYLOAD)
    assert await read_stream(blobs.stream(KEY, start, end)) == PAYLOAD[start:end]


# --- rename and delete -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "destination_exists", [pytest.param(False, id="new-key"), pytest.param(True, id="replace")]
)
async def test_rename(blobs: ObjectStoreBlobs, destination_exists: bool) -> None:
    source = "incoming/upload-1"
    if destination_exists:
        await blobs.put(KEY, b"an older object, longer than the new one")
    await blobs.put(source, PAYLOAD)

    await blobs.rename(source, KEY)

    assert await blobs.head(source) is None
    assert await blobs.get(KEY) == PAYLOAD
    assert await listed(blobs, "") == {BlobInfo(key=KEY, size=SIZE)}


async def test_rename_of_a_missing_source(blobs: ObjectStoreBlobs) -> None:
    await blobs.put(KEY, b"untouched")
    with pytest.raises(BlobNotFoundError):
        await blobs.rename(MISSING, KEY)
    assert await blobs.get(KEY) == b"untouched"


async def test_delete_is_idempotent(blobs: ObjectStoreBlobs) -> None:
    await blobs.put(KEY, b"x")
    await blobs.delete(KEY)
    assert await blobs.head(KEY) is None
    await blobs.delete(KEY)
    await blobs.delete(MISSING)


# --- list ------------------------------------------------------------------------------------

STUDY_A = "studies/1.2/series/1.2.3/instances/1.2.3.4"
STUDY_A_2 = "studies/1.2/series/1.2.3/instances/1.2.3.5"
STUDY_B = "studies/1.23/series/1.23.1/instances/1.23.1.1"
UPLOAD = "incoming/upload-7"
LISTED = {STUDY_A: 1, STUDY_A_2: 22, STUDY_B: 333, UPLOAD: 4444}


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        pytest.param("studies/1.2", {STUDY_A, STUDY_A_2}, id="one-study"),
        pytest.param("studies/1.2/", {STUDY_A, STUDY_A_2}, id="trailing-slash"),
        pytest.param("studies/1.23", {STUDY_B}, id="sibling-with-a-longer-uid"),
        pytest.param("studies/1", set(), id="not-a-string-prefix"),
        pytest.param("studies/1.2/series/1.2.3/instances", {STUDY_A, STUDY_A_2}, id="deep"),
        pytest.param("studies", {STUDY_A, STUDY_A_2, STUDY_B}, id="top-level"),
        pytest.param(STUDY_A, set(), id="an-object-is-no-prefix"),
        pytest.param("nothing-here", set(), id="no-match"),
        pytest.param("", set(LISTED), id="everything"),
    ],
)
async def test_list_by_prefix(blobs: ObjectStoreBlobs, prefix: str, expected: set[str]) -> None:
    for key, size in LISTED.items():
        await blobs.put(key, b"x" * size)
    assert await listed(blobs, prefix) == {BlobInfo(key=k, size=LISTED[k]) for k in expected}


# --- open_reader -----------------------------------------------------------------------------

Step = tuple[Any, ...]

READER_SCRIPTS: list[Any] = [
    pytest.param([("read", 100_003)] * 14, id="sequential-across-buffers"),
    pytest.param(
        [("seek", READER_BUFFER - 5, os.SEEK_SET), ("read", 10), ("tell",)],
        id="straddle-a-boundary",
    ),
    pytest.param(
        [("read", 10), ("seek", 3 * READER_BUFFER, os.SEEK_CUR), ("tell",), ("read", 20)],
        id="seek-cur-forward",
    ),
    pytest.param(
        [
            ("seek", 3 * READER_BUFFER, os.SEEK_SET),
            ("read", 5),
            ("seek", 2, os.SEEK_SET),
            ("read", 7),
            ("tell",),
        ],
        id="seek-back",
    ),
    pytest.param([("read", 300_000), ("read", -1)], id="rest-after-a-partial-buffer"),
    pytest.param([("seek", -7, os.SEEK_END), ("read", 100), ("read", 100)], id="short-at-eof"),
    pytest.param([("seek", SIZE + 10, os.SEEK_SET), ("read", 5), ("tell",)], id="past-eof"),
    pytest.param([("seek", 1000, os.SEEK_SET), ("read", -1), ("read", 1)], id="read-to-end"),
    pytest.param([("read", None)], id="read-none"),
]


def run_script(fp: Any, script: list[Step]) -> list[object]:
    """Apply *script* to a file object; the results are compared with ``io.BytesIO``'s."""
    results: list[object] = []
    for op, *args in script:
        method: Callable[..., object] = getattr(fp, op)
        results.append(method(*args))
    return results


@pytest.mark.parametrize("script", READER_SCRIPTS)
@pytest.mark.parametrize("size", [pytest.param(None, id="head"), pytest.param(SIZE, id="sized")])
async def test_open_reader_behaves_like_a_file(
    blobs: ObjectStoreBlobs, script: list[Step], size: int | None
) -> None:
    await blobs.put(KEY, PAYLOAD)

    def read() -> list[object]:
        with blobs.open_reader(KEY, size=size) as fp:
            assert fp.seekable()
            assert fp.readable()
            return run_script(fp, script)

    assert await asyncio.to_thread(read) == run_script(io.BytesIO(PAYLOAD), script)


async def test_open_reader_closes(blobs: ObjectStoreBlobs) -> None:
    await blobs.put(KEY, PAYLOAD)
    fp = await asyncio.to_thread(blobs.open_reader, KEY)
    assert not fp.closed
    fp.close()
    assert fp.closed


# --- missing objects, ping -------------------------------------------------------------------


def _open_and_read(blobs: ObjectStoreBlobs, size: int | None) -> bytes:
    with blobs.open_reader(MISSING, size=size) as fp:
        return fp.read(1)


@pytest.mark.parametrize(
    "read_missing",
    [
        pytest.param(lambda b: b.get(MISSING), id="get"),
        pytest.param(lambda b: b.get_range(MISSING, 0, 10), id="get_range"),
        pytest.param(lambda b: read_stream(b.stream(MISSING)), id="stream"),
        pytest.param(lambda b: read_stream(b.stream(MISSING, 5)), id="stream-from"),
        pytest.param(lambda b: read_stream(b.stream(MISSING, 5, 10)), id="stream-range"),
        pytest.param(lambda b: asyncio.to_thread(_open_and_read, b, None), id="open_reader"),
        pytest.param(lambda b: asyncio.to_thread(_open_and_read, b, 10), id="open_reader-sized"),
    ],
)
async def test_a_missing_object_raises_blob_not_found(
    blobs: ObjectStoreBlobs, read_missing: Callable[[ObjectStoreBlobs], Any]
) -> None:
    with pytest.raises(BlobNotFoundError):
        await read_missing(blobs)


async def test_ping(blobs: ObjectStoreBlobs) -> None:
    await blobs.ping()
    await blobs.put(KEY, b"x")
    await blobs.ping()


# --- keys ------------------------------------------------------------------------------------

ILLEGAL_KEYS = [
    pytest.param("../x", id="parent"),
    pytest.param("a/../b", id="inner-parent"),
    pytest.param("..", id="dotdot"),
    pytest.param("/abs", id="absolute"),
    pytest.param("a//b", id="empty-segment"),
    pytest.param("a/./b", id="dot-segment"),
    pytest.param(".", id="dot"),
    pytest.param("a/", id="trailing-slash"),
    pytest.param("", id="empty"),
    pytest.param("a b", id="space"),
    pytest.param(" a", id="leading-space"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("a#1", id="hash"),
    pytest.param("studies/é", id="non-ascii"),
]


@pytest.mark.parametrize("key", ILLEGAL_KEYS)
def test_check_key_rejects(key: str) -> None:
    with pytest.raises(ValueError, match="illegal object key"):
        check_key(key)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(KEY, id="instance"),
        pytest.param("incoming/3f2a-b_c.dcm", id="upload"),
        pytest.param("a", id="one-segment"),
        pytest.param("a/.hidden/..x", id="dots-inside-names"),
    ],
)
def test_check_key_accepts(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(lambda b, k: b.put(k, b"x"), id="put"),
        pytest.param(lambda b, k: b.put_stream(k, numbered_chunks(1)), id="put_stream"),
        pytest.param(lambda b, k: b.get(k), id="get"),
        pytest.param(lambda b, k: b.get_range(k, 0, 1), id="get_range"),
        pytest.param(lambda b, k: read_stream(b.stream(k)), id="stream"),
        pytest.param(lambda b, k: b.head(k), id="head"),
        pytest.param(lambda b, k: b.rename(KEY, k), id="rename-to"),
        pytest.param(lambda b, k: b.rename(k, KEY), id="rename-from"),
        pytest.param(lambda b, k: b.delete(k), id="delete"),
        pytest.param(lambda b, k: asyncio.to_thread(b.open_reader, k), id="open_reader"),
    ],
)
async def test_every_method_refuses_an_illegal_key(
    blobs: ObjectStoreBlobs, use: Callable[[ObjectStoreBlobs, str], Any]
) -> None:
    await blobs.put(KEY, b"kept")
    with pytest.raises(ValueError, match="illegal object key"):
        await use(blobs, "../outside")
    assert await blobs.get(KEY) == b"kept"


# --- the S3 server under test ----------------------------------------------------------------


def test_seaweedfs_listens_on_loopback_only(s3_server: SeaweedServer) -> None:
    pid = s3_server.pid
    assert pid is not None
    addresses = listening_addresses(pid)
    assert {host for host, _ in addresses} == {"127.0.0.1"}
    assert {port for _, port in addresses} <= set(s3_server.ports.values())


# --- LocalBlobs' own file operations ---------------------------------------------------------


async def test_local_directories_are_not_objects(tmp_path: Path) -> None:
    local = LocalBlobs(tmp_path)
    await local.put("dir/object", b"x")
    assert await local.head("dir") is None
    for use in (local.get("dir"), local.get_range("dir", 0, 1)):
        with pytest.raises(BlobNotFoundError):
            await use
    assert await local.get("dir/object") == b"x"


async def test_local_small_writes_are_whole_or_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small put is written on the calling thread through a staging file: one that fails
    part-way (the disk full) leaves the previous object and no visible trace."""
    local = LocalBlobs(tmp_path)
    await local.put("a/b/object", b"old")  # creates its directories
    written = os.write

    def disk_full(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 4:
            written(fd, bytes(data)[:4])
            raise OSError(errno.ENOSPC, "No space left on device")
        return written(fd, data)

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError):
        await local.put("a/b/object", b"a new version")
    monkeypatch.undo()
    assert await local.get("a/b/object") == b"old"
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["object"]
    (tmp_path / "a" / "b" / "object#12345").write_bytes(b"left by a crash")
    assert await listed(local, "a/") == {BlobInfo(key="a/b/object", size=3)}
    await local.rename("a/b/object", "c/d/moved")
    assert await local.get("c/d/moved") == b"old"
