"""Reading the frames to render from a stored instance (runs in a render thread).

The instance's header is read up to its Pixel Data and the frames' bytes by their byte ranges
(the frame index from the sidecar), then decoded by the codec's decoders — the same pixels
WADO-RS serves and ``pydicom`` shows. Nothing else of the object is read.
"""

from __future__ import annotations

from tessera_codec.pixels import ConversionError
from tessera_codec.transcode import PixelSource, Source
from tessera_common.blobstore import BlobStore
from tessera_common.frame_indexes import FrameIndexes
from tessera_common.messages import FrameIndex, RenderRequest

from .pipeline import RenderError, can_render, render_frames

__all__ = ["FrameIndexes", "render_stored"]


def render_stored(blobs: BlobStore, request: RenderRequest, frames: FrameIndex | None) -> bytes:
    """The rendered image of ``request``: read, decode and render its frames."""
    instance = request.instance
    source = Source(
        object_key=instance.object_key,
        size=instance.size,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        frames=frames,
    )
    with blobs.open_reader(instance.object_key, size=instance.size) as fp:
        pixels = PixelSource.open(fp, source)
        description = pixels.description
        if description is None:
            raise RenderError("the instance has no pixel data to render")
        reason = can_render(pixels.header)
        if reason is not None:
            raise RenderError(reason)
        count = description.number_of_frames
        decoded = []
        for number in request.frames:
            if not 1 <= number <= count:
                raise ConversionError(f"frame {number} does not exist: the instance has {count}")
            array, frame_description = pixels.decode(number - 1)
            decoded.append((number, array, frame_description))
    return render_frames(pixels.header, decoded, request.params)
