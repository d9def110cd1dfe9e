"""Where rendered images are cached in the blob store.

``derived/{sha256}/rendered/{params}/{frames}.{ext}``

Keyed by the SHA-256 of the stored bytes (a re-stored instance has another digest, so a cached
image is never stale), the name of the rendering parameters (``RenderParams.cache_name``) and
the frame numbers; built only from a checked digest, a hex name and integers. The codec's
derived objects live beside them (``tessera_codec.layout``), and DELETE removes the whole
``derived/{sha256}/`` prefix.
"""

from __future__ import annotations

import hashlib
import re

from tessera_common.rendering import MediaType, RenderParams

DERIVED_PREFIX = "derived/"
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Frame lists longer than this are named by a digest, keeping keys short.
_SPELLED_FRAMES = 8

EXTENSIONS: dict[MediaType, str] = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif"}


def rendered_key(sha256: str, frames: list[int], params: RenderParams) -> str:
    if not _SHA256.fullmatch(sha256):
        raise ValueError("not a SHA-256 hex digest")
    if not frames or any(number < 1 for number in frames):
        raise ValueError("frame numbers start at 1")
    spelled = "-".join(str(number) for number in frames)
    if len(frames) > _SPELLED_FRAMES:
        spelled = "n" + hashlib.sha256(spelled.encode()).hexdigest()[:24]
    extension = EXTENSIONS[params.media_type]
    return f"{DERIVED_PREFIX}{sha256}/rendered/{params.cache_name()}/{spelled}.{extension}"
