"""Validate one uploaded PS3.10 file and compute what the archive records about it.

This is the pure core of STOW-RS ingest (PS3.18 §10.5): given a seekable file (possibly backed
by ranged reads over object storage), decide whether the instance can be stored and, if so,
return its UIDs, its DICOM JSON metadata and its frame index. A bad instance raises
``InstanceRejectedError`` carrying the Failure Reason (PS3.18 Annex I, Table I.2-2) and a
reason a person can act on; the service turns it into a per-instance outcome, so one bad part
never aborts the others.

Memory stays bounded (ARCHITECTURE invariant 5): the dataset is parsed only up to its pixel
data, values larger than ``DEFER_BYTES`` are left on storage until needed, pixel data is
indexed from item headers alone, and a deflated dataset (PS3.5 §A.5) is inflated
incrementally into a spooled temporary file, never beyond ``MAX_INFLATED_BYTES``.
"""

from __future__ import annotations

import logging
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

import pydicom.config
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from tessera_common.errors import FailureReason, WarningReason
from tessera_common.messages import FrameIndex, InstanceOutcome
from tessera_common.uid import is_valid_uid

from .frames import (
    PIXEL_DATA_TAGS,
    MalformedPixelDataError,
    PixelDataHeader,
    TruncatedError,
    index_pixel_data,
    read_pixel_data_header,
)
from .metadata import dataset_to_json

DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
#: Values longer than this are not read while parsing (bulk data is never needed in memory).
DEFER_BYTES = 64 * 1024
#: A deflated dataset inflating beyond this (before its pixel data) is refused: deflate
#: reaches ratios above 1000:1, so a small upload could otherwise fill memory or disk.
MAX_INFLATED_BYTES = 512 * 1024 * 1024
#: Past the pixel data the stream is only checked for completeness, its output discarded.
MAX_INFLATED_TOTAL_BYTES = 8 * 1024 * 1024 * 1024
_SPOOL_BYTES = 8 * 1024 * 1024
_INFLATE_CHUNK = 64 * 1024

_PREAMBLE_LENGTH = 128
_LONG_HEADER_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_TRUNCATED = "truncated: the file ends inside {}; send the complete file (PS3.10 §7)"


class InstanceRejectedError(Exception):
    """The instance cannot be stored. ``reason`` says why and what to fix, without patient
    data; the UIDs are those that were read and valid (else None), so the Store Instances
    Response can still reference the instance (PS3.18 Annex I)."""

    def __init__(
        self,
        failure_reason: FailureReason,
        reason: str,
        *,
        sop_class_uid: str | None = None,
        sop_uid: str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.failure_reason = failure_reason
        self.reason = reason
        self.sop_class_uid = sop_class_uid
        self.sop_uid = sop_uid
        self.study_uid = study_uid
        self.series_uid = series_uid

    def __repr__(self) -> str:
        return f"InstanceRejectedError({self.failure_reason.name}, {self.reason!r})"

    def outcome(self) -> InstanceOutcome:
        """The Store Instances Response item of this refusal."""
        return InstanceOutcome(
            stored=False,
            sop_class_uid=self.sop_class_uid,
            sop_instance_uid=self.sop_uid,
            study_uid=self.study_uid,
            series_uid=self.series_uid,
            failure_reason=int(self.failure_reason),
            reason=self.reason,
        )


@dataclass(frozen=True, slots=True)
class InstanceAnalysis:
    """What the archive records about an instance it accepts."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    metadata: dict[str, Any]
    frames: FrameIndex | None
    warning_reason: WarningReason | None = None
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class _RequiredUID:
    field: str
    keyword: str
    label: str
    citation: str


#: The UIDs without which an instance cannot be filed (PS3.4 §B.4.1; PS3.18 §10.5.3).
REQUIRED_UIDS = (
    _RequiredUID("sop_class_uid", "SOPClassUID", "SOP Class UID (0008,0016)", "PS3.3 §C.12.1"),
    _RequiredUID("sop_uid", "SOPInstanceUID", "SOP Instance UID (0008,0018)", "PS3.3 §C.12.1"),
    _RequiredUID(
        "study_uid", "StudyInstanceUID", "Study Instance UID (0020,000D)", "PS3.3 §C.7.2.1"
    ),
    _RequiredUID(
        "series_uid", "SeriesInstanceUID", "Series Instance UID (0020,000E)", "PS3.3 §C.7.3.1"
    ),
)

#: File Meta Information attributes that must repeat the dataset's (PS3.10 §7.1, Table 7.1-1).
#: A different SOP Class is refused; a different SOP Instance UID (real RT exports do this) is
#: accepted with a warning, the dataset's UID being the one the instance is filed under.
_META_MATCHES = (
    ("MediaStorageSOPClassUID", "sop_class_uid", "Media Storage SOP Class UID (0002,0002)"),
    ("MediaStorageSOPInstanceUID", "sop_uid", "Media Storage SOP Instance UID (0002,0003)"),
)


def analyze_instance(
    fp: IO[bytes], *, size: int, expected_study_uid: str | None
) -> InstanceAnalysis:
    """Validate the PS3.10 file in ``fp`` (``size`` bytes) and compute its metadata and frame
    index.

    Raises ``InstanceRejectedError`` with, per PS3.18 Annex I Table I.2-2:

    * ``CANNOT_UNDERSTAND`` (C000): not a PS3.10 file (no 'DICM' at byte 128, PS3.10 §7.1),
      an unreadable header or pixel data, or a truncated file;
    * ``TRANSFER_SYNTAX_NOT_SUPPORTED`` (C122): no valid Transfer Syntax UID (0002,0010), or one
      that is not a transfer syntax pydicom knows;
    * ``DATASET_DOES_NOT_MATCH_SOP_CLASS`` (A900): a missing or invalid SOP Class, SOP Instance,
      Study Instance or Series Instance UID (PS3.5 §9.1), or File Meta Information that names
      another SOP Class than the dataset (PS3.10 §7.1);
    * ``STUDY_UID_MISMATCH`` (C409): the request was for one study (PS3.18 §10.5.1) and the
      instance belongs to another.

    Errors raised by ``fp`` itself (storage failures) propagate unchanged: they say nothing
    about the instance and are worth retrying.
    """
    reader = _Reader(fp, size)
    try:
        return _analyze(reader, size, expected_study_uid)
    except InstanceRejectedError:
        raise
    except Exception as exc:
        if reader.io_error is not None:
            raise reader.io_error from exc
        raise InstanceRejectedError(
            FailureReason.CANNOT_UNDERSTAND,
            f"the file could not be parsed as DICOM ({type(exc).__name__})",
        ) from exc


def _analyze(reader: _Reader, size: int, expected_study_uid: str | None) -> InstanceAnalysis:
    meta_end = _file_meta_end(reader, size)
    header = dcmread(_Reader(reader, meta_end))
    file_meta = header.file_meta
    known = {field: _valid_uid(file_meta, keyword) for keyword, field, _ in _META_MATCHES}
    transfer_syntax = _transfer_syntax(file_meta, known)
    deflated = transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    source = _InflatingReader(reader, meta_end, size) if deflated else reader
    try:
        ds, pixel_data = _read_dataset(
            source, 0 if deflated else meta_end, header, transfer_syntax, known
        )
        uids = {item.field: _valid_uid(ds, item.keyword) for item in REQUIRED_UIDS}
        context = {field: uids[field] or known.get(field) for field in uids}
        warning = _check_uids(ds, file_meta, uids, context, expected_study_uid)

        frames = None
        if pixel_data is not None and not deflated:
            frames = _index_frames(reader, ds, pixel_data, size, transfer_syntax, context)
        sop_class_uid, sop_uid, study_uid, series_uid = (
            str(uids[item.field]) for item in REQUIRED_UIDS
        )
        metadata = dataset_to_json(
            ds,
            instance_path=f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
            pixel_data_tag=pixel_data.tag if pixel_data else None,
            pixel_data_vr=pixel_data.vr if pixel_data else None,
        )
    finally:
        if isinstance(source, _InflatingReader):
            source.close()
    if reader.io_error is not None:
        # A deferred value could not be fetched; the metadata would silently lack it.
        raise reader.io_error
    return InstanceAnalysis(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=sop_class_uid,
        transfer_syntax_uid=str(transfer_syntax),
        metadata=metadata,
        frames=frames,
        warning_reason=WarningReason.DATASET_DOES_NOT_MATCH_SOP_CLASS if warning else None,
        warning=warning,
    )


def _read_dataset(
    source: _Reader | _InflatingReader,
    start: int,
    header: FileDataset,
    transfer_syntax: UID,
    known: dict[str, str | None],
) -> tuple[FileDataset, PixelDataHeader | None]:
    """Parse the dataset up to its pixel data (pydicom's ``read_dataset``, as ``dcmread``
    with ``stop_before_pixels`` does, rewinding to the start of the pixel data element).

    Truncation shows as reads that came back short: a complete file is never read past its
    end, except for the one empty read that ends a dataset without pixel data."""
    implicit_vr, little_endian = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    source.seek(start)
    source.reset_counts()
    try:
        dataset = read_dataset(
            cast(BinaryIO, source),
            implicit_vr,
            little_endian,
            stop_when=_at_pixel_data,
            defer_size=DEFER_BYTES,
        )
    except InstanceRejectedError:
        raise
    except Exception as exc:
        if source.io_error is None and source.hit_end:
            raise InstanceRejectedError(
                FailureReason.CANNOT_UNDERSTAND, _TRUNCATED.format("the header"), **known
            ) from exc
        raise
    partial_reads, empty_reads, stream_truncated = source.counts()
    ds = FileDataset(source, dataset, header.preamble, header.file_meta, implicit_vr, little_endian)
    ds.set_original_encoding(implicit_vr, little_endian, dataset.original_character_set)
    pixel_data = _pixel_data_at(source, transfer_syntax)
    truncated = None
    if partial_reads or stream_truncated or empty_reads > (0 if pixel_data else 1):
        truncated = "the header"
    elif isinstance(source, _InflatingReader) and not source.inflate_to_end():
        truncated = "the deflated data"
    if truncated:
        context = {item.field: _valid_uid(ds, item.keyword) for item in REQUIRED_UIDS}
        context.update({field: context[field] or uid for field, uid in known.items()})
        raise InstanceRejectedError(
            FailureReason.CANNOT_UNDERSTAND, _TRUNCATED.format(truncated), **context
        )
    return ds, pixel_data


def _file_meta_end(reader: _Reader, size: int) -> int:
    """Check the preamble and 'DICM' prefix and return the offset just past the File Meta
    Information group (0002,xxxx), walking its element headers (PS3.10 §7.1; explicit VR
    little endian, though some writers use implicit VR there)."""
    reader.seek(0)
    head = reader.read(_PREAMBLE_LENGTH + 4)
    if len(head) < _PREAMBLE_LENGTH + 4 or head[_PREAMBLE_LENGTH:] != b"DICM":
        raise InstanceRejectedError(
            FailureReason.CANNOT_UNDERSTAND,
            "not a DICOM PS3.10 file: no 'DICM' prefix at byte 128 (PS3.10 §7.1); send the "
            "instance as a DICOM file with its preamble and File Meta Information",
        )
    offset = _PREAMBLE_LENGTH + 4
    declared_end = None
    while offset <= size:
        reader.seek(offset)
        raw = reader.read(12)
        if not raw:
            break
        if len(raw) < 8:
            offset = size + 1
            break
        group, element = struct.unpack("<HH", raw[:4])
        if group != 0x0002:
            return offset
        vr = raw[4:6]
        if vr in _LONG_HEADER_VRS:
            if len(raw) < 12:
                offset = size + 1
                break
            offset += 12 + struct.unpack("<L", raw[8:12])[0]
        elif vr.isalpha() and vr.isupper():
            if element == 0x0000 and vr == b"UL" and len(raw) == 12:
                # File Meta Information Group Length: where the group says it ends.
                declared_end = offset + 12 + struct.unpack("<L", raw[8:12])[0]
            offset += 8 + struct.unpack("<H", raw[6:8])[0]
        else:
            offset += 8 + struct.unpack("<L", raw[4:8])[0]
    if offset <= size and (declared_end is None or declared_end <= size):
        return offset
    raise InstanceRejectedError(
        FailureReason.CANNOT_UNDERSTAND, _TRUNCATED.format("the File Meta Information")
    )


def _transfer_syntax(file_meta: Dataset, known: dict[str, str | None]) -> UID:
    """The Transfer Syntax UID (0002,0010), which must name a transfer syntax pydicom can
    parse (PS3.5 §10; PS3.18 Table I.2-2: C122)."""
    raw = file_meta.get("TransferSyntaxUID")
    value = _uid_text(raw)
    if value is None:
        problem = "has no" if raw is None or not raw else "has an invalid"
        raise InstanceRejectedError(
            FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
            f"the File Meta Information {problem} Transfer Syntax UID (0002,0010) "
            "(PS3.10 §7.1; PS3.5 §9.1)",
            **known,
        )
    uid = UID(value)
    if not uid.is_transfer_syntax:
        raise InstanceRejectedError(
            FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
            f"transfer syntax {value} is not supported; send the instance in a standard "
            "transfer syntax such as Explicit VR Little Endian (1.2.840.10008.1.2.1)",
            **known,
        )
    return uid


def _check_uids(
    ds: Dataset,
    file_meta: Dataset,
    uids: dict[str, str | None],
    context: dict[str, str | None],
    expected_study_uid: str | None,
) -> str | None:
    """Raise for UIDs that make the instance unfileable; return a warning for lesser faults."""
    warning = None
    for item in REQUIRED_UIDS:
        if uids[item.field] is None:
            reason = (
                f"the {item.label} is missing; every instance needs one ({item.citation})"
                if _is_missing(ds, item.keyword)
                else f"the {item.label} is not a valid UID: use digits and dots, at most 64 "
                "characters (PS3.5 §9.1)"
            )
            raise InstanceRejectedError(
                FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS, reason, **context
            )
    for keyword, field, label in _META_MATCHES:
        meta_value = _uid_text(file_meta.get(keyword), any_text=True)
        if meta_value is not None and meta_value != uids[field]:
            if field == "sop_uid":
                warning = (
                    f"the {label} in the File Meta Information differs from the dataset's; "
                    "the instance is filed under the dataset's SOP Instance UID (PS3.10 §7.1)"
                )
                continue
            raise InstanceRejectedError(
                FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                f"the {label} in the File Meta Information differs from the dataset's; they "
                "must be equal (PS3.10 §7.1)",
                **context,
            )
    if expected_study_uid is not None and uids["study_uid"] != expected_study_uid:
        raise InstanceRejectedError(
            FailureReason.STUDY_UID_MISMATCH,
            f"the instance belongs to study {uids['study_uid']}, not to study "
            f"{expected_study_uid} named in the request (PS3.18 §10.5.1)",
            **context,
        )
    return warning


def _index_frames(
    reader: _Reader,
    ds: Dataset,
    pixel_data: PixelDataHeader,
    size: int,
    transfer_syntax: UID,
    context: dict[str, str | None],
) -> FrameIndex:
    number_of_frames = _int_value(ds, "NumberOfFrames")
    try:
        return index_pixel_data(
            reader,
            start=pixel_data.start,
            size=size,
            explicit_vr=not transfer_syntax.is_implicit_VR,
            little_endian=transfer_syntax.is_little_endian,
            number_of_frames=1 if number_of_frames is None else max(number_of_frames, 0),
            rows=_int_value(ds, "Rows"),
            columns=_int_value(ds, "Columns"),
            samples_per_pixel=_int_value(ds, "SamplesPerPixel"),
            bits_allocated=_int_value(ds, "BitsAllocated"),
            extended_offsets=_extended_offsets(ds),
            transfer_syntax_uid=str(transfer_syntax),
            photometric_interpretation=_text_value(ds, "PhotometricInterpretation"),
        )
    except TruncatedError as exc:
        if reader.io_error is not None:
            raise reader.io_error from exc
        raise InstanceRejectedError(
            FailureReason.CANNOT_UNDERSTAND, _TRUNCATED.format("the pixel data"), **context
        ) from exc
    except MalformedPixelDataError as exc:
        raise InstanceRejectedError(
            FailureReason.CANNOT_UNDERSTAND,
            f"the pixel data cannot be read: {exc} (PS3.5 §A.4)",
            **context,
        ) from exc


def _at_pixel_data(tag: int, vr: str | None, length: int) -> bool:
    return tag in PIXEL_DATA_TAGS


def _pixel_data_at(
    source: _Reader | _InflatingReader, transfer_syntax: UID
) -> PixelDataHeader | None:
    """The pixel data element header where the parse stopped, or None when the dataset ended
    without one. pydicom rewinds to the start of the element that stopped it."""
    start = source.tell()
    try:
        header = read_pixel_data_header(
            source,
            start,
            explicit_vr=not transfer_syntax.is_implicit_VR,
            little_endian=transfer_syntax.is_little_endian,
        )
    except MalformedPixelDataError:
        return None
    finally:
        source.seek(start)
    return header


def _extended_offsets(ds: Dataset) -> tuple[list[int], list[int]] | None:
    """The Extended Offset Table and its lengths, 64-bit values (PS3.3 §C.7.6.3.1.8)."""
    try:
        offsets = ds.get(0x7FE00001)
        lengths = ds.get(0x7FE00002)
        if offsets is None or lengths is None or not offsets.value or not lengths.value:
            return None
        endian = "<" if ds.original_encoding[1] else ">"
        return (
            [v for (v,) in struct.iter_unpack(f"{endian}Q", offsets.value)],
            [v for (v,) in struct.iter_unpack(f"{endian}Q", lengths.value)],
        )
    except Exception:
        return None


def _valid_uid(ds: Dataset, keyword: str) -> str | None:
    try:
        return _uid_text(ds.get(keyword))
    except Exception:
        return None


def _is_missing(ds: Dataset, keyword: str) -> bool:
    """Absent or empty (PS3.5 §7.4); a present value that cannot be read is invalid."""
    try:
        if keyword not in ds:
            return True
        value = ds[keyword].value
    except Exception:
        return False
    return value is None or (isinstance(value, str) and not value.rstrip("\0 "))


def _uid_text(value: Any, *, any_text: bool = False) -> str | None:
    """A UI value as text: the valid UID, or (``any_text``) whatever single string it holds."""
    if value is None or not isinstance(value, str):
        return None
    text = value.rstrip("\0 ")
    if any_text:
        return text or None
    return text if is_valid_uid(text) else None


def _int_value(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except Exception:
        return None


def _text_value(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
        return value.strip() if isinstance(value, str) else None
    except Exception:
        return None


class _Reader:
    """A read-only view of ``fp`` that ends at ``end``. It counts reads that came back short
    (the file ended where the parser needed more) and keeps the first error ``fp`` raised, so
    that storage failures are told apart from bad instances."""

    def __init__(self, fp: IO[bytes] | _Reader, end: int) -> None:
        self._fp = fp
        self._end = end
        self._pos = 0
        self.partial_reads = 0
        self.empty_reads = 0
        self.io_error: Exception | None = None

    @property
    def hit_end(self) -> bool:
        return bool(self.partial_reads or self.empty_reads)

    def reset_counts(self) -> None:
        self.partial_reads = self.empty_reads = 0

    def counts(self) -> tuple[int, int, bool]:
        """Partial reads, empty reads, and whether a compressed stream ended early."""
        return self.partial_reads, self.empty_reads, False

    def read(self, n: int | None = -1) -> bytes:
        wanted = self._end - self._pos if n is None or n < 0 else n
        allowed = max(0, min(wanted, self._end - self._pos))
        try:
            self._fp.seek(self._pos)
            data = self._fp.read(allowed) if allowed else b""
        except Exception as exc:
            self.io_error = self.io_error or exc
            raise
        self._pos += len(data)
        if len(data) < wanted:
            if data:
                self.partial_reads += 1
            else:
                self.empty_reads += 1
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._end}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


class _InflatingReader:
    """A seekable view of the inflated dataset that follows the File Meta Information of a
    Deflated Explicit VR Little Endian file (PS3.5 §A.5). It inflates only as far as it is
    read, into a temporary file that moves to disk beyond a few MiB."""

    def __init__(self, source: _Reader, start: int, end: int) -> None:
        self._source = source
        self._in_pos = start
        self._end = end
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._pending = b""
        self._buffer = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        self._inflated = 0
        self._finished = False
        self._pos = 0
        self.partial_reads = 0
        self.empty_reads = 0
        self.stream_truncated = False

    @property
    def io_error(self) -> Exception | None:
        return self._source.io_error

    @property
    def hit_end(self) -> bool:
        return bool(self.partial_reads or self.empty_reads or self.stream_truncated)

    def reset_counts(self) -> None:
        self.partial_reads = self.empty_reads = 0

    def counts(self) -> tuple[int, int, bool]:
        return self.partial_reads, self.empty_reads, self.stream_truncated

    def close(self) -> None:
        self._buffer.close()

    def _inflate_chunk(self) -> bytes | None:
        """The next piece of inflated output: None at the end of the stream, or when the
        input runs out (or is corrupt) before it."""
        if self._inflater.eof:
            return None
        if not self._pending:
            if self._in_pos >= self._end:
                self.stream_truncated = True
                return None
            self._source.seek(self._in_pos)
            self._pending = self._source.read(min(_INFLATE_CHUNK, self._end - self._in_pos))
            self._in_pos += len(self._pending)
        try:
            out = self._inflater.decompress(self._pending, _INFLATE_CHUNK)
        except zlib.error:
            self.stream_truncated = True
            return None
        self._pending = self._inflater.unconsumed_tail
        return out

    def _fill(self, upto: int | None) -> None:
        while not self._finished and (upto is None or self._inflated < upto):
            out = self._inflate_chunk()
            if out is None:
                return
            self._buffer.seek(self._inflated)
            self._buffer.write(out)
            self._inflated += len(out)
            if self._inflated > MAX_INFLATED_BYTES:
                raise InstanceRejectedError(
                    FailureReason.CANNOT_UNDERSTAND,
                    f"the deflated dataset inflates beyond {MAX_INFLATED_BYTES // 2**20} MiB "
                    "before its pixel data; send it in another transfer syntax",
                )

    def inflate_to_end(self) -> bool:
        """Inflate the rest of the stream, discarding it, to check that it is complete; the
        view then ends where reading stopped. False when the stream is truncated."""
        self._finished = True
        total = self._inflated
        while (out := self._inflate_chunk()) is not None:
            total += len(out)
            if total > MAX_INFLATED_TOTAL_BYTES:
                raise InstanceRejectedError(
                    FailureReason.CANNOT_UNDERSTAND,
                    f"the deflated dataset inflates beyond {MAX_INFLATED_TOTAL_BYTES // 2**30} "
                    "GiB; send it in another transfer syntax",
                )
        return not self.stream_truncated

    def read(self, n: int | None = -1) -> bytes:
        whole = n is None or n < 0
        self._fill(None if whole else self._pos + (n or 0))
        available = max(0, self._inflated - self._pos)
        wanted = available if whole else n or 0
        self._buffer.seek(self._pos)
        data = self._buffer.read(min(wanted, available))
        self._pos += len(data)
        if len(data) < wanted:
            if data:
                self.partial_reads += 1
            else:
                self.empty_reads += 1
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:
            self._fill(None)
        base = {0: 0, 1: self._pos, 2: self._inflated}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def quiet_pydicom() -> None:
    """pydicom's validation warnings quote attribute values (patient names, birth dates…);
    they must never reach a log (ARCHITECTURE invariant 10). Our own validation reports the
    problems that matter, without values."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")
