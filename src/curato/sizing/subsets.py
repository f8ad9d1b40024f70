"""Training-set sizes and nested, stratified subsets of the labelled pool for a learning curve."""

from __future__ import annotations

import numpy as np

from curato.errors import InputError
from curato.models.oof import stratified_subsample

MIN_PER_CLASS = 5
DEFAULT_SIZES = 10


def curve_sizes(n_pool: int, n_classes: int, *, n_sizes: int = DEFAULT_SIZES,
                min_per_class: int = MIN_PER_CLASS) -> np.ndarray:
    """``n_sizes`` log-spaced training-set sizes from ``min_per_class`` samples per class up to all ``n_pool``.

    Sizes are distinct integers, ascending, the last one ``n_pool``; fewer come back when the range
    is too narrow to hold ``n_sizes`` distinct values.
    """
    smallest = min_per_class * n_classes
    if n_classes < 2:
        raise InputError(f"learning curve: need labels of at least two classes, found {n_classes}")
    if n_sizes < 2:
        raise InputError(f"--sizes {n_sizes}: measure at least 2 training-set sizes (4 or more to fit curves)")
    if n_pool < 2 * smallest:
        raise InputError(f"learning curve: {n_pool} labelled training samples is too few; need at least "
                         f"{2 * smallest} ({2 * min_per_class} per class for {n_classes} classes)")
    sizes = np.unique(np.round(np.geomspace(smallest, n_pool, n_sizes)).astype(np.int64))
    sizes[-1] = n_pool
    return sizes


def nested_subset(labels: np.ndarray, size: int, *, seed: int) -> np.ndarray:
    """Sorted pool positions of a stratified random subset of ``size`` rows.

    For one ``seed`` the subsets are nested: the subset of size ``n`` lies inside the one of any larger
    size, so a learning curve adds data the way a growing dataset does. (``stratified_subsample`` orders
    all rows once per seed by a class-balanced random key and keeps a prefix of that order.)
    """
    return stratified_subsample(np.asarray(labels), int(size), seed=seed)
