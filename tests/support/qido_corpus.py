"""The fixed corpus the QIDO reference table (tests/**/test_query_reference*) searches.

Real files — pydicom's character set files (names stored in Latin-1, Greek, Cyrillic, Arabic,
Hebrew, Japanese, Korean and Chinese encodings) and a CT study with its SEG, SR and KOS plus
MG, XA, US, MR and PDF instances from shared/testdata — are analyzed exactly as the store
does (``tessera_store.analysis.analyze_instance``: pydicom decodes each SpecificCharacterSet
into UTF-8 DICOM JSON). Synthetic studies add what real files lack: time zones, date-times,
multi-valued and empty attributes, nested sequences, values holding ``[``, ``%`` or ``_``.

Every resource has a short name: a study ``doe``, its series ``doe/1``, its instance
``doe/1/2``; a real file's study, series and instance are ``chrFren``, ``chrFren/s``,
``chrFren/i`` (the CQ500 CT study's other series are ``cq500/seg`` …). ``Corpus.uid`` turns a
name into the UID at its level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pydicom.data
from tests.support.dicom_files import SHARED_TESTDATA

from tessera_common.dicom_json import element
from tessera_common.messages import FrameIndex, InstanceRecord, QueryLevel
from tessera_store.analysis import analyze_instance

ROOT = "1.2.826.0.1.3680043.8.498.77"
CHARSET_FILES = (
    "chrArab",
    "chrFren",
    "chrGerm",
    "chrGreek",
    "chrH31",
    "chrH32",
    "chrHbrw",
    "chrI2",
    "chrJapMulti",
    "chrKoreanMulti",
    "chrRuss",
    "chrX1",
    "chrX2",
)
#: shared/testdata files by name; the CQ500 CT study's four series share one study.
SHARED_FILES = {
    "cq500": "transcode/ct_src_evrle.dcm",
    "cq500/seg": "highdicom/seg_binary.dcm",
    "cq500/sr": "highdicom/sr_tid1500.dcm",
    "cq500/ko": "highdicom/kos_manifest.dcm",
    "mammo": "synthetic/mg_for_presentation.dcm",
    "angio": "synthetic/xa_multiframe.dcm",
    "pdf": "pdf/encapsulated_pdf.dcm",
    "kidney": "transcode/us8_rle.dcm",
    "emri": "transcode/emri_ivrle.dcm",
}
SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "SR": "1.2.840.10008.5.1.4.1.1.88.22",
    "OT": "1.2.840.10008.5.1.4.1.1.7",
}


@dataclass
class Corpus:
    instances: list[tuple[InstanceRecord, dict[str, Any]]] = field(default_factory=list)
    names: dict[QueryLevel, dict[str, str]] = field(
        default_factory=lambda: {level: {} for level in QueryLevel}
    )

    def uid(self, level: QueryLevel, name: str) -> str:
        return self.names[level][name]

    def name_of(self, level: QueryLevel, uid: str) -> str:
        for name, known in self.names[level].items():
            if known == uid:
                return name
        return uid

    def add(self, study: str, series: str, instance: str, record: InstanceRecord) -> None:
        self.names[QueryLevel.STUDY].setdefault(study, record.study_uid)
        self.names[QueryLevel.SERIES].setdefault(series, record.series_uid)
        self.names[QueryLevel.INSTANCE][instance] = record.sop_uid


def _record(study: str, series: str, sop: str, sop_class: str) -> InstanceRecord:
    return InstanceRecord(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        sop_class_uid=sop_class,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        object_key=f"objects/{sop}.dcm",
        sidecar_key=f"objects/{sop}.json",
        size=1000,
        sha256="cd" * 32,
        stored_at="2025-01-01T00:00:00+00:00",
        frames=FrameIndex(encapsulated=False, number_of_frames=1, data_offset=100),
    )


def _analyzed(corpus: Corpus, path: Path, study: str, series: str, instance: str) -> None:
    with path.open("rb") as fp:
        found = analyze_instance(fp, size=path.stat().st_size, expected_study_uid=None)
    record = _record(found.study_uid, found.series_uid, found.sop_uid, found.sop_class_uid)
    corpus.instances.append((record, found.metadata))
    corpus.add(study, series, instance, record)


def pn(alphabetic: str, ideographic: str = "", phonetic: str = "") -> dict[str, str]:
    value = {"Alphabetic": alphabetic}
    if ideographic:
        value["Ideographic"] = ideographic
    if phonetic:
        value["Phonetic"] = phonetic
    return value


@dataclass(frozen=True)
class Synthetic:
    """One synthetic study: study attributes, then per series (modality, series attributes,
    instance attribute dicts)."""

    name: str
    number: int
    study: dict[str, Any]
    series: tuple[tuple[str, dict[str, Any], tuple[dict[str, Any], ...]], ...]


SYNTHETIC = (
    Synthetic(
        "doe",
        1,
        {
            "00080005": element("CS", "ISO_IR 192"),
            "00080020": element("DA", "20240105"),
            "00080030": element("TM", "101500"),
            "00080050": element("SH", "ACC[1]%_x"),
            "00080090": element("PN", pn("Welby^Marcus")),
            "00080201": element("SH", "+0100"),
            "00081030": element("LO", "Chest CT"),
            "00100010": element("PN", pn("Doe^John")),
            "00100020": element("LO", "PID-1"),
            "00100030": element("DA", "19700101"),
            "00101001": element("PN", pn("Roe^Richard"), pn("Poe^Edgar")),
            "00200010": element("SH", "S1"),
        },
        (
            (
                "CT",
                {
                    "0008103E": element("LO", "Axial 2.5"),
                    "00180015": element("CS", "CHEST"),
                    "00200011": element("IS", 1),
                    "00400275": {
                        "vr": "SQ",
                        "Value": [
                            {
                                "00400009": element("SH", "SPS1"),
                                "00401001": element("SH", "RP1"),
                            },
                            {
                                "00400009": element("SH", "SPS2"),
                                "00401001": element("SH", "RP2"),
                            },
                        ],
                    },
                },
                (
                    {
                        "00080008": element("CS", "ORIGINAL", "PRIMARY", "AXIAL"),
                        "0008002A": element("DT", "20240105101500.123456+0100"),
                        "00180050": element("DS", 2.5),
                        "00200013": element("IS", 1),
                    },
                    {
                        "00080008": element("CS", "DERIVED", "SECONDARY", "MPR"),
                        "0008002A": element("DT", "20240105231500"),
                        "00180050": element("DS", 5),
                        "00200013": element("IS", 2),
                        "00204000": element("LT", "C*mment? [draft]"),
                    },
                ),
            ),
            (
                "SR",
                {"00200011": element("IS", 2)},
                (
                    {
                        "00200013": element("IS", 1),
                        "0040A730": {
                            "vr": "SQ",
                            "Value": [
                                {
                                    "0040A010": element("CS", "CONTAINS"),
                                    "0040A043": {
                                        "vr": "SQ",
                                        "Value": [
                                            {
                                                "00080100": element("SH", "121071"),
                                                "00080102": element("SH", "DCM"),
                                            }
                                        ],
                                    },
                                }
                            ],
                        },
                    },
                ),
            ),
        ),
    ),
    Synthetic(
        "jane",
        2,
        {
            "00080020": element("DA", "20231231"),
            "00080030": element("TM", "233000"),
            "00080050": {"vr": "SH"},
            "00080201": element("SH", "-0500"),
            "00100010": element("PN", pn("DOE^JANE")),
            "00100020": element("LO", "PID-1"),
            "00200010": element("SH", "S2"),
        },
        (
            (
                "MR",
                {"00200011": element("IS", 7), "00180015": element("CS", "HEAD")},
                (
                    {
                        "00200013": element("IS", 1),
                        "0008002A": element("DT", "20231231233000-0500"),
                    },
                ),
            ),
        ),
    ),
    Synthetic(
        "nunez",
        3,
        {
            "00080020": element("DA", "20230615"),
            "00081030": element("LO", "Abdomen *literal?"),
            "00100010": element("PN", pn("Núñez^José María")),
            "00100020": element("LO", "PID-2"),
        },
        (
            ("US", {"00200011": element("IS", 1)}, ({"00200013": element("IS", 1)},)),
            ("CT", {"00200011": element("IS", 2)}, ({"00200013": element("IS", 1)},)),
        ),
    ),
    Synthetic(
        "blank",
        4,
        {
            "00100010": {"vr": "PN"},
            "00100020": element("LO", "PID-3"),
            "00081030": element("LO", "50%_off [x]"),
        },
        (("OT", {"0008103E": element("LO", "no number")}, ({},)),),
    ),
)


def _synthetic(corpus: Corpus, study: Synthetic) -> None:
    study_uid = f"{ROOT}.{study.number}"
    for s, (modality, series_attrs, instances) in enumerate(study.series, start=1):
        series_uid = f"{study_uid}.{s}"
        for n, instance_attrs in enumerate(instances, start=1):
            sop_uid = f"{series_uid}.{n}"
            metadata = {
                "00080016": element("UI", SOP_CLASSES[modality]),
                "00080018": element("UI", sop_uid),
                "00080060": element("CS", modality),
                "0020000D": element("UI", study_uid),
                "0020000E": element("UI", series_uid),
                **study.study,
                **series_attrs,
                **instance_attrs,
            }
            record = _record(study_uid, series_uid, sop_uid, SOP_CLASSES[modality])
            corpus.instances.append((record, dict(sorted(metadata.items()))))
            corpus.add(study.name, f"{study.name}/{s}", f"{study.name}/{s}/{n}", record)


@cache
def corpus() -> Corpus:
    """The whole corpus (analyzed once per test process)."""
    built = Corpus()
    charset_dir = Path(pydicom.data.__file__).parent / "charset_files"
    for name in CHARSET_FILES:
        _analyzed(built, charset_dir / f"{name}.dcm", name, f"{name}/s", f"{name}/i")
    for name, relative in SHARED_FILES.items():
        study = name.split("/")[0]
        series = name if "/" in name else f"{name}/s"
        _analyzed(built, SHARED_TESTDATA / relative, study, series, f"{series}/i")
    for study in SYNTHETIC:
        _synthetic(built, study)
    return built
