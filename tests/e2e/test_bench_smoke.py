"""Smoke run of the benchmark suite (``bench/``): the tiny size against an embedded Tessera.

Every scenario comes back measured or unsupported (with the server's status and reason), never
crashed and never a zero; measured numbers are finite, positive and ordered (p95 >= p50). The
comparison peer (Orthanc) is not needed here: it is not part of the test suite. The last tests
check the bench's own pieces (ratio orientation, percentiles, expected QIDO results, dataset
UIDs, the large object) without a server.
"""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest

from bench.largeobject import write_large_object
from bench.scenarios import all_ids
from bench.scenarios.base import Metric
from bench.scenarios.qido import expected_results
from bench.stats import percentile
from bench.studies import plan_studies
from bench.synthetic import derived_uid

REPO = Path(__file__).resolve().parents[2]
QIDO_PROFILES = ["qido_worklist", "qido_search", "qido_exact"]
SCENARIOS = all_ids(QIDO_PROFILES)
SMOKE_SECONDS = 60


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    scratch = tmp_path_factory.mktemp("bench")
    output = scratch / "results.json"
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "run",
            "--size",
            "tiny",
            "--seed",
            "7",
            "--cache-dir",
            str(scratch / "cache"),
            "--output",
            str(output),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_SECONDS * 3,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    assert elapsed < SMOKE_SECONDS, f"the smoke run took {elapsed:.0f}s"
    document: dict[str, Any] = json.loads(output.read_text())
    return document


def _scenario(results: dict[str, Any], scenario_id: str) -> dict[str, Any]:
    found = [s for s in results["scenarios"] if s["id"] == scenario_id]
    assert len(found) == 1, scenario_id
    scenario: dict[str, Any] = found[0]
    return scenario


@pytest.mark.slow
def test_every_scenario_is_reported_in_order(results: dict[str, Any]) -> None:
    assert [s["id"] for s in results["scenarios"]] == SCENARIOS
    assert [t["key"] for t in results["targets"]] == ["A"]


@pytest.mark.slow
@pytest.mark.parametrize("scenario_id", SCENARIOS)
def test_scenario_is_measured_or_unsupported(results: dict[str, Any], scenario_id: str) -> None:
    scenario = _scenario(results, scenario_id)
    outcome = scenario["results"]["A"]
    assert outcome["status"] in ("measured", "unsupported"), outcome
    if outcome["status"] == "unsupported":
        assert outcome.get("reason"), outcome
        status = outcome.get("http_status")
        assert status is None or 400 <= status < 600, outcome
        assert "values" not in outcome
        return
    values = outcome["values"]
    assert set(values) == {m["key"] for m in scenario["metrics"]}, values
    assert all(math.isfinite(v) and v > 0 for v in values.values()), values
    for low, high in (("p50_ms", "p95_ms"), ("warm_p50_ms", "warm_p95_ms")):
        if low in values and high in values:
            assert values[high] >= values[low], values
    assert outcome["details"]["requests"] > 0


@pytest.mark.slow
def test_search_results_match_the_dataset(results: dict[str, Any]) -> None:
    for profile in QIDO_PROFILES:
        outcome = _scenario(results, profile)["results"]["A"]
        if outcome["status"] == "measured":
            assert outcome["details"]["results"] == outcome["details"]["expected_results"]


@pytest.mark.slow
def test_large_stow_reports_peak_rss_of_every_tessera_process(results: dict[str, Any]) -> None:
    outcome = _scenario(results, "large_stow")["results"]["A"]
    assert outcome["status"] == "measured", outcome
    peaks = outcome["details"]["peak_rss_mib"]
    assert {"supervisor", "gateway", "store", "query", "nats-server"} <= set(peaks), peaks


@pytest.mark.slow
def test_dataset_is_described(results: dict[str, Any]) -> None:
    groups = results["dataset"]["groups"]
    assert groups["bulk"]["studies"] == 6
    assert groups["metadata"]["instances"] == 20
    assert groups["frames_native"]["instances"] == 3


# -- the bench's own pieces, without a server ---------------------------------------------------

UID = re.compile(r"[0-9]+(\.[0-9]+)*")


@pytest.mark.parametrize(
    ("better", "a", "b", "ratio"),
    [
        pytest.param("higher", 200.0, 100.0, 2.0, id="throughput-A-twice-as-fast"),
        pytest.param("higher", 50.0, 100.0, 0.5, id="throughput-B-twice-as-fast"),
        pytest.param("lower", 10.0, 30.0, 3.0, id="latency-A-three-times-sooner"),
        pytest.param("lower", 30.0, 10.0, 1 / 3, id="latency-B-three-times-sooner"),
        pytest.param("higher", 0.0, 100.0, None, id="no-ratio-of-zero"),
    ],
)
def test_ratio_is_oriented_so_that_above_one_means_a_is_better(
    better: Any, a: float, b: float, ratio: float | None
) -> None:
    got = Metric("m", "m", "u", better).ratio(a, b)
    assert got == pytest.approx(ratio) if ratio is not None else got is None


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param([5.0], 95, 5.0, id="single"),
        pytest.param([1.0, 2.0, 3.0, 4.0], 50, 2.5, id="median-between-ranks"),
        pytest.param([float(i) for i in range(1, 101)], 95, 95.05, id="p95-of-100"),
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


STUDIES = {
    "1": {"PatientName": "Martínez^Zoë", "StudyDate": "20150101", "Modalities": ["CT"]},
    "2": {"PatientName": "Marković^Anna", "StudyDate": "20050101", "Modalities": ["CT"]},
    "3": {"PatientName": "Smith^John", "StudyDate": "20150101", "Modalities": ["MR"]},
}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param([("limit", "101")], 3, id="all"),
        pytest.param([("limit", "2")], 2, id="limited"),
        pytest.param([("PatientName", "Mar*")], 2, id="prefix"),
        pytest.param([("PatientName", "Mar*"), ("StudyDate", "20100101-20201231")], 1, id="range"),
        pytest.param([("StudyDate", "-20101231")], 1, id="open-range"),
        pytest.param([("ModalitiesInStudy", "MR")], 1, id="modality"),
        pytest.param([("PatientName", "Smith^John")], 1, id="exact"),
        pytest.param([("AccessionNumber", "A1")], None, id="key-not-modelled"),
    ],
)
def test_expected_qido_results(params: list[tuple[str, str]], expected: int | None) -> None:
    assert expected_results(params, STUDIES) == expected


def test_dataset_plan_is_reproducible_with_valid_uids() -> None:
    first, again = plan_studies(20, seed=3), plan_studies(20, seed=3)
    assert first == again
    assert first != plan_studies(20, seed=4)
    uids = [p.uid for p in first] + [s.uid for p in first for s in p.series]
    assert len(set(uids)) == len(uids)
    assert all(UID.fullmatch(uid) and len(uid) <= 64 for uid in uids)
    assert UID.fullmatch(derived_uid(0, "x")) and derived_uid(0, "x") == derived_uid(0, "x")


def test_large_object_is_one_readable_multipart_part(tmp_path: Path) -> None:
    body = write_large_object(tmp_path / "body.mime", size=4 * 2**20, seed=1)
    raw = body.path.read_bytes()
    boundary = body.content_type.rsplit("boundary=", 1)[1]
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head == f"--{boundary}\r\nContent-Type: application/dicom".encode()
    assert rest.endswith(f"\r\n--{boundary}--\r\n".encode())
    ds = pydicom.dcmread(io.BytesIO(rest[: body.instance_bytes]))
    assert ds.SOPInstanceUID == body.sop_uid
    assert int(ds.NumberOfFrames) == body.frames == 8
    assert ds.pixel_array.shape == (8, 512, 512)
