"""The production index: MongoDB through pymongo's ``AsyncMongoClient``, behind ``Index``.

Three collections, ``studies``, ``series`` and ``instances``, keyed by their UIDs (``_id``).
Each document keeps its level's DICOM JSON (``json``, serialized), its match document ``k``
(``match_keys``) and — for relational queries without joins — the match documents of the
levels above it (``sk`` study, ``ek`` series; see ``mongo``). Instances also keep the full
instance JSON served by WADO-RS ``/metadata`` (``metadata``).

Writes go bottom-up — instance, then series, then study — so a search never finds a study or
series whose instance is not there yet (ARCHITECTURE invariant 2). A study's or series' keys
copied into the documents below are rewritten only when they change, so indexing the
instances of one study costs one write each, not one per instance already stored.
MongoDB has no multi-document transaction without a replica set; writes of one study are
serialized within the process by a lock, and every copy is re-derived from its source on each
write, so a later write repairs what an interrupted one left.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from tessera_common.dicom_json import JsonDataset, element, subset, tag_key
from tessera_common.messages import (
    ContentsReply,
    IndexReply,
    InstanceRecord,
    LocatedInstance,
    LocateReply,
    LocateRequest,
    MetadataReply,
    MetadataRequest,
    QueryLevel,
    SearchReply,
    SearchRequest,
    contents_digest,
)
from tessera_common.qido import (
    RELATIONAL_SERIES_ATTRIBUTES,
    RELATIONAL_STUDY_ATTRIBUTES,
    REQUIRED_RETURN_ATTRIBUTES,
)

from .attributes import (
    SERIES_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    compose_result,
    instance_computed,
    series_computed,
    split_levels,
    study_computed,
    wants_patient_counts,
    without_bulk_data,
)
from .match_keys import MatchDocument, first
from .mongo import NO_NUMBER, compile_search
from .paging import PageBudget
from .sql import LOCATE_COLUMNS
from .sqlite_index import MAX_LOCATE_LIMIT

MODALITIES = "00080061"
SOP_CLASSES = "00080062"

#: Indexes created by ``ensure_indexes``: the sort orders of the key queries, the usual
#: matching keys (multikey indexes on the match documents) and the joins of composition.
INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    "studies": [
        [("date", -1), ("_id", 1)],
        [("patient_id", 1)],
        [("k.00100010", 1)],
        [("k.00100010:F", 1)],
        [("k.00100020", 1)],
        [("k.00080050", 1)],
        [("k.00080020", 1)],
        [("k.00080061", 1)],
    ],
    "series": [
        [("study_uid", 1), ("number", 1), ("_id", 1)],
        [("k.00080060", 1)],
        [("sk.00100020", 1)],
        [("patient_id", 1)],
    ],
    "instances": [
        [("study_uid", 1), ("series_number", 1), ("series_uid", 1), ("number", 1), ("_id", 1)],
        # The order of metadata pages, at series and at study level.
        [("series_uid", 1), ("number", 1), ("_id", 1)],
        [("study_uid", 1), ("series_uid", 1), ("number", 1), ("_id", 1)],
        [("sop_class_uid", 1)],
        [("patient_id", 1)],
    ],
}


def _dumps(dataset: Mapping[str, Any]) -> str:
    return orjson.dumps(dataset).decode()


def _number(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return NO_NUMBER


def _study_keys(own: MatchDocument, modalities: Sequence[str], sop_classes: Sequence[str]) -> Any:
    return {**own, MODALITIES: sorted(set(modalities)), SOP_CLASSES: sorted(set(sop_classes))}


class MongoIndex:
    """The ``Index`` port on a MongoDB database (``AsyncMongoClient(uri)[name]``)."""

    def __init__(self, database: Any, *, client: Any = None) -> None:
        self._db = database
        self._client = client
        self._studies = database["studies"]
        self._series = database["series"]
        self._instances = database["instances"]
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @classmethod
    def connect(cls, uri: str, database: str) -> MongoIndex:
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        return cls(client[database], client=client)

    async def ensure_indexes(self) -> None:
        for name, indexes in INDEXES.items():
            for keys in indexes:
                await self._db[name].create_index(keys)

    def _lock(self, study_uid: str) -> asyncio.Lock:
        lock = self._locks.get(study_uid)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[study_uid] = lock
        return lock

    # -- writing ---------------------------------------------------------------------------

    async def upsert(self, record: InstanceRecord, metadata: Mapping[str, Any]) -> IndexReply:
        """Index one instance (idempotent, keyed by SOP Instance UID), with the same rules as
        ``SqliteIndex.upsert``: latest instance wins for study and series attributes; moved
        instances and series are followed and emptied series and studies removed."""
        left: set[str] = set()
        async with self._lock(record.study_uid):
            previous = await self._write(record, metadata, left)
        for study_uid in sorted(left - {record.study_uid}):
            async with self._lock(study_uid):
                await self._refresh_study(study_uid)
        if previous is None:
            return IndexReply(indexed=True)
        return IndexReply(
            indexed=True,
            replaced=True,
            previous_object_key=previous["object_key"],
            previous_sidecar_key=previous["sidecar_key"],
        )

    async def upsert_many(
        self, items: Sequence[tuple[InstanceRecord, Mapping[str, Any]]]
    ) -> list[IndexReply]:
        """``upsert`` each (record, metadata) in order. MongoDB has no multi-document
        transaction here: each instance's documents are written as by ``upsert``, and the
        caller acknowledges none of them before all are written."""
        return [await self.upsert(record, metadata) for record, metadata in items]

    async def _write(
        self, record: InstanceRecord, metadata: Mapping[str, Any], left: set[str]
    ) -> dict[str, Any] | None:
        """Write the instance, its series and study; add to ``left`` the studies that an
        instance or series moved out of (the caller refreshes them under their own lock)."""
        study_uid, series_uid, sop_uid = record.study_uid, record.series_uid, record.sop_uid
        split = split_levels(metadata, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        previous = await self._instances.find_one(
            {"_id": sop_uid}, {"series_uid": 1, "study_uid": 1, "object_key": 1, "sidecar_key": 1}
        )
        old_series = await self._series.find_one({"_id": series_uid}, {"study_uid": 1, "k": 1})
        old_study = await self._studies.find_one({"_id": study_uid}, {"k": 1})
        modality = first(split.series_keys, "00080060")
        other_modalities = await self._series.distinct(
            "modality", {"study_uid": study_uid, "_id": {"$ne": series_uid}}
        )
        other_classes = await self._instances.distinct(
            "sop_class_uid", {"study_uid": study_uid, "_id": {"$ne": sop_uid}}
        )
        study_keys = _study_keys(
            split.study_keys,
            [m for m in [*other_modalities, modality] if m],
            [*other_classes, record.sop_class_uid],
        )
        patient_id = first(split.study_keys, "00100020")
        series_number = _number(first(split.series_keys, "00200011"))
        await self._instances.replace_one(
            {"_id": sop_uid},
            {
                "_id": sop_uid,
                "series_uid": series_uid,
                "study_uid": study_uid,
                "sop_class_uid": record.sop_class_uid,
                "number": _number(first(split.instance_keys, "00200013")),
                "series_number": series_number,
                "patient_id": patient_id,
                "transfer_syntax_uid": record.transfer_syntax_uid,
                "object_key": record.object_key,
                "sidecar_key": record.sidecar_key,
                "size": record.size,
                "sha256": record.sha256,
                "stored_at": record.stored_at,
                "frames": record.frames.model_dump_json() if record.frames else None,
                "json": _dumps(split.instance),
                "metadata": _dumps(metadata),
                "k": split.instance_keys,
                "ek": split.series_keys,
                "sk": study_keys,
            },
            upsert=True,
        )
        await self._series.replace_one(
            {"_id": series_uid},
            {
                "_id": series_uid,
                "study_uid": study_uid,
                "modality": modality,
                "number": series_number,
                "patient_id": patient_id,
                "json": _dumps(split.series),
                "k": split.series_keys,
                "sk": study_keys,
            },
            upsert=True,
        )
        if old_series is not None and old_series["study_uid"] != study_uid:
            await self._instances.update_many(
                {"series_uid": series_uid}, {"$set": {"study_uid": study_uid}}
            )
        if (
            old_series is None
            or old_series.get("k") != split.series_keys
            or (old_series["study_uid"] != study_uid)
        ):
            await self._instances.update_many(
                {"series_uid": series_uid},
                {"$set": {"ek": split.series_keys, "series_number": series_number}},
            )
        await self._studies.replace_one(
            {"_id": study_uid},
            {
                "_id": study_uid,
                "patient_id": patient_id,
                "date": first(split.study_keys, "00080020"),
                "json": _dumps(split.study),
                "k": study_keys,
            },
            upsert=True,
        )
        moved_in = old_series is not None and old_series["study_uid"] != study_uid
        if old_study is None or old_study.get("k") != study_keys or moved_in:
            await self._propagate_study(study_uid, study_keys, patient_id)
        if moved_in:
            left.add(old_series["study_uid"])
        if previous is not None and previous["series_uid"] != series_uid:
            old = previous["series_uid"]
            if await self._instances.count_documents({"series_uid": old}, limit=1) == 0:
                await self._series.delete_one({"_id": old})
            left.add(previous["study_uid"])
            if previous["study_uid"] == study_uid:
                await self._refresh_study(study_uid)
        return previous  # type: ignore[no-any-return]

    async def delete(self, sop_uids: Sequence[str]) -> list[LocatedInstance]:
        """Remove instances, then the series and studies they leave empty, as
        ``SqliteIndex.delete``; each study's remaining computed lists are re-derived."""
        unique = sorted(set(sop_uids))
        if not unique:
            return []
        projection = dict.fromkeys(LOCATE_COLUMNS, 1)
        found = await self._instances.find({"_id": {"$in": unique}}, projection).to_list(None)
        removed = [
            LocatedInstance(
                **{name: doc["_id"] if name == "sop_uid" else doc[name] for name in LOCATE_COLUMNS}
            )
            for doc in found
        ]
        for study_uid in sorted({instance.study_uid for instance in removed}):
            async with self._lock(study_uid):
                gone = [i for i in removed if i.study_uid == study_uid]
                await self._instances.delete_many({"_id": {"$in": [i.sop_uid for i in gone]}})
                for series_uid in sorted({i.series_uid for i in gone}):
                    if (
                        await self._instances.count_documents({"series_uid": series_uid}, limit=1)
                        == 0
                    ):
                        await self._series.delete_one({"_id": series_uid})
                await self._refresh_study(study_uid)
        return removed

    async def _propagate_study(self, study_uid: str, keys: Any, patient_id: Any) -> None:
        update = {"$set": {"sk": keys, "patient_id": patient_id}}
        await self._series.update_many({"study_uid": study_uid}, update)
        await self._instances.update_many({"study_uid": study_uid}, update)

    async def _refresh_study(self, study_uid: str) -> None:
        """Re-derive a study's computed lists after a series or instance left it; remove it
        when nothing is left."""
        study = await self._studies.find_one({"_id": study_uid}, {"k": 1, "patient_id": 1})
        if study is None:
            return
        if await self._series.count_documents({"study_uid": study_uid}, limit=1) == 0:
            await self._studies.delete_one({"_id": study_uid})
            return
        own = {k: v for k, v in study["k"].items() if k not in (MODALITIES, SOP_CLASSES)}
        modalities = await self._series.distinct("modality", {"study_uid": study_uid})
        classes = await self._instances.distinct("sop_class_uid", {"study_uid": study_uid})
        keys = _study_keys(own, [m for m in modalities if m], classes)
        if keys != study["k"]:
            await self._studies.update_one({"_id": study_uid}, {"$set": {"k": keys}})
            await self._propagate_study(study_uid, keys, study.get("patient_id"))

    # -- reading ---------------------------------------------------------------------------

    async def contains(self, sop_uid: str, sha256: str) -> bool:
        found = await self._instances.find_one({"_id": sop_uid, "sha256": sha256}, {"_id": 1})
        return found is not None

    async def instance_metadata(self, sop_uid: str) -> str | None:
        found = await self._instances.find_one({"_id": sop_uid}, {"metadata": 1})
        return str(found["metadata"]) if found is not None else None

    async def metadata_page(self, req: MetadataRequest) -> MetadataReply:
        selector: dict[str, Any] = {"study_uid": req.study_uid}
        if req.series_uid is not None:
            selector["series_uid"] = req.series_uid
        if req.sop_uid is not None:
            selector["_id"] = req.sop_uid
        cursor = (
            self._instances.find(selector, {"metadata": 1})
            .sort([("series_uid", 1), ("number", 1), ("_id", 1)])
            .skip(req.offset)
        )
        budget = PageBudget()
        documents: list[str] = []
        async for found in cursor:
            document = str(found["metadata"])
            if not budget.admit(len(document)):
                return MetadataReply(documents=documents, next_offset=req.offset + len(documents))
            documents.append(document)
        return MetadataReply(documents=documents)

    async def contents(self, req: LocateRequest) -> ContentsReply:
        """As ``SqliteIndex.contents``."""
        found = await (
            self._instances.find(_locate_selector(req), {"sha256": 1})
            .sort(RETRIEVE_ORDER)
            .to_list(None)
        )
        return ContentsReply(
            count=len(found), digest=contents_digest((d["_id"], d["sha256"]) for d in found)
        )

    async def locate(self, req: LocateRequest) -> LocateReply:
        limit = min(max(req.limit, 1), MAX_LOCATE_LIMIT)
        projection = dict.fromkeys(LOCATE_COLUMNS, 1)
        found = (
            await self._instances.find(_locate_selector(req), projection)
            .sort(RETRIEVE_ORDER)
            .skip(req.offset)
            .limit(limit + 1)
            .to_list(None)
        )
        budget = PageBudget()
        instances: list[LocatedInstance] = []
        for doc in found[:limit]:
            located = LocatedInstance(
                **{name: doc["_id"] if name == "sop_uid" else doc[name] for name in LOCATE_COLUMNS}
            )
            if not budget.admit(len(located.model_dump_json())):
                break
            instances.append(located)
        more = len(found) > len(instances)
        return LocateReply(
            instances=instances, next_offset=req.offset + len(instances) if more else None
        )

    async def search(self, req: SearchRequest) -> SearchReply:
        """One page of results for ``req`` (PS3.18 §10.6.3), as ``SqliteIndex.search``."""
        collection, selector, sort = compile_search(req)
        projection = {"_id": 1, "study_uid": 1, "series_uid": 1}
        keys = (
            await self._db[collection]
            .find(selector, projection)
            .sort(sort)
            .skip(req.offset)
            .limit(req.limit + 1)
            .to_list(None)
        )
        more_available = len(keys) > req.limit
        keys = keys[: req.limit]
        if req.level is QueryLevel.STUDY:
            results = await self._study_results(req, [k["_id"] for k in keys])
        elif req.level is QueryLevel.SERIES:
            results = await self._series_results(req, [(k["study_uid"], k["_id"]) for k in keys])
        else:
            results = await self._instance_results(
                req, [(k["study_uid"], k["series_uid"], k["_id"]) for k in keys]
            )
        budget = PageBudget()
        page: list[JsonDataset] = []
        for result in results:
            if not budget.admit(len(orjson.dumps(result))):
                return SearchReply(
                    results=page,
                    next_offset=req.offset + len(page),
                    more_available=more_available,
                )
            page.append(result)
        return SearchReply(results=page, more_available=more_available)

    async def _json(self, collection: Any, uids: Sequence[str]) -> dict[str, JsonDataset]:
        found = await collection.find({"_id": {"$in": list(uids)}}, {"json": 1}).to_list(None)
        return {doc["_id"]: orjson.loads(doc["json"]) for doc in found}

    async def _study_results(self, req: SearchRequest, uids: list[str]) -> list[JsonDataset]:
        docs = await self._json(self._studies, uids)
        series = await self._series.find(
            {"study_uid": {"$in": uids}}, {"study_uid": 1, "modality": 1}
        ).to_list(None)
        series_counts = collections.Counter(doc["study_uid"] for doc in series)
        modalities: dict[str, set[str]] = collections.defaultdict(set)
        for doc in series:
            if doc.get("modality"):
                modalities[doc["study_uid"]].add(doc["modality"])
        grouped = await (
            await self._instances.aggregate(
                [
                    {"$match": {"study_uid": {"$in": uids}}},
                    {
                        "$group": {
                            "_id": {"study": "$study_uid", "sop_class": "$sop_class_uid"},
                            "count": {"$sum": 1},
                        }
                    },
                ]
            )
        ).to_list(None)
        instance_counts: collections.Counter[str] = collections.Counter()
        sop_classes: dict[str, set[str]] = collections.defaultdict(set)
        for row in grouped:
            instance_counts[row["_id"]["study"]] += row["count"]
            sop_classes[row["_id"]["study"]].add(row["_id"]["sop_class"])
        patients = (
            await self._patient_counts(uids)
            if wants_patient_counts(req.include_fields, req.include_all)
            else None
        )
        results = []
        for uid in uids:
            if uid not in docs:
                continue
            results.append(
                compose_result(
                    own=docs[uid],
                    required=REQUIRED_RETURN_ATTRIBUTES[QueryLevel.STUDY],
                    computed=study_computed(
                        uid,
                        series_count=series_counts[uid],
                        instance_count=instance_counts[uid],
                        modalities=modalities[uid],
                        sop_classes=sop_classes[uid],
                        patient_counts=patients.get(
                            uid, (1, series_counts[uid], instance_counts[uid])
                        )
                        if patients is not None
                        else None,
                    ),
                    include_fields=req.include_fields,
                    include_all=req.include_all,
                )
            )
        return results

    async def _count_by_patient(self, collection: Any, ids: list[str]) -> dict[str, int]:
        rows = await (
            await collection.aggregate(
                [
                    {"$match": {"patient_id": {"$in": ids}}},
                    {"$group": {"_id": "$patient_id", "count": {"$sum": 1}}},
                ]
            )
        ).to_list(None)
        return {row["_id"]: row["count"] for row in rows}

    async def _patient_counts(self, uids: list[str]) -> dict[str, tuple[int, int, int]]:
        found = await self._studies.find(
            {"_id": {"$in": uids}, "patient_id": {"$ne": None}}, {"patient_id": 1}
        ).to_list(None)
        patients = {doc["_id"]: doc["patient_id"] for doc in found}
        ids = sorted(set(patients.values()))
        if not ids:
            return {}
        studies = await self._count_by_patient(self._studies, ids)
        series = await self._count_by_patient(self._series, ids)
        instances = await self._count_by_patient(self._instances, ids)
        return {
            uid: (studies.get(pid, 0), series.get(pid, 0), instances.get(pid, 0))
            for uid, pid in patients.items()
        }

    async def _series_results(
        self, req: SearchRequest, keys: list[tuple[str, str]]
    ) -> list[JsonDataset]:
        series_uids = [series for _, series in keys]
        docs = await self._json(self._series, series_uids)
        studies: dict[str, JsonDataset] = {}
        if req.study_uid is None or req.include_fields:
            studies = await self._json(self._studies, list({study for study, _ in keys}))
        counted = await (
            await self._instances.aggregate(
                [
                    {"$match": {"series_uid": {"$in": series_uids}}},
                    {"$group": {"_id": "$series_uid", "count": {"$sum": 1}}},
                ]
            )
        ).to_list(None)
        counts = {row["_id"]: row["count"] for row in counted}
        results = []
        for study_uid, series_uid in keys:
            if series_uid not in docs:
                continue
            study = studies.get(study_uid, {})
            relational = {tag_key(STUDY_INSTANCE_UID): element("UI", study_uid)}
            if req.study_uid is None:
                relational.update(subset(study, RELATIONAL_STUDY_ATTRIBUTES))
            results.append(
                compose_result(
                    own=docs[series_uid],
                    required=REQUIRED_RETURN_ATTRIBUTES[QueryLevel.SERIES],
                    computed=series_computed(
                        study_uid, series_uid, instance_count=counts.get(series_uid, 0)
                    ),
                    relational=relational,
                    include_fields=req.include_fields,
                    include_all=req.include_all,
                    sources=(study,),
                )
            )
        return results

    async def _instance_results(
        self, req: SearchRequest, keys: list[tuple[str, str, str]]
    ) -> list[JsonDataset]:
        full = req.include_all or bool(req.include_fields)
        projection = {"json": 1, "metadata": 1} if full else {"json": 1}
        found = await self._instances.find(
            {"_id": {"$in": [sop for _, _, sop in keys]}}, projection
        ).to_list(None)
        docs = {doc["_id"]: doc for doc in found}
        series_docs: dict[str, JsonDataset] = {}
        if req.series_uid is None:
            series_docs = await self._json(self._series, list({se for _, se, _ in keys}))
        study_docs: dict[str, JsonDataset] = {}
        if req.study_uid is None:
            study_docs = await self._json(self._studies, list({st for st, _, _ in keys}))
        results = []
        for study_uid, series_uid, sop_uid in keys:
            doc = docs.get(sop_uid)
            if doc is None:
                continue
            instance = orjson.loads(doc["json"])
            clean = without_bulk_data(orjson.loads(doc["metadata"])) if full else {}
            relational: JsonDataset = {}
            if req.study_uid is None:
                relational.update(
                    subset(study_docs.get(study_uid, {}), RELATIONAL_STUDY_ATTRIBUTES)
                )
            if req.series_uid is None:
                relational.update(
                    subset(series_docs.get(series_uid, {}), RELATIONAL_SERIES_ATTRIBUTES)
                )
            relational[tag_key(STUDY_INSTANCE_UID)] = element("UI", study_uid)
            relational[tag_key(SERIES_INSTANCE_UID)] = element("UI", series_uid)
            results.append(
                compose_result(
                    own=clean if req.include_all else instance,
                    required=REQUIRED_RETURN_ATTRIBUTES[QueryLevel.INSTANCE],
                    computed=instance_computed(study_uid, series_uid, sop_uid),
                    relational=relational,
                    include_fields=req.include_fields,
                    include_all=req.include_all,
                    sources=(clean,),
                )
            )
        return results

    async def ping(self) -> bool:
        try:
            await self._db.command("ping")
        except Exception:
            return False
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


#: Retrieve order (series number, then instance number), as ``sql.compile_locate``.
RETRIEVE_ORDER = [("series_number", 1), ("series_uid", 1), ("number", 1), ("_id", 1)]


def _locate_selector(req: LocateRequest) -> dict[str, Any]:
    selector: dict[str, Any] = {"study_uid": req.study_uid}
    if req.series_uid is not None:
        selector["series_uid"] = req.series_uid
    if req.sop_uid is not None:
        selector["_id"] = req.sop_uid
    return selector
