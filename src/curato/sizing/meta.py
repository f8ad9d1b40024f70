"""The meta-model: a learning-curve forecast learned from every cut of real curves (LCDB, issue 24).

The slope prior (``curato.sizing.prior``) has a fixed form, the gain as a decaying function of the top's slope,
fitted to one cut per curve. The meta-model learns the gain itself: from every cut of every tuning curve (fit up
to each size, predict each larger size, horizons 1.4x to 100x) it learns the metric's gain over the top's level
from the curve's *shape* alone, so it applies to any user curve (no learner or dataset features):

* ``distance`` = log(n / last size), the horizon;
* the top's ``slope`` (a line through the last ``window`` means, per unit of log size), its ``t`` value (slope
  over its standard error), the ``earlier_slope`` three sizes back, ``headroom`` (1 - level), ``last_offset``
  (the last mean minus the level: a lucky or unlucky last point), ``seed_sd`` (the seeds' spread at the top,
  a standard error) and ``slope_distance`` (slope x distance, the straight-line gain).

Three gradient-boosted quantile models (5%, 50%, 95% of the gain; scikit-learn's histogram boosting, monotone
non-decreasing in the distance, so every forecast curve rises with the labels) give the central curve and the
90% band; the band's half-widths carry a scale calibrated on the tuning curves' out-of-fold errors. The trees
learned only the horizons of LCDB's sqrt(2) grid, so they are read at those (``anchored_gains``) and interpolated
between them: read directly they are a staircase whose risers sit between grid steps, and labels needed read off
a staircase land on its risers. Labels needed are read where the central curve crosses the target, their
interval where the band's edges do. The band's crossings are almost never narrow (its 5% edge rarely reaches a
target above today's level), so whether the answer is stated as a number (``meta_pinned``) is a rule learned on
the tuning curves instead: the central answer lies between ``pin_near`` and ``pin_reach`` (log of the answer
over today's labels), the central curve still climbs there by at least ``pin_slope`` per unit of log size (on a
flat stretch a small error in the metric moves the labels by a lot) and by at least ``pin_rise`` times the
seeds' noise from 75% of the answer (or today, the larger; read on the forecast's side of today) to the answer
(else a quarter fewer labels may reach the target within the noise: no answer is right to +-25% there; with no
measurable seed noise, a single seed, the test fails), and, where ``pin_clear`` asks for it, the target lies above
today's band; otherwise "cannot be pinned down". Beyond the largest horizon it was trained on (about 100x) the
trees stop growing: the forecast flattens there.

The trees are stored as plain arrays (``lcdb_meta.npz``, written by ``benchmarks/sizing_lcdb.py --fit-meta``
from even OpenML ids only) and evaluated here with NumPy, so forecasting stays offline and needs no
scikit-learn model object.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curato.errors import InputError
from curato.sizing.prior import curve_top

META_PATH = Path(__file__).with_name("lcdb_meta.npz")
FEATURES = ("distance", "slope", "t", "earlier_slope", "headroom", "last_offset", "seed_sd", "slope_distance")
QUANTILES = (0.05, 0.5, 0.95)
WINDOW = 4  # means in the top's line, as the slope prior
MAX_T = 20.0
SLOPE_SPAN = 0.25  # the central curve's slope at an answer is read over +-0.25 in log size around it
STEP = math.log(math.sqrt(2.0))  # LCDB's grid step in log size: the horizons the trees learned from
ANCHORS = 20  # the trees are read at 1..20 grid steps (1.4x to 1024x; they learned up to ~100x)
ANCHOR_EPS = 1e-6  # just inside a step: the trees split "<= step" where rows sit on it


@dataclass(frozen=True)
class MetaModel:
    """Three boosted quantile models as node arrays (index ``q``: 5%, 50%, 95%), with their calibration."""

    baseline: np.ndarray  # (3,) the starting value of each model
    tree_start: np.ndarray  # (3, trees + 1): the node offsets of each model's trees
    feature: np.ndarray  # (nodes,) the feature a node splits on (-1 at a leaf)
    threshold: np.ndarray  # (nodes,) go left when the feature is <= it
    left: np.ndarray  # (nodes,) child indices within the tree
    right: np.ndarray
    value: np.ndarray  # (nodes,) a leaf's contribution
    interval_scale: float  # widens (> 1) or narrows the band's half-widths to its out-of-fold 90% coverage
    source: str
    # the labels-needed rule (``meta_pinned``); the defaults state no number at all
    pin_near: float = 0.0  # the answer lies at least exp(pin_near) times today's labels away
    pin_reach: float = -1.0  # ... and at most exp(pin_reach) times
    pin_slope: float = math.inf  # the central curve climbs at least this much per unit of log size there
    pin_rise: float = 0.0  # ... and over the last quarter of labels before the answer by this many noise units
    pin_clear: bool = True  # ... and the target lies above today's band (the band's upper edge crosses it later)

    def save(self, path: Path) -> None:
        calibration = np.array([self.interval_scale, self.pin_near, self.pin_reach, self.pin_slope, self.pin_rise,
                                float(self.pin_clear)])
        np.savez_compressed(path, baseline=self.baseline, tree_start=self.tree_start, feature=self.feature,
                            threshold=self.threshold, left=self.left, right=self.right, value=self.value,
                            calibration=calibration, source=np.array(self.source))


def load_meta(path: Path = META_PATH) -> MetaModel:
    """The shipped meta-model (or one written by ``benchmarks/sizing_lcdb.py --fit-meta``)."""
    try:
        with np.load(path) as raw:
            calibration = [float(v) for v in raw["calibration"]]
            # a file from before the labels-needed rule ([scale, pin_span]) pins nothing; one from before the rise
            # test ([scale, near, reach, slope]) keeps its three tests and today's band
            names = ("pin_near", "pin_reach", "pin_slope", "pin_rise", "pin_clear")
            rule: dict = dict(zip(names, calibration[1:], strict=False)) if len(calibration) in (4, 6) else {}
            if "pin_clear" in rule:
                rule["pin_clear"] = bool(rule["pin_clear"])
            return MetaModel(raw["baseline"].astype(np.float64), raw["tree_start"].astype(np.int64),
                             raw["feature"].astype(np.int64), raw["threshold"].astype(np.float64),
                             raw["left"].astype(np.int64), raw["right"].astype(np.int64),
                             raw["value"].astype(np.float64), calibration[0], str(raw["source"]), **rule)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise InputError(f"{path}: not a sizing meta-model ({error}); reinstall curato or re-learn it with "
                         "benchmarks/sizing_lcdb.py --fit-meta") from error


def curve_features(sizes: np.ndarray | Sequence[float], values: Sequence[np.ndarray],
                   distance: np.ndarray | float) -> tuple[np.ndarray, float]:
    """The feature rows (``FEATURES``, one per ``distance`` = log(n / last size)) of a measured curve and the top's
    level the gains are added to."""
    top = curve_top(sizes, values, window=WINDOW)
    u = np.atleast_1d(np.maximum(np.asarray(distance, dtype=np.float64), 0.0))
    t = top.slope / top.slope_se if math.isfinite(top.slope_se) and top.slope_se > 0 else 0.0
    last_mean = float(np.mean(values[-1]))
    shape = [top.slope, float(np.clip(t, -MAX_T, MAX_T)), top.earlier_slope, 1.0 - top.level,
             last_mean - top.level, top.seed_sd]
    rows = np.column_stack([u, np.tile(shape, (len(u), 1)), max(top.slope, 0.0) * u])
    return rows, top.level


def predict_quantiles(model: MetaModel, rows: np.ndarray) -> np.ndarray:
    """The three models' predictions for feature ``rows``: shape (3, rows)."""
    x = np.asarray(rows, dtype=np.float64)
    out = np.empty((len(QUANTILES), len(x)))
    for q in range(len(QUANTILES)):
        total = np.full(len(x), model.baseline[q])
        starts = model.tree_start[q]
        for begin in starts[:-1]:
            node = np.zeros(len(x), dtype=np.int64)
            while True:
                at = begin + node
                inner = model.feature[at] >= 0
                if not inner.any():
                    break
                split = model.feature[at[inner]]
                go_left = x[np.flatnonzero(inner), split] <= model.threshold[at[inner]]
                node[inner] = np.where(go_left, model.left[at[inner]], model.right[at[inner]])
            total += model.value[begin + node]
        out[q] = total
    return out


def anchored_gains(model: MetaModel, sizes: np.ndarray | Sequence[float], values: Sequence[np.ndarray],
                   distance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The gain's 5%, 50% and 95% at ``distance`` (log(n / last size)) and the top's level they add to.

    The trees learned from LCDB's sqrt(2) grid of sizes, so they split the horizon between grid steps: read
    directly, the gain is a staircase whose risers sit on the grid, and a labels-needed answer read off it lands
    on a riser (a target between two steps was answered at the step, up to 41% off), and any horizon below one
    step gets the whole first step's gain. So the trees are read only at the grid's horizons (``ANCHORS`` steps
    of log sqrt(2), where they learned) and the median gain is interpolated linearly in log size between them,
    from 0 at the last size; the band's half-widths likewise (held at the first step's below it); beyond the
    last anchor all stay flat."""
    anchors = STEP * np.arange(1, ANCHORS + 1)
    rows, level = curve_features(sizes, values, anchors - ANCHOR_EPS)
    low, mid, high = predict_quantiles(model, rows)
    u = np.asarray(distance, dtype=np.float64)
    gain = np.interp(u, np.append(0.0, anchors), np.append(0.0, mid))
    below = model.interval_scale * np.interp(u, anchors, np.maximum(mid - low, 0.0))
    above = model.interval_scale * np.interp(u, anchors, np.maximum(high - mid, 0.0))
    return gain - below, gain, gain + above, level


def meta_curves(model: MetaModel, sizes: np.ndarray | Sequence[float], values: Sequence[np.ndarray],
                grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central forecast and the 90% band's low and high edges over ``grid`` (non-decreasing, in [0, 1]).

    Inside the measured range the central curve and both edges are the running maximum of the measured means
    (interpolated in log size); beyond it the top's level plus the predicted gain's median, 5% and 95% (the
    edges' distances from the median scaled by ``interval_scale``; ``anchored_gains``), so the curves may step at
    the last size."""
    n = np.asarray(sizes, dtype=np.float64)
    g = np.asarray(grid, dtype=np.float64)
    distance = np.log(g / n[-1])
    low_gain, gain, high_gain, level = anchored_gains(model, n, values, distance)
    means = np.maximum.accumulate([float(np.mean(v)) for v in values])
    inside = np.interp(np.log(g), np.log(n), means)

    order = np.argsort(g, kind="stable")

    def curve(offset: np.ndarray) -> np.ndarray:
        # non-decreasing beyond the curve (in size order: the grid need not be sorted); at the join it may step
        # below a lucky last mean (the level smooths it)
        beyond = np.empty(len(g))
        beyond[order] = np.maximum.accumulate(np.where(distance <= 0, -np.inf, level + offset)[order])
        return np.clip(np.where(distance <= 0, inside, beyond), 0.0, 1.0)

    return curve(gain), curve(low_gain), curve(high_gain)


def slope_at(grid: np.ndarray, curve: np.ndarray, size: float, *, after: float = 0.0) -> float:
    """The slope of ``curve`` (over ``grid``) at ``size``, per unit of log size, over +-``SLOPE_SPAN`` around it,
    read only where ``grid`` lies beyond ``after`` (the last measured size: the learned curves step there, from
    the running maximum of the measured means to the forecast's level, and that step is no climb)."""
    g = np.asarray(grid, dtype=np.float64)
    beyond = g > after
    if not beyond.any():
        return 0.0
    log_grid = np.log(g[beyond])
    x = np.array([max(math.log(size) - SLOPE_SPAN, float(log_grid[0])), math.log(size) + SLOPE_SPAN])
    if x[1] <= x[0]:
        return 0.0
    low, high = np.interp(x, log_grid, np.asarray(curve)[beyond])
    return float((high - low) / (x[1] - x[0]))


def top_seed_se(sizes: np.ndarray | Sequence[float], values: Sequence[np.ndarray]) -> float:
    """The standard error of one mean at the top of the curve (the seeds' spread over the last sizes, as in the
    ``seed_sd`` feature): the noise unit of the rule's ``rise`` test."""
    return float(curve_top(sizes, values, window=WINDOW).seed_sd)


RISE_SHARE = 0.75  # the rise test reads the forecast at 75% of the answer: the -25% edge of a right answer


def pin_features(grid: np.ndarray, central: np.ndarray, *, needed: float, upper_crossing: float, today: float,
                 seed_se: float) -> tuple[bool, float, float, float]:
    """What the labels-needed rule looks at (``pin_failures``): whether the target lies above today's band (the
    band's upper edge crosses it, at ``upper_crossing``, beyond ``today``, the last measured size), the ``reach``
    log(needed / today) of the central answer ``needed``, the ``slope`` of ``central`` there, and its ``rise``:
    how much ``central`` climbs from 75% of the answer (or from today, the larger) to the answer, over the noise
    of a difference of two means (sqrt(2) x ``seed_se``). Both are read on the forecast's side of today
    (``slope_at``): the step at the join, from the measured means to the forecast's level, is no climb. A target
    the curve may already reach with a quarter fewer labels within that noise has no answer to +-25%; where the
    seeds' noise cannot be measured (one seed, seeds that agree exactly, NaN) the rise is -inf, which fails the
    rule whatever its ``pin_rise`` (``pin_failures``). (False, inf, -inf, -inf when the central curve never crosses.)"""
    if not math.isfinite(needed):
        return False, math.inf, -math.inf, -math.inf
    g = np.asarray(grid, dtype=np.float64)
    beyond = g > today
    if beyond.any():
        start, end = np.interp(np.log([max(RISE_SHARE * needed, today), needed]), np.log(g[beyond]),
                               np.asarray(central)[beyond])
    else:
        start = end = float(central[-1])
    noise_known = math.isfinite(seed_se) and seed_se > 0
    rise = float((end - start) / (math.sqrt(2.0) * seed_se)) if noise_known else -math.inf
    return (bool(upper_crossing > today), math.log(needed / today), slope_at(g, central, needed, after=today),
            rise)


PIN_FAILURES = ("central_not_reached", "inside_todays_band", "outside_validated_range", "flat_forecast",
                "inside_plateau_noise")


def pin_failures(clear: np.ndarray | bool, reach: np.ndarray | float, slope: np.ndarray | float,
                 rise: np.ndarray | float, *, near: float, far: float, climb: float, least_rise: float,
                 need_clear: bool) -> dict[str, np.ndarray]:
    """The labels-needed rule, vectorised over targets (``pin_features`` of each): which of its tests each target
    fails, named as in ``PIN_FAILURES``; a number is stated where it fails none. The one definition of the rule:
    ``meta_pinned`` and the benchmark's search for the rule (``choose_pin_rule``) both call it."""
    reach_a, rise_a = np.asarray(reach, dtype=np.float64), np.asarray(rise, dtype=np.float64)
    reached = np.isfinite(reach_a)
    return {"central_not_reached": ~reached,
            "inside_todays_band": reached & ~np.asarray(clear, dtype=bool) & need_clear,
            "outside_validated_range": reached & ((reach_a < near) | (reach_a > far)),
            "flat_forecast": reached & (np.asarray(slope, dtype=np.float64) < climb),
            # a rise of -inf (the seeds' noise cannot be measured) fails whatever ``least_rise``: a number is
            # never stated where the noise it must clear is unknown
            "inside_plateau_noise": reached & ((rise_a < least_rise) | (rise_a == -math.inf))}


def meta_not_pinned_reason(model: MetaModel, grid: np.ndarray, central: np.ndarray, *, needed: float,
                           upper_crossing: float, today: float, seed_se: float) -> str | None:
    """Why the labels needed are not stated as a number (the first test of ``PIN_FAILURES`` that fails), None when
    they are (``meta_pinned``)."""
    features = pin_features(grid, central, needed=needed, upper_crossing=upper_crossing, today=today,
                            seed_se=seed_se)
    failed = pin_failures(*features, near=model.pin_near, far=model.pin_reach, climb=model.pin_slope,
                          least_rise=model.pin_rise, need_clear=model.pin_clear)
    return next((name for name in PIN_FAILURES if bool(failed[name])), None)


def meta_pinned(model: MetaModel, grid: np.ndarray, central: np.ndarray, *, needed: float, upper_crossing: float,
                today: float, seed_se: float) -> bool:
    """Whether the labels needed (``needed``: where ``central`` crosses the target; ``upper_crossing``: where the
    band's upper edge does) are stated as a number: the answer lies ``pin_near``..``pin_reach`` (log size) beyond
    today, ``central`` still climbs by at least ``pin_slope`` per unit of log size there and by ``pin_rise``
    noise units over the last quarter of labels before it (``pin_features``), and, with ``pin_clear``, the
    target lies above today's band. Learned on the tuning curves so that the numbers stated land within +-25% of
    the labels that reached the target most of the time (``benchmarks/sizing_lcdb.py --fit-meta``)."""
    return meta_not_pinned_reason(model, grid, central, needed=needed, upper_crossing=upper_crossing, today=today,
                                  seed_se=seed_se) is None
