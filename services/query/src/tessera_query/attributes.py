"""Which attributes of an instance belong to which QIDO level, and the computed ones.

Pure functions over DICOM JSON datasets (PS3.18 Annex F). At indexing time an instance's JSON
is split into the study-level (Patient and Study modules, PS3.3 §C.7.1.1, §C.7.2), series-level
(General Series and Equipment, §C.7.3.1, §C.7.5.1) and instance-level subsets, and the scalar
values used for matching are extracted. At search time a result is composed from the stored
subsets, the computed attributes of PS3.18 §10.6.3.3 and the requested ``includefield``s.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tessera_common.dicom_json import (
    JsonDataset,
    element,
    subset,
    tag_key,
    tags_for_keywords,
)
from tessera_common.qido import (
    COMPUTED_ATTRIBUTES,
    INSTANCE_RETURN_ATTRIBUTES,
    SERIES_LEVEL_TAGS,
    STUDY_LEVEL_TAGS,
)

from .match_keys import MatchDocument, dataset_timezone, match_document

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_DATE = 0x00080020
ACCESSION_NUMBER = 0x00080050
INSTANCE_AVAILABILITY = 0x00080056
MODALITY = 0x00080060
MODALITIES_IN_STUDY = 0x00080061
SOP_CLASSES_IN_STUDY = 0x00080062
RETRIEVE_URL = 0x00081190
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
STUDY_ID = 0x00200010
SERIES_NUMBER = 0x00200011
INSTANCE_NUMBER = 0x00200013
NUMBER_OF_STUDY_RELATED_SERIES = 0x00201206
NUMBER_OF_STUDY_RELATED_INSTANCES = 0x00201208
NUMBER_OF_SERIES_RELATED_INSTANCES = 0x00201209
#: NumberOfPatientRelatedStudies, -Series, -Instances.
PATIENT_COUNTS = (0x00201200, 0x00201202, 0x00201204)

#: Attributes stored with an instance: SOP Common, General/Image Pixel, Multi-frame basics.
INSTANCE_LEVEL_TAGS = (INSTANCE_RETURN_ATTRIBUTES - COMPUTED_ATTRIBUTES) | tags_for_keywords(
    "ImageType",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "AcquisitionNumber",
    "AcquisitionDate",
    "AcquisitionTime",
    "ContentDate",
    "ContentTime",
    "ContentLabel",
    "ContentDescription",
    "ConceptNameCodeSequence",
    "CompletionFlag",
    "VerificationFlag",
    "DocumentTitle",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "NumberOfFrames",
    "ImagesInAcquisition",
    "BurnedInAnnotation",
)


_STUDY_KEYS = frozenset(tag_key(tag) for tag in STUDY_LEVEL_TAGS)
_SERIES_KEYS = frozenset(tag_key(tag) for tag in SERIES_LEVEL_TAGS)


class _InstanceKeys:
    """Every attribute that belongs to neither the study nor the series level."""

    def __contains__(self, key: object) -> bool:
        return key not in _STUDY_KEYS and key not in _SERIES_KEYS


@dataclass(frozen=True, slots=True)
class LevelSplit:
    """One instance's JSON cut into the three levels, with each level's match document
    (``match_keys``): the study and series documents describe the level's JSON, the instance
    document every other attribute of the instance."""

    study: JsonDataset
    series: JsonDataset
    instance: JsonDataset
    study_keys: MatchDocument
    series_keys: MatchDocument
    instance_keys: MatchDocument


def without_bulk_data(dataset: Mapping[str, Any]) -> JsonDataset:
    """``dataset`` without the attributes that refer to bulk data by URI, recursively.

    QIDO results describe resources; bulk data is retrieved with WADO-RS (PS3.18 §10.4), and the
    stored URIs are relative to a root only the gateway knows.
    """
    result: JsonDataset = {}
    for key, attr in dataset.items():
        if not isinstance(attr, Mapping):
            continue
        if "BulkDataURI" in attr:
            continue
        if attr.get("vr") == "SQ" and attr.get("Value"):
            items = [
                without_bulk_data(item) if isinstance(item, Mapping) else item
                for item in attr["Value"]
            ]
            result[key] = {**attr, "Value": items}
        else:
            result[key] = attr
    return result


def split_levels(
    metadata: Mapping[str, Any], *, study_uid: str, series_uid: str, sop_uid: str
) -> LevelSplit:
    """Cut an instance's DICOM JSON into its study, series and instance subsets.

    The UIDs given (validated by the store) replace whatever the JSON holds for them, so the
    subsets always agree with the keys they are stored under.
    """
    clean = without_bulk_data(metadata)
    study = subset(clean, STUDY_LEVEL_TAGS)
    study[tag_key(STUDY_INSTANCE_UID)] = element("UI", study_uid)
    series = subset(clean, SERIES_LEVEL_TAGS)
    series[tag_key(SERIES_INSTANCE_UID)] = element("UI", series_uid)
    instance = subset(clean, INSTANCE_LEVEL_TAGS)
    instance[tag_key(SOP_INSTANCE_UID)] = element("UI", sop_uid)
    timezone = dataset_timezone(metadata)
    instance_keys = match_document(clean, keys=_InstanceKeys(), timezone=timezone)
    instance_keys[tag_key(SOP_INSTANCE_UID)] = [sop_uid]
    return LevelSplit(
        study=dict(sorted(study.items())),
        series=dict(sorted(series.items())),
        instance=dict(sorted(instance.items())),
        study_keys=match_document(study, timezone=timezone),
        series_keys=match_document(series, timezone=timezone),
        instance_keys=instance_keys,
    )


def retrieve_url(study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> str:
    """The Retrieve URL (0008,1190) of a resource, relative to the service root: the gateway
    prefixes its own base URL (PS3.18 §10.6.3.3)."""
    url = f"studies/{study_uid}"
    if series_uid is not None:
        url += f"/series/{series_uid}"
        if sop_uid is not None:
            url += f"/instances/{sop_uid}"
    return url


def study_computed(
    study_uid: str,
    *,
    series_count: int,
    instance_count: int,
    modalities: Iterable[str],
    sop_classes: Iterable[str],
    patient_counts: tuple[int, int, int] | None = None,
) -> JsonDataset:
    """The attributes a study result computes rather than stores (PS3.18 Table 10.6.3-3);
    ``patient_counts`` (studies, series, instances of the study's patient) adds the
    NumberOfPatientRelated* attributes (PS3.4 §C.6.1.1.2)."""
    computed = {
        tag_key(INSTANCE_AVAILABILITY): element("CS", "ONLINE"),
        tag_key(MODALITIES_IN_STUDY): element("CS", *sorted(set(modalities))),
        tag_key(SOP_CLASSES_IN_STUDY): element("UI", *sorted(set(sop_classes))),
        tag_key(RETRIEVE_URL): element("UR", retrieve_url(study_uid)),
        tag_key(NUMBER_OF_STUDY_RELATED_SERIES): element("IS", series_count),
        tag_key(NUMBER_OF_STUDY_RELATED_INSTANCES): element("IS", instance_count),
    }
    if patient_counts is not None:
        for tag, count in zip(PATIENT_COUNTS, patient_counts, strict=True):
            computed[tag_key(tag)] = element("IS", count)
    return computed


def wants_patient_counts(include_fields: Iterable[int], include_all: bool) -> bool:
    """NumberOfPatientRelated* cost three more counts: computed only when asked for."""
    return include_all or any(tag in PATIENT_COUNTS for tag in include_fields)


def series_computed(study_uid: str, series_uid: str, *, instance_count: int) -> JsonDataset:
    """The attributes a series result computes (PS3.18 Table 10.6.3-4)."""
    return {
        tag_key(RETRIEVE_URL): element("UR", retrieve_url(study_uid, series_uid)),
        tag_key(NUMBER_OF_SERIES_RELATED_INSTANCES): element("IS", instance_count),
    }


def instance_computed(study_uid: str, series_uid: str, sop_uid: str) -> JsonDataset:
    """The attributes an instance result computes (PS3.18 Table 10.6.3-5)."""
    return {
        tag_key(INSTANCE_AVAILABILITY): element("CS", "ONLINE"),
        tag_key(RETRIEVE_URL): element("UR", retrieve_url(study_uid, series_uid, sop_uid)),
    }


@functools.cache
def _sorted_keys(tags: frozenset[int]) -> tuple[str, ...]:
    return tuple(sorted(tag_key(tag) for tag in tags))


def tag_keys(tags: Iterable[int]) -> tuple[str, ...]:
    """The JSON keys of ``tags`` (a set of them is converted once and remembered)."""
    if isinstance(tags, frozenset):
        return _sorted_keys(tags)
    return tuple(tag_key(tag) for tag in tags)


def compose_result(
    *,
    own: Mapping[str, Any],
    required: frozenset[int],
    computed: Mapping[str, Any],
    relational: Mapping[str, Any] | None = None,
    include_fields: Iterable[int] = (),
    include_all: bool = False,
    sources: Sequence[Mapping[str, Any]] = (),
) -> JsonDataset:
    """One QIDO result (PS3.18 §10.6.3.3): the level's required attributes (all of ``own`` with
    ``includefield=all``), each requested ``includefield`` found in ``own`` or ``sources``
    (searched in order), then the computed attributes; relational attributes of the higher
    levels come first and are overridden by the level's own. Keys are returned in tag order.
    """
    result: JsonDataset = dict(relational or {})
    if include_all:
        result.update(own)
    else:
        result.update((key, own[key]) for key in tag_keys(required) if key in own)
    for key in tag_keys(include_fields):
        if key in result:
            continue
        for source in (own, *sources):
            if key in source:
                result[key] = source[key]
                break
    result.update(computed)
    return dict(sorted(result.items()))
