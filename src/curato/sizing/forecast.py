"""Answers from a measured learning curve: labels needed for a target, the metric at 2x/5x/10x today's data,
the value of the next labels, with bootstrap intervals; the backtest; strategy value in labels.

Intervals: each bootstrap replicate resamples, at every size, the seeds (each seed is its own random
subset) with replacement, draws one curve family with probability equal to its weight, refits it
(warm-started from the full fit) and reads off the answers; the interval is the 5th-95th percentile
over replicates, so it carries both the subset-to-subset spread and the disagreement between families.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from curato.errors import InputError
from curato.sizing.curves import FamilyFit, fit_curve, select_fits, weighted_ceiling, weighted_metric

MULTIPLES = (2, 5, 10)
HORIZON = 1000.0  # labels-needed searches up to this many times today's data
GRID_POINTS = 600
BOOTSTRAP = 100
INTERVAL = (5.0, 95.0)
MARGINAL_PER_CLASS = 1000
POOR_BACKTEST = 0.02  # backtest RMSE (metric units) above which the forecast is called unreliable


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


def forecast(sizes: np.ndarray, values: Sequence[np.ndarray], *, target: float, chance: float,
             today: int | None = None, n_bootstrap: int = BOOTSTRAP, seed: int = 0,
             per_class_multiple: int | None = None) -> dict[str, Any]:
    """Fit the curve families to measured points and answer the sizing questions.

    ``sizes``: ascending training-set sizes; ``values[i]``: the metric over the seeds at ``sizes[i]``;
    ``today``: the labelled data available now (default: the largest size); ``chance``: the error of
    guessing (``1 - 1/k``); ``per_class_multiple``: the number of classes, to price the next
    ``MARGINAL_PER_CLASS`` labels *per class*. Returns a JSON-ready dict (see ``size.schema.json``).
    """
    if not 0.0 < target <= 1.0:
        raise InputError(f"--target {target}: must lie in (0, 1], e.g. 0.95")
    n = np.asarray(sizes, dtype=np.float64)
    means = np.array([np.mean(v) for v in values])
    today = int(n[-1]) if today is None else int(today)
    fits = select_fits(n, means, chance=chance)
    grid = np.geomspace(n[0], today * HORIZON, GRID_POINTS)
    central = np.maximum.accumulate(weighted_metric(fits, grid))
    multiples = [today * m for m in MULTIPLES]
    classes = per_class_multiple or 1
    marginal_at = today + MARGINAL_PER_CLASS * classes
    replicates = _bootstrap(n, values, fits, chance=chance, grid=grid, n_bootstrap=n_bootstrap, seed=seed)
    needed_draws = np.array([labels_needed(grid, curve, target) for curve in replicates]) if len(replicates) else None
    needed = labels_needed(grid, central, target)
    ceiling = weighted_ceiling(fits)

    def at(points: Sequence[float], curves: np.ndarray) -> np.ndarray:
        return np.array([np.interp(np.log(points), np.log(grid), curve) for curve in curves])

    point_values = at([*multiples, marginal_at, today], central[None])[0]
    draws = at([*multiples, marginal_at, today], replicates) if len(replicates) else None

    def interval(column: int) -> list[float] | None:
        return None if draws is None else [float(v) for v in np.percentile(draws[:, column], INTERVAL)]

    predictions = [{"multiple": m, "size": int(size), "metric": float(point_values[i]), "interval": interval(i)}
                   for i, (m, size) in enumerate(zip(MULTIPLES, multiples, strict=True))]
    gain_draws = None if draws is None else draws[:, len(MULTIPLES)] - draws[:, len(MULTIPLES) + 1]
    needed_interval = None
    if needed_draws is not None:
        low, high = np.percentile(needed_draws, INTERVAL, method="nearest")  # inf = never reached
        needed_interval = [_count(low), _count(high)]
    result = {
        "fits": [_fit_entry(entry) for entry in fits],
        "ceiling": ceiling,
        "samples_needed": {"total": _count(needed), "interval": needed_interval, "reachable": math.isfinite(needed),
                           "horizon": int(today * HORIZON),
                           "share_reaching": None if needed_draws is None else
                           float(np.mean(np.isfinite(needed_draws)))},
        "predictions": predictions,
        "marginal": {"labels_per_class": MARGINAL_PER_CLASS, "labels": int(marginal_at - today),
                     "gain": float(point_values[len(MULTIPLES)] - point_values[-1]),
                     "interval": None if gain_draws is None else
                     [float(v) for v in np.percentile(gain_draws, INTERVAL)]},
        "grid": {"size": [float(v) for v in grid], "metric": [float(v) for v in central],
                 "low": None if not len(replicates) else [float(v) for v in np.percentile(replicates, INTERVAL[0], 0)],
                 "high": None if not len(replicates) else [float(v) for v in np.percentile(replicates, INTERVAL[1], 0)],
                 "fits": {entry.family: [float(v) for v in entry.fit.metric(grid)]
                          for entry in fits if entry.fit is not None}},
    }
    result["warnings"] = curve_warnings(n, values, fits, target=target, needed=needed, ceiling=ceiling,
                                        today=today, measured_today=float(means[-1]) if n[-1] == today else None)
    return result


def _count(value: float) -> int | None:
    return None if not math.isfinite(value) else math.ceil(value)


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
                   needed: float, ceiling: float, today: int, measured_today: float | None) -> list[str]:
    """Plain sentences about an ill-behaved curve or an unreachable target."""
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
    return warnings


def backtest(sizes: np.ndarray, values: Sequence[np.ndarray], *, fraction: float = 0.25, chance: float,
             n_bootstrap: int = BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Fit on the sizes up to ``fraction`` of the largest and predict the largest: the metric there and the
    labels needed to reach what was measured there. ``error`` is predicted minus measured (metric units);
    ``samples_needed_ratio`` is predicted / actual labels needed, ``samples_needed_interval`` its bootstrap
    interval (None inside it: not reached within the horizon)."""
    n = np.asarray(sizes, dtype=np.float64)
    largest = n[-1]
    keep = n <= largest * fraction + 1e-9
    if keep.sum() < 4:
        raise InputError(f"--backtest: need at least 4 measured sizes up to {fraction:.0%} of the largest, found "
                         f"{int(keep.sum())}; measure more sizes (--sizes)")
    measured = float(np.mean(values[-1]))
    early = forecast(n[keep], [values[i] for i in np.flatnonzero(keep)], target=measured, chance=chance,
                     today=int(n[keep][-1]), n_bootstrap=n_bootstrap, seed=seed)
    grid = np.array(early["grid"]["size"])
    predicted = float(np.interp(np.log(largest), np.log(grid), early["grid"]["metric"]))
    low = early["grid"]["low"]
    high = early["grid"]["high"]
    interval = None if low is None else [float(np.interp(np.log(largest), np.log(grid), low)),
                                         float(np.interp(np.log(largest), np.log(grid), high))]
    needed = early["samples_needed"]["total"]
    return {"fit_up_to": int(n[keep][-1]), "predict_at": int(largest), "predicted": predicted, "measured": measured,
            "error": predicted - measured, "interval": interval,
            "covered": None if interval is None else bool(interval[0] <= measured <= interval[1]),
            "samples_needed_predicted": needed, "samples_needed_actual": int(largest),
            "samples_needed_interval": early["samples_needed"]["interval"],
            "samples_needed_ratio": None if needed is None else needed / largest,
            "fits": early["fits"]}


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
