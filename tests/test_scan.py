"""The ingest decode pass over real files: photos, Fashion-MNIST PNGs and IDX items, broken files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from curato.features.properties import COLUMN_INDEX, PROPERTY_COLUMNS, hamming_distance, image_properties
from curato.features.scan import MAX_PROPERTY_SIDE, ScanTable, scan_images
from curato.imageio import idx_uri, read_idx

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def column(table: ScanTable, name: str) -> np.ndarray:
    return table.properties[:, COLUMN_INDEX[name]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small dataset on disk: JPEG photos, grey PNGs, and the kinds of broken file ingest meets."""
    root = tmp_path_factory.mktemp("images")
    files: dict[str, Path] = {}
    for name in ("chelsea", "coffee", "astronaut"):
        files[name] = root / f"{name}.jpg"
        Image.fromarray(getattr(skimage.data, name)()).save(files[name], quality=85)
    items = read_idx(FASHION_MNIST)[:6]
    for i, item in enumerate(items):
        files[f"fmnist{i}"] = root / f"fmnist{i}.png"
        Image.fromarray(item).save(files[f"fmnist{i}"])
    files["camera_png"] = root / "camera.png"
    Image.fromarray(skimage.data.camera()).save(files["camera_png"])
    logo = skimage.data.logo()  # RGBA
    files["logo_rgba"] = root / "logo.png"
    Image.fromarray(logo).save(files["logo_rgba"])

    intact = files["coffee"].read_bytes()
    files["truncated"] = root / "truncated.jpg"
    files["truncated"].write_bytes(intact[: len(intact) // 2])
    files["not_an_image"] = root / "notes.jpg"
    files["not_an_image"].write_text("these are notes, not pixels\n")
    files["empty"] = root / "empty.png"
    files["empty"].write_bytes(b"")
    files["missing"] = root / "missing.png"
    return files


def test_readable_files_get_sizes_formats_hashes_and_properties(folder: dict[str, Path]) -> None:
    names = ["chelsea", "fmnist0", "camera_png", "logo_rgba"]
    table = scan_images([str(folder[name]) for name in names], workers=1)
    assert len(table) == 4 and table.readable.all()
    assert list(table.error) == [None] * 4
    assert table.format.tolist() == ["jpeg", "png", "png", "png"]
    assert table.width.tolist() == [451, 28, 512, 500] and table.height.tolist() == [300, 28, 512, 500]
    for i, name in enumerate(names):
        data = folder[name].read_bytes()
        assert table.file_bytes[i] == len(data)
        assert table.content_hash[i] == hashlib.blake2b(data, digest_size=20).hexdigest()
    assert table.properties.shape == (4, len(PROPERTY_COLUMNS)) and table.properties.dtype == np.float32
    assert table.phash.dtype == np.uint64 and (table.phash != 0).all()
    assert column(table, "jpeg_quality")[0] == pytest.approx(85, abs=5)
    assert np.isnan(column(table, "jpeg_quality")[1:]).all()
    np.testing.assert_allclose(column(table, "file_bytes"), table.file_bytes)
    assert column(table, "is_grayscale").tolist() == [0.0, 1.0, 1.0, 0.0]


def test_scan_properties_equal_properties_of_the_decoded_pixels(folder: dict[str, Path]) -> None:
    table = scan_images([str(folder["camera_png"])], workers=1)
    expected = image_properties([skimage.data.camera()], file_bytes=table.file_bytes)
    np.testing.assert_allclose(table.properties, expected, rtol=1e-6, equal_nan=True)


def test_broken_files_are_reported_not_raised(folder: dict[str, Path]) -> None:
    broken = ["truncated", "not_an_image", "empty", "missing"]
    uris = [str(folder["chelsea"])] + [str(folder[name]) for name in broken]
    table = scan_images(uris, workers=1)
    assert table.readable.tolist() == [True, False, False, False, False]
    for uri, error in zip(uris[1:], table.error[1:], strict=True):
        assert isinstance(error, str) and uri in error and "\n" not in error
    assert "0x" not in table.error[2]  # no buffer address from PIL's message
    assert np.isnan(table.properties[1:]).all()
    assert table.width[1:].tolist() == [0] * 4 and table.format[1:].tolist() == [""] * 4
    assert (table.phash[1:] == 0).all()
    # Bytes that exist are hashed (a later fix of the file is noticed); a missing file has no hash.
    assert table.content_hash[1] == hashlib.blake2b(folder["truncated"].read_bytes(), digest_size=20).hexdigest()
    assert table.file_bytes[1] == folder["truncated"].stat().st_size
    assert table.content_hash[4] == "" and table.file_bytes[4] == 0


def test_idx_items(folder: dict[str, Path]) -> None:
    items = read_idx(FASHION_MNIST)
    uris = [idx_uri(FASHION_MNIST, 0), idx_uri(FASHION_MNIST, 5), f"idx:{FASHION_MNIST}#{len(items) + 10}"]
    table = scan_images(uris, workers=1)
    assert table.readable.tolist() == [True, True, False]
    assert uris[2] in table.error[2]
    assert table.format.tolist() == ["idx", "idx", ""]
    assert table.width[0] == 28 and table.file_bytes[0] == 28 * 28
    assert table.content_hash[0] == hashlib.blake2b(items[0].tobytes(), digest_size=20).hexdigest()
    # The same picture as an IDX item and as a PNG file has the same pixel properties and phash.
    png = scan_images([str(folder["fmnist0"])], workers=1)
    pixel_columns = [COLUMN_INDEX[name] for name in ("brightness_mean", "sharpness", "entropy", "border_std")]
    np.testing.assert_allclose(table.properties[0, pixel_columns], png.properties[0, pixel_columns], rtol=1e-6)
    assert table.phash[0] == png.phash[0]


def test_workers_and_chunks_do_not_change_results_or_order(folder: dict[str, Path]) -> None:
    names = sorted(folder)
    uris = [str(folder[name]) for name in names] + [idx_uri(FASHION_MNIST, i) for i in range(10, 16)]
    reported: list[int] = []
    serial = scan_images(uris, workers=1)
    parallel = scan_images(uris, workers=2, chunk_size=3, progress=reported.append)
    assert sum(reported) == len(uris) and max(reported) <= 3
    for field in ("content_hash", "readable", "width", "height", "format", "file_bytes", "phash"):
        np.testing.assert_array_equal(getattr(parallel, field), getattr(serial, field), err_msg=field)
    assert list(parallel.error) == list(serial.error)
    np.testing.assert_array_equal(parallel.properties, serial.properties)
    # Rows follow the input order: each file's row carries that file's own hash.
    for i, name in enumerate(names):
        if folder[name].exists():
            expected = hashlib.blake2b(folder[name].read_bytes(), digest_size=20).hexdigest()
            assert parallel.content_hash[i] == expected


def test_progress_reports_every_chunk_in_process(folder: dict[str, Path]) -> None:
    uris = [str(folder[f"fmnist{i}"]) for i in range(6)]
    reported: list[int] = []
    scan_images(uris, workers=1, chunk_size=4, progress=reported.append)
    assert reported == [4, 2]


def test_empty_input() -> None:
    table = scan_images([], workers=2)
    assert len(table) == 0 and table.properties.shape == (0, len(PROPERTY_COLUMNS))


def test_large_image_keeps_its_size_and_close_properties(tmp_path: Path) -> None:
    retina = skimage.data.retina()  # 1411 x 1411
    path = tmp_path / "retina.png"
    Image.fromarray(retina).save(path, compress_level=1)
    table = scan_images([str(path)], workers=1)
    assert table.readable[0] and table.width[0] == 1411 and table.height[0] == 1411
    assert max(retina.shape[:2]) > MAX_PROPERTY_SIDE
    full = image_properties([retina])
    # Measured on a 3x box-reduced copy: global statistics agree closely with the full image.
    for name in ("brightness_mean", "red_mean", "border_brightness", "saturation_mean", "dark_fraction"):
        assert column(table, name)[0] == pytest.approx(full[0, COLUMN_INDEX[name]], abs=0.01), name
    assert column(table, "bits_per_pixel")[0] == pytest.approx(path.stat().st_size * 8 / 1411**2)


def test_phash_of_a_resized_recompressed_copy_is_close(folder: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "chelsea_small.jpg"
    Image.open(folder["chelsea"]).resize((300, 200)).save(copy, quality=50)
    table = scan_images([str(folder["chelsea"]), str(copy), str(folder["coffee"])], workers=1)
    assert hamming_distance(table.phash[0], table.phash[1]) <= 8
    assert hamming_distance(table.phash[0], table.phash[2]) > 16
    assert table.content_hash[0] != table.content_hash[1]


def test_rejects_a_chunk_size_below_one() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        scan_images(["a.png"], chunk_size=0)
