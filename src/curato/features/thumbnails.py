"""Thumbnails kept from the scan, and the registered similarity of two thumbnails.

The single decode pass of ingest (:mod:`curato.features.scan`) keeps two small area-resampled copies
of every image, stored together as one uint8 row of :data:`THUMBNAIL_COLUMNS` values in the feature
set ``thumbnails``:

* a colour thumbnail, ``COLOUR_SIDE x COLOUR_SIDE`` (8 x 8) RGB, pixel-interleaved (grey images
  repeat their grey level in the three channels) -- the "does a tiny picture predict the label?"
  shortcut test reads it;
* a grey thumbnail, ``GREY_SIDE x GREY_SIDE`` (24 x 24) -- the near-duplicate check compares two
  pictures with it after registering one onto the other (:func:`registered_similarity`).

Both ignore the aspect ratio: an image of any shape becomes a square.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from curato.compiled import gauss_newton_kernel
from curato.errors import InputError
from curato.features.properties import COLOUR_SIDE, GREY_SIDE, THUMBNAIL_COLUMNS
from curato.system import available_cpus

THUMBNAIL_LAYOUT = f"rgb{COLOUR_SIDE}x{COLOUR_SIDE}+grey{GREY_SIDE}x{GREY_SIDE}"
# Registration grid: the second picture is resampled at these scales about the centre and these
# shifts (in grey-thumbnail pixels), independently per axis, and the best correlation counts.
REGISTRATION_SCALES = (0.93, 1.0, 1.07)
REGISTRATION_SHIFTS = (-1.0, 0.0, 1.0)
# Per axis, the (scale, shift) variants tried: every scale with every shift.
REGISTRATION_GRID = tuple((scale, shift) for scale in REGISTRATION_SCALES for shift in REGISTRATION_SHIFTS)
# Threads sharing the registration work (chunks of pairs are independent).
REGISTRATION_THREADS = 2
# Pixels left out at each side of the first picture, so every shifted/scaled sample stays inside.
REGISTRATION_MARGIN = 3
# Frequencies per axis kept by fourier_descriptors (of a 24 px thumbnail: the lower half).
FOURIER_KEEP = 6
# Continuous refinement of the best grid placement (refined_similarity): Gauss-Newton steps, and the
# range the per-axis scale and shift may take.
REFINE_ITERATIONS = 5
REFINE_SCALE_RANGE = (0.85, 1.15)
# A pair stops refining when its step moves scale by < 0.002 and shift by < 0.02 thumbnail pixels, or
# when it still mismatches by t = 1 - correlation > 0.3 after a step (no duplicate rule looks that far).
REFINE_SETTLED_SCALE = 0.002
REFINE_SETTLED_SHIFT = 0.02
REFINE_HOPELESS = 0.3
REFINE_SHIFT_RANGE = (-2.5, 2.5)
# Gaussian blur (thumbnail pixels) that separates a registration residual's coarse structure from its fine
# noise (residual_low_share).
RESIDUAL_BLUR = 1.0

__all__ = [
    "COLOUR_SIDE",
    "GREY_SIDE",
    "THUMBNAIL_COLUMNS",
    "THUMBNAIL_LAYOUT",
    "colour_thumbnails",
    "fourier_descriptors",
    "grey_thumbnails",
    "refined_similarity",
    "registered_similarity",
    "residual_low_share",
]


def _checked(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[1] != THUMBNAIL_COLUMNS:
        raise InputError(f"thumbnails: expected rows of {THUMBNAIL_COLUMNS} values ({THUMBNAIL_LAYOUT}), "
                         f"got shape {rows.shape}; re-run `curato ingest` to rebuild them")
    return rows


def colour_thumbnails(rows: np.ndarray, side: int = COLOUR_SIDE) -> np.ndarray:
    """(n, side, side, 3) float32 colour thumbnails on the 0..255 scale; ``side`` must divide 8 (8, 4, 2, 1)."""
    rows = _checked(rows)
    if side < 1 or COLOUR_SIDE % side:
        raise InputError(f"thumbnail side {side}: use a divisor of {COLOUR_SIDE}")
    colour = rows[:, :COLOUR_SIDE * COLOUR_SIDE * 3].astype(np.float32).reshape(-1, COLOUR_SIDE, COLOUR_SIDE, 3)
    factor = COLOUR_SIDE // side
    return colour.reshape(-1, side, factor, side, factor, 3).mean(axis=(2, 4))


def grey_thumbnails(rows: np.ndarray) -> np.ndarray:
    """(n, GREY_SIDE, GREY_SIDE) float32 grey thumbnails on the 0..255 scale."""
    rows = _checked(rows)
    return rows[:, COLOUR_SIDE * COLOUR_SIDE * 3:].astype(np.float32).reshape(-1, GREY_SIDE, GREY_SIDE)


def _sampling_matrices(side: int, grid: tuple[tuple[float, float], ...]) -> np.ndarray:
    """(variants, core, side) linear-interpolation rows: sample a line at scale s and shift d about its centre."""
    core = np.arange(REGISTRATION_MARGIN, side - REGISTRATION_MARGIN, dtype=np.float64)
    centre = (side - 1) / 2
    matrices = []
    for scale, shift in grid:
        position = np.clip(centre + scale * (core - centre) + shift, 0, side - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, side - 1)
        weight = position - low
        matrix = np.zeros((core.size, side))
        matrix[np.arange(core.size), low] += 1 - weight
        matrix[np.arange(core.size), high] += weight
        matrices.append(matrix)
    return np.asarray(matrices, dtype=np.float32)


def fourier_descriptors(grey: np.ndarray, *, keep: int = FOURIER_KEEP) -> np.ndarray:
    """Unit vectors that barely move when a picture is shifted, cropped by a pixel or re-compressed.

    The square-rooted magnitudes of the centred thumbnail's 2-D Fourier coefficients up to ``keep``
    cycles per side along each axis: a shift changes only the phases, and the low frequencies kept
    here are the ones resampling and JPEG leave alone. Used to find near-duplicate candidates whose
    pixels moved (a one-pixel shift drops a textured copy out of its original's nearest raw-pixel
    neighbours; ``benchmarks/near_duplicates.py`` prints how many planted copies each way finds).
    """
    grey = np.asarray(grey, dtype=np.float32)
    if grey.ndim != 3 or not 0 < 2 * keep < min(grey.shape[1:]):
        raise InputError(f"grey thumbnails must be (n, side, side) with side > {2 * keep}, got {grey.shape}")
    centred = grey - grey.mean(axis=(1, 2), keepdims=True)
    spectrum = np.abs(np.fft.rfft2(centred))  # (n, side, side // 2 + 1): the other half mirrors it
    low = np.concatenate([spectrum[:, :keep + 1, :keep + 1], spectrum[:, -keep:, :keep + 1]], axis=1)
    flat = np.sqrt(low.reshape(low.shape[0], low.shape[1] * low.shape[2]))
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return (flat / np.maximum(norms, 1e-12)).astype(np.float32)


def registered_similarity(grey: np.ndarray, first: np.ndarray, second: np.ndarray, *,
                          chunk: int = 1024, return_placement: bool = False,
                          grid: tuple[tuple[float, float], ...] | None = None, return_peak: bool = False) -> Any:
    """Best correlation of picture ``first[i]`` with picture ``second[i]`` over a small registration grid.

    ``grey``: (n, side, side) grey thumbnails (:func:`grey_thumbnails`). The central window of the
    first picture (a ``REGISTRATION_MARGIN`` border left out) is compared with the second picture
    resampled at 3 scales x 3 shifts per axis (81 placements); the result is the highest Pearson
    correlation, in [-1, 1]. Slightly shifted, cropped or rescaled copies of one picture come out
    near 1 even where their embeddings and perceptual hashes have drifted; correlation also ignores
    brightness and contrast changes.

    With ``return_placement`` it returns ``(similarity, placement)``: the best placement's index
    ``u * variants + v`` (``u`` vertical, ``v`` horizontal; a variant is ``scale_index * len(SHIFTS) +
    shift_index``), the start of :func:`refined_similarity`.

    Cost: the spread of each placement of a second picture is computed once per distinct picture;
    per pair, the vertical resampling is folded into the first picture's window and the horizontal one
    applied to the second picture, and the two meet in a (9 x 9) matrix of placements. The second picture is
    resampled straight into the layout that product reads (variant, column, row); the window, shared by the
    pair's neighbours in a chunk, is the one transposed to match (a transposed copy of the second pictures
    cost as much as the product itself on 24 px thumbnails).
    """
    grey, first, second = _checked_pairs(grey, first, second)
    side = grey.shape[1]
    grid = REGISTRATION_GRID if grid is None else tuple(grid)
    matrices = _sampling_matrices(side, grid)  # (v, c, side)
    placements = matrices.shape[0] ** 2
    pictures, position = np.unique(second, return_inverse=True)
    spread = np.empty((pictures.size, placements), dtype=np.float32)
    # Sum of squares of placement (u, v) without building it: sum over h, g of (W_u^T W_u)[h, g] (R_v R_v^T)[h, g],
    # where R_v is the picture resampled horizontally.
    down = np.ascontiguousarray(matrices.transpose(0, 2, 1)).reshape(-1, matrices.shape[1])  # (u * side, c)
    across = np.ascontiguousarray(matrices.reshape(-1, side).T)  # (side, v * c)
    across_rows = np.ascontiguousarray(across.T)  # (v * c, side)
    gram = np.einsum("uch,ucg->uhg", matrices, matrices)
    row_weights = matrices.sum(axis=1)  # (u, side): how much each source row adds to a placement's sum
    count = (side - 2 * REGISTRATION_MARGIN) ** 2

    def spread_of(start: int) -> None:
        b = grey[pictures[start:start + chunk]]
        right = _resampled_across(b, across)
        squares = np.einsum("uhg,mvhg->muv", gram, np.matmul(right, right.transpose(0, 1, 3, 2)), optimize=True)
        total = np.einsum("uh,mvh->muv", row_weights, right.sum(axis=3), optimize=True)
        variance = np.maximum(squares - total ** 2 / count, 0.0)
        spread[start:start + len(b)] = np.sqrt(variance).reshape(len(b), placements)

    _in_parallel(spread_of, pictures.size, chunk)
    out = np.empty(first.size, dtype=np.float64)
    best = np.empty(first.size, dtype=np.int64)
    peak = np.empty(first.size, dtype=np.float64) if return_peak else None

    def correlate(start: int) -> None:
        # A sample is compared with several partners in a row: its window is resampled once per chunk.
        firsts, which = np.unique(first[start:start + chunk], return_inverse=True)
        a = _unit_window(grey[firsts])
        m, core = len(which), a.shape[1]
        # left: (samples, u, c, side), each window resampled vertically and transposed; right: (m, v, c, side),
        # every variant's horizontal resampling of each second picture in one product; then a batch of
        # (u, c * side) x (c * side, v) products
        left = (down @ a.transpose(1, 0, 2).reshape(core, -1)).reshape(len(grid), side, len(firsts), core)
        left = np.ascontiguousarray(left.transpose(2, 0, 3, 1)).reshape(len(firsts), len(grid), core * side)
        right = np.matmul(across_rows[None], grey[second[start:start + chunk]].transpose(0, 2, 1))
        right = right.reshape(m, len(grid), core * side)
        numerator = np.matmul(left[which], right.transpose(0, 2, 1)).reshape(m, placements)
        correlation = numerator / (spread[position[start:start + chunk]] + 1e-6)
        out[start:start + chunk] = correlation.max(axis=1)
        best[start:start + chunk] = correlation.argmax(axis=1)
        if peak is not None:
            peak[start:start + chunk] = _peak_estimate(correlation, best[start:start + chunk], len(grid))

    _in_parallel(correlate, first.size, chunk)
    out = np.clip(out, -1.0, 1.0)
    if return_peak:
        return out, best, np.clip(peak, -1.0, 1.0)
    return (out, best) if return_placement else out


def _checked_pairs(grey: np.ndarray, first: np.ndarray, second: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 square pictures large enough to register, and the pairs as two equally long int64 index arrays (the
    compiled refinement trusts these shapes: it reads pictures unchecked)."""
    grey = np.asarray(grey, dtype=np.float32)
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    if grey.ndim != 3 or grey.shape[1] != grey.shape[2] or grey.shape[1] <= 2 * REGISTRATION_MARGIN + 1:
        raise InputError(f"grey thumbnails must be (n, side, side) with side > {2 * REGISTRATION_MARGIN + 1}, "
                         f"got {grey.shape}")
    if first.ndim != 1 or first.shape != second.shape:
        raise InputError(f"first and second must be two index arrays of one length, got shapes {first.shape} and "
                         f"{second.shape}")
    return grey, first, second


def _resampled_across(pictures: np.ndarray, across: np.ndarray) -> np.ndarray:
    """(m, variants, side, core): every row of the (m, side, side) pictures resampled horizontally by each variant
    (``across``: the variants' sampling matrices side by side, (side, variants * core)), as one matrix product."""
    m, side = pictures.shape[0], pictures.shape[1]
    core = side - 2 * REGISTRATION_MARGIN
    resampled = (pictures.reshape(m * side, side) @ across).reshape(m, side, -1, core)
    return np.ascontiguousarray(resampled.transpose(0, 2, 1, 3))


def _peak_estimate(correlation: np.ndarray, best: np.ndarray, variants: int) -> np.ndarray:
    """Where the grid's best placement is not the true optimum, roughly how high the optimum is.

    Along each of the four axes (vertical/horizontal scale and shift) through the best placement, a
    parabola through it and its two grid neighbours predicts the peak (gain ``(a - c)^2 / (8 (2b - a - c))``);
    the gains are added. A best placement on the grid's edge along an axis has its optimum beyond the
    grid: that axis adds the last step's rise again. Used to pick the pairs worth a continuous refinement.
    """
    m = len(correlation)
    scales, shifts = len(REGISTRATION_SCALES), len(REGISTRATION_SHIFTS)
    if variants != scales * shifts:
        return correlation.max(axis=1)
    cube = correlation.reshape(m, scales, shifts, scales, shifts)
    position = np.stack(np.unravel_index(best, (scales, shifts, scales, shifts)), axis=1)  # (m, 4)
    centre = cube[np.arange(m), position[:, 0], position[:, 1], position[:, 2], position[:, 3]]
    gain = np.zeros(m)
    for axis, size in enumerate((scales, shifts, scales, shifts)):
        values = []
        for delta in (-1, 1):
            moved = position.copy()
            moved[:, axis] = np.clip(moved[:, axis] + delta, 0, size - 1)
            values.append(cube[np.arange(m), moved[:, 0], moved[:, 1], moved[:, 2], moved[:, 3]])
        low, high = values
        inside = (position[:, axis] > 0) & (position[:, axis] < size - 1)
        curvature = np.maximum(2 * centre - low - high, 1e-9)
        gain += np.where(inside, (low - high) ** 2 / (8 * curvature), centre - np.minimum(low, high))
    return centre + gain


def refined_similarity(grey: np.ndarray, first: np.ndarray, second: np.ndarray, *,
                       iterations: int = REFINE_ITERATIONS, chunk: int = 512,
                       start: tuple[np.ndarray, np.ndarray] | None = None, return_params: bool = False,
                       compiled: bool = True) -> Any:
    """:func:`registered_similarity` with the best grid placement refined continuously.

    The grid's steps (7% in scale, one thumbnail pixel in shift) leave up to half a pixel of
    misregistration, which costs textured pictures much of their correlation: a copy cropped by one
    source pixel and stretched back sits between grid points. Starting from the grid's best placement,
    a damped Gauss-Newton (Levenberg-Marquardt) search moves the four parameters -- scale and shift
    per axis, within ``REFINE_SCALE_RANGE`` / ``REFINE_SHIFT_RANGE`` -- to maximise the Pearson
    correlation of the first picture's central window with the resampled second picture (bilinear
    interpolation, differentiated analytically), vectorised over pairs. Returns the best correlation
    seen (never below the grid's), in [-1, 1]. ``start``: the ``(similarity, placement)`` that
    ``registered_similarity(..., return_placement=True)`` returned for these pairs, to skip the grid.
    With ``return_params`` it returns ``(similarity, params)``: the placement reached, (m, 4) columns
    ``sy, ty, sx, tx`` (scale and shift, vertical then horizontal), for :func:`residual_low_share`.
    ``compiled``: run the search as a compiled per-pair loop where numba is installed (about 3x less CPU; sums in
    float64, so the similarities move in the seventh digit); False: the NumPy version everywhere.
    """
    grey, first, second = _checked_pairs(grey, first, second)
    variants = len(REGISTRATION_GRID)
    if start is None:
        coarse, placement = registered_similarity(grey, first, second, return_placement=True)
    else:
        coarse, placement = np.asarray(start[0], dtype=np.float64), np.asarray(start[1], dtype=np.int64)
        if coarse.shape != first.shape or placement.shape != first.shape:
            raise InputError(f"start must hold one similarity and one placement per pair ({first.size}), got shapes "
                             f"{coarse.shape} and {placement.shape}")
        if placement.size and (placement.min() < 0 or placement.max() >= variants ** 2):
            raise InputError(f"start placements must lie in 0..{variants ** 2 - 1} (registered_similarity's)")
    scales, shifts = (np.array(values, dtype=np.float64) for values in zip(*REGISTRATION_GRID, strict=True))
    vertical, horizontal = placement // variants, placement % variants
    params = np.stack([scales[vertical], shifts[vertical], scales[horizontal], shifts[horizontal]], axis=1)
    out = coarse.copy()

    def refine(begin: int) -> None:
        block = slice(begin, begin + chunk)
        window = _unit_window(grey[first[block]])
        refined, reached = _gauss_newton_registration(window, grey[second[block]], params[block].copy(), iterations,
                                                      compiled=compiled)
        improved = refined > out[block]
        out[block] = np.where(improved, refined, out[block])
        params[block] = np.where(improved[:, None], reached, params[block])

    _in_parallel(refine, first.size, chunk)
    out = np.clip(out, -1.0, 1.0)
    return (out, params) if return_params else out


def residual_low_share(grey: np.ndarray, first: np.ndarray, second: np.ndarray, params: np.ndarray, *,
                       sigma: float = RESIDUAL_BLUR) -> np.ndarray:
    """Share of what is left after registration that is coarse structure rather than fine noise, in [0, 1].

    The first picture's central window and the second picture warped by ``params`` (from
    ``refined_similarity(..., return_params=True)``) are centred and scaled to unit length; their
    difference is the residual. Returned: the energy of the residual blurred by a Gaussian of ``sigma``
    thumbnail pixels over the residual's energy. Re-compression, resampling and a pixel's crop leave a
    fine-grained residual (small share: blurring averages it away); a different object of the same cut
    leaves a coarse one -- a longer sleeve, another collar, a print -- that survives the blur.
    """
    grey = np.asarray(grey, dtype=np.float32)
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    if first.size == 0:
        return np.zeros(0)
    window = _unit_window(grey[first])
    warped = _bilinear_warp(grey[second], np.asarray(params, dtype=np.float64))[0]
    residual = window - _unit_window(warped, margin=0)
    coarse = gaussian_filter(residual, sigma=(0, sigma, sigma))
    energy = np.einsum("mij,mij->m", residual, residual)
    return np.clip(np.einsum("mij,mij->m", coarse, coarse) / np.maximum(energy, 1e-12), 0.0, 1.0)


def _unit_window(pictures: np.ndarray, margin: int = REGISTRATION_MARGIN) -> np.ndarray:
    """The pictures' central windows (``margin`` left out at each side), centred and scaled to unit length."""
    side = pictures.shape[1]
    window = pictures[:, margin:side - margin, margin:side - margin].astype(np.float32)
    window -= window.mean(axis=(1, 2), keepdims=True)
    window /= np.linalg.norm(window.reshape(len(window), -1), axis=1)[:, None, None] + 1e-9
    return window


def _in_parallel(work: Callable[[int], None], total: int, chunk: int) -> None:
    """Run ``work(start)`` for every chunk of ``range(total)`` on ``REGISTRATION_THREADS`` threads (at most this
    work's share of the CPUs: beside another check, one).

    NumPy releases the GIL inside its loops and the chunks write disjoint slices, so they share the
    cores; BLAS is held to one thread meanwhile.
    """
    starts = range(0, total, chunk)
    workers = max(1, min(REGISTRATION_THREADS, available_cpus(), len(starts)))
    # The products are small: multi-threaded BLAS on them costs more in coordination than it gains.
    with threadpool_limits(limits=1, user_api="blas"):
        if workers == 1:
            for start in starts:
                work(start)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, starts))


def _linear_sampling(scale: np.ndarray, shift: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pair and output position of one axis: the lower source index and the weight of the upper one."""
    core = np.arange(REGISTRATION_MARGIN, side - REGISTRATION_MARGIN, dtype=np.float64)
    centre = (side - 1) / 2
    position = np.clip(centre + scale[:, None] * (core - centre) + shift[:, None], 0, side - 1)  # (m, c)
    lower = np.minimum(np.floor(position).astype(np.int32), side - 2)
    return lower, (position - lower).astype(np.float32)


def _bilinear_warp(pictures: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each picture resampled at its own (scale, shift) per axis -- ``params`` columns ``sy, ty, sx, tx`` --
    and the warp's derivatives along the row and the column position: three (m, core, core) arrays.

    Bilinear resampling is separable and touches two source pixels per output pixel, so the warp and its
    derivatives (the difference of the two pixels) are flat gathers, not matrix products.
    """
    m, side = pictures.shape[0], pictures.shape[1]
    flat = pictures.reshape(-1)
    col, col_weight = _linear_sampling(params[:, 2], params[:, 3], side)  # (m, c)
    core = col.shape[1]
    index = ((np.arange(m, dtype=np.int32) * (side * side))[:, None, None]
             + (np.arange(side, dtype=np.int32) * side)[None, :, None] + col[:, None, :])  # (m, side, c)
    # np.take: a flat gather with int32 indices, faster than fancy indexing (which first casts them)
    left = np.take(flat, index)
    slope_x = np.take(flat, index + 1) - left
    across = left + col_weight[:, None, :] * slope_x  # (m, side, c)
    row, row_weight = _linear_sampling(params[:, 0], params[:, 1], side)
    index = ((np.arange(m, dtype=np.int32) * (side * core))[:, None, None] + row[:, :, None] * core
             + np.arange(core, dtype=np.int32)[None, None, :])
    across, slope_x = across.reshape(-1), slope_x.reshape(-1)
    upper, lower = np.take(across, index + core), np.take(across, index)
    slope_y = upper - lower
    slope_low = np.take(slope_x, index)
    weight = row_weight[:, :, None]
    return lower + weight * slope_y, slope_y, slope_low + weight * (np.take(slope_x, index + core) - slope_low)


def _gauss_newton_registration(window: np.ndarray, pictures: np.ndarray, params: np.ndarray,
                               iterations: int, *, compiled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Best correlation reached, and the parameters reaching it, by damped Gauss-Newton steps on
    ``|| window - unit(centred warp(p)) ||^2``.

    With ``w`` the unit centred warp, ``D_p`` the warp's derivative in parameter ``p``, ``n`` the centred
    warp's norm and ``a_p = <w, D_p>``, the Gauss-Newton system is ``H = (<D_p, D_q> - N mean(D_p) mean(D_q)
    - a_p a_q) / n^2`` and ``g = (<D_p, window> - a_p rho) / n``. Every ``D_p`` is a row or column slope
    times 1 or the offset from the centre, so all of it comes from a few row / column sums of products
    of the two slope images -- the (pairs x 4 x core x core) Jacobian is never built. ``compiled`` (and numba
    installed): the same steps one pair at a time in :mod:`curato.compiled`.
    """
    lower_bound = np.array([REFINE_SCALE_RANGE[0], REFINE_SHIFT_RANGE[0]] * 2)
    upper_bound = np.array([REFINE_SCALE_RANGE[1], REFINE_SHIFT_RANGE[1]] * 2)
    kernel = gauss_newton_kernel() if compiled else None
    if kernel is not None:
        best, reached = np.empty(len(window)), np.empty((len(window), 4))
        kernel(np.ascontiguousarray(window, dtype=np.float32), np.ascontiguousarray(pictures, dtype=np.float32),
               np.ascontiguousarray(params, dtype=np.float64), iterations, REGISTRATION_MARGIN, lower_bound,
               upper_bound, REFINE_SETTLED_SCALE, REFINE_SETTLED_SHIFT, REFINE_HOPELESS, best, reached)
        return best, reached
    m, side = len(window), pictures.shape[1]
    core = window.shape[1]
    offset = (np.arange(REGISTRATION_MARGIN, side - REGISTRATION_MARGIN) - (side - 1) / 2).astype(np.float32)
    weights = np.stack([offset, np.ones_like(offset)])  # (2, c): a scale's and a shift's factor per position
    count = core * core
    best = np.full(m, -np.inf)
    best_params = params.copy()
    damping = np.full(m, 1e-3)
    state: dict[str, np.ndarray] = {}
    todo = np.arange(m)
    for iteration in range(iterations + 1):
        warped, slope_y, slope_x = _bilinear_warp(pictures[todo], params[todo])
        centred = warped - warped.mean(axis=(1, 2), keepdims=True)
        norm = np.sqrt(np.einsum("mij,mij->m", centred, centred)) + 1e-9
        unit = centred / norm[:, None, None]
        correlation = np.einsum("mij,mij->m", window[todo], unit)
        improved = correlation > best[todo]
        moved = todo[improved]
        best[moved], best_params[moved] = correlation[improved], params[moved]
        damping[todo] = np.where(improved, damping[todo] * 0.3, damping[todo] * 10.0)
        if iteration == iterations:
            break
        # Gauss-Newton quantities at the improved pairs' new parameters; the others keep their last ones.
        target = window[moved]
        slope_y, slope_x, unit, correlation, norm = (slope_y[improved], slope_x[improved], unit[improved],
                                                     correlation[improved], norm[improved])
        rows_y = np.stack([slope_y.sum(2), np.einsum("mij,mij->mi", slope_y, slope_y),
                           np.einsum("mij,mij->mi", slope_y, target),
                           np.einsum("mij,mij->mi", slope_y, unit)])  # (4, m', c): sums over columns, per row
        cols_x = np.stack([slope_x.sum(1), np.einsum("mij,mij->mj", slope_x, slope_x),
                           np.einsum("mij,mij->mj", slope_x, target),
                           np.einsum("mij,mij->mj", slope_x, unit)])  # sums over rows, per column
        both = slope_y * slope_x
        mean = np.concatenate([rows_y[0] @ weights.T, cols_x[0] @ weights.T], axis=1) / count  # (m', 4)
        along = np.concatenate([rows_y[3] @ weights.T, cols_x[3] @ weights.T], axis=1)
        towards = np.concatenate([rows_y[2] @ weights.T, cols_x[2] @ weights.T], axis=1)
        gram = np.zeros((len(moved), 4, 4))
        gram[:, :2, :2] = np.einsum("mi,pi,qi->mpq", rows_y[1], weights, weights)
        gram[:, 2:, 2:] = np.einsum("mj,pj,qj->mpq", cols_x[1], weights, weights)
        gram[:, :2, 2:] = np.einsum("mij,pi,qj->mpq", both, weights, weights)
        gram[:, 2:, :2] = gram[:, :2, 2:].transpose(0, 2, 1)
        hessian = (gram - count * mean[:, :, None] * mean[:, None, :] - along[:, :, None] * along[:, None, :])
        hessian /= (norm ** 2)[:, None, None]
        gradient = (towards - along * correlation[:, None]) / norm[:, None]
        state_moved = {"hessian": hessian, "gradient": gradient}
        if not state:
            state = {"hessian": np.zeros((m, 4, 4)), "gradient": np.zeros((m, 4))}
        for key, value in state_moved.items():
            state[key][moved] = value
        params[todo] = best_params[todo]  # failed steps restart from the best point with more damping
        hessian, gradient = state["hessian"][todo], state["gradient"][todo]
        diagonal = np.einsum("mpp->mp", hessian)
        system = hessian + (damping[todo, None] * diagonal + 1e-9)[:, :, None] * np.eye(4)[None]
        step = np.linalg.solve(system, gradient[:, :, None])[:, :, 0]
        step = np.clip(step, [-0.05, -1.0, -0.05, -1.0], [0.05, 1.0, 0.05, 1.0])
        params[todo] = np.clip(best_params[todo] + step, lower_bound, upper_bound)
        # Pairs stop once their step is negligible (converged) or their match is hopeless for a duplicate.
        settled = (np.abs(step[:, [0, 2]]).max(axis=1) < REFINE_SETTLED_SCALE) & (
            np.abs(step[:, [1, 3]]).max(axis=1) < REFINE_SETTLED_SHIFT)
        hopeless = best[todo] < 1.0 - REFINE_HOPELESS
        todo = todo[~(settled | hopeless)]
        if todo.size == 0:
            break
    return best, best_params
