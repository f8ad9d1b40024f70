"""Training-set sizes, nested stratified subsets of the labelled pool, and the folds a learning curve is scored on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from curato.arrays import stratified_folds, stratified_subsample
from curato.errors import InputError

MIN_PER_CLASS = 5
DEFAULT_SIZES = 10
# Random subsets per size: 5 instead of 3 lowered the mean error of a 4x forecast on 30 digits splits from 1.41
# to 1.15 points and on Fashion-MNIST from 0.29 to 0.16 (docs/benchmarks.md), for 5/3 of the measuring time.
DEFAULT_SEEDS = 5
# Without an evaluation split the labelled rows are cut into this many stratified folds and seed s is scored on fold
# s mod CROSS_FIT_FOLDS (20% of the rows, trained on subsets of the other 80%): with the default 5 seeds every labelled
# row is evaluated at every size, at the cost of one fixed 20% hold-out (docs/sizing.md).
CROSS_FIT_FOLDS = 5


def curve_sizes(n_pool: int, n_classes: int, *, n_sizes: int = DEFAULT_SIZES,
                min_per_class: int = MIN_PER_CLASS, dense_top: bool = True) -> np.ndarray:
    """``n_sizes`` log-spaced training-set sizes from ``min_per_class`` samples per class up to all ``n_pool``,
    plus (``dense_top``) the geometric midpoint of every step in the upper half of that range.

    The extrapolation rests on the slope of the curve's top, so the top gets twice the points (10 sizes become
    15); in the experiments of docs/benchmarks.md this lowered the mean error of a 4x forecast on all four curve
    sets tried, while densifying the whole range did not. Sizes are distinct integers, ascending, the last one
    ``n_pool``; fewer come back when the range is too narrow to hold them all.
    """
    smallest = min_per_class * n_classes
    if n_classes < 2:
        raise InputError(f"learning curve: need labels of at least two classes, found {n_classes}")
    if n_sizes < 2:
        raise InputError(f"--sizes {n_sizes}: measure at least 2 training-set sizes (4 or more to fit curves)")
    if n_pool < 2 * smallest:
        raise InputError(f"learning curve: {n_pool} labelled training samples is too few; need at least "
                         f"{2 * smallest} ({2 * min_per_class} per class for {n_classes} classes)")
    grid = np.geomspace(smallest, n_pool, n_sizes)
    if dense_top:
        upper = np.arange(len(grid) - 1) >= (len(grid) - 1) // 2
        grid = np.concatenate([grid, np.sqrt(grid[:-1] * grid[1:])[upper]])
    sizes = np.unique(np.round(grid).astype(np.int64))
    sizes[-1] = n_pool
    return sizes


def nested_subset(labels: np.ndarray, size: int, *, seed: int) -> np.ndarray:
    """Sorted pool positions of a stratified random subset of ``size`` rows.

    For one ``seed`` the subsets are nested: the subset of size ``n`` lies inside the one of any larger
    size, so a learning curve adds data the way a growing dataset does. (``stratified_subsample`` orders
    all rows once per seed by a class-balanced random key and keeps a prefix of that order.)
    """
    return stratified_subsample(np.asarray(labels), int(size), seed=seed)


@dataclass(frozen=True)
class CurveFolds:
    """Where a learning curve's training subsets come from and what they are scored on, per seed.

    ``pools[f]`` / ``evaluations[f]``: the rows (positions in the full label array) of fold ``f``'s training pool
    and evaluation set; seed ``s`` uses fold ``s mod len(pools)``. One fold is a fixed split (an evaluation split,
    or a hold-out); several are cross-fitting: every seed is scored on rows no subset of its own pool contains,
    and together the seeds score every labelled row.
    """

    pools: tuple[np.ndarray, ...]
    evaluations: tuple[np.ndarray, ...]

    @classmethod
    def fixed(cls, pool: np.ndarray, evaluation: np.ndarray) -> CurveFolds:
        """One training pool and one evaluation set for every seed."""
        return cls((np.asarray(pool, dtype=np.int64),), (np.asarray(evaluation, dtype=np.int64),))

    @classmethod
    def cross_fitted(cls, rows: np.ndarray, labels: np.ndarray, *, folds: int = CROSS_FIT_FOLDS,
                     seed: int = 0) -> CurveFolds:
        """``rows`` (positions into ``labels``) cut into ``folds`` stratified folds (``stratified_folds``); fold ``f``
        is scored on its own rows after training on subsets of the others."""
        rows = np.asarray(rows, dtype=np.int64)
        assignment = stratified_folds(np.asarray(labels)[rows], folds, seed=seed)
        return cls(tuple(rows[assignment != f] for f in range(folds)),
                   tuple(rows[assignment == f] for f in range(folds)))

    @property
    def rotating(self) -> bool:
        """Whether seeds are scored on different folds (cross-fitting)."""
        return len(self.pools) > 1

    @property
    def pool_size(self) -> int:
        """The largest training set every seed can draw: the smallest fold's pool."""
        return int(min(len(pool) for pool in self.pools))

    def pool(self, seed: int) -> np.ndarray:
        """The training pool of seed ``seed``'s fold."""
        return self.pools[seed % len(self.pools)]

    def evaluation(self, seed: int) -> np.ndarray:
        """The evaluation rows of seed ``seed``'s fold."""
        return self.evaluations[seed % len(self.evaluations)]

    def evaluated(self, seeds: Iterable[int]) -> np.ndarray:
        """Every row that ``seeds`` are scored on, sorted (what the mean over those seeds is measured on)."""
        return np.unique(np.concatenate([self.evaluation(seed) for seed in seeds]))
