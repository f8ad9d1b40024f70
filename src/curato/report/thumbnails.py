"""Small inline images for reports: data URIs, so the HTML works offline as one file."""

from __future__ import annotations

import base64
import io

from PIL import Image

from curato.errors import UnreadableImageError
from curato.imageio import load_rgb


def thumbnail_data_uri(uri: str, *, size: int = 96) -> str | None:
    """A PNG (small sources) or JPEG data URI of the image at ``uri``, longest side ``size``; None if unreadable.
    Grey pictures are stored with one channel.

    Upright (EXIF orientation), and a large image is reduced while it is decoded (shortest side kept at
    ``2 * size`` or more, then Lanczos)."""
    try:
        array = load_rgb(uri, min_side=2 * size)
    except UnreadableImageError:
        return None
    grey = bool((array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all())
    image = Image.fromarray(array[..., 0] if grey else array)  # one channel: half the bytes of an RGB PNG
    small_source = max(image.size) <= size
    if not small_source:
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if small_source:
        image.save(buffer, format="PNG")
        mime = "image/png"
    else:
        image.save(buffer, format="JPEG", quality=85)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
