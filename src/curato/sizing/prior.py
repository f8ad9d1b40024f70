"""The slope prior: a learning-curve forecast learned from real curves (LCDB, issue 24).

Fitted families extrapolate the *shape* of a short curve, and on real curves that shape is mostly noise: the
median LCDB curve is forecast no better by them than by "no further gain". The slope prior instead reads two
numbers off the top of the measured curve, a level ``L`` and a slope ``s`` (metric per unit of log size, a line
through the last ``window`` means), and lets the gain decay as learned across hundreds of real curves:

* the slope is shrunk by its own noise, ``g = s^2 / (s^2 + shrink * se^2)`` (a slope the points cannot tell
  from zero counts for little: "no further gain" wins when the data cannot decide);
* the gain after ``u = log(n / n_last)`` is ``scale * g * s * (1 - exp(-r u)) / r`` with the decay rate
  ``r = decay + curvature * c``, ``c`` the observed fall of the slope per log size (from a window three sizes
  earlier), capped at ``headroom`` times the remaining error ``1 - L``;
* the 90% interval is ``[central - z_high sd(u), central - z_low sd(u)]`` with
  ``sd(u)^2 = (eval_factor * eval_sd)^2 + (seed_factor * seed_sd)^2 + (drift_sd * u)^2 + (slope_sd * g s u)^2``
  and ``z_low`` / ``z_high`` the learned 5th/95th percentiles of the standardised errors
  ``(forecast - measured) / sd`` (asymmetric: real curves surprise upwards more often than downwards);
* labels needed are read where the central curve crosses the target, their interval where the band's edges do;
  when the band's upper edge already reaches the target today, or the interval spans more than ``pin_span`` in
  log size (or runs past the horizon), the target lies inside the noise of the curve and the number "cannot be
  pinned down".

The parameters were learned on LCDB curves of even OpenML dataset id only (``benchmarks/sizing_lcdb.py
--fit-prior``) and ship as ``lcdb_prior.json`` next to this module, so forecasting stays offline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from curato.errors import InputError

PRIOR_PATH = Path(__file__).with_name("lcdb_prior.json")
MAX_DECAY = 5.0  # cap of the decay rate (per unit of log size)
TINY_SLOPE = 1e-4


@dataclass(frozen=True)
class SlopePrior:
    """The learned constants of the slope-prior forecast (see the module docstring)."""

    window: int
    shrink: float
    decay: float
    scale: float
    curvature: float
    headroom: float
    eval_factor: float
    seed_factor: float
    drift_sd: float
    slope_sd: float
    z_low: float
    z_high: float
    pin_span: float
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def load_prior(path: Path = PRIOR_PATH) -> SlopePrior:
    """The shipped prior (or one written by ``benchmarks/sizing_lcdb.py --fit-prior``)."""
    try:
        raw = json.loads(Path(path).read_text())
        return SlopePrior(**raw)
    except (OSError, ValueError, TypeError) as error:
        raise InputError(f"{path}: not a slope prior ({error}); reinstall curato or re-learn it with "
                         "benchmarks/sizing_lcdb.py --fit-prior") from error


@dataclass(frozen=True)
class CurveTop:
    """What the slope prior reads off a measured curve: the level and slope at its top and their noise."""

    last_size: float
    level: float
    slope: float
    slope_se: float
    earlier_slope: float
    slope_distance: float  # log-size distance between the centres of the two slope windows
    seed_sd: float


def _line(x: np.ndarray, y: np.ndarray, at: float) -> tuple[float, float, float]:
    """Least-squares line through (x, y): its value at ``at``, slope and slope standard error (inf with 2 points)."""
    design = np.stack([np.ones(len(x)), x - at], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    if len(x) <= 2:
        return float(coef[0]), float(coef[1]), math.inf
    residual = y - design @ coef
    variance = float(residual @ residual) / (len(x) - 2)
    return float(coef[0]), float(coef[1]), math.sqrt(variance * np.linalg.inv(design.T @ design)[1, 1])


def curve_top(sizes: np.ndarray | Sequence[float], values: Sequence[np.ndarray], *, window: int) -> CurveTop:
    """The top of a measured curve (``sizes`` ascending, ``values[i]`` the seeds' metrics at ``sizes[i]``)."""
    n = np.asarray(sizes, dtype=np.float64)
    if len(n) < 2 or len(values) != len(n):
        raise InputError(f"learning curve: need at least 2 sizes with values, got {len(n)}")
    x = np.log(n)
    means = np.array([float(np.mean(v)) for v in values])
    w = min(window, len(n))
    level, slope, slope_se = _line(x[-w:], means[-w:], x[-1])
    earlier = slice(max(0, len(n) - w - 3), len(n) - 3)
    if len(n) - 3 - max(0, len(n) - w - 3) >= 2:
        _, earlier_slope, _ = _line(x[earlier], means[earlier], x[-1])
        distance = float(np.mean(x[-w:]) - np.mean(x[earlier]))
    else:
        earlier_slope, distance = slope, 1.0
    # the standard error of one mean: the seeds' variance and the seed counts of the same sizes (the last 3
    # measured with more than one seed)
    several = [np.asarray(v, dtype=np.float64) for v in values if len(v) > 1][-3:]
    seed_spread = (float(np.sqrt(np.mean([np.var(v, ddof=1) for v in several]) / np.mean([len(v) for v in several])))
                   if several else 0.0)
    return CurveTop(float(n[-1]), level, slope, slope_se, earlier_slope, max(distance, 1e-6), seed_spread)


def shrunk_slope(prior: SlopePrior, top: CurveTop) -> float:
    """The slope with its noise shrunk away: ``g * s`` (0 for a falling or flat top)."""
    s = max(top.slope, 0.0)
    if s == 0.0 or not math.isfinite(top.slope_se):
        return 0.0
    return s * s * s / (s * s + prior.shrink * top.slope_se ** 2)


def prior_gain(prior: SlopePrior, top: CurveTop, distance: np.ndarray | float) -> np.ndarray:
    """The forecast gain over the top's level ``distance = log(n / last size)`` (>= 0) beyond the curve."""
    u = np.maximum(np.asarray(distance, dtype=np.float64), 0.0)
    s = shrunk_slope(prior, top)
    fall = math.log(max(top.earlier_slope, TINY_SLOPE) / max(top.slope, TINY_SLOPE)) / top.slope_distance
    rate = min(max(prior.decay + prior.curvature * min(max(fall, 0.0), MAX_DECAY), 1e-6), MAX_DECAY)
    gain = prior.scale * s * (1.0 - np.exp(-rate * u)) / rate
    return np.minimum(gain, prior.headroom * max(1.0 - top.level, 0.0))


def prior_sd(prior: SlopePrior, top: CurveTop, distance: np.ndarray | float, eval_sd: float) -> np.ndarray:
    """The standard deviation of the forecast's error ``distance`` beyond the curve (before the learned z)."""
    u = np.maximum(np.asarray(distance, dtype=np.float64), 0.0)
    s = shrunk_slope(prior, top)
    return np.sqrt((prior.eval_factor * eval_sd) ** 2 + (prior.seed_factor * top.seed_sd) ** 2
                   + (prior.drift_sd * u) ** 2 + (prior.slope_sd * s * u) ** 2)


def prior_curves(prior: SlopePrior, sizes: np.ndarray | Sequence[float], values: Sequence[np.ndarray],
                 grid: np.ndarray, *, eval_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central forecast and the 90% band's low and high edges over ``grid`` (non-decreasing, in [0, 1]).

    Inside the measured range the central curve is the running maximum of the measured means (interpolated in
    log size); beyond it the top's level (the line through the last means, which smooths a lucky or unlucky last
    point) plus ``prior_gain``, so it may step at the last size. ``eval_sd``: the evaluation-set noise of the metric
    at the top (``curato.sizing.forecast.evaluation_sd``; 0 when unknown)."""
    n = np.asarray(sizes, dtype=np.float64)
    top = curve_top(n, values, window=prior.window)
    g = np.asarray(grid, dtype=np.float64)
    distance = np.log(g / top.last_size)
    means = np.maximum.accumulate([float(np.mean(v)) for v in values])
    inside = np.interp(np.log(g), np.log(n), means)
    beyond = top.level + prior_gain(prior, top, distance)  # non-decreasing in the distance
    central = np.clip(np.where(distance <= 0, inside, beyond), 0.0, 1.0)
    sd = prior_sd(prior, top, distance, eval_sd)
    # z_low / z_high are percentiles of (forecast - measured) / sd: the measured value lies above the forecast
    # by up to -z_low sd and below it by up to z_high sd
    low = np.clip(central - prior.z_high * sd, 0.0, 1.0)
    high = np.clip(central - prior.z_low * sd, 0.0, 1.0)
    return central, low, high


def pinned_down(needed_interval: Sequence[float], *, today: float, pin_span: float) -> bool:
    """Whether a labels-needed interval (``[upper band's crossing, lower band's crossing]``, inf when a band
    never crosses) states a number: the target lies clearly above today's band (the upper edge crosses it only
    beyond ``today``: else it lies inside the noise of the curve as measured) and the interval is at most
    ``pin_span`` wide in log size (else inside the noise of the forecast's plateau)."""
    return prior_not_pinned_reason(needed_interval, today=today, pin_span=pin_span) is None


def prior_not_pinned_reason(needed_interval: Sequence[float], *, today: float, pin_span: float) -> str | None:
    """Why ``pinned_down`` states no number: "inside_todays_band", "interval_past_horizon" (the band's lower
    edge never crosses the target) or "interval_too_wide" (wider than ``pin_span`` in log size); None when it
    states one."""
    low, high = needed_interval
    if not today < low:
        return "inside_todays_band"
    if not math.isfinite(high):
        return "interval_past_horizon"
    return None if math.log(high / low) <= pin_span else "interval_too_wide"
