"""``SearchRequest`` compiled to a MongoDB filter document and sort (the production index).

Pure: builds plain dicts for pymongo; no connection. Values are always operands, never
operator names, so a hostile matching value cannot change the query; wildcard values become
regular expressions with every other character escaped.

Documents (``mongo_index``): each level's collection holds its match document (``match_keys``)
in ``k``; series and instances also carry their study's match document in ``sk`` and
instances their series' in ``ek``, so relational keys (PS3.18 §10.6.1.2.3) are matched in one
collection without joins. The study's ``k`` also holds ModalitiesInStudy and SOPClassesInStudy.
Match documents hold lists, so every comparison matches when any value does; ranges use
``$elemMatch`` so both ends apply to the same value.
"""

from __future__ import annotations

import re
from typing import Any

from tessera_common.messages import AttributeMatch, MatchTerm, QueryLevel, SearchRequest
from tessera_common.qido import attribute_level

Filter = dict[str, Any]
Sort = list[tuple[str, int]]

#: Sort value standing for "no number", so that such series and instances come last.
NO_NUMBER = 2**62

COLLECTION = {
    QueryLevel.STUDY: "studies",
    QueryLevel.SERIES: "series",
    QueryLevel.INSTANCE: "instances",
}

SORT: dict[QueryLevel, Sort] = {
    QueryLevel.STUDY: [("date", -1), ("_id", 1)],
    QueryLevel.SERIES: [("study_uid", 1), ("number", 1), ("_id", 1)],
    QueryLevel.INSTANCE: [
        ("study_uid", 1),
        ("series_number", 1),
        ("series_uid", 1),
        ("number", 1),
        ("_id", 1),
    ],
}

_DEPTH = {QueryLevel.STUDY: 0, QueryLevel.SERIES: 1, QueryLevel.INSTANCE: 2}
#: Where a level's match document is found in the documents of each collection.
_DOCUMENT = {
    (QueryLevel.STUDY, QueryLevel.STUDY): "k",
    (QueryLevel.SERIES, QueryLevel.STUDY): "sk",
    (QueryLevel.SERIES, QueryLevel.SERIES): "k",
    (QueryLevel.INSTANCE, QueryLevel.STUDY): "sk",
    (QueryLevel.INSTANCE, QueryLevel.SERIES): "ek",
    (QueryLevel.INSTANCE, QueryLevel.INSTANCE): "k",
}


def wildcard_regex(pattern: str) -> str:
    """A DICOM wildcard value (``*``, ``?``, PS3.4 §C.2.2.2.4) as an anchored regular
    expression that means the same in PCRE (MongoDB) and Python (tests): every other
    character is escaped; ``[\\s\\S]`` stands for any character, newlines included."""
    parts = ["^"]
    for char in pattern:
        if char == "*":
            parts.append(r"[\s\S]*")
        elif char == "?":
            parts.append(r"[\s\S]")
        else:
            parts.append(re.escape(char))
    while parts[-1] == r"[\s\S]*" and len(parts) > 1:
        parts.pop()  # a trailing '*' leaves a prefix search, which an index can serve
    if pattern.endswith("*"):
        return "".join(parts)
    return "".join(parts) + "$"


class _Compiler:
    def __init__(self, level: QueryLevel) -> None:
        self.level = level

    def field(self, prefix: str | None, key: str) -> str:
        """The field holding ``key``'s values: ``prefix`` is the match document's path, None
        for the top of the level's own document (where UIDs and a few keys have fields)."""
        return f"{prefix}.{key}" if prefix else key

    def own_field(self, key_level: QueryLevel, key: str) -> str:
        level = self.level
        if key == "0020000D":
            return "_id" if level is QueryLevel.STUDY else "study_uid"
        if key == "0020000E" and level is not QueryLevel.STUDY:
            return "_id" if level is QueryLevel.SERIES else "series_uid"
        if key == "00080018" and level is QueryLevel.INSTANCE:
            return "_id"
        if key == "00080016" and level is QueryLevel.INSTANCE:
            return "sop_class_uid"
        return f"{_DOCUMENT[(level, key_level)]}.{key}"

    # -- terms -----------------------------------------------------------------------------

    def empty(self, field: str) -> Filter:
        return {"$or": [{field: {"$exists": False}}, {field: {"$size": 0}}]}

    @staticmethod
    def bounds(low: str | None, high: str | None) -> Filter:
        condition: Filter = {}
        if low is not None:
            condition["$gte"] = low
        if high is not None:
            condition["$lte"] = high
        return condition

    def term(self, field: str, term: MatchTerm) -> Filter:
        name = f"{field}:{term.group}" if term.group else field
        if term.kind == "groups":
            return {"$and": [self.term(field, part) for part in term.parts]}
        if term.kind == "single":
            return {name: term.number if term.number is not None else term.text}
        if term.kind == "wildcard":
            return {name: {"$regex": wildcard_regex(term.text or "")}}
        if term.kind == "fuzzy":
            return {
                "$and": [
                    {f"{field}:F": {"$regex": "^" + re.escape(token)}} for token in term.tokens
                ]
            }
        local = {name: {"$elemMatch": self.bounds(term.low, term.high)}}
        if not term.zoned:
            return local
        utc = f"{name}:U"
        return {
            "$or": [
                {utc: {"$elemMatch": self.bounds(term.utc_low, term.utc_high)}},
                {"$and": [self.empty(utc), local]},
            ]
        }

    def match(self, field: str, match: AttributeMatch) -> Filter | None:
        if match.kind == "universal":
            return None
        if match.kind == "empty":
            return self.empty(field)
        if match.kind == "sequence":
            conditions = [
                condition
                for item in match.items
                if (condition := self.match(f"{item.tag:08X}", item)) is not None
            ]
            if not conditions:
                return {f"{field}.0": {"$exists": True}}
            return {field: {"$elemMatch": {"$and": conditions}}}
        if match.kind == "uid_list":
            return {field: {"$in": match.value.split("\\")}}
        terms = match.terms or [MatchTerm(kind="single", text=match.value)]
        parts = [self.term(field, term) for term in terms]
        condition = parts[0] if len(parts) == 1 else {"$or": parts}
        if match.or_empty:
            condition = {"$or": [condition, self.empty(field)]}
        return condition


def compile_filter(req: SearchRequest) -> Filter:
    """The filter on ``COLLECTION[req.level]`` selecting the resources ``req`` matches."""
    level = req.level
    compiler = _Compiler(level)
    conditions: list[Filter] = []
    if req.study_uid is not None:
        conditions.append({compiler.own_field(QueryLevel.STUDY, "0020000D"): req.study_uid})
    if req.series_uid is not None:
        if level is not QueryLevel.INSTANCE:
            raise ValueError("a series UID scopes instance-level searches only")
        conditions.append({"series_uid": req.series_uid})
    for match in req.matches:
        key_level = attribute_level(match.tag)
        if _DEPTH[key_level] > _DEPTH[level]:
            raise ValueError(f"{key_level} key {match.tag:08X} at {level} level")
        condition = compiler.match(compiler.own_field(key_level, f"{match.tag:08X}"), match)
        if condition is not None:
            conditions.append(condition)
    if not conditions:
        return {}
    return conditions[0] if len(conditions) == 1 else {"$and": conditions}


def compile_search(req: SearchRequest) -> tuple[str, Filter, Sort]:
    """(collection, filter, sort) of ``req``'s key query; the caller skips ``req.offset`` and
    reads ``req.limit + 1`` documents (the extra one tells whether more are available)."""
    return COLLECTION[req.level], compile_filter(req), SORT[req.level]
