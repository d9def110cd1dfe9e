"""Burned-in annotation (PS3.18 §8.3.5.1.2 ``annotation=patient,technique``).

Drawn last, on the output image: ``patient`` (name, ID, birth date, sex) in the top-left
corner, ``technique`` (modality, kVp, exposure, slice thickness, the VOI applied, frame
number) in the bottom-left, white text on a black band so it reads on any image. The text
comes from the header as pydicom decodes it (Specific Character Set applied); the font is
Pillow's built-in scalable font, which lacks glyphs for many scripts: those characters are
drawn as boxes, never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from tessera_common.rendering import Annotation

from .functional_groups import FrameAttributes

MARGIN = 2


def patient_lines(attributes: FrameAttributes) -> list[str]:
    header = attributes.header
    lines = []
    name = _text(header.get("PatientName"))
    if name:
        lines.append(name.replace("^", " ").replace("=", " = ").strip())
    identifier = _text(header.get("PatientID"))
    if identifier:
        lines.append(f"ID {identifier}")
    birth = _date(_text(header.get("PatientBirthDate")))
    sex = _text(header.get("PatientSex"))
    details = "  ".join(part for part in (birth and f"born {birth}", sex) if part)
    if details:
        lines.append(details)
    return lines


def technique_lines(
    attributes: FrameAttributes, voi_label: str | None, frame_number: int, frame_count: int
) -> list[str]:
    lines = []
    acquisition = []
    modality = _text(attributes.get("Modality"))
    if modality:
        acquisition.append(modality)
    kvp = _number(attributes.get("KVP"))
    if kvp:
        acquisition.append(f"{kvp} kVp")
    exposure = _number(attributes.get("ExposureInmAs")) or _number(attributes.get("Exposure"))
    if exposure:
        acquisition.append(f"{exposure} mAs")
    thickness = _number(attributes.get("SliceThickness"))
    if thickness:
        acquisition.append(f"{thickness} mm")
    if acquisition:
        lines.append("  ".join(acquisition))
    display = []
    if voi_label:
        display.append(voi_label)
    if frame_count > 1:
        display.append(f"frame {frame_number}/{frame_count}")
    if display:
        lines.append("  ".join(display))
    return lines


def annotate(
    image: Image.Image,
    kinds: Sequence[Annotation],
    attributes: FrameAttributes,
    voi_label: str | None,
    frame_count: int,
) -> Image.Image:
    """The image with the asked-for text burned in (a copy; the input is not changed)."""
    if not kinds:
        return image
    image = image.copy()
    draw = ImageDraw.Draw(image)
    font = _font(max(10, min(image.width, image.height) // 28))
    black = 0 if image.mode == "L" else (0, 0, 0)
    white = 255 if image.mode == "L" else (255, 255, 255)
    if "patient" in kinds:
        _draw_lines(draw, font, patient_lines(attributes), image.height, False, black, white)
    if "technique" in kinds:
        lines = technique_lines(attributes, voi_label, attributes.number, frame_count)
        _draw_lines(draw, font, lines, image.height, True, black, white)
    return image


def _draw_lines(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    lines: list[str],
    height: int,
    from_bottom: bool,
    background: int | tuple[int, int, int],
    foreground: int | tuple[int, int, int],
) -> None:
    step = int(getattr(font, "size", 10) * 1.25) + 1
    y = height - MARGIN - step * len(lines) if from_bottom else MARGIN
    for line in lines:
        left, top, right, bottom = draw.textbbox((MARGIN, y), line, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=background)
        draw.text((MARGIN, y), line, font=font, fill=foreground)
        y += step


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text(value: object) -> str:
    if value is None:
        return ""
    text = str(value).strip()
    return "".join(ch if ch.isprintable() else " " for ch in text)[:64]


def _number(value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return f"{number:g}"


def _date(text: str) -> str:
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text
