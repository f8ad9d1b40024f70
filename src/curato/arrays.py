"""The primitives every layer shares: label codes, stratified folds and subsets, seeds, input validation.

One function per job, so that a check, a learning curve and an active-learning head deal folds, encode
labels and reject bad arrays the same way. Pure NumPy; errors are :class:`~curato.errors.InputError`
naming the argument at fault.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

from curato.errors import InputError

Seed = int | np.random.Generator | None


def as_rng(seed: Seed) -> np.random.Generator:
    """A NumPy generator from a seed (int or None) or a generator passed through unchanged."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def is_unknown(value: Any) -> bool:
    """True for the values that mean "no value": None, NaN and the empty string."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return isinstance(value, str) and value == ""


def encode_labels(labels: Sequence[Any] | np.ndarray, *, classes: Sequence[str] | None = None
                  ) -> tuple[np.ndarray, list[str]]:
    """Integer code per row (-1 where the label is unknown) and the class names, sorted as strings.

    Labels are compared as strings, so ``3`` and ``"3"`` are one class. With ``classes`` the codes index that
    list instead, and a label outside it raises.
    """
    text = [None if is_unknown(value) else str(value.item() if isinstance(value, np.generic) else value)
            for value in np.asarray(labels, dtype=object).tolist()]
    names = sorted({value for value in text if value is not None}) if classes is None else [str(c) for c in classes]
    lookup = {name: code for code, name in enumerate(names)}
    codes = np.full(len(text), -1, dtype=np.int64)
    for row, value in enumerate(text):
        if value is None:
            continue
        code = lookup.get(value)
        if code is None:
            raise InputError(f"labels: {value!r} is not one of the classes {names}")
        codes[row] = code
    return codes, names


def encode_values(values: Sequence[Any] | np.ndarray, *, name: str, n: int | None = None
                  ) -> tuple[np.ndarray, list[Any]]:
    """Integer code per row (-1 where unknown) and the distinct values in order of first appearance.

    For metadata columns (split, source, a group) where the values' own order carries no meaning.
    """
    if n is not None:
        check_length(name, values, n)
    distinct: dict[Any, int] = {}
    codes = np.full(len(values), -1, dtype=np.int64)
    for row, value in enumerate(values):
        value = value.item() if isinstance(value, np.generic) else value
        if not is_unknown(value):
            codes[row] = distinct.setdefault(value, len(distinct))
    return codes, list(distinct)


def shuffled_class_positions(labels: Sequence[Any] | np.ndarray, rng: np.random.Generator
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's class code, the class sizes, and each row's position (0, 1, ...) within its class in a random
    order drawn from ``rng``: the shared step of stratified folds and stratified subsets."""
    _, codes, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    order = np.lexsort((rng.random(len(codes)), codes))
    first_of_class = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.empty(len(codes), dtype=np.int64)
    position[order] = np.arange(len(codes)) - first_of_class[codes[order]]
    return codes, counts, position


def stratified_folds(labels: Sequence[Any] | np.ndarray, n_folds: int, seed: Seed = 0) -> np.ndarray:
    """Fold number (0 .. ``n_folds - 1``) per row: rows shuffled within their class, classes laid end to end,
    folds dealt round-robin.

    Every class is spread as evenly as possible (each fold holds ``floor`` or ``ceil`` of its share) and the
    remainders of consecutive classes fall into different folds, so fold sizes differ by at most one.
    ``seed``: an int or a generator (its next draws decide the order within each class).
    """
    if n_folds < 2:
        raise InputError(f"folds: need at least 2, not {n_folds}")
    y = np.asarray(labels)
    order = np.lexsort((as_rng(seed).random(len(y)), y))
    folds = np.empty(len(y), dtype=np.int64)
    folds[order] = np.arange(len(y)) % n_folds
    return folds


def stratified_subsample(labels: Sequence[Any] | np.ndarray, size: int, *, seed: Seed = 0) -> np.ndarray:
    """Sorted indices of ``size`` rows whose class shares match those of ``labels`` as closely as rounding
    allows (every class keeps ``floor`` or ``ceil`` of its proportional share), chosen at random within each
    class.

    Each row gets the key ``(position within its class, in random order, + 1/2) / class size``: the ``size``
    smallest keys take the same fraction of every class.
    """
    y = np.asarray(labels)
    if size < 1:
        raise InputError(f"subsample size must be at least 1, not {size}")
    if size >= len(y):
        return np.arange(len(y))
    rng = as_rng(seed)
    codes, counts, position = shuffled_class_positions(y, rng)
    key = (position + 0.5) / counts[codes]
    # Ties (equal fractions in classes of equal size) are broken at random, not by class order.
    chosen = np.lexsort((rng.random(len(y)), key))[:size]
    return np.sort(chosen)


def check_length(name: str, values: Sequence[Any] | np.ndarray, n: int) -> None:
    """Raise when ``values`` does not hold one entry per sample."""
    if len(values) != n:
        raise InputError(f"{name} has {len(values)} entries but there are {n} samples")


def as_class_indices(context: str, labels: Any, *, rows: int, n_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Integer class indices ``(rows,)`` in ``0..k-1`` and ``k`` (``n_classes``, else the largest index + 1);
    errors start with ``context``."""
    y = np.asarray(labels)
    if y.shape != (rows,):
        raise InputError(f"{context}: labels must have shape ({rows},), got {y.shape}")
    if rows and not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{context}: labels must be integer class indices 0..k-1")
    k = (int(y.max()) + 1 if rows else 0) if n_classes is None else int(n_classes)
    if rows and (y.min() < 0 or y.max() >= k):
        raise InputError(f"{context}: labels must lie in 0..{k - 1}")
    return y.astype(np.int64), k


def as_matrix(name: str, values: Any, *, rows: int | None = None, columns: int | None = None,
              dtype: Any = np.float64, finite: bool = True) -> np.ndarray:
    """``values`` as a 2-D array of ``dtype``, checked for shape and (by default) finite entries."""
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name}: not a numeric array ({error})") from None
    if array.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array (rows x columns), got shape {array.shape}")
    if rows is not None and array.shape[0] != rows:
        raise InputError(f"{name} has {array.shape[0]} rows but there are {rows} samples")
    if columns is not None and array.shape[1] != columns:
        raise InputError(f"{name} has {array.shape[1]} columns, expected {columns}")
    if finite and array.size and not np.isfinite(array).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return array


def as_probabilities(name: str, values: Any, *, rows: int | None = None, columns: int | None = None) -> np.ndarray:
    """A (rows, classes) matrix of probabilities: finite, in [0, 1], each row summing to 1 (within 1e-3)."""
    probs = as_matrix(name, values, rows=rows, columns=columns)
    if probs.size and (probs.min() < 0 or probs.max() > 1):
        raise InputError(f"{name}: probabilities must lie in [0, 1]")
    if probs.size and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise InputError(f"{name}: each row must sum to 1 (these are class probabilities)")
    return probs


def check_field(check: str, params: Any, name: str, *, integer: bool = False, low: float = -math.inf,
                 high: float = math.inf, strict: bool = False) -> None:
    """Raise ``InputError("<check>.<name>: must be ...")`` unless the field is a finite number (an integer if
    asked) from ``low`` (excluded when ``strict``) to ``high``."""
    value = getattr(params, name)
    kind = "an integer" if integer else "a number"
    if high < math.inf:
        need = f"{kind} in {'(' if strict else '['}{low:g}, {high:g}]"
    else:
        need = f"{kind} {'>' if strict else '>='} {low:g}"
    ok = isinstance(value, Integral if integer else Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or value > high or (strict and value == low):
        raise InputError(f"{check}.{name}: must be {need}, got {value!r}")
