"""Where things live in object storage.

``incoming/``  claim-check uploads the gateway streams in; renamed or deleted by the store.
``studies/{study}/series/{series}/instances/{sop}.dcm``   the PS3.10 file, byte-exact.
``studies/{study}/series/{series}/instances/{sop}.json``  its sidecar: the ``InstanceRecord``
with metadata, enough for ``tessera reindex`` to rebuild the index without re-parsing.
``cache/metadata/{study}/{series|study}/{digest}.json`` (and ``.json.gz``)  study and series
``/metadata`` documents (gateway; the query service builds root-relative series documents
ahead); removed with their study by the store.

Every key is built from validated UIDs only (``uid.validate_uid``).
"""

from __future__ import annotations

import hashlib
import uuid

from .uid import validate_uid

INCOMING_PREFIX = "incoming/"
STUDIES_PREFIX = "studies/"
METADATA_CACHE_PREFIX = "cache/metadata/"
#: The service root of a root-relative metadata document (BulkDataURIs as stored).
RELATIVE_ROOT = ""


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


def metadata_document_digest(root: str, contents_digest: str) -> str:
    """What a ``/metadata`` document is made of: the service root its BulkDataURIs start with
    and the ``contents_digest`` of its instances. Any stored, replaced or removed instance
    changes it, so a document under it is never stale."""
    return hashlib.sha256(f"{root}\n{contents_digest}".encode()).hexdigest()


def metadata_document_key(study_uid: str, series_uid: str | None, document_digest: str) -> str:
    """Where the study (``series_uid`` None) or series document of that digest is cached."""
    validate_uid(study_uid, what="Study Instance UID")
    if series_uid is not None:
        validate_uid(series_uid, what="Series Instance UID")
    return f"{METADATA_CACHE_PREFIX}{study_uid}/{series_uid or 'study'}/{document_digest}"
