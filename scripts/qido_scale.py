"""Time OHIF-style study-list searches on an embedded index of N studies, in-process.

Builds ``--studies`` synthetic studies (``--instances`` per study, over two or three series of
mixed modalities) directly into a ``SqliteIndex`` — no HTTP, no bus — then times the study-list
query OHIF's worklist sends (limit=101, a PatientName wildcard, a StudyDate range,
ModalitiesInStudy and four includefields) with varying values, and prints p50/p95.

    .venv/bin/python scripts/qido_scale.py --studies 10000 --instances 10
    .venv/bin/python scripts/qido_scale.py --studies 1000 --instances 10

The end-to-end figure (through the gateway and NATS) is bench/'s business; this isolates the
index.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from tessera_common.dicom_json import element
from tessera_common.messages import FrameIndex, InstanceRecord, QueryLevel
from tessera_common.qido import parse_search
from tessera_query.sqlite_index import SqliteIndex

FAMILY = (
    "Smith", "Müller", "Nuñez", "Øster", "Dubois", "Kowalski", "Tanaka", "Smythe", "Doe",
    "Garcia", "Nguyen", "Rossi", "Ivanova", "Kim", "Okafor", "Schmidt", "Lefebvre", "Silva",
)  # fmt: skip
GIVEN = ("John", "Jürgen", "María", "Søren", "Élodie", "Ana", "Hiro", "Li", "Jane", "Omar")
MODALITY_SETS = (("CT",), ("CT", "SR"), ("MR",), ("MR", "MR"), ("US",), ("CR", "CR"), ("PT", "CT"))
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.8.498.99"


def instance(study: int, series: int, number: int, rng: random.Random, day: date) -> Any:
    family, given = FAMILY[study % len(FAMILY)], GIVEN[(study // 7) % len(GIVEN)]
    modalities = MODALITY_SETS[study % len(MODALITY_SETS)]
    study_uid = f"{ROOT}.{study}"
    series_uid = f"{study_uid}.{series}"
    sop_uid = f"{series_uid}.{number}"
    metadata = {
        "00080005": element("CS", "ISO_IR 192"),
        "00080008": element("CS", "ORIGINAL", "PRIMARY", "AXIAL"),
        "00080016": element("UI", SOP_CLASS),
        "00080018": element("UI", sop_uid),
        "00080020": element("DA", day.strftime("%Y%m%d")),
        "00080030": element("TM", f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00"),
        "00080050": element("SH", f"ACC{study:08d}"),
        "00080060": element("CS", modalities[(series - 1) % len(modalities)]),
        "00080070": element("LO", "ACME Medical"),
        "00080080": element("LO", "General Hospital"),
        "00080090": element("PN", {"Alphabetic": "Welby^Marcus"}),
        "00081030": element("LO", f"Study {study % 50}"),
        "0008103E": element("LO", f"Series {series}"),
        "00100010": element("PN", {"Alphabetic": f"{family}^{given}"}),
        "00100020": element("LO", f"PID{study % 7000:06d}"),
        "00100030": element("DA", "19600101"),
        "00100040": element("CS", "MF"[study % 2]),
        "00180015": element("CS", "CHEST"),
        "00180050": element("DS", 2.5),
        "0020000D": element("UI", study_uid),
        "0020000E": element("UI", series_uid),
        "00200010": element("SH", str(study)),
        "00200011": element("IS", series),
        "00200013": element("IS", number),
        "00200032": element("DS", -125.0, -125.0, float(number)),
        "00200037": element("DS", 1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        "00280010": element("US", 512),
        "00280011": element("US", 512),
        "00280100": element("US", 16),
        "7FE00010": {"vr": "OW", "BulkDataURI": f"studies/{study_uid}/bulk/7FE00010"},
    }
    record = InstanceRecord(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=SOP_CLASS,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        object_key=f"o/{sop_uid}.dcm",
        sidecar_key=f"o/{sop_uid}.json",
        size=525_000,
        sha256="ab" * 32,
        stored_at="2025-01-01T00:00:00+00:00",
        frames=FrameIndex(encapsulated=False, number_of_frames=1, data_offset=1000),
    )
    return record, metadata


def build(index: SqliteIndex, studies: int, per_study: int, seed: int) -> float:
    rng = random.Random(seed)  # noqa: S311 - synthetic data
    start = time.perf_counter()
    for study in range(studies):
        day = date(2015, 1, 1) + timedelta(days=rng.randrange(3650))
        series_count = 2 + study % 2
        for number in range(per_study):
            record, metadata = instance(study, number % series_count + 1, number + 1, rng, day)
            index.upsert(record, metadata)
    return time.perf_counter() - start


def ohif_query(rng: random.Random, kind: str) -> list[tuple[str, str]]:
    """``prefix``: ``PatientName=abc*``; ``contains``: ``*abc*``; ``broad``: ``*a*`` over
    five years of CT or MR studies, so that every page is full (101 results)."""
    prefix = rng.choice(FAMILY)[:3]
    year = rng.randrange(2015, 2021 if kind == "broad" else 2025)
    names = {"prefix": f"{prefix}*", "contains": f"*{prefix.lower()}*", "broad": "*a*"}
    span = 4 if kind == "broad" else rng.choice((0, 1, 4))
    return [
        ("limit", "101"),
        ("offset", "0"),
        ("fuzzymatching", "false"),
        ("PatientName", names[kind]),
        ("StudyDate", f"{year}0101-{year + span}1231"),
        ("ModalitiesInStudy", "CT\\MR" if kind == "broad" else rng.choice(("CT", "MR", "CT\\MR"))),
        ("includefield", "00081030,00080060,PatientBirthDate,NumberOfStudyRelatedSeries"),
    ]


def time_queries(index: SqliteIndex, runs: int, kind: str, seed: int) -> tuple[float, ...]:
    rng = random.Random(seed)  # noqa: S311 - synthetic queries
    timings = []
    counts = []
    for _ in range(runs):
        request = parse_search(QueryLevel.STUDY, ohif_query(rng, kind))
        start = time.perf_counter()
        reply = index.search(request)
        timings.append((time.perf_counter() - start) * 1000)
        counts.append(len(reply.results))
    timings.sort()
    p50 = statistics.median(timings)
    p95 = timings[int(len(timings) * 0.95) - 1]
    return p50, p95, statistics.mean(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=10, help="instances per study")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", type=Path, default=None, help="reuse or keep this index file")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="qido-scale-"))
    path = args.db or directory / "index.sqlite"
    existed = path.exists()
    with SqliteIndex(path) as index:
        if not existed:
            seconds = build(index, args.studies, args.instances, args.seed)
            total = args.studies * args.instances
            print(f"indexed {args.studies} studies / {total} instances in {seconds:.1f} s")
        for kind in ("prefix", "contains", "broad"):
            p50, p95, found = time_queries(index, args.runs, kind, args.seed)
            print(f"{kind:9} p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  ({found:.0f} results avg)")


if __name__ == "__main__":
    main()
