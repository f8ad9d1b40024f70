"""Real pictures that ship with scikit-image, for examples, tests and benchmarks (no download)."""

from __future__ import annotations

import numpy as np

# scikit-image's bundled colour photos (the ones that need no network).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def photo_crops(count: int, seed: int = 0, photos: tuple[str, ...] = PHOTOS) -> list[np.ndarray]:
    """``count`` random crops (a third to all of each side) of scikit-image's bundled colour photos, HxWx3 uint8."""
    import skimage.data

    pictures = [getattr(skimage.data, name)() for name in photos]
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        picture = pictures[index % len(pictures)]
        height, width = picture.shape[:2]
        crop_h, crop_w = rng.integers(height // 3, height + 1), rng.integers(width // 3, width + 1)
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        crops.append(np.ascontiguousarray(picture[top:top + crop_h, left:left + crop_w]))
    return crops
