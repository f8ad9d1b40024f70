"""Learning-curve families, their least-squares fits, and the choice between them by extrapolation error.

Every family models the *error* ``e(n) = 1 - metric(n)`` of a model trained on ``n`` labelled samples,
non-increasing in ``n``. Fits minimise squared residuals of ``log e`` (errors near 0 and near chance count
alike, and a forecast of 0.99 vs 0.98 is the same mistake as 0.80 vs 0.60), with bounds that keep every
curve physical: error never below 0 (metric ceiling <= 1), asymptotes never above an error already
measured (the failure ANCHORS.md records for a single free power law).

Families (``chance`` is the error of guessing, ``1 - 1/k`` for ``k`` classes):

* ``power_law``: ``e = c + a n^-b`` (asymptote ``c``);
* ``m4``: ``(e - e_inf) / (chance - e)^alpha = beta n^-b`` (Alabdulmohsin et al. 2022): the power law
  bent so that small ``n`` saturates at chance; solved for ``e`` by bisection;
* ``arctan``: ``metric = s (2/pi) arctan(a n + d)`` (the arctan form of Mahmood et al. 2022);
* ``logarithmic``: ``metric = a + b log(n + d)`` (no ceiling);
* ``piecewise_power_law``: in log-log space a power law (a line) above a break ``n0`` and a concave
  quadratic below it, joined with equal slope (Jain et al. 2023: log-error against log-size is curved
  in the few-shot regime and straight in the high-shot one); the quadratic is held flat where it would
  turn upwards, so the curve stays monotone.

``select_fits`` fits every family on each leading part of the curve and scores it by how well it predicts
the *larger*, held-back sizes (the backtest the user cares about), each error weighted by the log of how
far it extrapolates, also trying to drop the first few (few-shot) sizes; the families are then weighted by
the inverse square of that error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from curato.errors import InputError

MIN_ERROR = 1e-4  # errors are clipped here before taking logs (a perfect score is still finite)
MIN_FIT_POINTS = 4
DROP_FIRST = (0, 3)  # leading sizes a family may leave out (the few-shot regime)
BISECTION_STEPS = 30  # m4's error to ~1e-9 of the chance level


@dataclass(frozen=True)
class CurveFamily:
    """One parametric learning-curve family over the error ``e(n)``."""

    name: str
    parameters: tuple[str, ...]
    error: Callable[[np.ndarray, np.ndarray, float], np.ndarray]  # (params, sizes, chance) -> error
    bounds: Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]
    starts: Callable[[np.ndarray, np.ndarray, float], list[np.ndarray]]
    ceiling: Callable[[np.ndarray], float]  # the metric as n -> infinity


def _power_law(p: np.ndarray, n: np.ndarray, chance: float) -> np.ndarray:
    log_a, b, c = p
    return c + np.exp(log_a - b * np.log(n))


def _m4(p: np.ndarray, n: np.ndarray, chance: float) -> np.ndarray:
    e_inf, log_beta, b, alpha = p
    rhs_scale = np.exp(log_beta - b * np.log(n))
    low, high = np.full(n.shape, e_inf), np.full(n.shape, chance)
    # (e - e_inf) rises and beta n^-b (chance - e)^alpha falls in e on (e_inf, chance): one root.
    for _ in range(BISECTION_STEPS):
        middle = 0.5 * (low + high)
        above = (middle - e_inf) > rhs_scale * np.maximum(chance - middle, 0.0) ** alpha
        high = np.where(above, middle, high)
        low = np.where(above, low, middle)
    return 0.5 * (low + high)


def _arctan(p: np.ndarray, n: np.ndarray, chance: float) -> np.ndarray:
    s, log_a, d = p
    return 1.0 - s * (2 / math.pi) * np.arctan(np.exp(log_a) * n + d)


def _logarithmic(p: np.ndarray, n: np.ndarray, chance: float) -> np.ndarray:
    a, b, d = p
    return 1.0 - (a + b * np.log(n + d))


def _piecewise(p: np.ndarray, n: np.ndarray, chance: float) -> np.ndarray:
    c, b, q, t = p
    u = np.log(n) - t
    if q > 0:
        u = np.maximum(u, -b / (2 * q))  # the quadratic's top: flat below it (monotone curve)
    return np.exp(c - b * u - q * np.minimum(u, 0.0) ** 2)


def _scale(n: np.ndarray, e: np.ndarray) -> tuple[float, float, float]:
    return float(np.log(n[0])), float(np.log(n[-1])), float(max(e.min(), MIN_ERROR))


FAMILIES: dict[str, CurveFamily] = {
    "power_law": CurveFamily(
        "power_law", ("log_a", "b", "c"), _power_law,
        lambda n, e, chance: (np.array([-30.0, 0.0, 0.0]), np.array([30.0, 3.0, _scale(n, e)[2]])),
        lambda n, e, chance: [np.array([math.log(max(e[0] - c, MIN_ERROR)) + b * math.log(n[0]), b, c])
                              for b in (0.3,) for c in (0.0, 0.5 * _scale(n, e)[2], 0.9 * _scale(n, e)[2])],
        lambda p: 1.0 - float(p[2])),
    "m4": CurveFamily(
        "m4", ("e_inf", "log_beta", "b", "alpha"), _m4,
        lambda n, e, chance: (np.array([0.0, -30.0, 0.0, 0.0]), np.array([_scale(n, e)[2], 30.0, 3.0, 5.0])),
        lambda n, e, chance: [np.array([c, math.log(max(e[0] - c, MIN_ERROR)) + b * math.log(n[0])
                                        - alpha * math.log(max(chance - e[0], MIN_ERROR)), b, alpha])
                              for b in (0.3, 0.8) for c in (0.5 * _scale(n, e)[2],) for alpha in (0.0, 1.0)],
        lambda p: 1.0 - float(p[0])),
    "arctan": CurveFamily(
        "arctan", ("s", "log_a", "d"), _arctan,
        lambda n, e, chance: (np.array([1e-3, -30.0, 0.0]), np.array([1.0, 10.0, 50.0])),
        lambda n, e, chance: [np.array([s, -math.log(n[len(n) // 2]) + shift, 0.0])
                              for s in (1.0 - 0.5 * _scale(n, e)[2], 1.0) for shift in (0.0, 2.0)],
        lambda p: float(p[0])),
    "logarithmic": CurveFamily(
        "logarithmic", ("a", "b", "d"), _logarithmic,
        lambda n, e, chance: (np.array([-10.0, 0.0, 0.0]), np.array([1.0, 1.0, 10.0 * float(n[0])])),
        lambda n, e, chance: [np.array([1 - e[0] - b * math.log(n[0]), b, 0.0]) for b in (0.02, 0.08)],
        lambda p: 1.0),
    "piecewise_power_law": CurveFamily(
        "piecewise_power_law", ("log_e_break", "b", "q", "log_n_break"), _piecewise,
        lambda n, e, chance: (np.array([math.log(MIN_ERROR), 0.0, 0.0, _scale(n, e)[0]]),
                              np.array([math.log(max(chance, MIN_ERROR)), 3.0, 5.0, _scale(n, e)[1]])),
        lambda n, e, chance: [np.array([math.log(max(e[i], MIN_ERROR)), b, 0.1, math.log(n[i])])
                              for i in (len(n) // 3, len(n) // 2) for b in (0.2, 0.6)],
        lambda p: 1.0),
}


@dataclass
class FittedCurve:
    """A family fitted to measured (size, metric) points."""

    family: str
    params: np.ndarray
    chance: float
    rms_log_error: float  # in-sample RMS of log-error residuals
    first_size: float  # the smallest size the fit used

    def metric(self, sizes: np.ndarray | Sequence[float] | float) -> np.ndarray:
        """The fitted metric at ``sizes``, clipped to [0, 1]."""
        n = np.atleast_1d(np.asarray(sizes, dtype=np.float64))
        return np.clip(1.0 - FAMILIES[self.family].error(self.params, n, self.chance), 0.0, 1.0)

    @property
    def ceiling(self) -> float:
        """The metric this curve approaches with unlimited data (1.0 for families without a ceiling)."""
        return float(min(1.0, max(0.0, FAMILIES[self.family].ceiling(self.params))))


def fit_curve(family: str, sizes: np.ndarray, metric: np.ndarray, *, chance: float,
              start: np.ndarray | None = None) -> FittedCurve | None:
    """Least-squares fit of one family to mean metric values (``sizes`` ascending); None if every start fails.

    ``start``: one initial parameter vector instead of the family's several (e.g. a bootstrap refit
    warm-started from the fit on the original points).
    """
    spec = FAMILIES[family]
    n = np.asarray(sizes, dtype=np.float64)
    e = np.clip(1.0 - np.asarray(metric, dtype=np.float64), MIN_ERROR, 1.0)
    chance = float(max(chance, e.max() + 1e-3))
    target = np.log(e)
    lower, upper = spec.bounds(n, e, chance)

    def residuals(p: np.ndarray) -> np.ndarray:
        return np.log(np.clip(spec.error(p, n, chance), MIN_ERROR, None)) - target

    best = None
    for guess in spec.starts(n, e, chance) if start is None else [np.asarray(start, dtype=np.float64)]:
        inside = np.clip(guess, lower + 1e-9 * (upper - lower), upper - 1e-9 * (upper - lower))
        try:
            result = least_squares(residuals, inside, bounds=(lower, upper), method="trf", max_nfev=200)
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(result.fun)) and (best is None or result.cost < best.cost):
            best = result
    if best is None:
        return None
    return FittedCurve(family, best.x, chance, float(np.sqrt(np.mean(best.fun ** 2))), float(n[0]))


@dataclass
class FamilyFit:
    """One family's final fit with its extrapolation score and weight in the forecast."""

    family: str
    fit: FittedCurve | None
    backtest_rmse: float  # metric units; inf when the family could not be scored
    drop_first: int
    weight: float = 0.0
    notes: list[str] = field(default_factory=list)
    # cut index j -> errors (fit on sizes[drop_first:j] minus measured) at the held-back sizes[j:]
    cut_errors: dict[int, np.ndarray] = field(default_factory=dict)


def held_back_errors(family: str, sizes: np.ndarray, metric: np.ndarray, *, chance: float, drop_first: int = 0,
                     min_points: int = MIN_FIT_POINTS) -> dict[int, np.ndarray]:
    """For every cut ``j`` that leaves ``min_points`` points to fit: ``family`` fitted on ``sizes[drop_first:j]``
    minus the measured metric at the held-back sizes ``sizes[j:]`` (metric units; cuts whose fit fails are left
    out)."""
    n, m = np.asarray(sizes, dtype=np.float64), np.asarray(metric, dtype=np.float64)
    errors: dict[int, np.ndarray] = {}
    for cut in range(drop_first + min_points, len(n)):
        fit = fit_curve(family, n[drop_first:cut], m[drop_first:cut], chance=chance)
        if fit is not None:
            errors[cut] = fit.metric(n[cut:]) - m[cut:]
    return errors


def horizon_weighted_rmse(sizes: np.ndarray, cut_errors: dict[int, np.ndarray]) -> float:
    """RMS of held-back errors, each squared error weighted by ``log(sizes[i] / sizes[j - 1])``, how far it
    extrapolates from its cut ``j``; inf without cuts.

    A forecast is asked for 2x to 1000x today's data, so the long extrapolations the curve can check should
    count most. (On the curves of docs/benchmarks.md this moved the mean error at 4x by at most 0.05 points
    against the last four cuts with equal weights: neither tells well which family will err least at 4x on a
    given curve.)
    """
    if not cut_errors:
        return math.inf
    n = np.asarray(sizes, dtype=np.float64)
    weights = np.concatenate([np.log(n[cut:] / n[cut - 1]) for cut in cut_errors])
    errors = np.concatenate(list(cut_errors.values()))
    return float(np.sqrt(np.sum(weights * errors ** 2) / np.sum(weights)))


def select_fits(sizes: np.ndarray, metric: np.ndarray, *, chance: float,
                families: Sequence[str] | None = None, min_points: int = MIN_FIT_POINTS) -> list[FamilyFit]:
    """Fit each family to the whole curve and weight it by its backtest error
    (``held_back_errors`` over every cut, ``horizon_weighted_rmse``).

    Each family leaves out the number of leading sizes (``DROP_FIRST``) that gives it the lowest backtest
    error. Weights are proportional to ``1 / rmse^2`` (floored at 0.001 so an exact fit does not take
    all weight) and sum to 1 over the families that could be scored; when none could (too few sizes), every
    family that fits gets the same weight. Sorted by weight, highest first.
    """
    n, m = _validated_curve(sizes, metric)
    names = list(families or FAMILIES)
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise InputError(f"curve family {unknown[0]!r} is unknown; known: {', '.join(FAMILIES)}")
    results = []
    for name in names:
        scored = []
        for drop in DROP_FIRST:
            if len(n) - drop >= min_points + 1:
                errors = held_back_errors(name, n, m, chance=chance, drop_first=drop, min_points=min_points)
                scored.append((horizon_weighted_rmse(n, errors), drop, errors))
        rmse, drop, cut_errors = min(scored, key=lambda item: (item[0], item[1]), default=(math.inf, 0, {}))
        drop = drop if math.isfinite(rmse) else 0
        fit = fit_curve(name, n[drop:], m[drop:], chance=chance)
        results.append(FamilyFit(name, fit, rmse, drop, cut_errors=cut_errors))
    usable = [r for r in results if r.fit is not None]
    if not usable:
        raise InputError("learning curve: no curve family could be fitted; measure more sizes")
    scored = [r for r in usable if math.isfinite(r.backtest_rmse)]
    if scored:
        raw = {r.family: 1.0 / max(r.backtest_rmse, 1e-3) ** 2 for r in scored}
    else:
        raw = {r.family: 1.0 for r in usable}
    total = sum(raw.values())
    for r in results:
        r.weight = raw.get(r.family, 0.0) / total
    return sorted(results, key=lambda r: -r.weight)


def weighted_metric(fits: Sequence[FamilyFit], sizes: np.ndarray | Sequence[float]) -> np.ndarray:
    """The forecast: the weight-averaged metric of the fitted families at ``sizes``."""
    n = np.atleast_1d(np.asarray(sizes, dtype=np.float64))
    total = np.zeros(n.shape)
    for entry in fits:
        if entry.weight > 0 and entry.fit is not None:
            total += entry.weight * entry.fit.metric(n)
    return total


def weighted_ceiling(fits: Sequence[FamilyFit]) -> float:
    """The forecast's metric with unlimited data (families without a ceiling count as 1.0)."""
    return float(sum(entry.weight * entry.fit.ceiling for entry in fits if entry.weight > 0 and entry.fit))


def _validated_curve(sizes: np.ndarray, metric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(sizes, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    if n.ndim != 1 or n.shape != m.shape:
        raise InputError(f"learning curve: sizes and metric values must be 1-D of equal length, got {n.shape} "
                         f"and {m.shape}")
    if len(n) < MIN_FIT_POINTS:
        raise InputError(f"learning curve: need at least {MIN_FIT_POINTS} sizes to fit, got {len(n)}")
    if not (np.all(np.isfinite(n)) and np.all(n > 0) and np.all(np.diff(n) > 0)):
        raise InputError("learning curve: sizes must be positive and strictly increasing")
    if not (np.all(np.isfinite(m)) and m.min() >= 0 and m.max() <= 1):
        raise InputError("learning curve: metric values must lie in [0, 1]")
    return n, m
