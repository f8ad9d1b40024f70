"""Compiled kernels (numba) for per-pair loops that NumPy can only run as many passes over small arrays.

numba is optional (the ``fast`` extra): :func:`gauss_newton_kernel` and :func:`softmax_residual_kernels` return
None without it, and their callers run their NumPy versions, which the tests hold these kernels to. Compiled
once per machine (cached on disk, a few seconds the first time), loaded in a fraction of a second afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np


@cache
def gauss_newton_kernel() -> Callable[..., Any] | None:
    """The per-pair Gauss-Newton registration of :func:`curato.features.thumbnails.refined_similarity`, or None
    without numba. Signature: ``(windows, pictures, params, iterations, margin, lower, upper, settled_scale,
    settled_shift, hopeless, best, best_params)``; fills ``best`` (m,) and ``best_params`` (m, 4)."""
    return _compiled(_gauss_newton_pairs)


def _gauss_newton_pairs(windows: Any, pictures: Any, params: Any, iterations: int, margin: int, lower: Any,
                        upper: Any, settled_scale: float, settled_shift: float, hopeless: float, best: Any,
                        best_params: Any) -> None:  # pragma: no cover - runs compiled
    """One pair at a time, the steps of ``thumbnails._gauss_newton_registration`` (same rules, float64 sums)."""
    m, core, side = windows.shape[0], windows.shape[1], pictures.shape[1]
    centre = (side - 1) / 2.0
    offset = np.empty(core)
    for i in range(core):
        offset[i] = margin + i - centre
    count = core * core
    across = np.empty((side, core))
    source_slope = np.empty((side, core))
    warped = np.empty((core, core))
    slope_y = np.empty((core, core))
    slope_x = np.empty((core, core))
    col = np.empty(core, dtype=np.int64)
    col_weight = np.empty(core)
    row = np.empty(core, dtype=np.int64)
    row_weight = np.empty(core)
    point = np.empty(4)
    hessian = np.zeros((4, 4))
    gradient = np.zeros(4)
    system = np.empty((4, 4))
    step = np.empty(4)
    step_limit = np.array([0.05, 1.0, 0.05, 1.0])
    sums = np.empty((3, 4))  # rows: mean, along (unit), towards (window); columns: sy, ty, sx, tx
    gram = np.empty((4, 4))
    for pair in range(m):
        window = windows[pair]
        picture = pictures[pair]
        for p in range(4):
            point[p] = params[pair, p]
            best_params[pair, p] = point[p]
        best_value = -np.inf
        damping = 1e-3
        hessian[:, :] = 0.0
        gradient[:] = 0.0
        for iteration in range(iterations + 1):
            # bilinear warp, separable: columns first (every source row), then rows
            for axis in range(2):
                scale, shift = point[2 * axis], point[2 * axis + 1]
                for i in range(core):
                    position = centre + scale * (margin + i - centre) + shift
                    if not position > 0.0:  # NaN too: no index may leave the picture (nothing is bounds-checked)
                        position = 0.0
                    elif position > side - 1.0:
                        position = side - 1.0
                    low = min(int(np.floor(position)), side - 2)
                    if axis == 0:
                        row[i], row_weight[i] = low, position - low
                    else:
                        col[i], col_weight[i] = low, position - low
            for r in range(side):
                for j in range(core):
                    left = picture[r, col[j]]
                    slope = picture[r, col[j] + 1] - left
                    source_slope[r, j] = slope
                    across[r, j] = left + col_weight[j] * slope
            total = 0.0
            for i in range(core):
                r, weight = row[i], row_weight[i]
                for j in range(core):
                    down = across[r + 1, j] - across[r, j]
                    slope_y[i, j] = down
                    value = across[r, j] + weight * down
                    warped[i, j] = value
                    total += value
                    low_slope = source_slope[r, j]
                    slope_x[i, j] = low_slope + weight * (source_slope[r + 1, j] - low_slope)
            mean = total / count
            squares = 0.0
            dot = 0.0
            for i in range(core):
                for j in range(core):
                    centred = warped[i, j] - mean
                    squares += centred * centred
                    dot += window[i, j] * centred
            norm = np.sqrt(squares) + 1e-9
            correlation = dot / norm
            improved = correlation > best_value
            if improved:
                best_value = correlation
                for p in range(4):
                    best_params[pair, p] = point[p]
                damping *= 0.3
            else:
                damping *= 10.0
            if iteration == iterations:
                break
            if improved:
                # Gauss-Newton system at the new point: every Jacobian column is a slope image times 1 or the
                # offset from the centre, so row sums (vertical) and column sums (horizontal) build it.
                sums[:, :] = 0.0
                gram[:, :] = 0.0
                for i in range(core):
                    for j in range(core):
                        dy, dx = slope_y[i, j], slope_x[i, j]
                        unit = (warped[i, j] - mean) / norm
                        target = window[i, j]
                        oi, oj = offset[i], offset[j]
                        sums[0, 0] += dy * oi
                        sums[0, 1] += dy
                        sums[0, 2] += dx * oj
                        sums[0, 3] += dx
                        sums[1, 0] += dy * unit * oi
                        sums[1, 1] += dy * unit
                        sums[1, 2] += dx * unit * oj
                        sums[1, 3] += dx * unit
                        sums[2, 0] += dy * target * oi
                        sums[2, 1] += dy * target
                        sums[2, 2] += dx * target * oj
                        sums[2, 3] += dx * target
                        yy, xx, xy = dy * dy, dx * dx, dy * dx
                        gram[0, 0] += yy * oi * oi
                        gram[0, 1] += yy * oi
                        gram[1, 1] += yy
                        gram[2, 2] += xx * oj * oj
                        gram[2, 3] += xx * oj
                        gram[3, 3] += xx
                        gram[0, 2] += xy * oi * oj
                        gram[0, 3] += xy * oi
                        gram[1, 2] += xy * oj
                        gram[1, 3] += xy
                gram[1, 0], gram[3, 2] = gram[0, 1], gram[2, 3]
                for p in range(2):
                    for q in range(2, 4):
                        gram[q, p] = gram[p, q]
                for p in range(4):
                    mean_p = sums[0, p] / count
                    for q in range(4):
                        hessian[p, q] = (gram[p, q] - count * mean_p * (sums[0, q] / count)
                                         - sums[1, p] * sums[1, q]) / (norm * norm)
                    gradient[p] = (sums[2, p] - sums[1, p] * correlation) / norm
            for p in range(4):
                for q in range(4):
                    system[p, q] = hessian[p, q]
                system[p, p] += damping * hessian[p, p] + 1e-9
            # step = system^-1 gradient by Gaussian elimination with partial pivoting (LAPACK's gesv does the
            # same; calling it costs more than a 4 x 4 solve)
            for p in range(4):
                step[p] = gradient[p]
            for p in range(4):
                pivot = p
                for q in range(p + 1, 4):
                    if abs(system[q, p]) > abs(system[pivot, p]):
                        pivot = q
                if pivot != p:
                    for c in range(4):
                        system[p, c], system[pivot, c] = system[pivot, c], system[p, c]
                    step[p], step[pivot] = step[pivot], step[p]
                for q in range(p + 1, 4):
                    factor = system[q, p] / system[p, p]
                    for c in range(p, 4):
                        system[q, c] -= factor * system[p, c]
                    step[q] -= factor * step[p]
            for p in range(3, -1, -1):
                for c in range(p + 1, 4):
                    step[p] -= system[p, c] * step[c]
                step[p] /= system[p, p]
            settled = True
            for p in range(4):
                if not np.isfinite(step[p]):  # a system with no solution (NaN pixels): no move
                    step[p] = 0.0
                step[p] = min(max(step[p], -step_limit[p]), step_limit[p])
                point[p] = min(max(best_params[pair, p] + step[p], lower[p]), upper[p])
                if abs(step[p]) >= (settled_scale if p % 2 == 0 else settled_shift):
                    settled = False
            if settled or best_value < 1.0 - hopeless:
                break
        best[pair] = best_value



@cache
def softmax_residual_kernels() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """The elementwise part of a joint softmax objective (:func:`curato.models.oof._fit_joint_softmax`) in two
    passes over the logits around NumPy's (vectorised) ``exp``, or None without numba: ``shift(logits, labels, k,
    true_logit)`` subtracts each row and head's largest logit and keeps the given label's; after ``np.exp``,
    ``residual(values, labels, row_weight, true_logit, k) -> loss`` turns the exponentials (n, heads * k) float32
    into the loss's gradient in place."""
    shift, residual = _compiled(_shift_logits), _compiled(_softmax_residual)
    return None if shift is None or residual is None else (shift, residual)


def _compiled(function: Callable[..., Any]) -> Callable[..., Any] | None:
    try:
        import numba
    except ImportError:
        return None
    if numba.config.DISABLE_JIT:  # the loop would run as Python, far slower than the NumPy version
        return None
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # no writable cache directory: compiled in every process instead
        return numba.njit(nogil=True)(function)


def _shift_logits(logits: Any, labels: Any, k: int, true_logit: Any) -> None:  # pragma: no cover - compiled
    """Each row and head's logits minus their largest; ``true_logit[i, h]``: the given label's, shifted."""
    n, heads = true_logit.shape
    for i in range(n):
        for h in range(heads):
            base = h * k
            largest = logits[i, base]
            for c in range(1, k):
                largest = max(largest, logits[i, base + c])
            for c in range(k):
                logits[i, base + c] -= largest
            true_logit[i, h] = logits[i, base + labels[i]]


def _softmax_residual(values: Any, labels: Any, row_weight: Any, true_logit: Any,
                      k: int) -> float:  # pragma: no cover - compiled
    """From the exponentials of the shifted logits: the summed weighted log-loss of the given labels; ``values``
    become ``weight * (softmax - onehot(label))``. float32 like the NumPy version, the sum float64."""
    n, heads = row_weight.shape
    loss = 0.0
    for i in range(n):
        label = labels[i]
        for h in range(heads):
            base = h * k
            total = np.float32(0.0)
            for c in range(k):
                total += values[i, base + c]
            weight = row_weight[i, h]
            loss += weight * (np.log(total) - true_logit[i, h])
            scale = weight / total
            for c in range(k):
                values[i, base + c] *= scale
            values[i, base + label] -= weight
    return loss
