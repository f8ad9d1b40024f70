"""Answers from a measured learning curve: labels needed for a target, the metric at 2x/5x/10x today's data,
the value of the next labels, with 90% intervals; the backtest; strategy value in labels.

Intervals carry four sources of error, each a separate term:

1. *subset noise and family disagreement*: each bootstrap replicate resamples, at every size, the seeds (each
   seed is its own random subset) with replacement, draws one curve family with probability equal to its
   weight and refits it (warm-started from the full fit);
2. *evaluation-set noise*: the metric is scored on ``m`` evaluation rows, so even a perfect forecast of the
   model would meet a measured value off by the binomial sampling error ``sqrt(p (1 - p) / m)`` (for balanced
   accuracy and macro F1 the per-class version, ``evaluation_sd``);
3. *seed noise*: a single training run at a size scatters around the mean of runs that the curve fits by the
   seed-to-seed spread measured at the curve's top (``seed_sd``);
4. *extrapolation error* that grows with the distance beyond the measured sizes: how wrong the weighted
   forecast was on the curve itself, fitted on each leading part of the measured sizes and asked for the
   larger ones, per unit of log distance (``extrapolation_scale``, less the noise of the measured means it was
   checked against), times ``log(n / largest measured size)``; the replicates' own spread is part of that
   error, so only the excess over it is added.

Terms 2-4 are drawn as independent normal offsets of each replicate curve (one offset per curve, so every
noisy curve stays a curve); intervals are the 5th-95th percentiles of the noisy curves at each size, and
labels needed is read off where that band crosses the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from curato.errors import InputError
from curato.sizing.curves import FamilyFit, fit_curve, select_fits, weighted_ceiling, weighted_metric
from curato.sizing.meta import RISE_SHARE, load_meta, meta_curves, meta_not_pinned_reason, slope_at, top_seed_se
from curato.sizing.prior import curve_top, load_prior, prior_curves, prior_gain, prior_not_pinned_reason

Z90 = 1.6448536269514722  # the standard normal's 95th percentile: a central 90% interval is +-Z90 sd

MULTIPLES = (2, 5, 10)
HORIZON = 1000.0  # labels-needed searches up to this many times today's data
GRID_POINTS = 600
BOOTSTRAP = 100
INTERVAL = (5.0, 95.0)
MARGINAL_PER_CLASS = 1000
POOR_BACKTEST = 0.02  # backtest RMSE (metric units) above which the forecast is called unreliable
NOISE_DRAWS = 20  # noisy curves (evaluation, seed and extrapolation offsets) drawn per bootstrap replicate
SEED_SD_SIZES = 3  # the seed spread is pooled over this many of the largest sizes measured with several seeds
PROPORTION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "custom")
# weighted curve families (bootstrap intervals); the LCDB slope prior (prior.py); the LCDB meta-model (meta.py)
METHODS = ("families", "prior", "meta")
LEARNED = ("prior", "meta")  # the methods learned on LCDB: central curve, band and labels needed from them
FAR = 1e6  # a log-size distance standing in for unlimited data (the slope prior's ceiling)


def labels_needed(sizes: np.ndarray, metric: np.ndarray, target: float) -> float:
    """The smallest size at which a non-decreasing curve sampled at ``sizes`` reaches ``target``
    (log-linear interpolation between samples); inf when it never does."""
    reached = np.flatnonzero(metric >= target)
    if reached.size == 0:
        return math.inf
    i = int(reached[0])
    if i == 0:
        return float(sizes[0])
    lo, hi = metric[i - 1], metric[i]
    fraction = 0.0 if hi <= lo else (target - lo) / (hi - lo)
    return float(np.exp(np.log(sizes[i - 1]) + fraction * (np.log(sizes[i]) - np.log(sizes[i - 1]))))


def no_way_back(grid: np.ndarray, sizes: np.ndarray, values: Sequence[np.ndarray],
                 target: float) -> Callable[[np.ndarray], np.ndarray]:
    """For reading labels needed off a learned curve: where the last measured mean is below ``target``, no size
    up to the last measured one reaches it (the learned curves are running maxima inside the measured range, so a
    curve that dipped would otherwise answer with fewer labels than were already measured)."""
    last_mean = float(np.mean(values[-1]))
    if last_mean >= target:
        return lambda curve: curve
    inside = grid <= sizes[-1]
    return lambda curve: np.where(inside, np.minimum(curve, last_mean), curve)


def learned_labels_needed(grid: np.ndarray, sizes: np.ndarray, values: Sequence[np.ndarray], central: np.ndarray,
                          low: np.ndarray, high: np.ndarray, target: float) -> tuple[float, list[float]]:
    """Labels needed for ``target`` off a learned forecast (``central`` and its band ``low``..``high`` over
    ``grid``), with ``no_way_back``: where the central curve crosses it and ``[upper edge's crossing, lower
    edge's crossing]`` (inf: beyond the grid). The one reading shared by ``forecast`` and
    ``benchmarks/sizing_lcdb.py``."""
    for_needed = no_way_back(grid, sizes, values, target)
    return (labels_needed(grid, for_needed(central), target),
            [labels_needed(grid, for_needed(high), target), labels_needed(grid, for_needed(low), target)])


def evaluation_sd(metric: np.ndarray | float, class_counts: np.ndarray | Sequence[int] | None, *,
                  kind: str = "accuracy") -> np.ndarray:
    """Sampling standard deviation of a metric with value ``metric`` scored on evaluation rows with
    ``class_counts`` rows per class (zeros for absent classes); 0 where ``class_counts`` is None.

    ``accuracy`` (and ``custom``, read as a proportion): binomial, ``p (1 - p) / m`` over all ``m`` rows.
    ``balanced_accuracy`` is the mean of per-class recalls, each binomial over its class's rows:
    ``(1 / k^2) sum_c r_c (1 - r_c) / m_c``, taken with every recall equal to the metric (per-class recalls at
    an unmeasured size are unknown); for balanced classes that equals the accuracy formula, for imbalanced ones
    it is larger (the small classes weigh 1/k each). ``macro_f1`` uses the balanced-accuracy formula too: an
    approximation (F1 also depends on precision, whose rows are the predicted ones), documented as such.
    """
    value = np.clip(np.asarray(metric, dtype=np.float64), 0.0, 1.0)
    if class_counts is None:
        return np.zeros(value.shape)
    if kind not in PROPORTION_METRICS:
        raise InputError(f"metric {kind!r}: use one of {', '.join(PROPORTION_METRICS)}")
    counts = np.asarray(class_counts, dtype=np.float64)
    counts = counts[counts > 0]
    if counts.size == 0:
        return np.zeros(value.shape)
    if kind in ("accuracy", "custom"):
        inverse_rows = 1.0 / counts.sum()
    else:
        inverse_rows = float(np.sum(1.0 / counts)) / counts.size ** 2
    return np.sqrt(value * (1.0 - value) * inverse_rows)


def seed_sd(values: Sequence[np.ndarray], *, top: int = SEED_SD_SIZES) -> float:
    """The spread of single runs around their mean at the curve's top: the standard deviation over seeds
    (ddof 1), pooled over the ``top`` largest sizes measured with at least two seeds; 0 without any."""
    spreads = [np.var(np.asarray(v, dtype=np.float64), ddof=1) for v in values if len(v) > 1][-top:]
    return float(np.sqrt(np.mean(spreads))) if spreads else 0.0


def seed_noise(sizes: np.ndarray | float, *, last_measured: float, seed_spread: float) -> np.ndarray:
    """The seed-to-seed spread of single runs at ``sizes``: ``seed_spread`` (measured at ``last_measured``),
    shrinking as ``sqrt(last_measured / n)`` beyond it (a model's variance from its random training subset
    falls about as 1/n)."""
    return seed_spread * np.sqrt(np.minimum(last_measured / np.asarray(sizes, dtype=np.float64), 1.0))


def ensemble_held_back_errors(fits: Sequence[FamilyFit],
                              sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weighted forecast's own backtest on the measured curve: for every cut ``j`` of the families' held-back
    fits (``FamilyFit.cut_errors``), the weight-averaged error at each held-back size ``sizes[i]``, ``i >= j``, its
    extrapolation distance ``log(sizes[i] / sizes[j - 1])`` and the index ``i``. Cuts where the families that
    could be cut there carry under half of the weight are left out (early cuts of families that drop the first
    sizes)."""
    n = np.asarray(sizes, dtype=np.float64)
    used = [entry for entry in fits if entry.weight > 0 and entry.cut_errors]
    total = sum(entry.weight for entry in used)
    errors, horizons, held = [], [], []
    for cut in sorted({cut for entry in used for cut in entry.cut_errors}):
        having = [entry for entry in used if cut in entry.cut_errors]
        weight = sum(entry.weight for entry in having)
        if weight < 0.5 * total:
            continue
        errors.append(sum(entry.weight * entry.cut_errors[cut] for entry in having) / weight)
        horizons.append(np.log(n[cut:] / n[cut - 1]))
        held.append(np.arange(cut, len(n)))
    if not errors:
        return np.empty(0), np.empty(0), np.empty(0, dtype=np.int64)
    return np.concatenate(errors), np.concatenate(horizons), np.concatenate(held)


def extrapolation_scale(fits: Sequence[FamilyFit], sizes: np.ndarray,
                        values: Sequence[np.ndarray] | None = None) -> float:
    """Standard deviation of the forecast's extrapolation error per unit of log distance beyond the measured
    sizes, from the weighted forecast's held-back errors on the curve itself (``ensemble_held_back_errors``):
    ``sqrt(sum (e^2 - v) / sum h^2)`` over every held-back error ``e`` at distance ``h``, the least-squares scale
    of errors that grow in proportion to the distance. ``v`` is the variance of the measured mean that ``e`` was
    taken against (``values``: the seeds per size; seed variance / seeds), noise that does not grow with the
    distance and that the intervals carry separately. 0 when the curve is too short to cut."""
    errors, horizons, held = ensemble_held_back_errors(fits, sizes)
    if errors.size == 0:
        return 0.0
    if values is None:
        noise = np.zeros(len(sizes))
    else:
        noise = np.array([np.var(v, ddof=1) / len(v) if len(v) > 1 else 0.0 for v in values])
    return float(np.sqrt(max(float(np.sum(errors ** 2 - noise[held])), 0.0) / np.sum(horizons ** 2)))


def noisy_curves(replicates: np.ndarray, grid: np.ndarray, *, last_measured: float, extrapolation: float,
                 seed_spread: float, class_counts: np.ndarray | Sequence[int] | None, kind: str = "accuracy",
                 draws: int = NOISE_DRAWS, seed: int = 0) -> np.ndarray:
    """Each bootstrap replicate curve (rows of ``replicates`` over ``grid``) plus ``draws`` independent normal
    offsets, one of each kind per noisy curve (so every noisy curve stays a smooth curve), clipped to [0, 1];
    shape (replicates x draws, grid):

    * evaluation-set noise: ``evaluation_sd`` at the curve's value;
    * seed noise: ``seed_spread`` (measured at ``last_measured``) shrinking as ``sqrt(last_measured / n)``
      beyond it: a model's variance from its random training subset falls about as 1/n (on the curves of
      docs/benchmarks.md the spread over seeds halves from 25% to 100% of Fashion-MNIST);
    * extrapolation error: the calibrated total ``extrapolation x log(n / last_measured)`` beyond the measured
      sizes, less what the replicates' own spread already carries there (the bootstrap refits are part of the
      same extrapolation error), never below 0.
    """
    if len(replicates) == 0:
        return np.empty((0, len(grid)))
    rng = np.random.default_rng(seed)
    sizes = np.asarray(grid, dtype=np.float64)
    z = rng.standard_normal((3, len(replicates), draws, 1))
    distance = np.maximum(np.log(sizes / last_measured), 0.0)
    base = np.asarray(replicates, dtype=np.float64)
    extra = np.sqrt(np.maximum((extrapolation * distance) ** 2 - np.var(base, axis=0), 0.0))
    seed_part = seed_noise(sizes, last_measured=last_measured, seed_spread=seed_spread)
    base = base[:, None, :]
    noisy = base + z[0] * evaluation_sd(base, class_counts, kind=kind) + z[1] * seed_part + z[2] * extra
    return np.clip(noisy, 0.0, 1.0).reshape(-1, len(grid))


def plateau_noise(grid: np.ndarray, central: np.ndarray, *, target: float, needed: float, last_measured: float,
                  seed_spread: float, class_counts: np.ndarray | Sequence[int] | None,
                  kind: str = "accuracy") -> tuple[float, bool]:
    """The measurement noise of the metric at the target (90% half-width: evaluation set and training seed, the
    latter at the labels needed as in ``noisy_curves``) and whether the target lies inside the noise of the
    forecast's plateau: ten times the labels needed (capped at the grid's end) lifts the forecast less than that
    noise above the target, or, where the target is never reached, the forecast ends within the noise below it.
    Then how many labels "reach" the target is decided by noise, not by the curve."""
    at = min(needed, float(grid[-1])) if math.isfinite(needed) else float(grid[-1])
    seed_part = float(seed_noise(at, last_measured=last_measured, seed_spread=seed_spread))
    noise = Z90 * math.sqrt(float(evaluation_sd(target, class_counts, kind=kind)) ** 2 + seed_part ** 2)
    if noise == 0:
        return 0.0, False
    if math.isfinite(needed):
        later = float(np.interp(np.log(min(10 * needed, grid[-1])), np.log(grid), central))
        return noise, later < target + noise
    return noise, float(central[-1]) >= target - noise


def forecast(sizes: np.ndarray, values: Sequence[np.ndarray], *, target: float, chance: float,
             today: int | None = None, n_bootstrap: int = BOOTSTRAP, seed: int = 0,
             per_class_multiple: int | None = None, eval_class_counts: np.ndarray | Sequence[int] | None = None,
             metric: str = "accuracy", interval_noise: bool = True, method: str = "families",
             fit_families: bool = True) -> dict[str, Any]:
    """Fit the curve families to measured points and answer the sizing questions.

    ``sizes``: ascending training-set sizes; ``values[i]``: the metric over the seeds at ``sizes[i]``;
    ``today``: the labelled data available now (default: the largest size); ``chance``: the error of
    guessing (``1 - 1/k``); ``per_class_multiple``: the number of classes, to price the next
    ``MARGINAL_PER_CLASS`` labels *per class*; ``eval_class_counts``: evaluation rows per class, for the
    evaluation-set noise of ``metric`` in the intervals (None: left out, the intervals then ignore that the
    metric is measured on a finite set); ``interval_noise`` False: intervals from the bootstrap replicates alone
    (subset noise and family disagreement, without the evaluation, seed and extrapolation terms -- how they were
    before those terms, for comparison). ``method``: "families" (the weighted families and their bootstrap),
    "prior" (the slope prior learned on LCDB, ``curato.sizing.prior``) or "meta" (the meta-model learned on every
    cut of LCDB curves, ``curato.sizing.meta``): for the learned two the central curve, intervals and labels needed
    come from them; the families are still fitted for the per-class answers and the strategies' prices unless
    ``fit_families`` is False: then ``fits`` is empty and the warnings skip the families' backtest).
    Returns a JSON-ready dict (see ``size.schema.json``).
    """
    if not 0.0 < target <= 1.0:
        raise InputError(f"--target {target}: must lie in (0, 1], e.g. 0.95")
    if method not in METHODS:
        raise InputError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    n = np.asarray(sizes, dtype=np.float64)
    means = np.array([np.mean(v) for v in values])
    today = int(n[-1]) if today is None else int(today)
    fits = select_fits(n, means, chance=chance) if method == "families" or fit_families else []
    grid = np.geomspace(n[0], today * HORIZON, GRID_POINTS)
    central = np.maximum.accumulate(weighted_metric(fits, grid)) if fits else np.zeros(len(grid))
    multiples = [today * m for m in MULTIPLES]
    classes = per_class_multiple or 1
    marginal_at = today + MARGINAL_PER_CLASS * classes
    spread, scale = seed_sd(values), extrapolation_scale(fits, n, values)
    low_band = high_band = None
    model, pin_span = None, math.nan  # the meta-model (its labels-needed rule); the prior's pin_span
    if method == "prior":
        prior = load_prior()
        central, low_band, high_band = prior_curves(
            prior, n, values, grid, eval_sd=float(evaluation_sd(means[-1], eval_class_counts, kind=metric)))
        top = curve_top(n, values, window=prior.window)
        ceiling = float(min(1.0, top.level + prior_gain(prior, top, FAR)[()]))
        pin_span = prior.pin_span
        replicates, curves = np.empty((0, len(grid))), np.empty((0, len(grid)))
    elif method == "meta":
        model = load_meta()
        central, low_band, high_band = meta_curves(model, n, values, grid)
        ceiling = float(central[-1])  # the trees stop growing beyond the horizons they were trained on
        replicates, curves = np.empty((0, len(grid))), np.empty((0, len(grid)))
    else:
        replicates = _bootstrap(n, values, fits, chance=chance, grid=grid, n_bootstrap=n_bootstrap, seed=seed)
        curves = (noisy_curves(replicates, grid, last_measured=float(n[-1]), extrapolation=scale,
                               seed_spread=spread, class_counts=eval_class_counts, kind=metric, seed=seed + 1)
                  if interval_noise else np.clip(np.asarray(replicates, dtype=np.float64).reshape(-1, len(grid)),
                                                 0.0, 1.0))
        ceiling = weighted_ceiling(fits)
        if len(curves):
            # Running maxima: a band of the metric reachable with *up to* n labels (the curves are non-decreasing).
            low_band = np.maximum.accumulate(np.percentile(curves, INTERVAL[0], axis=0))
            high_band = np.maximum.accumulate(np.percentile(curves, INTERVAL[1], axis=0))
    if method in LEARNED:
        needed, crossings = learned_labels_needed(grid, n, values, central, low_band, high_band, target)
    else:
        # Where the band crosses the target: its upper edge first, its lower edge last (inf = beyond the horizon).
        needed = labels_needed(grid, central, target)
        crossings = None if low_band is None else [labels_needed(grid, high_band, target),
                                                   labels_needed(grid, low_band, target)]

    def at(points: Sequence[float], rows: np.ndarray) -> np.ndarray:
        return np.array([np.interp(np.log(points), np.log(grid), row) for row in rows])

    points = [*multiples, marginal_at, today]
    point_values = at(points, central[None])[0]
    bands = None if low_band is None else at(points, np.stack([low_band, high_band]))

    def interval(column: int) -> list[float] | None:
        return None if bands is None else [float(bands[0, column]), float(bands[1, column])]

    predictions = [{"multiple": m, "size": int(size), "metric": float(point_values[i]), "interval": interval(i)}
                   for i, (m, size) in enumerate(zip(MULTIPLES, multiples, strict=True))]
    gain_draws = None if not len(curves) else np.diff(at([today, marginal_at], curves), axis=1)[:, 0]
    needed_interval = None if crossings is None else [_count(edge) for edge in crossings]
    noise, within_noise = plateau_noise(grid, central, target=target, needed=needed, last_measured=float(n[-1]),
                                        seed_spread=spread, class_counts=eval_class_counts, kind=metric)
    measured_today = float(means[-1]) if int(n[-1]) == today else None  # sizes may be floats
    # Why no number is stated (None: one is). within_noise stays plateau_noise's answer for every method.
    if not math.isfinite(needed):
        reason: str | None = "central_not_reached"
    elif method == "meta":
        reason = meta_not_pinned_reason(model, grid, central, needed=needed, upper_crossing=crossings[0],
                                        today=float(n[-1]), seed_se=top_seed_se(n, values))
    elif method == "prior":
        reason = prior_not_pinned_reason(crossings, today=float(n[-1]), pin_span=pin_span)
    else:
        reason = ("no_interval" if needed_interval is None else "inside_plateau_noise" if within_noise
                  else "interval_past_horizon" if None in needed_interval else None)
    pinned = reason is None
    # "not reached": not even the interval's upper edge reaches the target within the horizon
    status = ("reached" if measured_today is not None and measured_today >= target
              else "not reached" if not math.isfinite(needed) and (needed_interval is None or
                                                                   needed_interval[0] is None)
              else "estimated" if pinned else "cannot be pinned down")
    not_pinned_reason = reason if status == "cannot be pinned down" else None
    result = {
        "fits": [_fit_entry(entry) for entry in fits],
        "ceiling": ceiling,
        "samples_needed": {"total": _count(needed), "stated": status == "estimated",
                           "interval": needed_interval, "reachable": math.isfinite(needed),
                           "horizon": int(today * HORIZON),
                           "share_reaching": None if not len(curves) else
                           float(np.mean(curves.max(axis=1) >= target)),
                           "noise": noise, "within_noise": within_noise,
                           "determined": needed_interval is not None and None not in needed_interval,
                           "pinned_down": pinned, "status": status, "not_pinned_reason": not_pinned_reason},
        "method": method,
        "today": {"size": today, "measured": measured_today is not None,
                  "metric": measured_today if measured_today is not None else float(point_values[-1])},
        "predictions": predictions,
        "marginal": {"labels_per_class": MARGINAL_PER_CLASS, "labels": int(marginal_at - today),
                     "gain": float(point_values[len(MULTIPLES)] - point_values[-1]),
                     "interval": None if gain_draws is None else
                     [float(v) for v in np.percentile(gain_draws, INTERVAL)]},
        "uncertainty": {"evaluation_rows": None if eval_class_counts is None else int(np.sum(eval_class_counts)),
                        "evaluation_sd_today": float(evaluation_sd(means[-1], eval_class_counts, kind=metric)),
                        "seed_sd": spread, "extrapolation_sd_per_log_size": scale,
                        "bootstrap_replicates": len(replicates), "noise_draws": NOISE_DRAWS},
        "grid": {"size": [float(v) for v in grid], "metric": [float(v) for v in central],
                 "low": None if low_band is None else [float(v) for v in low_band],
                 "high": None if high_band is None else [float(v) for v in high_band],
                 "fits": {entry.family: [float(v) for v in entry.fit.metric(grid)]
                          for entry in fits if entry.fit is not None}},
    }
    result["warnings"] = curve_warnings(n, values, fits, target=target, needed=needed, ceiling=ceiling,
                                        today=today, measured_today=measured_today,
                                        noise=noise if within_noise and method == "families" else None)
    if not_pinned_reason is not None and not (method == "families" and not_pinned_reason == "inside_plateau_noise"):
        # (the families' plateau noise has its own sentence in curve_warnings)
        seed_se = top_seed_se(n, values) if method == "meta" else math.nan
        why = _not_pinned_text(not_pinned_reason, grid=grid, central=central, needed=needed,
                               today=float(n[-1]), model=model, pin_span=pin_span, seed_se=seed_se)
        also = (f"; the target also lies inside the measurement noise of the forecast's plateau (+-{noise:.3f})"
                if within_noise and method in LEARNED else "")
        span = ("" if needed_interval is None else f" (its 90% interval runs from {_span_end(needed_interval[0])} "
                f"to {_span_end(needed_interval[1])})")
        seeds = "run more seeds (--seeds), " if method == "meta" and not_pinned_reason == "inside_plateau_noise" else ""
        result["warnings"].append(f"the labels needed for {target:g} cannot be pinned down: {why}{also}{span}; "
                                  f"read the interval, {seeds}evaluate on more rows, or aim lower")
    return result


def _count(value: float) -> int | None:
    return None if not math.isfinite(value) else math.ceil(value)


def _not_pinned_text(reason: str, *, grid: np.ndarray, central: np.ndarray, needed: float,
                     today: float, model: Any, pin_span: float, seed_se: float = math.nan) -> str:
    """The plain-words reason behind ``not_pinned_reason``."""
    if reason == "central_not_reached":
        return (f"the central forecast does not reach the target within {HORIZON:,.0f}x today's data, only the "
                "band's upper edge does")
    if reason == "inside_todays_band":
        return "the target lies inside today's band: within its noise the curve as measured may already reach it"
    if reason == "outside_validated_range":
        return (f"the central answer ({math.ceil(needed):,} samples, {needed / today:.2f}x the largest measured "
                f"size) lies outside {math.exp(model.pin_near):.2f}-{math.exp(model.pin_reach):.2f}x, the only "
                "range where the meta-model's stated numbers held up on LCDB's tuning curves")
    if reason == "flat_forecast":
        climb = slope_at(grid, central, needed, after=today)
        return (f"the forecast climbs only {climb:.3f} per unit of log size there (the "
                f"rule asks for {model.pin_slope:.3f}): on a flat stretch a small error in the metric moves the labels "
                "needed a lot")
    if reason == "interval_past_horizon":
        return f"the band's lower edge does not reach the target within {HORIZON:,.0f}x today's data"
    if reason == "interval_too_wide":
        return f"the 90% interval spans more than {math.exp(pin_span):.1f}x in labels"
    if reason == "inside_plateau_noise" and model is not None and not (math.isfinite(seed_se) and seed_se > 0):
        return (f"the central forecast reaches it at about {math.ceil(needed):,} samples, but the seeds' noise at "
                "the top of the curve cannot be measured (one seed, or seeds that agree exactly), so whether a "
                "quarter fewer labels reach the target within that noise cannot be checked")
    if reason == "inside_plateau_noise" and model is not None:
        return (f"the central forecast reaches it at about {math.ceil(needed):,} samples but climbs less than "
                f"{model.pin_rise:g}x the seeds' noise (of a difference of two means) from "
                f"{math.ceil(max(RISE_SHARE * needed, today)):,} samples to there: within that noise a quarter fewer "
                "labels may reach the target already")
    if reason == "inside_plateau_noise":
        return "the target lies inside the measurement noise of the forecast's plateau"
    return "there is no interval to judge it by (no bootstrap replicates)"


def _span_end(value: int | None) -> str:
    return "beyond the horizon" if value is None else f"{value:,} samples"


def _fit_entry(entry: FamilyFit) -> dict[str, Any]:
    fit = entry.fit
    return {"family": entry.family, "weight": float(entry.weight),
            "backtest_rmse": None if not math.isfinite(entry.backtest_rmse) else float(entry.backtest_rmse),
            "drop_first": int(entry.drop_first), "fitted": fit is not None,
            "params": None if fit is None else [float(v) for v in fit.params],
            "ceiling": None if fit is None else fit.ceiling,
            "rms_log_error": None if fit is None else fit.rms_log_error}


def _bootstrap(n: np.ndarray, values: Sequence[np.ndarray], fits: Sequence[FamilyFit], *, chance: float,
               grid: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    usable = [entry for entry in fits if entry.weight > 0 and entry.fit is not None]
    if n_bootstrap <= 0 or not usable:
        return np.empty((0, len(grid)))
    weights = np.array([entry.weight for entry in usable])
    curves = []
    for _ in range(n_bootstrap):
        means = np.array([np.mean(rng.choice(v, size=len(v))) for v in values])
        entry = usable[rng.choice(len(usable), p=weights / weights.sum())]
        drop = entry.drop_first
        fit = fit_curve(entry.family, n[drop:], means[drop:], chance=chance, start=entry.fit.params)
        if fit is not None:
            curves.append(np.maximum.accumulate(fit.metric(grid)))
    return np.array(curves) if curves else np.empty((0, len(grid)))


def curve_warnings(sizes: np.ndarray, values: Sequence[np.ndarray], fits: Sequence[FamilyFit], *, target: float,
                   needed: float, ceiling: float, today: int, measured_today: float | None,
                   noise: float | None = None) -> list[str]:
    """Plain sentences about an ill-behaved curve or an unreachable target; ``noise``: the measurement noise
    (90% half-width) when the target lies within it of the forecast's plateau."""
    means = np.array([np.mean(v) for v in values])
    spread = np.array([np.std(v) / math.sqrt(len(v)) if len(v) > 1 else 0.0 for v in values])
    warnings = []
    best_before = np.maximum.accumulate(means)
    drops = np.flatnonzero(best_before[:-1] - means[1:] > np.maximum(0.01, 2 * (spread[1:] + spread[:-1])))
    if drops.size:
        i = int(drops[0]) + 1
        warnings.append(f"the curve is ill-behaved: the metric falls to {means[i]:.3f} at {int(sizes[i]):,} samples "
                        f"after reaching {best_before[i - 1]:.3f} with fewer (label noise, an unstable model or a "
                        "small evaluation set); treat the forecast with care")
    if means[-1] - means[0] < 0.005:
        warnings.append(f"the curve is flat ({means[0]:.3f} at {int(sizes[0]):,} samples, {means[-1]:.3f} at "
                        f"{int(sizes[-1]):,}): more data of this kind barely helps this model")
    scored = [f.backtest_rmse for f in fits if math.isfinite(f.backtest_rmse)]
    if scored and min(scored) > POOR_BACKTEST:
        warnings.append(f"no curve family predicts the larger measured sizes from the smaller ones to better than "
                        f"{min(scored):.3f} (RMS); the forecast is unreliable")
    if measured_today is not None and measured_today >= target:
        warnings.append(f"the target {target:g} is already reached: {measured_today:.3f} with today's "
                        f"{today:,} samples")
    elif not math.isfinite(needed):
        if ceiling < target:
            warnings.append(f"the target {target:g} lies above the estimated ceiling {ceiling:.3f}: more data like "
                            "this will not reach it with this model; improve the model or the data instead")
        else:
            warnings.append(f"the target {target:g} is not reached within {HORIZON:,.0f}x today's data "
                            f"({int(today * HORIZON):,} samples)")
    if noise is not None and not (measured_today is not None and measured_today >= target):
        warnings.append(f"the target {target:g} lies inside the noise of the curve's plateau: near it, ten times "
                        f"the labels move the forecast less than the measurement noise (+-{noise:.3f}: evaluation "
                        "set and training seed), so the labels needed cannot be pinned down; read the interval, "
                        "evaluate on more rows, or aim lower")
    return warnings


def backtest(sizes: np.ndarray, values: Sequence[np.ndarray], *, fraction: float = 0.25, chance: float,
             n_bootstrap: int = BOOTSTRAP, seed: int = 0, eval_class_counts: np.ndarray | Sequence[int] | None = None,
             metric: str = "accuracy", interval_noise: bool = True, method: str = "families") -> dict[str, Any]:
    """Fit on the sizes up to ``fraction`` of the largest and predict the largest: the metric there and the
    labels needed to reach what was measured there. ``error`` is predicted minus measured (metric units),
    ``interval`` the 90% interval at the largest size and ``covered`` whether it holds the measured value;
    ``samples_needed_ratio`` is predicted / actual labels needed, ``samples_needed_interval`` its interval
    (None at an end: beyond the horizon) and ``samples_needed_covered`` whether it holds the actual size;
    ``samples_needed_within_noise``: the measured value lies inside the noise of the early forecast's plateau.
    ``samples_needed_pinned_down``: the early forecast states a number (else "cannot be pinned down").
    ``eval_class_counts`` / ``metric`` / ``interval_noise`` / ``method``: as for ``forecast``."""
    n = np.asarray(sizes, dtype=np.float64)
    largest = n[-1]
    keep = n <= largest * fraction + 1e-9
    if keep.sum() < 4:
        raise InputError(f"--backtest: need at least 4 measured sizes up to {fraction:.0%} of the largest, found "
                         f"{int(keep.sum())}; measure more sizes (--sizes)")
    measured = float(np.mean(values[-1]))
    early = forecast(n[keep], [values[i] for i in np.flatnonzero(keep)], target=measured, chance=chance,
                     today=int(n[keep][-1]), n_bootstrap=n_bootstrap, seed=seed, eval_class_counts=eval_class_counts,
                     metric=metric, interval_noise=interval_noise, method=method)
    grid = np.array(early["grid"]["size"])
    predicted = float(np.interp(np.log(largest), np.log(grid), early["grid"]["metric"]))
    low = early["grid"]["low"]
    high = early["grid"]["high"]
    interval = None if low is None else [float(np.interp(np.log(largest), np.log(grid), low)),
                                         float(np.interp(np.log(largest), np.log(grid), high))]
    needed = early["samples_needed"]["total"]
    needed_interval = early["samples_needed"]["interval"]
    needed_covered = None
    if needed_interval is not None:
        # None is "beyond the horizon": a lower end there means the whole interval lies past the actual size.
        needed_covered = bool(needed_interval[0] is not None and needed_interval[0] <= largest
                              and (needed_interval[1] is None or largest <= needed_interval[1]))
    return {"fit_up_to": int(n[keep][-1]), "predict_at": int(largest), "predicted": predicted, "measured": measured,
            "error": predicted - measured, "interval": interval,
            "covered": None if interval is None else bool(interval[0] <= measured <= interval[1]),
            "samples_needed_predicted": needed, "samples_needed_actual": int(largest),
            "samples_needed_interval": needed_interval, "samples_needed_covered": needed_covered,
            "samples_needed_within_noise": early["samples_needed"]["within_noise"],
            "samples_needed_pinned_down": early["samples_needed"]["pinned_down"], "method": method,
            "samples_needed_ratio": None if needed is None else needed / largest,
            "uncertainty": early["uncertainty"], "fits": early["fits"]}


def labels_worth(sizes: np.ndarray, means: np.ndarray, fits: Sequence[FamilyFit], *, size: int,
                 value: float) -> float:
    """How many labels the *baseline* needs to reach ``value``, minus ``size``: what a strategy measured at
    ``size`` with metric ``value`` is worth in labels. Inside the measured range the baseline is the
    (running maximum of the) measured means interpolated in log size, beyond it the weighted forecast."""
    n = np.asarray(sizes, dtype=np.float64)
    measured = np.maximum.accumulate(np.asarray(means, dtype=np.float64))
    if value <= measured[-1]:
        needed = labels_needed(n, measured, value)
    else:
        grid = np.geomspace(n[-1], n[-1] * HORIZON, GRID_POINTS)
        needed = labels_needed(grid, np.maximum.accumulate(weighted_metric(fits, grid)), value)
    return needed - size


def per_class_answers(sizes: np.ndarray, recalls: Sequence[np.ndarray], shares: np.ndarray, fits: Sequence[FamilyFit],
                      *, target: float, chance: float, today: int, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per class: its recall today, the labels *of that class* needed for recall ``target``, and the recall
    gain from its next ``MARGINAL_PER_CLASS`` labels, from its own recall curve over its own sample count.

    ``recalls[i]``: (seeds, classes) recall at ``sizes[i]``; ``shares``: each class's share of the pool (the
    subsets are stratified, so class ``c`` has ``size * shares[c]`` samples). Each class's curve is fitted
    with the families and weights chosen for the overall curve (no per-class intervals).
    """
    n = np.asarray(sizes, dtype=np.float64)
    means = np.array([np.nanmean(np.asarray(r, dtype=np.float64), axis=0) for r in recalls])  # (sizes, classes)
    answers = []
    chosen = [entry for entry in fits if entry.weight > 0]
    for c, name in enumerate(class_names):
        counts = np.maximum(n * shares[c], 1.0)
        keep = np.isfinite(means[:, c]) & (np.diff(np.concatenate([[0.0], counts])) > 0)
        today_count = round(today * shares[c])
        entry: dict[str, Any] = {"class": str(name), "samples_today": today_count,
                                 "recall_today": None if not np.isfinite(means[-1, c]) else float(means[-1, c]),
                                 "samples_needed": None, "gain_next": None}
        if keep.sum() >= 4:
            grid = np.geomspace(counts[keep][0], max(today_count, 1) * HORIZON, GRID_POINTS)
            curve, total = np.zeros(len(grid)), 0.0
            for family in chosen:
                fit = fit_curve(family.family, counts[keep], np.clip(means[keep, c], 0, 1), chance=chance)
                if fit is not None:
                    curve += family.weight * fit.metric(grid)
                    total += family.weight
            if total > 0:
                curve = np.maximum.accumulate(curve / total)
                entry["samples_needed"] = _count(labels_needed(grid, curve, target))
                now, later = np.interp(np.log([max(today_count, 1), today_count + MARGINAL_PER_CLASS]), np.log(grid),
                                       curve)
                entry["gain_next"] = float(later - now)
        answers.append(entry)
    return answers
