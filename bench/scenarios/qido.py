"""Scenario 3: QIDO-RS study list as OHIF asks for it (PS3.18 §10.6), p50/p95.

Each query profile is its own scenario, so a server that rejects one profile (say, wildcards
not supported yet: 400) is reported unsupported for that profile only and measured for the
others; the same code measures a later version that supports it. Profiles are data: the
defaults below, or ``--qido ID=QUERY`` on the command line.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from bench.client import Target, call, run_load
from bench.scenarios.base import Context, Metric, Scenario, share
from bench.stats import Sample

QueryParams = list[tuple[str, str]]

#: What OHIF's study list sends with every search (its first page of 101 rows).
OHIF_PAGE: QueryParams = [
    ("limit", "101"),
    ("offset", "0"),
    ("fuzzymatching", "false"),
    ("includefield", "00081030,00080060"),
]
SEARCH_NAME_PREFIX = "Mar"
SEARCH_DATES = "20100101-20201231"
TITLES = {
    "qido_worklist": "QIDO study list, OHIF first page (no filter)",
    "qido_search": "QIDO study list, OHIF search (name*, date range, modality)",
    "qido_exact": "QIDO study list, exact-match fallback (name, modality)",
}
METRICS = (
    Metric("p50_ms", "p50", "ms", "lower"),
    Metric("p95_ms", "p95", "ms", "lower"),
)
PARAMS_NOT_FILTERING = {"limit", "offset", "fuzzymatching", "includefield"}


def default_profiles(studies: dict[str, dict[str, Any]]) -> dict[str, QueryParams]:
    """The built-in profiles; the exact-match name is the patient with most CT studies."""
    ct_names = Counter(s["PatientName"] for s in studies.values() if "CT" in s["Modalities"])
    exact_name = min(ct_names, key=lambda name: (-ct_names[name], name), default="Smith^John")
    return {
        "qido_worklist": list(OHIF_PAGE),
        "qido_search": [
            *OHIF_PAGE,
            ("PatientName", f"{SEARCH_NAME_PREFIX}*"),
            ("StudyDate", SEARCH_DATES),
            ("ModalitiesInStudy", "CT"),
        ],
        "qido_exact": [*OHIF_PAGE, ("PatientName", exact_name), ("ModalitiesInStudy", "CT")],
    }


def _matches(key: str, value: str, study: dict[str, Any]) -> bool | None:
    if key == "PatientName":
        name = str(study["PatientName"])
        return name.startswith(value[:-1]) if value.endswith("*") else name == value
    if key == "StudyDate":
        day = str(study["StudyDate"])
        if "-" in value:
            low, high = value.split("-", 1)
            return (not low or day >= low) and (not high or day <= high)
        return day == value
    if key == "ModalitiesInStudy":
        return value in study["Modalities"]
    return None


def expected_results(params: QueryParams, studies: dict[str, dict[str, Any]]) -> int | None:
    """How many studies a correct server returns for ``params`` over the dataset, or None when
    the profile uses a key this estimate does not model."""
    filters = [(k, v) for k, v in params if k not in PARAMS_NOT_FILTERING]
    count = 0
    for study in studies.values():
        verdicts = [_matches(key, value, study) for key, value in filters]
        if any(v is None for v in verdicts):
            return None
        count += all(verdicts)
    limit = dict(params).get("limit")
    return min(count, int(limit)) if limit and limit.isdigit() else count


class StudyList(Scenario):
    metrics = METRICS

    def __init__(self, context: Context, profile: str, params: QueryParams):
        super().__init__(context)
        self.id = profile
        self.title = TITLES.get(profile, f"QIDO study list, profile {profile}")
        self.params = params
        self.expected = expected_results(params, context.dataset.studies)

    async def run_round(self, target: Target, index: int) -> Sample:
        session = self.context.session(target)
        counts: list[int] = []

        async def query(_: int) -> Any:
            reply = await call(
                session,
                "GET",
                f"{target.url}/studies",
                params=self.params,
                headers={"Accept": "application/dicom+json"},
                keep_body=True,
            )
            counts.append(len(orjson.loads(reply.body)) if reply.status == 200 else 0)
            return reply

        count = share(self.context.size.qido_requests, self.rounds, index)
        load = await run_load(query, count=count, concurrency=1, budget=self.budget())
        sample = Sample(
            seconds=load.seconds,
            requests=load.requests,
            latencies={"request": load.latencies},
            details={
                "query": self.params,
                "results": max(counts, default=0),
                "work": f"{max(counts, default=0)} studies",
            },
            truncated=load.truncated,
        )
        if self.expected is not None:
            sample.details["expected_results"] = self.expected
            if counts and max(counts) != self.expected:
                sample.notes.append(
                    f"returned {max(counts)} studies where the dataset has {self.expected} matches"
                )
        return sample

    def values(self, sample: Sample) -> dict[str, float]:
        return {"p50_ms": sample.millis("request", 50), "p95_ms": sample.millis("request", 95)}
