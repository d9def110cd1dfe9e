"""The blob-store port and its obstore implementation (LocalStore and S3Store).

Object storage is Tessera's system of record (ARCHITECTURE invariant 4). Everything here
streams: uploads are written chunk by chunk, reads are ranged or iterated, and the synchronous
``open_reader`` gives parsers (pydicom, in a worker thread) a seekable file that fetches only
the bytes it touches.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Protocol, cast

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, S3Store

from . import local_files
from .settings import Settings

_KEY_PATTERN = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
READ_CHUNK = 1024 * 1024


class BlobNotFoundError(KeyError):
    """The object does not exist."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """An object's key and size; ``last_modified`` (when the store reports it) lets the
    orphan collector judge an object's age. It takes no part in comparisons."""

    key: str
    size: int
    last_modified: datetime | None = field(default=None, compare=False)


def check_key(key: str) -> str:
    """Keys are built only from validated UIDs and generated names; refuse anything else so a
    bug can never turn into a path traversal (``..`` components are rejected too)."""
    if not _KEY_PATTERN.fullmatch(key) or any(p in {".", ".."} for p in key.split("/")):
        raise ValueError(f"illegal object key {key!r}")
    return key


class BlobStore(Protocol):
    """What services need from object storage."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int: ...

    async def get(self, key: str) -> bytes: ...

    async def get_range(self, key: str, start: int, end: int) -> bytes: ...

    def stream(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]: ...

    async def head(self, key: str) -> BlobInfo | None: ...

    async def rename(self, src: str, dst: str) -> None: ...

    async def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> AsyncIterator[BlobInfo]: ...

    def open_reader(self, key: str, size: int | None = None) -> IO[bytes]: ...

    async def ping(self) -> None: ...


class ObjectStoreBlobs:
    """``BlobStore`` over any obstore store: ``LocalStore`` embedded, ``S3Store`` distributed."""

    def __init__(self, store: LocalStore | S3Store, *, multipart_chunk: int = 8 * 1024 * 1024):
        self._store = store
        self._chunk = multipart_chunk

    async def put(self, key: str, data: bytes) -> None:
        await obstore.put_async(self._store, check_key(key), data, use_multipart=False)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Write ``chunks`` to ``key``; returns the byte count. Memory stays bounded by the
        multipart chunk size; the object appears only when complete (atomic put)."""
        total = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal total
            async for chunk in chunks:
                total += len(chunk)
                yield chunk

        await obstore.put_async(
            self._store,
            check_key(key),
            counted(),
            chunk_size=self._chunk,
            max_concurrency=4,
        )
        return total

    async def get(self, key: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, check_key(key))
            return bytes(await result.bytes_async())
        except (NotFoundError, FileNotFoundError) as exc:
            raise BlobNotFoundError(key) from exc

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        try:
            data = await obstore.get_range_async(self._store, check_key(key), start=start, end=end)
        except (NotFoundError, FileNotFoundError) as exc:
            raise BlobNotFoundError(key) from exc
        return bytes(data)

    async def stream(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        options: dict[str, object] = {}
        if start is not None or end is not None:
            info = None
            if end is None:
                info = await self.head(key)
                if info is None:
                    raise BlobNotFoundError(key)
            options["range"] = (start or 0, end if end is not None else cast(BlobInfo, info).size)
        try:
            result = await obstore.get_async(
                self._store,
                check_key(key),
                options=options,  # type: ignore[arg-type]
            )
        except (NotFoundError, FileNotFoundError) as exc:
            raise BlobNotFoundError(key) from exc
        async for chunk in result.stream(min_chunk_size=READ_CHUNK):
            yield bytes(chunk)

    async def head(self, key: str) -> BlobInfo | None:
        try:
            meta = await obstore.head_async(self._store, check_key(key))
        except (NotFoundError, FileNotFoundError):
            return None
        return BlobInfo(key=key, size=int(meta["size"]), last_modified=meta["last_modified"])

    async def rename(self, src: str, dst: str) -> None:
        try:
            await obstore.rename_async(self._store, check_key(src), check_key(dst))
        except (NotFoundError, FileNotFoundError) as exc:
            raise BlobNotFoundError(src) from exc

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self._store, check_key(key))
        except (NotFoundError, FileNotFoundError):
            return

    async def list(self, prefix: str) -> AsyncIterator[BlobInfo]:
        async for batch in obstore.list(self._store, prefix=prefix.rstrip("/") or None):
            for meta in batch:
                yield BlobInfo(
                    key=str(meta["path"]),
                    size=int(meta["size"]),
                    last_modified=meta["last_modified"],
                )

    def open_reader(self, key: str, size: int | None = None) -> IO[bytes]:
        """A synchronous, seekable reader (for a worker thread) that fetches by range.

        A missing object raises ``BlobNotFoundError`` here, or on the first read when ``size``
        is given (obstore then skips the HEAD request)."""
        try:
            reader = obstore.open_reader(
                self._store, check_key(key), buffer_size=256 * 1024, size=size
            )
        except (NotFoundError, FileNotFoundError) as exc:
            raise BlobNotFoundError(key) from exc
        return cast(IO[bytes], _ReaderAdapter(reader, key))

    async def ping(self) -> None:
        """Raise when the store cannot be listed (readiness probe)."""
        async for _ in obstore.list(self._store, prefix="ping-probe", chunk_size=1):
            break


class _ReaderAdapter:
    """A seekable reader over obstore's ``ReadableFile`` with a Python-side block buffer.

    Parsers such as pydicom issue many tiny reads (tag, VR, length, value); serving those from
    a local buffer avoids a call into obstore for each. Reads are full (short only at the end of
    the object), as pydicom takes a short read for end of file.
    """

    BLOCK = 256 * 1024

    def __init__(self, reader: obstore.ReadableFile, key: str) -> None:
        self._reader = reader
        self._key = key
        self._pos = 0
        self._buffer = b""
        self._buffer_start = 0
        self._closed = False

    def _fill(self, start: int, need: int) -> None:
        self._reader.seek(start)
        want = max(need, self.BLOCK)
        parts: list[bytes] = []
        got = 0
        while got < want:
            part = bytes(self._reader.read(want - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
        self._buffer = b"".join(parts)
        self._buffer_start = start

    def read(self, size: int | None = -1) -> bytes:
        try:
            if size is None or size < 0:
                self._reader.seek(self._pos)
                data = bytes(self._reader.read())
            else:
                offset = self._pos - self._buffer_start
                if offset < 0 or offset + size > len(self._buffer):
                    self._fill(self._pos, size)
                    offset = 0
                data = self._buffer[offset : offset + size]
        except (NotFoundError, FileNotFoundError) as exc:
            raise BlobNotFoundError(self._key) from exc
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            self._pos = self._reader.size + offset
        if self._pos < 0:
            raise ValueError("negative seek position")
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._reader.close()
        self._buffer = b""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> _ReaderAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalBlobs(ObjectStoreBlobs):
    """Embedded mode: obstore ``LocalStore`` for everything, except that synchronous readers
    open the file directly (buffered by the OS and Python, no call through obstore per read)."""

    def __init__(self, root: Path) -> None:
        super().__init__(LocalStore(str(root), mkdir=True))
        self._root = root

    def local_path(self, key: str) -> Path:
        """Where object ``key`` lies on this machine (for ``sendfile``)."""
        return self._root / check_key(key)

    # Small reads and writes bypass obstore (see ``local_files``): up to ``INLINE_READ_BYTES``
    # read or ``INLINE_WRITE_BYTES`` written through the page cache cost less than a hop to a
    # worker thread, so they stay on the calling (event-loop) thread. Larger writes go through
    # obstore's blocking pool (in a worker thread, direct calls cost what obstore does).

    async def put(self, key: str, data: bytes) -> None:
        if len(data) > INLINE_WRITE_BYTES:
            await super().put(key, data)
        else:
            local_files.write(self.local_path(key), data)

    async def rename(self, src: str, dst: str) -> None:
        try:
            local_files.rename(self.local_path(src), self.local_path(dst))
        except local_files.MISSING as exc:
            raise BlobNotFoundError(src) from exc

    async def delete(self, key: str) -> None:
        local_files.remove(self.local_path(key))

    async def get(self, key: str) -> bytes:
        path = self.local_path(key)
        try:
            found = local_files.stat(path)
            if found is None:
                raise BlobNotFoundError(key)
            if found[0] > INLINE_READ_BYTES:
                return await asyncio.to_thread(local_files.read_all, path)
            return local_files.read_all(path)
        except local_files.MISSING as exc:
            raise BlobNotFoundError(key) from exc

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """A frame-sized range by ``pread``: about 20 µs against 170 µs through obstore."""
        path = self.local_path(key)
        try:
            if end - start > INLINE_READ_BYTES:
                return await asyncio.to_thread(local_files.read_range, path, start, end)
            return local_files.read_range(path, start, end)
        except local_files.MISSING as exc:
            raise BlobNotFoundError(key) from exc

    async def head(self, key: str) -> BlobInfo | None:
        found = local_files.stat(self.local_path(key))
        return None if found is None else BlobInfo(key=key, size=found[0], last_modified=found[1])

    def open_reader(self, key: str, size: int | None = None) -> IO[bytes]:
        try:
            return open(self._root / check_key(key), "rb", buffering=256 * 1024)
        except FileNotFoundError as exc:
            raise BlobNotFoundError(key) from exc


#: ``LocalBlobs`` reads objects or ranges up to this size without leaving the event loop.
INLINE_READ_BYTES = 1024 * 1024
#: ``LocalBlobs`` writes objects up to this size without leaving the event loop (a 2 KiB object:
#: about 40 µs against 160 µs of CPU through obstore).
INLINE_WRITE_BYTES = 256 * 1024


def open_blob_store(settings: Settings) -> ObjectStoreBlobs:
    """Build the blob store ``settings`` ask for."""
    if settings.blob_backend == "local":
        root = settings.resolved_blob_root
        root.mkdir(parents=True, exist_ok=True)
        return LocalBlobs(root.resolve())
    config: dict[str, object] = {"region": settings.s3_region}
    if settings.s3_endpoint:
        config["endpoint"] = settings.s3_endpoint
    if settings.s3_access_key_id:
        config["access_key_id"] = settings.s3_access_key_id
    if settings.s3_secret_access_key:
        config["secret_access_key"] = settings.s3_secret_access_key
    client_options = {"allow_http": True} if settings.s3_allow_http else None
    store = S3Store(
        settings.s3_bucket,
        config=config,  # type: ignore[arg-type]
        client_options=client_options,  # type: ignore[arg-type]
    )
    return ObjectStoreBlobs(store)
