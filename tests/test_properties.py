"""Image properties and perceptual hashes on real photos (skimage.data) and Fashion-MNIST."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage.color
import skimage.data
import skimage.measure
from PIL import Image
from scipy import ndimage

from curato.features.properties import (
    COLUMN_INDEX,
    PROPERTY_COLUMNS,
    border_width,
    estimate_jpeg_quality,
    hamming_distance,
    image_properties,
    image_properties_and_hashes,
    perceptual_hash,
)
from curato.imageio import read_idx

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def column(properties: np.ndarray, name: str) -> np.ndarray:
    return properties[:, COLUMN_INDEX[name]]


def jpeg_roundtrip(pixels: np.ndarray, quality: int = 90) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    image = Image.open(buffer)
    image.load()
    return image


def luma(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {
        "chelsea": skimage.data.chelsea(),
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
        "camera": skimage.data.camera(),
    }


def test_columns_include_the_documented_properties() -> None:
    required = {
        "width", "height", "aspect", "megapixels", "file_bytes", "bits_per_pixel", "jpeg_quality",
        "brightness_mean", "brightness_std", "contrast", "red_mean", "green_mean", "blue_mean",
        "saturation_mean", "colourfulness", "green_fraction", "sharpness", "entropy", "border_red",
        "border_green", "border_blue", "border_brightness", "border_std", "edge_density", "is_grayscale",
        "dark_fraction", "bright_fraction",
    }
    assert required <= set(PROPERTY_COLUMNS)
    assert len(set(PROPERTY_COLUMNS)) == len(PROPERTY_COLUMNS)


def test_shape_units_and_size_columns(photos: dict[str, np.ndarray]) -> None:
    images = [photos["chelsea"], photos["camera"]]
    properties = image_properties(images, file_bytes=[30_000, 60_000], jpeg_quality=[80.0, np.nan])
    assert properties.shape == (2, len(PROPERTY_COLUMNS)) and properties.dtype == np.float32
    np.testing.assert_array_equal(column(properties, "width"), [451, 512])
    np.testing.assert_array_equal(column(properties, "height"), [300, 512])
    np.testing.assert_allclose(column(properties, "aspect"), [451 / 300, 1.0], rtol=1e-6)
    np.testing.assert_allclose(column(properties, "megapixels"), [451 * 300 / 1e6, 512 * 512 / 1e6], rtol=1e-6)
    np.testing.assert_allclose(column(properties, "bits_per_pixel"), [30_000 * 8 / (451 * 300), 60_000 * 8 / 512**2],
                               rtol=1e-6)
    assert column(properties, "jpeg_quality")[0] == 80 and np.isnan(column(properties, "jpeg_quality")[1])
    for name in ("brightness_mean", "brightness_std", "contrast", "saturation_mean", "edge_density",
                 "border_brightness", "dark_fraction", "bright_fraction", "centre_brightness"):
        assert np.all((column(properties, name) >= 0) & (column(properties, name) <= 1)), name
    # Without file sizes the compression columns are unknown, not zero.
    bare = image_properties(images)
    assert np.isnan(column(bare, "file_bytes")).all() and np.isnan(column(bare, "bits_per_pixel")).all()


def test_original_sizes_describe_the_stored_image(photos: dict[str, np.ndarray]) -> None:
    properties = image_properties([photos["chelsea"]], file_bytes=[90_200], original_sizes=[(902, 600)])
    assert column(properties, "width")[0] == 902 and column(properties, "height")[0] == 600
    assert column(properties, "bits_per_pixel")[0] == pytest.approx(90_200 * 8 / (902 * 600))


def test_properties_match_independent_reference_implementations(photos: dict[str, np.ndarray]) -> None:
    images = [photos["chelsea"], photos["coffee"]]
    properties = image_properties(images)
    for pixels, row in zip(images, properties, strict=True):
        grey = luma(pixels)
        laplacian = ndimage.laplace(grey)[1:-1, 1:-1]
        gradient = np.hypot(ndimage.sobel(grey, axis=1), ndimage.sobel(grey, axis=0))[1:-1, 1:-1]
        hsv = skimage.color.rgb2hsv(pixels)
        red_green = pixels[..., 0].astype(float) - pixels[..., 1]
        yellow_blue = 0.5 * (pixels[..., 0].astype(float) + pixels[..., 1]) - pixels[..., 2]
        colourfulness = np.hypot(red_green.std(), yellow_blue.std()) + 0.3 * np.hypot(
            red_green.mean(), yellow_blue.mean()
        )
        levels = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        expected = {
            "brightness_mean": grey.mean() / 255,
            "brightness_std": grey.std() / 255,
            "red_mean": pixels[..., 0].mean() / 255,
            "blue_mean": pixels[..., 2].mean() / 255,
            "sharpness": laplacian.var(),
            "edge_density": (gradient / 8 / 255 > 0.1).mean(),
            "saturation_mean": hsv[..., 1].mean(),
            "colourfulness": colourfulness,
            "entropy": skimage.measure.shannon_entropy(levels),
            "dark_fraction": (levels <= 20).mean(),
            "bright_fraction": (levels >= 235).mean(),
        }
        for name, value in expected.items():
            assert row[COLUMN_INDEX[name]] == pytest.approx(value, rel=1e-4, abs=1e-5), name


def test_batched_results_equal_one_image_at_a_time(photos: dict[str, np.ndarray]) -> None:
    # Mixed shapes and grey/colour: grouping must not mix rows up.
    images = [photos["chelsea"], photos["camera"], photos["coffee"], photos["chelsea"][::-1], photos["camera"].T]
    together, hashes = image_properties_and_hashes(images)
    for i, image in enumerate(images):
        alone, alone_hash = image_properties_and_hashes([image])
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-5, equal_nan=True)
        assert hashes[i] == alone_hash[0]


def test_darkened_photo_is_darker(photos: dict[str, np.ndarray]) -> None:
    photo = photos["astronaut"]
    darker = (photo.astype(np.float32) * 0.35).astype(np.uint8)
    properties = image_properties([photo, darker])
    assert column(properties, "brightness_mean")[1] < 0.5 * column(properties, "brightness_mean")[0]
    assert column(properties, "dark_fraction")[1] > column(properties, "dark_fraction")[0] + 0.1
    assert column(properties, "dynamic_range")[1] < column(properties, "dynamic_range")[0]


def test_blurred_photo_is_less_sharp(photos: dict[str, np.ndarray]) -> None:
    photo = photos["astronaut"]
    blurred = ndimage.gaussian_filter(photo, sigma=(2.5, 2.5, 0))
    properties = image_properties([photo, blurred])
    assert column(properties, "sharpness")[1] < 0.2 * column(properties, "sharpness")[0]
    assert column(properties, "edge_density")[1] < 0.5 * column(properties, "edge_density")[0]


def test_washed_out_photo_has_less_contrast(photos: dict[str, np.ndarray]) -> None:
    photo = photos["camera"]
    washed = (128 + (photo.astype(np.float32) - 128) * 0.3).astype(np.uint8)
    properties = image_properties([photo, washed])
    assert column(properties, "contrast")[1] < 0.5 * column(properties, "contrast")[0]
    assert column(properties, "brightness_std")[1] < 0.5 * column(properties, "brightness_std")[0]


def test_grey_jpeg_with_three_channels_is_grayscale(photos: dict[str, np.ndarray]) -> None:
    grey_rgb = np.dstack([photos["camera"]] * 3)
    grey_jpeg = jpeg_roundtrip(grey_rgb, quality=60)
    colour_jpeg = jpeg_roundtrip(photos["chelsea"], quality=60)
    assert grey_jpeg.mode == "RGB"
    properties = image_properties([np.asarray(grey_jpeg), np.asarray(colour_jpeg), photos["camera"]])
    np.testing.assert_array_equal(column(properties, "is_grayscale"), [1.0, 0.0, 1.0])
    # A grey picture stored as RGB with slight channel noise is still grey.
    rng = np.random.default_rng(0)
    noisy = np.clip(grey_rgb.astype(np.int16) + rng.integers(-3, 4, grey_rgb.shape), 0, 255).astype(np.uint8)
    assert column(image_properties([noisy]), "is_grayscale")[0] == 1.0
    assert column(properties, "colourfulness")[0] < 1 < 33 < column(properties, "colourfulness")[1]


def test_grey_array_and_its_rgb_copy_agree(photos: dict[str, np.ndarray]) -> None:
    grey = photos["camera"]
    properties = image_properties([grey, np.dstack([grey] * 3)])
    np.testing.assert_allclose(properties[0], properties[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_jpeg_quality_estimate(photos: dict[str, np.ndarray], quality: int) -> None:
    image = jpeg_roundtrip(photos["coffee"], quality=quality)
    assert abs(estimate_jpeg_quality(image.quantization) - quality) <= 5


def test_jpeg_quality_is_nan_without_tables(photos: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    Image.fromarray(photos["coffee"]).save(buffer, "PNG")
    buffer.seek(0)
    png = Image.open(buffer)
    assert np.isnan(estimate_jpeg_quality(getattr(png, "quantization", None)))
    assert np.isnan(estimate_jpeg_quality({}))


def test_red_frame_gives_a_red_uniform_border(photos: dict[str, np.ndarray]) -> None:
    photo = photos["chelsea"]
    frame = 60
    framed = np.empty((photo.shape[0] + 2 * frame, photo.shape[1] + 2 * frame, 3), dtype=np.uint8)
    framed[:] = (255, 0, 0)
    framed[frame:-frame, frame:-frame] = photo
    assert border_width(*framed.shape[:2]) <= frame
    properties = image_properties([framed, photo])
    assert column(properties, "border_red")[0] == pytest.approx(1.0)
    assert column(properties, "border_green")[0] == pytest.approx(0.0, abs=1e-6)
    assert column(properties, "border_blue")[0] == pytest.approx(0.0, abs=1e-6)
    assert column(properties, "border_std")[0] == pytest.approx(0.0, abs=1e-4)
    assert column(properties, "border_std")[1] > 0.05
    assert column(properties, "border_red")[1] < 0.8


def test_green_fraction_counts_green_pixels(photos: dict[str, np.ndarray]) -> None:
    photo = photos["astronaut"].copy()
    photo[:, :256] = (40, 150, 60)  # the left half painted a foliage green
    properties = image_properties([photos["astronaut"], photo])
    assert column(properties, "green_fraction")[0] < 0.01
    assert column(properties, "green_fraction")[1] == pytest.approx(0.5, abs=0.01)
    hsv = skimage.color.rgb2hsv(photo)
    hue = hsv[..., 0] * 360
    expected = ((hue >= 75) & (hue <= 165) & (hsv[..., 1] >= 0.2) & (hsv[..., 2] >= 0.1)).mean()
    assert column(properties, "green_fraction")[1] == pytest.approx(expected, abs=1e-3)


def test_fashion_mnist_items_are_grey_on_black() -> None:
    items = list(read_idx(FASHION_MNIST)[:64])
    properties = image_properties(items)
    assert (column(properties, "is_grayscale") == 1).all()
    # Objects are centred on a black background (a few garments touch the edge of the frame).
    assert np.median(column(properties, "border_brightness")) < 0.2
    assert np.mean(column(properties, "centre_brightness") > column(properties, "border_brightness")) > 0.9
    assert np.median(column(properties, "dark_fraction")) > 0.3
    assert (column(properties, "saturation_mean") == 0).all()
    assert np.isfinite(properties[:, COLUMN_INDEX["sharpness"]]).all()


def test_flat_and_tiny_images() -> None:
    flat = np.full((40, 40, 3), 200, dtype=np.uint8)
    tiny = np.zeros((2, 5), dtype=np.uint8)
    properties = image_properties([flat, tiny])
    assert column(properties, "entropy")[0] == 0
    assert column(properties, "brightness_std")[0] == pytest.approx(0, abs=1e-6)
    assert column(properties, "sharpness")[0] == 0
    assert column(properties, "contrast")[0] == 0
    assert np.isnan(column(properties, "sharpness")[1])  # no inner pixels for a Laplacian
    assert column(properties, "brightness_mean")[1] == 0


def test_rejects_arrays_that_are_not_uint8_images() -> None:
    with pytest.raises(Exception, match="image 0"):
        image_properties([np.zeros((8, 8, 4), dtype=np.uint8)])
    with pytest.raises(Exception, match="image 1"):
        image_properties([np.zeros((8, 8), dtype=np.uint8), np.zeros((8, 8), dtype=np.float32)])


def test_phash_is_stable_under_resizing_and_recompression(photos: dict[str, np.ndarray]) -> None:
    names = ["chelsea", "astronaut", "coffee", "rocket", "camera"]
    originals = [photos[name] for name in names]
    copies = []
    for photo in originals:
        height, width = photo.shape[:2]
        resized = Image.fromarray(photo).resize((width * 2 // 3, height * 2 // 3), Image.Resampling.BILINEAR)
        copies.append(np.asarray(jpeg_roundtrip(np.asarray(resized), quality=40)))
    original_hashes = perceptual_hash(originals)
    copy_hashes = perceptual_hash(copies)
    assert original_hashes.dtype == np.uint64
    assert (hamming_distance(original_hashes, copy_hashes) <= 8).all()
    pairwise = hamming_distance(original_hashes[:, None], original_hashes[None, :])
    off_diagonal = pairwise[~np.eye(len(names), dtype=bool)]
    assert off_diagonal.min() >= 16


def test_phash_matches_the_combined_pass(photos: dict[str, np.ndarray]) -> None:
    images = [photos["chelsea"], photos["camera"]]
    _, combined = image_properties_and_hashes(images)
    np.testing.assert_array_equal(perceptual_hash(images), combined)


def test_hamming_distance_counts_bits() -> None:
    a = np.array([0, 0xFFFF_FFFF_FFFF_FFFF, 0b1011], dtype=np.uint64)
    b = np.array([0, 0, 0b0001], dtype=np.uint64)
    np.testing.assert_array_equal(hamming_distance(a, b), [0, 64, 2])
    assert hamming_distance(a[:, None], a[None, :]).shape == (3, 3)
