"""Seedable synthetic studies: CT, MR and CR studies as a clinic's archive holds them.

A study *plan* (patients, dates, accession numbers, series) is drawn from the seed first; the
instances are rendered from the plan on demand. Patients have several studies; names use
non-ASCII letters and, for some, ideographic and phonetic component groups (PS3.5 §6.2.1.2),
all in UTF-8 (``ISO_IR 192``). Study dates spread over 2000-2025.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from bench.synthetic import derived_uid, phantom

FAMILY_NAMES = (
    "Müller",
    "Martínez",
    "Marković",
    "Martin",
    "Nuñez",
    "Øster",
    "Dubois",
    "Smith",
    "Kowalski",
    "Yılmaz",  # noqa: RUF001 - a real Turkish name
    "Papadopoulos",
    "Ødegård",
    "Lefèvre",
    "García",
    "Novák",
    "Şahin",
    "Johansson",
    "Nguyễn",
    "Rossi",
    "Žukauskas",
)
GIVEN_NAMES = (
    "Jürgen",
    "María José",
    "Søren",
    "Élodie",
    "John",
    "Łukasz",
    "Ayşe",
    "Zoë",
    "François",
    "Björn",
    "Anna",
    "Đorđe",
    "Chloé",
    "Mateus",
)
#: Alphabetic, ideographic and phonetic groups of a Person Name (PS3.5 §6.2.1.2).
MULTI_GROUP_NAMES = (
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "Tanaka^Hanako=田中^花子=たなか^はなこ",
    "Hong^Gildong=洪^吉洞=홍^길동",
    "Wang^Xiaoming=王^小明=",
)
INSTITUTIONS = ("Hôpital Universitaire de Genève", "Klinikum Süd", "St. Mary's Hospital")
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2025, 12, 31)


@dataclass(frozen=True)
class Patient:
    name: str
    patient_id: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class SeriesPlan:
    uid: str
    number: int
    modality: str
    description: str
    instances: int


@dataclass(frozen=True)
class StudyPlan:
    uid: str
    patient: Patient
    study_date: str
    study_time: str
    accession: str
    study_id: str
    description: str
    institution: str
    series: tuple[SeriesPlan, ...]
    seed: int

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted({s.modality for s in self.series}))

    @property
    def instance_count(self) -> int:
        return sum(s.instances for s in self.series)


#: (modality, study description, [(series description, min instances, max instances), ...]);
#: each study takes the first series and a random subset of the others.
PROTOCOLS = (
    ("CT", "CT Thorax", [("Topogram", 1, 1), ("Axial 5.0 mm", 6, 14), ("Coronal MPR", 3, 8)]),
    ("CT", "CT Abdomen/Pelvis", [("Topogram", 1, 1), ("Axial 3.0 mm", 8, 16), ("Venous", 4, 10)]),
    ("MR", "MR Brain", [("T1 SE sag", 4, 10), ("T2 TSE ax", 4, 12), ("FLAIR ax", 4, 10)]),
    ("MR", "MR Knee Right", [("PD FS cor", 4, 10), ("T1 sag", 4, 10), ("T2 ax", 3, 8)]),
    ("CR", "CR Chest PA/Lat", [("PA", 1, 1), ("Lateral", 1, 1)]),
)
#: Relative frequency of each protocol: about half the studies are CT.
PROTOCOL_WEIGHTS = (3, 2, 2, 1.5, 1.5)


def _patients(count: int, pick: random.Random, seed: int) -> list[Patient]:
    patients = []
    for index in range(count):
        if index % 17 == 5:
            name = MULTI_GROUP_NAMES[index % len(MULTI_GROUP_NAMES)]
        else:
            name = f"{pick.choice(FAMILY_NAMES)}^{pick.choice(GIVEN_NAMES)}"
        born = FIRST_DAY - timedelta(days=pick.randrange(18 * 365, 90 * 365))
        patients.append(
            Patient(
                name=name,
                patient_id=f"P{seed % 1000:03d}{index:07d}",
                birth_date=born.strftime("%Y%m%d"),
                sex=pick.choice("MF"),
            )
        )
    return patients


def _time_of_day(pick: random.Random) -> str:
    """HHMMSS during a working day."""
    seconds = pick.randrange(7 * 3600, 20 * 3600)
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"


def plan_studies(count: int, *, seed: int, kind: str = "bulk") -> list[StudyPlan]:
    """``count`` studies of about two per patient, reproducible from ``seed``."""
    pick = random.Random(f"{seed}/{kind}")
    patients = _patients(max(1, count // 2), pick, seed)
    span = (LAST_DAY - FIRST_DAY).days
    plans = []
    for index in range(count):
        modality, description, protocol = pick.choices(PROTOCOLS, PROTOCOL_WEIGHTS)[0]
        chosen = [protocol[0]] + [p for p in protocol[1:] if pick.random() < 0.7]
        study_uid = derived_uid(seed, kind, "study", index)
        series = tuple(
            SeriesPlan(
                uid=derived_uid(seed, kind, "series", index, number),
                number=number,
                modality=modality,
                description=name,
                instances=pick.randint(low, high),
            )
            for number, (name, low, high) in enumerate(chosen, start=1)
        )
        day = FIRST_DAY + timedelta(days=pick.randrange(span))
        plans.append(
            StudyPlan(
                uid=study_uid,
                patient=pick.choice(patients),
                study_date=day.strftime("%Y%m%d"),
                study_time=_time_of_day(pick),
                accession=f"{kind[:1].upper()}{day.year}{index:07d}",
                study_id=str(1 + index % 9999),
                description=description,
                institution=pick.choice(INSTITUTIONS),
                series=series,
                seed=seed,
            )
        )
    return plans


def fixture_study(
    kind: str,
    *,
    seed: int,
    instances: int,
    description: str = "CT Thorax",
    series_count: int = 1,
) -> StudyPlan:
    """A CT study for a scenario's fixture (metadata series, frames series ...): one series,
    or ``series_count`` series of ``instances`` instances each."""
    base = plan_studies(1, seed=seed, kind=kind)[0]
    series = tuple(
        SeriesPlan(
            uid=derived_uid(seed, kind, "series", 0, number),
            number=number,
            modality="CT",
            description=f"Axial 1.0 mm ({kind})",
            instances=instances,
        )
        for number in range(1, series_count + 1)
    )
    return StudyPlan(
        uid=base.uid,
        patient=base.patient,
        study_date=base.study_date,
        study_time=base.study_time,
        accession=base.accession,
        study_id=base.study_id,
        description=description,
        institution=base.institution,
        series=series,
        seed=seed,
    )


@dataclass(frozen=True)
class RenderedInstance:
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str
    data: bytes


def _series_dataset(study: StudyPlan, series: SeriesPlan, rows: int) -> Dataset:
    """The attributes every instance of ``series`` shares."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study.study_time
    ds.AccessionNumber = study.accession
    ds.Modality = series.modality
    ds.Manufacturer = "Tessera Bench"
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = "Dupré^Amélie"
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.PatientName = study.patient.name
    ds.PatientID = study.patient.patient_id
    ds.PatientBirthDate = study.patient.birth_date
    ds.PatientSex = study.patient.sex
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    spacing = round(350.0 / rows, 4)
    if series.modality == "CR":
        ds.SOPClassUID = ComputedRadiographyImageStorage
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "LL" if "Lat" in series.description else "PA"
        ds.ImagerPixelSpacing = [spacing, spacing]
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        return ds
    ds.FrameOfReferenceUID = derived_uid(study.seed, "for", series.uid)
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [spacing, spacing]
    if series.modality == "CT":
        ds.SOPClassUID = CTImageStorage
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = 120
        ds.SliceThickness = 1.0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
    else:
        ds.SOPClassUID = MRImageStorage
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = 500.0, 15.0, 1
        ds.MagneticFieldStrength = 3.0
        ds.ImagingFrequency = 127.7
        ds.SliceThickness = 4.0
        ds.WindowCenter, ds.WindowWidth = 600, 1200
    return ds


def render_series(study: StudyPlan, series: SeriesPlan, *, rows: int) -> Iterator[RenderedInstance]:
    """The instances of one planned series as PS3.10 bytes (Explicit VR Little Endian)."""
    rng = np.random.default_rng(_seed_of(series.uid))
    ds = _series_dataset(study, series, rows)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for index in range(series.instances):
        sop_uid = derived_uid(study.seed, "sop", series.uid, index)
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        ds.InstanceNumber = index + 1
        if series.modality != "CR":
            ds.ImagePositionPatient = [-175.0, -175.0, float(index) * ds.SliceThickness]
            ds.SliceLocation = float(index) * ds.SliceThickness
        ds.PixelData = phantom(rows, rows, rng, index / 10).tobytes()
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        yield RenderedInstance(study.uid, series.uid, sop_uid, series.modality, buffer.getvalue())


def _seed_of(uid: str) -> int:
    """A stable 32-bit seed from a UID (``hash`` of a str changes between processes)."""
    return int(uid.rsplit(".", 1)[-1]) % 2**32


def render_study(study: StudyPlan, *, rows: int) -> Iterator[RenderedInstance]:
    for series in study.series:
        yield from render_series(study, series, rows=rows)
