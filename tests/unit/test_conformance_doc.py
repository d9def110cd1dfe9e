"""docs/CONFORMANCE.md stays true: its summary tables are walked against the capabilities table
(``tessera_gateway.capabilities``), which ``test_capabilities`` checks against the router.

Every row marked *supported* must name a routed operation (and media type or parameter) the
table marks supported; *in progress* rows must be in the table; *not supported* rows must not
be. The other way round, every operation, success media type and query parameter of the table
must appear in some row, so nothing is served without being listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from tessera_gateway.capabilities import Method, Resource, Support, operations

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFORMANCE.md"
B = "/dicom-web"
STATUSES = {"supported", "in progress", "not supported"}
_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Row:
    cells: tuple[str, ...]
    line: int

    @property
    def status(self) -> str:
        return self.cells[-1]

    def codes(self, column: int) -> list[str]:
        return _CODE.findall(self.cells[column])

    def __str__(self) -> str:
        return f"CONFORMANCE.md:{self.line}: {' | '.join(self.cells)}"


def table(heading: str) -> list[Row]:
    """The rows of the first table after ``heading`` (header and separator dropped)."""
    lines = DOC.read_text().splitlines()
    start = lines.index(heading)
    rows: list[Row] = []
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = tuple(cell.strip() for cell in line.strip().strip("|").split(" | "))
        rows.append(Row(cells, number))
    return [row for row in rows[1:] if not set("".join(row.cells)) <= set("-|: ")]


RESOURCE_ROWS = table("### Resources and transactions")
MEDIA_ROWS = table("### Media types")
PARAMETER_ROWS = table("### Query parameters")
MATCHING_ROWS = table("| Matching (PS3.4 §C.2.2.2) | supported | notes |")
OPERATIONS: dict[str, tuple[Resource, Method]] = {m.id: (r, m) for r, m in operations()}


def _operations(row: Row) -> list[Method]:
    """The operations a row's first column names (operationIds, ``*`` wildcards)."""
    found: list[Method] = []
    for pattern in row.codes(0):
        matched = [m for id_, (_, m) in OPERATIONS.items() if fnmatchcase(id_, pattern)]
        assert matched, f"{row}: {pattern!r} names no operation of the capabilities table"
        found.extend(matched)
    return found


def _response_types(method: Method) -> set[str]:
    return {t for r in method.responses if 200 <= r.status < 300 for t in r.media_types}


def _query_params(method: Method) -> set[str]:
    return {p.name for p in method.params if p.style == "query"}


def _ids(rows: list[Row]) -> list[str]:
    return [f"line-{row.line}" for row in rows]


def test_tables_are_found() -> None:
    assert len(RESOURCE_ROWS) > 30
    assert len(MEDIA_ROWS) > 20
    assert len(PARAMETER_ROWS) > 20
    assert len(MATCHING_ROWS) >= 8
    for row in (*RESOURCE_ROWS, *MEDIA_ROWS, *PARAMETER_ROWS):
        assert row.status in STATUSES, row


@pytest.mark.parametrize("row", RESOURCE_ROWS, ids=_ids(RESOURCE_ROWS))
def test_resource_row(row: Row) -> None:
    [written] = row.codes(1)
    method, _, path = written.partition(" ")
    path = path.replace("{base}", B)
    described: dict[tuple[str, str], Support] = {
        (m.name, r.full_path(B)): m.support for r, m in operations()
    }
    if row.status == "not supported":
        assert (method, path) not in described, f"{row}: the gateway describes it"
    else:
        assert (method, path) in described, f"{row}: not in capabilities.RESOURCES"
        assert described[(method, path)] is Support(row.status), f"{row}: status differs"


def test_every_operation_has_a_resource_row() -> None:
    written = {row.codes(1)[0].replace("{base}", B) for row in RESOURCE_ROWS}
    missing = [
        f"{m.name} {r.full_path(B)}"
        for r, m in operations()
        if f"{m.name} {r.full_path(B)}" not in written
    ]
    assert not missing, f"add rows to docs/CONFORMANCE.md for {missing}"


@pytest.mark.parametrize("row", MEDIA_ROWS, ids=_ids(MEDIA_ROWS))
def test_media_type_row(row: Row) -> None:
    request = "(request)" in row.cells[0]
    for method in _operations(row):
        offered: dict[str, Support]
        if request:
            offered = dict(method.request_media_types)
        else:
            offered = {t: method.support for t in _response_types(method)}
        for media_type in row.codes(1):
            if row.status == "not supported":
                assert media_type not in offered, f"{row}: {method.id} offers {media_type}"
                continue
            assert media_type in offered, f"{row}: {method.id} does not offer {media_type}"
            if row.status == "supported":
                assert offered[media_type] is Support.SUPPORTED, f"{row}: {method.id}"


def test_every_success_media_type_has_a_row() -> None:
    listed: set[tuple[str, str]] = set()
    for row in MEDIA_ROWS:
        if "(request)" not in row.cells[0]:
            listed |= {(m.id, t) for m in _operations(row) for t in row.codes(1)}
    missing = sorted(
        (m.id, t) for _, m in operations() if m.dicomweb for t in _response_types(m)
        if (m.id, t) not in listed
    )  # fmt: skip
    assert not missing, f"add media type rows to docs/CONFORMANCE.md for {missing}"


@pytest.mark.parametrize("row", PARAMETER_ROWS, ids=_ids(PARAMETER_ROWS))
def test_parameter_row(row: Row) -> None:
    name = row.codes(1)[0]
    for method in _operations(row):
        params = _query_params(method)
        if row.status == "not supported":
            assert name not in params, f"{row}: {method.id} takes {name}"
            continue
        assert name in params, f"{row}: {method.id} does not take {name}"
        if row.status == "supported":
            assert method.support is Support.SUPPORTED, f"{row}: {method.id} is in progress"


def test_every_query_parameter_has_a_row() -> None:
    listed = {(m.id, row.codes(1)[0]) for row in PARAMETER_ROWS for m in _operations(row)}
    missing = sorted(
        (m.id, name) for _, m in operations() for name in _query_params(m)
        if (m.id, name) not in listed
    )  # fmt: skip
    assert not missing, f"add parameter rows to docs/CONFORMANCE.md for {missing}"


@pytest.mark.parametrize("row", MATCHING_ROWS, ids=_ids(MATCHING_ROWS))
def test_matching_row(row: Row) -> None:
    """Every matching type rides on attribute matching; the two flags are parameters too."""
    assert row.cells[1] in ("yes", "no"), row
    searches = [m for _, m in operations() if m.id.startswith("SearchFor")]
    flag = row.codes(0)[0].partition("=")[0] if row.codes(0) else "{attributeID}"
    if flag not in ("fuzzymatching", "emptyvaluematching"):
        flag = "{attributeID}"
    for method in searches:
        assert (flag in _query_params(method)) == (row.cells[1] == "yes"), f"{row}: {method.id}"
