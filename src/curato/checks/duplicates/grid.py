"""Grid registration of many pairs at once, laid out for the duplicate check's compared neighbours.

:func:`grid_similarity` answers what ``registered_similarity(grey, first, second, return_peak=True)`` of
:mod:`curato.features.thumbnails` answers -- the best correlation over the 9 x 9 grid of placements, the best
placement and the parabola-predicted peak -- for the (sample, neighbour) entries the duplicate check compares:
~400k entries on 70k pictures, where that grid is the larger half of the check's registration.

What differs is the layout of one product. Each second picture is resampled horizontally by every variant in
one batched product whose result already has the layout the placements' products read (variant, column,
row), where the general function resamples into (row, variant, column) and then copies it transposed: on
Fashion-MNIST that copy cost as much as the product itself. The first picture's window, resampled vertically
once per chunk and shared by its ~6 partners, is the one transposed to match. The correlations are the same
sums in another order: they agree with ``registered_similarity`` to float32 rounding (a few 1e-7), and so do
the placements but where two of them tie to that precision.
"""

from __future__ import annotations

import numpy as np

from curato.errors import InputError
from curato.features.thumbnails import (
    REGISTRATION_GRID,
    REGISTRATION_MARGIN,
    _in_parallel,
    _peak_estimate,
    _resampled_across,
    _sampling_matrices,
    _unit_window,
)


def grid_similarity(grey: np.ndarray, first: np.ndarray, second: np.ndarray, *,
                    chunk: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: the best grid correlation of ``first[i]``'s window with ``second[i]`` resampled (in [-1, 1]),
    the best placement's index and the predicted peak (in [-1, 1]), as
    ``registered_similarity(grey, first, second, return_peak=True)`` returns them (see the module docstring).

    Pairs sorted by ``first`` share each window's vertical resampling within a chunk."""
    grey = np.asarray(grey, dtype=np.float32)
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    if grey.ndim != 3 or grey.shape[1] != grey.shape[2] or grey.shape[1] <= 2 * REGISTRATION_MARGIN + 1:
        raise InputError(f"grey thumbnails must be (n, side, side) with side > {2 * REGISTRATION_MARGIN + 1}, "
                         f"got {grey.shape}")
    side = grey.shape[1]
    grid = REGISTRATION_GRID
    variants = len(grid)
    matrices = _sampling_matrices(side, grid)  # (v, c, side)
    placements = variants ** 2
    core = side - 2 * REGISTRATION_MARGIN
    pictures, position = np.unique(second, return_inverse=True)
    spread = _placement_spread(grey, pictures, matrices, chunk)
    down = np.ascontiguousarray(matrices.transpose(0, 2, 1)).reshape(-1, core)  # (u * side, c)
    across_rows = np.ascontiguousarray(matrices.reshape(-1, side))  # (v * c, side)
    out = np.empty(first.size, dtype=np.float64)
    best = np.empty(first.size, dtype=np.int64)
    peak = np.empty(first.size, dtype=np.float64)

    def correlate(start: int) -> None:
        firsts, which = np.unique(first[start:start + chunk], return_inverse=True)
        a = _unit_window(grey[firsts])
        m = len(which)
        # left: (samples, u, c, side), each window resampled vertically and transposed to match right
        left = (down @ a.transpose(1, 0, 2).reshape(core, -1)).reshape(variants, side, len(firsts), core)
        left = np.ascontiguousarray(left.transpose(2, 0, 3, 1)).reshape(len(firsts), variants, core * side)
        # right: (m, v, c, side) = every variant's horizontal resampling of each second picture, in one product
        right = np.matmul(across_rows[None], grey[second[start:start + chunk]].transpose(0, 2, 1))
        numerator = np.matmul(left[which], right.reshape(m, variants, core * side).transpose(0, 2, 1))
        correlation = numerator.reshape(m, placements) / (spread[position[start:start + chunk]] + 1e-6)
        out[start:start + chunk] = correlation.max(axis=1)
        best[start:start + chunk] = correlation.argmax(axis=1)
        peak[start:start + chunk] = _peak_estimate(correlation, best[start:start + chunk], variants)

    _in_parallel(correlate, first.size, chunk)
    return np.clip(out, -1.0, 1.0), best, np.clip(peak, -1.0, 1.0)


def _placement_spread(grey: np.ndarray, pictures: np.ndarray, matrices: np.ndarray, chunk: int) -> np.ndarray:
    """(pictures, placements): the spread (root of the centred sum of squares) of every placement of each picture,
    computed as ``registered_similarity`` computes it."""
    side = grey.shape[1]
    placements = matrices.shape[0] ** 2
    across = np.ascontiguousarray(matrices.reshape(-1, side).T)  # (side, v * c)
    gram = np.einsum("uch,ucg->uhg", matrices, matrices)
    row_weights = matrices.sum(axis=1)  # (u, side)
    count = (side - 2 * REGISTRATION_MARGIN) ** 2
    spread = np.empty((pictures.size, placements), dtype=np.float32)

    def spread_of(start: int) -> None:
        b = grey[pictures[start:start + chunk]]
        right = _resampled_across(b, across)
        squares = np.einsum("uhg,mvhg->muv", gram, np.matmul(right, right.transpose(0, 1, 3, 2)), optimize=True)
        total = np.einsum("uh,mvh->muv", row_weights, right.sum(axis=3), optimize=True)
        variance = np.maximum(squares - total ** 2 / count, 0.0)
        spread[start:start + len(b)] = np.sqrt(variance).reshape(len(b), placements)

    _in_parallel(spread_of, pictures.size, chunk)
    return spread
