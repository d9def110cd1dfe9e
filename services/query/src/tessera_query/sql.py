"""The embedded index's schema, and ``SearchRequest`` compiled to parameterised SQL (SQLite).

Pure: no connection is opened here. Values only ever travel as ``?`` parameters, never inside
the SQL text, so a hostile matching value cannot change the statement.

A search is compiled to a *key query*: it selects only the UIDs of the matching resources in a
stable order, one row more than the limit (to tell whether more are available, PS3.18
§8.3.4.4). The index then reads the stored JSON of just the rows on the page by primary key.

Where values live: the usual keys have indexed columns holding their normalized value
(``HOT_COLUMNS``); every other attribute of a level is matched in that row's match document
(``keys``, see ``match_keys``) with ``json_each`` — unindexed but complete. Both hold the same
normalized values, so a key matches the same way wherever it lives. Wildcards compile to
``GLOB`` (case-sensitive; person names are folded on both sides, which makes PN matching
case-insensitive), with ``[`` escaped; ranges to ``>=``/``<=`` on fixed-width text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tessera_common.messages import (
    AttributeMatch,
    LocateRequest,
    MatchTerm,
    MetadataRequest,
    QueryLevel,
    SearchRequest,
)
from tessera_common.qido import attribute_level

SCHEMA_VERSION = 2

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT,
    patient_name TEXT,
    patient_name_i TEXT,
    patient_name_p TEXT,
    patient_words TEXT,
    accession_number TEXT,
    study_date TEXT,
    study_time TEXT,
    study_instant TEXT,
    study_id TEXT,
    json TEXT NOT NULL,
    keys TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS studies_date ON studies (study_date DESC, study_uid)",
    "CREATE INDEX IF NOT EXISTS studies_instant ON studies (study_instant)",
    "CREATE INDEX IF NOT EXISTS studies_patient_id ON studies (patient_id)",
    "CREATE INDEX IF NOT EXISTS studies_patient_name ON studies (patient_name)",
    "CREATE INDEX IF NOT EXISTS studies_accession_number ON studies (accession_number)",
    "CREATE INDEX IF NOT EXISTS studies_study_id ON studies (study_id)",
    """CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT,
    series_number INTEGER,
    json TEXT NOT NULL,
    keys TEXT NOT NULL
)""",
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
    keys TEXT NOT NULL,
    metadata TEXT NOT NULL
)""",
    # In the order of metadata pages (``metadata_page``), so that a page is read in index order
    # rather than sorting every instance of the series or study, their JSON included, again
    # for each page. (They replace ``instances_series``, which lacked ``sop_uid``.)
    "DROP INDEX IF EXISTS instances_series",
    "CREATE INDEX IF NOT EXISTS instances_series_order"
    " ON instances (series_uid, instance_number, sop_uid)",
    "CREATE INDEX IF NOT EXISTS instances_study_order"
    " ON instances (study_uid, series_uid, instance_number, sop_uid)",
    "CREATE INDEX IF NOT EXISTS instances_study ON instances (study_uid, sop_class_uid)",
    "CREATE INDEX IF NOT EXISTS instances_sop_class ON instances (sop_class_uid)",
)

_ALIAS = {QueryLevel.STUDY: "s", QueryLevel.SERIES: "se", QueryLevel.INSTANCE: "i"}
_DEPTH = {QueryLevel.STUDY: 0, QueryLevel.SERIES: 1, QueryLevel.INSTANCE: 2}

PATIENT_NAME = "00100010"
MODALITIES_IN_STUDY = "00080061"
SOP_CLASSES_IN_STUDY = "00080062"

#: Match-document keys that have an indexed column, per level (single-valued attributes).
HOT_COLUMNS: dict[QueryLevel, dict[str, str]] = {
    QueryLevel.STUDY: {
        "0020000D": "study_uid",
        "00100020": "patient_id",
        "00100010:A": "patient_name",
        "00100010:I": "patient_name_i",
        "00100010:P": "patient_name_p",
        "00080050": "accession_number",
        "00080020": "study_date",
        "00080020:U": "study_instant",
        "00080030": "study_time",
        "00200010": "study_id",
    },
    QueryLevel.SERIES: {
        "0020000E": "series_uid",
        "00080060": "modality",
        "00200011": "series_number",
    },
    QueryLevel.INSTANCE: {
        "00080018": "sop_uid",
        "00080016": "sop_class_uid",
        "00200013": "instance_number",
    },
}
#: Study keys matched without the studies table at lower levels (its UID, computed lists).
_IN_OWN_ROW = frozenset({0x0020000D, 0x00080061, 0x00080062})
_PATIENT_NAME_GROUPS = ("patient_name", "patient_name_i", "patient_name_p")
_PATIENT_WORDS = "patient_words"

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


def glob_pattern(wildcard: str) -> str:
    """A DICOM wildcard value (``*`` any run, ``?`` one character, PS3.4 §C.2.2.2.4) as a GLOB
    pattern: ``[`` is GLOB's only other special character and is escaped as ``[[]``."""
    return wildcard.replace("[", "[[]")


def glob_literal(text: str) -> str:
    """``text`` matched literally by GLOB."""
    return text.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")


Predicate = Callable[[str], str]


@dataclass(frozen=True)
class _Columns:
    """Values in columns of the row (a person name's groups are three columns)."""

    exprs: tuple[str, ...]


@dataclass(frozen=True)
class _Document:
    """Values in a match document: ``doc`` is a JSON expression, ``key`` the key in it."""

    doc: str
    key: str


@dataclass(frozen=True)
class _Related:
    """Values of a study's series or instances: ModalitiesInStudy, SOPClassesInStudy."""

    table: str
    column: str
    study: str


_Source = _Columns | _Document | _Related


@dataclass(frozen=True)
class _Scope:
    """Where a level's values are found: its match document and, for a level's own row (not
    sequence items), its indexed columns."""

    doc: str
    alias: str | None
    level: QueryLevel | None


class _Compiler:
    def __init__(self, level: QueryLevel) -> None:
        self.level = level
        self.params: list[object] = []
        self.join_studies = False
        self._names = 0

    def name(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    def scope(self, key_level: QueryLevel, tag: int) -> _Scope:
        alias = _ALIAS[key_level]
        if (
            key_level is QueryLevel.STUDY
            and self.level is not QueryLevel.STUDY
            and tag not in _IN_OWN_ROW
        ):
            self.join_studies = True
        return _Scope(doc=f"{alias}.keys", alias=alias, level=key_level)

    # -- sources ---------------------------------------------------------------------------

    def source(self, scope: _Scope, key: str) -> _Source:
        if scope.alias is None or scope.level is None:
            return _Document(scope.doc, key)
        own = _ALIAS[self.level]
        if key == "0020000D":
            return _Columns((f"{own}.study_uid",))
        if key == "0020000E" and self.level is not QueryLevel.STUDY:
            return _Columns((f"{own}.series_uid",))
        if key == MODALITIES_IN_STUDY:
            return _Related("series", "modality", f"{own}.study_uid")
        if key == SOP_CLASSES_IN_STUDY:
            return _Related("instances", "sop_class_uid", f"{own}.study_uid")
        if scope.level is QueryLevel.STUDY and key == PATIENT_NAME:
            return _Columns(tuple(f"{scope.alias}.{c}" for c in _PATIENT_NAME_GROUPS))
        column = HOT_COLUMNS[scope.level].get(key)
        if column is not None:
            return _Columns((f"{scope.alias}.{column}",))
        return _Document(scope.doc, key)

    def any_value(self, source: _Source, predicate: Predicate) -> str:
        """Some value of ``source`` satisfies ``predicate`` (which binds its own parameters)."""
        if isinstance(source, _Columns):
            parts = [predicate(expr) for expr in source.exprs]
            return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"
        if isinstance(source, _Document):
            each = self.name("j")
            self.params.append(f'$."{source.key}"')
            return (
                f"EXISTS (SELECT 1 FROM json_each({source.doc}, ?) AS {each}"  # noqa: S608
                f" WHERE {predicate(each + '.value')})"
            )
        row = self.name("r")
        return (
            f"EXISTS (SELECT 1 FROM {source.table} AS {row} WHERE {row}.study_uid ="  # noqa: S608
            f" {source.study} AND {predicate(f'{row}.{source.column}')})"
        )

    def empty(self, source: _Source) -> str:
        """The attribute is absent or has no value (Empty Value Matching)."""
        if isinstance(source, _Columns):
            return "(" + " AND ".join(f"{expr} IS NULL" for expr in source.exprs) + ")"
        if isinstance(source, _Document):
            self.params.append(f'$."{source.key}"')
            return f"COALESCE(json_array_length({source.doc}, ?), 0) = 0"
        row = self.name("r")
        return (
            f"NOT EXISTS (SELECT 1 FROM {source.table} AS {row} WHERE"  # noqa: S608
            f" {row}.study_uid = {source.study} AND {row}.{source.column} IS NOT NULL)"
        )

    # -- predicates ------------------------------------------------------------------------

    def bind(self, template: str, *values: object) -> Predicate:
        def predicate(expr: str) -> str:
            self.params.extend(values)
            return template.format(expr)

        return predicate

    def range_predicate(self, low: str | None, high: str | None) -> Predicate:
        if low is not None and low == high:
            return self.bind("{} = ?", low)
        if low is not None and high is not None:
            return self.bind("({0} >= ? AND {0} <= ?)", low, high)
        if low is not None:
            return self.bind("{} >= ?", low)
        return self.bind("{} <= ?", high)

    def term(self, scope: _Scope, tag_key: str, term: MatchTerm) -> str:
        key = f"{tag_key}:{term.group}" if term.group else tag_key
        if term.kind == "groups":
            return "(" + " AND ".join(self.term(scope, tag_key, p) for p in term.parts) + ")"
        if term.kind == "single":
            value = term.number if term.number is not None else term.text
            return self.any_value(self.source(scope, key), self.bind("{} = ?", value))
        if term.kind == "wildcard":
            pattern = glob_pattern(term.text or "")
            return self.any_value(self.source(scope, key), self.bind("{} GLOB ?", pattern))
        if term.kind == "fuzzy":
            return self.fuzzy(scope, tag_key, term.tokens)
        if not term.zoned:
            return self.any_value(
                self.source(scope, key), self.range_predicate(term.low, term.high)
            )
        zoned = self.source(scope, f"{key}:U")
        utc = self.any_value(zoned, self.range_predicate(term.utc_low, term.utc_high))
        unknown = self.empty(zoned)
        local = self.any_value(self.source(scope, key), self.range_predicate(term.low, term.high))
        return f"({utc} OR ({unknown} AND {local}))"

    def fuzzy(self, scope: _Scope, tag_key: str, tokens: list[str]) -> str:
        """Every query token starts a word of the name (words are space-separated in the
        indexed column, one per value in a match document)."""
        conditions = []
        for token in tokens:
            if scope.level is QueryLevel.STUDY and tag_key == PATIENT_NAME:
                column = f"{scope.alias}.{_PATIENT_WORDS}"
                self.params.append(f"* {glob_literal(token)}*")
                conditions.append(f"{column} GLOB ?")
            else:
                source = _Document(scope.doc, f"{tag_key}:F")
                conditions.append(
                    self.any_value(source, self.bind("{} GLOB ?", glob_literal(token) + "*"))
                )
        return "(" + " AND ".join(conditions) + ")"

    # -- keys ------------------------------------------------------------------------------

    def match(self, scope: _Scope, match: AttributeMatch) -> str | None:
        tag_key = f"{match.tag:08X}"
        if match.kind == "universal":
            return None
        if match.kind == "empty":
            return self.empty(self.source(scope, tag_key))
        if match.kind == "sequence":
            item = self.name("it")
            self.params.append(f'$."{tag_key}"')
            inner = _Scope(doc=f"{item}.value", alias=None, level=None)
            conditions = [c for m in match.items if (c := self.match(inner, m)) is not None]
            where = " AND ".join(conditions) if conditions else "1"
            return (
                f"EXISTS (SELECT 1 FROM json_each({scope.doc}, ?) AS {item}"  # noqa: S608
                f" WHERE {where})"
            )
        if match.kind == "uid_list":
            uids = match.value.split("\\")
            marks = ", ".join("?" * len(uids))
            return self.any_value(
                self.source(scope, tag_key), self.bind(f"{{}} IN ({marks})", *uids)
            )
        terms = match.terms or [MatchTerm(kind="single", text=match.value)]
        parts = [self.term(scope, tag_key, term) for term in terms]
        condition = parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"
        if match.or_empty:
            condition = f"({condition} OR {self.empty(self.source(scope, tag_key))})"
        return condition


def compile_search(req: SearchRequest) -> tuple[str, list[object]]:
    """The key query for ``req``: UIDs of the matching resources of ``req.level`` in result
    order, at most ``limit + 1`` rows from ``offset``.

    Columns: study level ``study_uid``; series level ``study_uid, series_uid``; instance level
    ``study_uid, series_uid, sop_uid``. Each key is matched at the level it belongs to
    (``attribute_level``): study keys in the study's row even at series and instance level
    (relational queries, PS3.18 §10.6.1.2.3).
    """
    level = req.level
    compiler = _Compiler(level)
    alias = _ALIAS[level]
    conditions: list[str] = []
    if req.study_uid is not None:
        conditions.append(f"{alias}.study_uid = ?")
        compiler.params.append(req.study_uid)
    if req.series_uid is not None:
        if level is QueryLevel.STUDY:
            raise ValueError("a series UID cannot scope a study-level search")
        conditions.append(f"{alias}.series_uid = ?")
        compiler.params.append(req.series_uid)
    for match in req.matches:
        key_level = attribute_level(match.tag)
        if _DEPTH[key_level] > _DEPTH[level]:
            raise ValueError(f"{key_level} key {match.tag:08X} at {level} level")
        condition = compiler.match(compiler.scope(key_level, match.tag), match)
        if condition is not None:
            conditions.append(condition)
    params = compiler.params
    sql = _SELECT[level]
    if compiler.join_studies:
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
    sql, params = _retrieve_order(req, columns)
    return sql + " LIMIT ? OFFSET ?", [*params, limit + 1, req.offset]


def compile_contents(req: LocateRequest) -> tuple[str, list[object]]:
    """(SOP Instance UID, SHA-256) of every instance ``req`` names, in retrieve order (its
    paging ignored), for ``contents_digest``."""
    return _retrieve_order(req, "i.sop_uid, i.sha256")


def _named(req: LocateRequest | MetadataRequest, alias: str) -> tuple[list[str], list[object]]:
    """The conditions on study, series and SOP Instance UID that ``req`` names."""
    conditions = [f"{alias}study_uid = ?"]
    params: list[object] = [req.study_uid]
    if req.series_uid is not None:
        conditions.append(f"{alias}series_uid = ?")
        params.append(req.series_uid)
    if req.sop_uid is not None:
        conditions.append(f"{alias}sop_uid = ?")
        params.append(req.sop_uid)
    return conditions, params


def compile_metadata_page(req: MetadataRequest) -> tuple[str, list[object]]:
    """The stored JSON of ``req``'s instances from ``req.offset`` on, in the order of the
    ``instances_*_order`` indexes (no sort)."""
    conditions, params = _named(req, "")
    sql = (
        "SELECT metadata FROM instances WHERE "  # noqa: S608 - fixed column conditions
        + " AND ".join(conditions)
        + " ORDER BY series_uid, instance_number, sop_uid LIMIT -1 OFFSET ?"
    )
    return sql, [*params, req.offset]


def _retrieve_order(req: LocateRequest, columns: str) -> tuple[str, list[object]]:
    conditions, params = _named(req, "i.")
    sql = (
        f"SELECT {columns} FROM instances AS i"  # noqa: S608 - fixed column names
        " JOIN series AS se ON se.series_uid = i.series_uid"
        f" WHERE {' AND '.join(conditions)}"
        " ORDER BY se.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST,"
        " i.sop_uid"
    )
    return sql, params
