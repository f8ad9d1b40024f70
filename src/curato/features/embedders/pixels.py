"""``pixels``: the raw image, shrunk to 32x32 RGB. No weights, no torch.

The baseline every transferability ranking needs: a backbone that does not beat the pixels it was
given adds nothing for the task. Each image is stretched to 32x32 (the whole image, like the other
embedders) with PIL's box filter, i.e. each output pixel is the area-weighted mean of the input
pixels it covers (no aliasing when shrinking; on a small image that is enlarged it is nearest-neighbour
like), and the ``(32, 32, 3)`` array is flattened row by row, channels last (``[r, g, b]`` of the top-left
pixel first), and divided by 255. Dimension 3072, values in [0, 1], float32, not normalised to unit length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from curato.features.embedders._common import as_rgb_uint8
from curato.features.embedders.base import Embedder

SIZE = 32
DIM = SIZE * SIZE * 3
# Bump when the definition changes: it is part of settings(), so stored vectors go stale.
VERSION = 1


class PixelsEmbedder(Embedder):
    """32x32 box-filtered RGB pixels in [0, 1], flattened HWC; 3072-d float32."""

    name = "pixels"
    modality = "image"
    batch_size = 256

    @property
    def dim(self) -> int:
        """3072: 32 x 32 pixels x 3 channels."""
        return DIM

    def settings(self) -> dict[str, Any]:
        """The resize, the layout and the scale."""
        return {
            "embedder": self.name,
            "version": VERSION,
            "resize": f"stretch to {SIZE}x{SIZE}, PIL box",
            "layout": "row-major HWC",
            "scale": "uint8 / 255",
            "dim": DIM,
        }

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """(len(items), 3072) float32 vectors in [0, 1] for HxWx3 uint8 RGB images (HxW grey accepted)."""
        if len(items) == 0:
            return np.zeros((0, DIM), dtype=np.float32)
        pixels = np.stack([_resize(as_rgb_uint8(item, index, self.name)) for index, item in enumerate(items)])
        return pixels.reshape(len(items), DIM).astype(np.float32) / np.float32(255)


def _resize(image: np.ndarray) -> np.ndarray:
    if image.shape[:2] == (SIZE, SIZE):
        return image
    return np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BOX))
