"""Where things live in object storage.

``incoming/``  claim-check uploads the gateway streams in; renamed or deleted by the store.
``studies/{study}/series/{series}/instances/{sop}.dcm``   the PS3.10 file, byte-exact.
``studies/{study}/series/{series}/instances/{sop}.json``  its sidecar: the ``InstanceRecord``
with metadata, enough for ``tessera reindex`` to rebuild the index without re-parsing.

Every key is built from validated UIDs only (``uid.validate_uid``).
"""

from __future__ import annotations

import uuid

from .uid import validate_uid

INCOMING_PREFIX = "incoming/"
STUDIES_PREFIX = "studies/"


def incoming_key() -> str:
    return f"{INCOMING_PREFIX}{uuid.uuid4().hex}"


def instance_path(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The DICOMweb resource path of an instance, relative to the service root."""
    validate_uid(study_uid, what="Study Instance UID")
    validate_uid(series_uid, what="Series Instance UID")
    validate_uid(sop_uid, what="SOP Instance UID")
    return f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


def instance_object_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return instance_path(study_uid, series_uid, sop_uid) + ".dcm"


def sidecar_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    return instance_path(study_uid, series_uid, sop_uid) + ".json"
