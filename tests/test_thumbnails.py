"""Scan thumbnails and the registered similarity the near-duplicate check uses, on real images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates

from curato.errors import InputError
from curato.features.properties import grey_squares, image_features
from curato.features.thumbnails import (
    REGISTRATION_MARGIN,
    REGISTRATION_SCALES,
    REGISTRATION_SHIFTS,
    THUMBNAIL_COLUMNS,
    colour_thumbnails,
    fourier_descriptors,
    grey_thumbnails,
    refined_similarity,
    registered_similarity,
    residual_low_share,
)
from tests.conftest import photo


def test_thumbnail_rows_hold_the_colour_and_grey_pictures() -> None:
    red = np.zeros((40, 60, 3), dtype=np.uint8)
    red[..., 0] = 200
    chelsea = photo("chelsea")
    _, _, rows = image_features([red, chelsea, chelsea[:, :, 0]])
    assert rows.shape == (3, THUMBNAIL_COLUMNS) and rows.dtype == np.uint8
    colour = colour_thumbnails(rows)
    assert colour.shape == (3, 8, 8, 3)
    np.testing.assert_allclose(colour[0], np.broadcast_to([200, 0, 0], (8, 8, 3)), atol=0.5)
    # 4x4 is the mean of 2x2 blocks of the 8x8 one; the 1x1 is the mean colour of the photo.
    np.testing.assert_allclose(colour_thumbnails(rows, 4)[1, 0, 0], colour[1, :2, :2].mean(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(colour_thumbnails(rows, 1)[1, 0, 0], chelsea.reshape(-1, 3).mean(axis=0), atol=1.0)
    grey = grey_thumbnails(rows)
    assert grey.shape == (3, 24, 24)
    # A grey image's colour thumbnail repeats its grey level in every channel.
    assert np.ptp(colour_thumbnails(rows)[2], axis=2).max() == 0
    with pytest.raises(InputError, match="thumbnails"):
        grey_thumbnails(rows[:, :10])
    with pytest.raises(InputError, match="divisor"):
        colour_thumbnails(rows, 3)


def test_grey_squares_are_the_grey_thumbnail_at_any_side() -> None:
    chelsea = photo("chelsea")
    pictures = [chelsea, chelsea[:, :, 0], chelsea[:200, :150]]
    thumbnails = grey_thumbnails(image_features(pictures)[2])
    squares = grey_squares(pictures, 24)
    assert squares.shape == (3, 24, 24) and squares.dtype == np.float32
    np.testing.assert_allclose(squares, thumbnails, atol=0.51)  # the thumbnail is rounded to uint8
    finer = grey_squares(pictures, 64)
    assert finer.shape == (3, 64, 64)
    # area resampling keeps the mean grey level at any side
    np.testing.assert_allclose(finer.mean(axis=(1, 2)), squares.mean(axis=(1, 2)), rtol=1e-3)


def slow_registered_similarity(grey: np.ndarray, first: int, second: int) -> float:
    """The definition, one placement at a time: resample, correlate, keep the best."""
    side = grey.shape[1]
    core = np.arange(REGISTRATION_MARGIN, side - REGISTRATION_MARGIN)
    centre = (side - 1) / 2
    window = grey[first][REGISTRATION_MARGIN:side - REGISTRATION_MARGIN, REGISTRATION_MARGIN:side - REGISTRATION_MARGIN]
    best = -1.0
    for scale_y in REGISTRATION_SCALES:
        for shift_y in REGISTRATION_SHIFTS:
            for scale_x in REGISTRATION_SCALES:
                for shift_x in REGISTRATION_SHIFTS:
                    ys = np.clip(centre + scale_y * (core - centre) + shift_y, 0, side - 1)
                    xs = np.clip(centre + scale_x * (core - centre) + shift_x, 0, side - 1)
                    yy, xx = np.meshgrid(ys, xs, indexing="ij")
                    placed = map_coordinates(grey[second].astype(np.float64), [yy, xx], order=1)
                    best = max(best, float(np.corrcoef(window.ravel(), placed.ravel())[0, 1]))
    return best


def test_registered_similarity_finds_shifted_and_cropped_copies(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = fashion_mnist
    trousers = np.flatnonzero(labels == 1)[:40]  # one class: many near-identical silhouettes
    source = images[trousers[0]]
    shifted = np.zeros_like(source)
    shifted[1:, :] = source[:-1, :]
    cropped = np.asarray(Image.fromarray(source[:, 1:-1]).resize((28, 28), Image.BILINEAR))
    darker = (source * 0.85).astype(np.uint8)
    pictures = [source, shifted, cropped, darker, *images[trousers[1:]]]
    grey = grey_thumbnails(image_features(pictures)[2])
    n = len(pictures)
    copies = registered_similarity(grey, np.zeros(3, int), np.arange(1, 4))
    others = registered_similarity(grey, np.zeros(n - 4, int), np.arange(4, n))
    assert copies.min() > 0.98
    assert 1 - copies.max() < 0.25 * (1 - others.max())  # far closer than the closest other trouser
    # The fast algebra equals the definition.
    pairs = [(0, 2), (2, 0), (0, 5), (7, 9)]
    fast = registered_similarity(grey, np.array([a for a, _ in pairs]), np.array([b for _, b in pairs]))
    np.testing.assert_allclose(fast, [slow_registered_similarity(grey, a, b) for a, b in pairs], atol=1e-4)
    with pytest.raises(InputError, match="thumbnails"):
        registered_similarity(grey[:, :5, :5], np.array([0]), np.array([1]))


def slow_refined_similarity(grey: np.ndarray, first: int, second: int) -> float:
    """The continuous optimum by a generic optimiser (Nelder-Mead over scale and shift per axis, many starts)."""
    from scipy.optimize import minimize

    side = grey.shape[1]
    core = np.arange(REGISTRATION_MARGIN, side - REGISTRATION_MARGIN, dtype=np.float64)
    centre = (side - 1) / 2
    inner = slice(REGISTRATION_MARGIN, side - REGISTRATION_MARGIN)
    window = grey[first][inner, inner].ravel().astype(np.float64)

    def correlation(p: np.ndarray) -> float:
        ys = np.clip(centre + p[0] * (core - centre) + p[1], 0, side - 1)
        xs = np.clip(centre + p[2] * (core - centre) + p[3], 0, side - 1)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        placed = map_coordinates(grey[second].astype(np.float64), [yy, xx], order=1).ravel()
        return float(np.corrcoef(window, placed)[0, 1])

    half = (-0.5, 0.5)
    starts = [(sy, ty, sx, tx) for sy in (0.96, 1.04) for ty in half for sx in (0.96, 1.04) for tx in half]
    best = max(starts, key=correlation)
    result = minimize(lambda p: -correlation(p), best, method="Nelder-Mead",
                      options={"xatol": 1e-3, "fatol": 1e-6, "maxiter": 600})
    return -float(result.fun)


def test_refined_similarity_recovers_sub_pixel_registration(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = fashion_mnist
    shirts = np.flatnonzero(labels == 6)[:30]  # textured pictures lose most to half-pixel misregistration
    pictures = []
    for index in shirts[:6]:
        source = images[index]
        # one source pixel cropped and stretched back: a 3.7% rescale plus a half-pixel shift, between grid points
        cropped = np.asarray(Image.fromarray(source[1:, :]).resize((28, 28), Image.BILINEAR))
        pictures += [source, cropped]
    pictures += [images[i] for i in shirts[6:]]
    grey = grey_thumbnails(image_features(pictures)[2])
    first, second = np.arange(0, 12, 2), np.arange(1, 12, 2)
    grid = registered_similarity(grey, first, second)
    refined = refined_similarity(grey, first, second)
    assert np.all(refined >= grid - 1e-9)
    # the copies' misfit shrinks several-fold; look-alike shirts stay far
    assert np.median(1 - refined) < 0.4 * np.median(1 - grid)
    others = refined_similarity(grey, np.zeros(len(pictures) - 12, int), np.arange(12, len(pictures)))
    assert np.median(1 - refined) < 0.5 * (1 - others).min()
    # the Gauss-Newton search reaches what a generic optimiser finds, within a small tolerance
    slow = np.array([slow_refined_similarity(grey, a, b) for a, b in zip(first[:3], second[:3], strict=True)])
    np.testing.assert_allclose(refined[:3], slow, atol=2e-3)
    # given the grid's result it skips the grid and returns the same
    start = registered_similarity(grey, first, second, return_placement=True)
    np.testing.assert_allclose(refined_similarity(grey, first, second, start=start), refined)
    # the parabolic peak predicted from the grid lies above the grid's best and nearer the refined optimum
    _, _, peak = registered_similarity(grey, first, second, return_peak=True)
    assert np.all(peak >= grid - 1e-9)
    assert np.median(np.abs(peak - refined)) < 0.5 * np.median(np.abs(grid - refined))


def test_compiled_registration_matches_the_numpy_steps(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    """The numba kernel takes the NumPy version's steps one pair at a time: the same optimum on real pairs
    (copies, look-alikes and strangers), up to its float64 sums."""
    from curato.compiled import gauss_newton_kernel

    if gauss_newton_kernel() is None:
        pytest.skip("numba is not installed (the `fast` extra): only the NumPy version runs")
    images, labels = fashion_mnist
    sources = np.arange(200)
    copies = [np.asarray(Image.fromarray(images[i][1:, :]).resize((28, 28), Image.BILINEAR)) for i in sources]
    grey = grey_thumbnails(image_features([*images[:1000], *copies])[2])
    rng = np.random.default_rng(0)
    shirts = np.flatnonzero(labels[:1000] == 6)
    first = np.r_[sources, rng.choice(shirts, 300), rng.integers(0, 1000, 300)]
    second = np.r_[sources + 1000, rng.choice(shirts, 300), rng.integers(0, 1000, 300)]
    start = registered_similarity(grey, first, second, return_placement=True)
    compiled, compiled_params = refined_similarity(grey, first, second, start=start, return_params=True)
    plain, plain_params = refined_similarity(grey, first, second, start=start, return_params=True, compiled=False)
    assert not np.array_equal(compiled, plain)  # the kernel did run (its float64 sums differ in the last digits)
    difference = np.abs(compiled - plain)
    assert np.quantile(difference, 0.99) < 1e-5 and difference.max() < 1e-3
    moved = np.abs(compiled_params - plain_params).max(axis=1)
    assert np.mean(moved < 1e-3) > 0.98
    # Pictures of NaN never improve on the grid's result: those pairs keep their start, the others are unchanged
    broken = grey.copy()
    broken[second[:5]] = np.nan
    similarity = refined_similarity(broken, first, second, start=start)
    np.testing.assert_array_equal(similarity[:5], np.clip(start[0][:5], -1, 1))
    np.testing.assert_allclose(similarity[5:], compiled[5:])
    # the kernel reads pictures unchecked: shapes it cannot trust are refused before it runs
    with pytest.raises(InputError, match="side, side"):
        refined_similarity(grey[:, :, :12], first, second, start=start)
    with pytest.raises(InputError, match="one length"):
        refined_similarity(grey, first, second[:-1], start=start)
    with pytest.raises(InputError, match="per pair"):
        refined_similarity(grey, first, second, start=(start[0][:-1], start[1][:-1]))
    with pytest.raises(InputError, match="placements"):
        refined_similarity(grey, first, second, start=(start[0], np.full(len(first), 81)))


def test_fourier_descriptors_keep_shifted_copies_next_to_their_original(
        fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = fashion_mnist
    originals = images[labels == 6][:200]  # shirts: textured, and many look-alikes
    n = len(originals)
    shifted = np.zeros_like(originals)
    shifted[:, :, 2:] = originals[:, :, :-2]  # two pixels right: raw pixels move, magnitudes do not
    grey = grey_thumbnails(image_features([*originals, *shifted])[2])
    vectors = fourier_descriptors(grey)
    assert vectors.shape[0] == 2 * n and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    def nearest_is_own_copy(features: np.ndarray) -> float:
        similarity = features[n:] @ features[:n].T
        return float(np.mean(similarity.argmax(axis=1) == np.arange(n)))

    raw = grey.reshape(2 * n, -1) - grey.reshape(2 * n, -1).mean(axis=1, keepdims=True)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    by_fourier, by_pixels = nearest_is_own_copy(vectors), nearest_is_own_copy(raw)
    assert by_fourier >= 0.95
    assert by_fourier > by_pixels + 0.1
    assert fourier_descriptors(grey[:0]).shape == (0, vectors.shape[1])
    with pytest.raises(InputError, match="side > 12"):
        fourier_descriptors(grey[:, :10, :10])


def test_residual_low_share_tells_recompressed_copies_from_look_alikes(
        fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = fashion_mnist
    shirts = np.flatnonzero(labels == 6)  # textured, and many look-alikes of one cut
    sources, others = shirts[:30], shirts[30:230]
    copies = []
    for index in sources:
        # one source pixel cropped and stretched back, then JPEG-compressed: the copy's residual is fine noise
        stretched = Image.fromarray(images[index][1:, :]).resize((28, 28), Image.BILINEAR)
        buffer = io.BytesIO()
        stretched.save(buffer, format="JPEG", quality=70)
        copies.append(np.asarray(Image.open(buffer).convert("L")))
    pictures = [*images[sources], *copies, *images[others]]
    grey = grey_thumbnails(image_features(pictures)[2])
    n = len(sources)
    own = np.arange(n)
    _, params = refined_similarity(grey, own, own + n, return_params=True)
    copy_share = residual_low_share(grey, own, own + n, params)
    # each source's closest look-alike among 200 other shirts, registered the same way
    first = np.repeat(own, len(others))
    second = np.tile(np.arange(2 * n, len(pictures)), n)
    similarity = refined_similarity(grey, first, second).reshape(n, len(others))
    nearest = 2 * n + similarity.argmax(axis=1)
    _, look_alike_params = refined_similarity(grey, own, nearest, return_params=True)
    look_alike_share = residual_low_share(grey, own, nearest, look_alike_params)
    assert np.all((copy_share >= 0) & (copy_share <= 1)) and np.all(look_alike_share <= 1)
    assert np.median(copy_share) < 0.15 < np.median(look_alike_share)
    assert np.percentile(copy_share, 80) < np.percentile(look_alike_share, 20)
    # the definition, one pair at a time: warp with scipy, unit residual, blurred energy over energy
    side = grey.shape[1]
    core = np.arange(REGISTRATION_MARGIN, side - REGISTRATION_MARGIN, dtype=np.float64)
    centre = (side - 1) / 2
    for pair in range(3):
        sy, ty, sx, tx = params[pair]
        yy, xx = np.meshgrid(np.clip(centre + sy * (core - centre) + ty, 0, side - 1),
                             np.clip(centre + sx * (core - centre) + tx, 0, side - 1), indexing="ij")
        warped = map_coordinates(grey[pair + n].astype(np.float64), [yy, xx], order=1)
        window = grey[pair][REGISTRATION_MARGIN:side - REGISTRATION_MARGIN,
                            REGISTRATION_MARGIN:side - REGISTRATION_MARGIN].astype(np.float64)
        unit = [(x - x.mean()) / np.linalg.norm(x - x.mean()) for x in (window, warped)]
        residual = unit[0] - unit[1]
        expected = (gaussian_filter(residual, 1.0) ** 2).sum() / (residual ** 2).sum()
        assert copy_share[pair] == pytest.approx(expected, abs=1e-3)
    assert residual_low_share(grey, own[:0], own[:0], params[:0]).shape == (0,)
