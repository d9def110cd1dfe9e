"""The embedded index's schema, and ``SearchRequest`` compiled to parameterised SQL.

Pure: no connection is opened here. Values only ever travel as ``?`` parameters, never inside
the SQL text, so a hostile matching value cannot change the statement.

A search is compiled to a *key query*: it selects only the UIDs of the matching resources in a
stable order, one row more than the limit (to tell whether more are available, PS3.18
§8.3.4.4). The index then reads the stored JSON of just the rows on the page by primary key,
so the sorter never carries JSON documents.
"""

from __future__ import annotations

from tessera_common.messages import AttributeMatch, LocateRequest, QueryLevel, SearchRequest

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT,
    patient_name TEXT,
    accession_number TEXT,
    study_date TEXT,
    study_id TEXT,
    json TEXT NOT NULL
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS studies_date ON studies (study_date, study_uid)",
    "CREATE INDEX IF NOT EXISTS studies_patient_id ON studies (patient_id)",
    "CREATE INDEX IF NOT EXISTS studies_patient_name ON studies (patient_name)",
    "CREATE INDEX IF NOT EXISTS studies_accession_number ON studies (accession_number)",
    "CREATE INDEX IF NOT EXISTS studies_study_id ON studies (study_id)",
    """CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT,
    series_number INTEGER,
    json TEXT NOT NULL
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS series_study ON series (study_uid, series_number, series_uid)",
    "CREATE INDEX IF NOT EXISTS series_modality ON series (modality, study_uid)",
    """CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    instance_number INTEGER,
    transfer_syntax_uid TEXT NOT NULL,
    object_key TEXT NOT NULL,
    sidecar_key TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    frames TEXT,
    json TEXT NOT NULL,
    metadata TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid, instance_number)",
    "CREATE INDEX IF NOT EXISTS instances_study ON instances (study_uid, sop_class_uid)",
    "CREATE INDEX IF NOT EXISTS instances_sop_class ON instances (sop_class_uid)",
)

_ALIAS = {QueryLevel.STUDY: "s", QueryLevel.SERIES: "se", QueryLevel.INSTANCE: "i"}

_STUDY_UID = 0x0020000D
_SERIES_UID = 0x0020000E
_SOP_UID = 0x00080018
_MODALITIES_IN_STUDY = 0x00080061

#: Where each matching key lives: (table alias, column, integer valued). UIDs of the higher
#: levels are also columns of the lower tables, so they need no join.
_COLUMNS: dict[int, tuple[str, str, bool]] = {
    0x00100020: ("s", "patient_id", False),  # PatientID
    0x00100010: ("s", "patient_name", False),  # PatientName (Alphabetic group)
    0x00080050: ("s", "accession_number", False),  # AccessionNumber
    0x00080020: ("s", "study_date", False),  # StudyDate
    0x00200010: ("s", "study_id", False),  # StudyID
    0x00080060: ("se", "modality", False),  # Modality
    0x00200011: ("se", "series_number", True),  # SeriesNumber
    0x00080016: ("i", "sop_class_uid", False),  # SOPClassUID
    0x00200013: ("i", "instance_number", True),  # InstanceNumber
}

_SELECT = {
    QueryLevel.STUDY: "SELECT s.study_uid FROM studies AS s",
    QueryLevel.SERIES: "SELECT se.study_uid, se.series_uid FROM series AS se",
    QueryLevel.INSTANCE: (
        "SELECT i.study_uid, i.series_uid, i.sop_uid FROM instances AS i"
        " JOIN series AS se ON se.series_uid = i.series_uid"
    ),
}

_STUDY_JOIN = {
    QueryLevel.SERIES: " JOIN studies AS s ON s.study_uid = se.study_uid",
    QueryLevel.INSTANCE: " JOIN studies AS s ON s.study_uid = i.study_uid",
}

_ORDER = {
    QueryLevel.STUDY: " ORDER BY s.study_date DESC NULLS LAST, s.study_uid",
    QueryLevel.SERIES: " ORDER BY se.study_uid, se.series_number NULLS LAST, se.series_uid",
    QueryLevel.INSTANCE: (
        " ORDER BY i.study_uid, se.series_number NULLS LAST, i.series_uid,"
        " i.instance_number NULLS LAST, i.sop_uid"
    ),
}


def _uid_column(level: QueryLevel, tag: int) -> str:
    """The column holding a UID key at ``level``: always in the level's own table."""
    alias = _ALIAS[level]
    if tag == _STUDY_UID:
        return f"{alias}.study_uid"
    if tag == _SERIES_UID and level is not QueryLevel.STUDY:
        return f"{alias}.series_uid"
    if tag == _SOP_UID and level is QueryLevel.INSTANCE:
        return "i.sop_uid"
    raise ValueError(f"UID key {tag:08X} cannot be matched at {level} level")


def _condition(level: QueryLevel, match: AttributeMatch) -> tuple[str, list[object], bool]:
    """One match as (SQL condition, parameters, needs the studies join)."""
    if match.tag in (_STUDY_UID, _SERIES_UID, _SOP_UID):
        column = _uid_column(level, match.tag)
        if match.kind == "uid_list":
            uids = match.value.split("\\")
            marks = ", ".join("?" * len(uids))
            return f"{column} IN ({marks})", list(uids), False
        return f"{column} = ?", [match.value], False
    if match.kind == "uid_list":
        raise ValueError(f"list of UID matching on non-UID key {match.tag:08X}")
    if match.tag == _MODALITIES_IN_STUDY:
        # A study matches when any of its series has the modality (PS3.4 §C.6.1.1.2).
        return (
            "EXISTS (SELECT 1 FROM series AS m"  # noqa: S608 - an alias, not a value
            f" WHERE m.study_uid = {_ALIAS[level]}.study_uid AND m.modality = ?)",
            [match.value],
            False,
        )
    if match.tag not in _COLUMNS:
        raise ValueError(f"no column for matching key {match.tag:08X}")
    alias, column, integer = _COLUMNS[match.tag]
    if alias == "i" and level is not QueryLevel.INSTANCE:
        raise ValueError(f"instance key {match.tag:08X} at {level} level")
    if alias == "se" and level is QueryLevel.STUDY:
        raise ValueError(f"series key {match.tag:08X} at study level")
    value: object = int(match.value) if integer else match.value
    return f"{alias}.{column} = ?", [value], alias == "s" and level is not QueryLevel.STUDY


def compile_search(req: SearchRequest) -> tuple[str, list[object]]:
    """The key query for ``req``: UIDs of the matching resources of ``req.level`` in result
    order, at most ``limit + 1`` rows from ``offset``.

    Columns: study level ``study_uid``; series level ``study_uid, series_uid``; instance level
    ``study_uid, series_uid, sop_uid``. Single Value Matching compiles to ``=``, List of UID
    Matching to ``IN``, Universal Matching to no condition (PS3.4 §C.2.2.2).
    """
    level = req.level
    alias = _ALIAS[level]
    conditions: list[str] = []
    params: list[object] = []
    join_studies = False
    if req.study_uid is not None:
        conditions.append(f"{alias}.study_uid = ?")
        params.append(req.study_uid)
    if req.series_uid is not None:
        conditions.append(f"{_uid_column(level, _SERIES_UID)} = ?")
        params.append(req.series_uid)
    for match in req.matches:
        if match.kind == "universal":
            continue
        condition, values, needs_study = _condition(level, match)
        conditions.append(condition)
        params.extend(values)
        join_studies = join_studies or needs_study
    sql = _SELECT[level]
    if join_studies:
        sql += _STUDY_JOIN[level]
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += _ORDER[level] + " LIMIT ? OFFSET ?"
    params.extend([req.limit + 1, req.offset])
    return sql, params


LOCATE_COLUMNS = (
    "study_uid",
    "series_uid",
    "sop_uid",
    "sop_class_uid",
    "transfer_syntax_uid",
    "object_key",
    "sidecar_key",
    "size",
    "sha256",
)


def compile_locate(req: LocateRequest, *, limit: int) -> tuple[str, list[object]]:
    """The instances of a study, series or single instance for retrieval, in series number
    then instance number order, at most ``limit + 1`` rows from ``req.offset``; the columns
    are ``LOCATE_COLUMNS``."""
    columns = ", ".join(f"i.{name}" for name in LOCATE_COLUMNS)
    conditions = ["i.study_uid = ?"]
    params: list[object] = [req.study_uid]
    if req.series_uid is not None:
        conditions.append("i.series_uid = ?")
        params.append(req.series_uid)
    if req.sop_uid is not None:
        conditions.append("i.sop_uid = ?")
        params.append(req.sop_uid)
    sql = (
        f"SELECT {columns} FROM instances AS i"  # noqa: S608 - fixed column names
        " JOIN series AS se ON se.series_uid = i.series_uid"
        f" WHERE {' AND '.join(conditions)}"
        " ORDER BY se.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST,"
        " i.sop_uid LIMIT ? OFFSET ?"
    )
    params.extend([limit + 1, req.offset])
    return sql, params
