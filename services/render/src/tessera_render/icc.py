"""ICC colour management of rendered images (PS3.18 §8.3.5.1.5 ``iccprofile``; PS3.3
§C.11.15 ICC Profile (0028,2000)).

- ``no``: no transformation, no profile in the image.
- ``yes``: the image carries the object's ICC profile (for Whole Slide Microscopy, the one
  in the Optical Path Sequence (0048,0105) item of the frame's optical path), or sRGB when
  the object has none; the pixels are not transformed.
- ``srgb``, ``adobergb``, ``rommrgb``, ``displayp3``: the pixels are transformed from the
  object's profile (sRGB when it has none) to the named space with LittleCMS (Pillow
  ImageCms, relative colorimetric intent) and the image carries the named space's profile.

An ICC profile describes RGB, so a greyscale image becomes RGB when a profile is asked for.
The named spaces' profiles ship in ``profiles/`` (see ``profiles/iccwriter.py``).
"""

from __future__ import annotations

import io
from functools import cache, lru_cache
from pathlib import Path

from PIL import Image, ImageCms

from tessera_common.rendering import IccProfile

from .functional_groups import FrameAttributes

PROFILES = Path(__file__).resolve().parent / "profiles"


class IccError(ValueError):
    """The object's ICC profile cannot be used."""


@cache
def named_profile(name: str) -> bytes:
    """The shipped profile of a named colour space (srgb, adobergb, rommrgb, displayp3)."""
    return (PROFILES / f"{name}.icc").read_bytes()


def object_profile(attributes: FrameAttributes) -> bytes | None:
    """The ICC profile that describes the frame's colours, if the object has one."""
    profile = attributes.header.get("ICCProfile")
    if profile:
        return bytes(profile)
    paths = attributes.header.get("OpticalPathSequence") or []
    wanted = attributes.get("OpticalPathIdentifier")
    with_profile = [item for item in paths if item.get("ICCProfile")]
    for item in with_profile:
        if wanted is None or str(item.get("OpticalPathIdentifier", "")) == str(wanted):
            return bytes(item.ICCProfile)
    return bytes(with_profile[0].ICCProfile) if with_profile else None


def manage_colour(
    image: Image.Image, choice: IccProfile, attributes: FrameAttributes
) -> tuple[Image.Image, bytes | None]:
    """The image to encode and the profile to embed in it."""
    if choice == "no":
        return image, None
    source = object_profile(attributes)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if choice == "yes":
        return image, source or named_profile("srgb")
    target = named_profile(choice)
    if source is None and choice == "srgb":
        return image, target
    transform = _transform(source or named_profile("srgb"), choice)
    return ImageCms.applyTransform(image, transform) or image, target


@lru_cache(maxsize=32)
def _transform(source: bytes, target: str) -> ImageCms.ImageCmsTransform:
    try:
        source_profile = ImageCms.ImageCmsProfile(io.BytesIO(source))
    except (OSError, ImageCms.PyCMSError) as exc:
        raise IccError("the object's ICC Profile (0028,2000) cannot be read") from exc
    target_profile = ImageCms.ImageCmsProfile(io.BytesIO(named_profile(target)))
    try:
        return ImageCms.buildTransform(
            source_profile,
            target_profile,
            "RGB",
            "RGB",
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        )
    except ImageCms.PyCMSError as exc:
        raise IccError("the object's ICC Profile (0028,2000) is not an RGB profile") from exc
