"""Where the codec keeps derived objects in the blob store.

``derived/{sha256}/{ts}.dcm``            the whole instance transcoded to ``ts`` (PS3.10 file)
``derived/{sha256}/{ts}.json``           its ``DerivedInstance`` (size, frame index); written
                                         after the object, so its presence means complete
``derived/{sha256}/{ts}/frames/{n}``     frame ``n`` alone, encoded in ``ts``

Keyed by the SHA-256 of the stored bytes, so a derived object can never be stale: a re-stored
instance has another digest. Keys are built only from a checked digest and a valid UID.
"""

from __future__ import annotations

import re

from tessera_common.uid import validate_uid

DERIVED_PREFIX = "derived/"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _base(sha256: str, transfer_syntax_uid: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise ValueError("not a SHA-256 hex digest")
    validate_uid(transfer_syntax_uid, what="Transfer Syntax UID")
    return f"{DERIVED_PREFIX}{sha256}/{transfer_syntax_uid}"


def derived_object_key(sha256: str, transfer_syntax_uid: str) -> str:
    return _base(sha256, transfer_syntax_uid) + ".dcm"


def derived_index_key(sha256: str, transfer_syntax_uid: str) -> str:
    return _base(sha256, transfer_syntax_uid) + ".json"


def derived_frame_key(sha256: str, transfer_syntax_uid: str, number: int) -> str:
    if number < 1:
        raise ValueError("frame numbers start at 1")
    return f"{_base(sha256, transfer_syntax_uid)}/frames/{number}"
