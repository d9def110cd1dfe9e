"""End to end: the served ``/openapi.json`` checked against the running system by schemathesis.

The whole system runs as separate processes (``tessera serve``), a few instances are stored,
and every operation of the served document (except those marked ``x-tessera-fuzz: false``:
multipart request bodies schemathesis cannot make) is driven with a bounded number of
generated requests. Some requests get the UIDs of a stored instance in place of the generated
ones, so the success responses are exercised too (never for DELETE). Every response must pass:
no 5xx, a documented status, a documented media type, and a body valid for its JSON schema.
A summary (operations, requests, failures) is printed at the end of the module.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.support.http import stow
from tests.support.system import RunningTessera, start_tessera

from tessera_gateway.openapi import build_openapi, fuzzable_operation_ids

pytestmark = pytest.mark.slow

SEED_FILES = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "JPEG2000.dcm")
MAX_EXAMPLES = int(os.environ.get("TESSERA_SCHEMATHESIS_EXAMPLES", "25"))
"""Generated requests per operation and mode: ~50 runs x 25 stays under 90 s. Raise it (the
environment variable) for a longer bug hunt."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = fuzzable_operation_ids(build_openapi("/dicom-web"))
"""Every operation of the table schemathesis can drive; those the running gateway does not
route yet (rows in progress) are skipped."""
_UID_PARAMS = {"study": 0, "series": 1, "instance": 2}
_WADO_URI_PARAMS = {"studyUID": 0, "seriesUID": 1, "objectUID": 2}
STATS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(tmp_path_factory.mktemp("openapi") / "data")
    yield running
    assert running.stop() == 0, running.log_tail()


@pytest.fixture(scope="module")
def seeded(tessera: RunningTessera) -> list[tuple[str, str, str]]:
    paths = [get_testdata_file(name) for name in SEED_FILES]
    response = stow(tessera.root, [Path(str(path)).read_bytes() for path in paths])
    assert response.status_code == 200, response.text
    datasets = [dcmread(str(path), stop_before_pixels=True) for path in paths]
    return [(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in datasets]


@pytest.fixture(scope="module")
def schema(tessera: RunningTessera) -> Any:
    return schemathesis.openapi.from_url(f"{tessera.health_root}/openapi.json")


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http
    print(  # the run's numbers, for the closing note
        f"\nschemathesis: {STATS['operations']} (operation, mode) runs, "
        f"{STATS['examples']} requests, "
        f"{STATS['failures']} failing, {STATS['skipped']} skipped; "
        f"statuses {sorted((k, v) for k, v in STATS.items() if k.isdigit())}"
    )


def _with_real_uids(case: Any, uids: tuple[str, str, str]) -> None:
    for name, index in _UID_PARAMS.items():
        if name in case.path_parameters:
            case.path_parameters[name] = uids[index]
    if case.query is not None and "requestType" in case.query:
        for name, index in _WADO_URI_PARAMS.items():
            case.query[name] = uids[index]
        case.query["requestType"] = "WADO"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_operation_conforms(
    operation_id: str,
    mode: GenerationMode,
    tessera: RunningTessera,
    seeded: list[tuple[str, str, str]],
    schema: Any,
    session: requests.Session,
) -> None:
    try:
        operation = schema.find_operation_by_id(operation_id)
    except (KeyError, LookupError):
        STATS["skipped"] += 1
        pytest.skip(f"{operation_id} is not routed by this gateway yet")
    if operation.definition.raw.get("x-tessera-support") == "in progress":
        STATS["skipped"] += 1
        pytest.skip(f"{operation_id} is still being built (x-tessera-support: in progress)")
    if mode is GenerationMode.NEGATIVE and not operation.definition.raw.get("parameters"):
        STATS["skipped"] += 1
        pytest.skip(f"{operation_id} takes no parameters to make invalid")
    STATS["operations"] += 1
    real_uids = st.none() if operation.method.upper() == "DELETE" else st.sampled_from(seeded)

    @given(case=operation.as_strategy(generation_mode=mode), uids=st.one_of(st.none(), real_uids))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any, uids: tuple[str, str, str] | None) -> None:
        if uids is not None:
            _with_real_uids(case, uids)
        response = case.call(base_url=tessera.health_root, session=session, timeout=60)
        STATS["examples"] += 1
        STATS[str(response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)

    try:
        check()
    except BaseException:
        STATS["failures"] += 1
        raise
