"""Auto-label routing: accept the model's label where it is right often enough, send the rest to people.

1. Calibrate: the head's confidences on human-labelled rows it did not train on (out-of-fold) fit a
   temperature (scipy, minimum log-loss) or an isotonic map from top-1 confidence to P(correct).
2. Per predicted class, a threshold on calibrated confidence: thresholds on a fixed grid are tested from the
   highest down (fixed-sequence testing); at each one the Clopper-Pearson lower bound (one-sided, level
   ``alpha``) of the precision of the calibration rows above it must reach the requested precision, and
   the first failure stops the descent; a class whose calibration rows never pass gets no threshold
   (nothing of it is auto-labelled). The class's threshold is then the lowest one, at or above the last
   that passed, at which the calibrated model itself also expects the requested precision of the rows it
   would accept (the mean calibrated confidence of the unlabelled rows of that class above it). This guards
   against a class whose few hundred calibration rows happen to hold none of a confusable cluster
   (Fashion-MNIST: long dresses taken for trousers): its record is perfect down to confidences the model
   itself calls 0.6-0.9, and the pool, which holds that cluster, falls short (docs/internals/active-tuning.md).
3. Unlabelled rows whose predicted class has a threshold and whose calibrated confidence reaches it are
   accepted. Expected wrong auto-labels = the sum of ``1 - calibrated confidence`` over them; the
   conservative figure uses, per class, the lower of its Clopper-Pearson bound and its expected precision.

The guarantee holds for pool rows exchangeable with the calibration rows (e.g. a random labelled set); an
actively chosen labelled set is harder than the pool, which makes the thresholds stricter, not looser.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from scipy.stats import beta

from curato.arrays import as_class_indices, as_matrix
from curato.errors import InputError

CALIBRATION_METHODS = ("temperature", "isotonic")
CONFIDENCE_LEVEL = 0.95
# Calibrated-confidence thresholds tried, highest first: 1 - 10^-4 ... 0.5, evenly on a log scale of the error.
THRESHOLD_GRID = 1.0 - np.geomspace(1e-4, 0.5, 48)


@dataclass
class Calibration:
    """A fitted confidence calibration; :meth:`confidence` maps probabilities to (predicted class, confidence)."""

    method: str
    temperature: float | None = None
    isotonic: object | None = None

    def confidence(self, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class and calibrated probability that it is right, per row."""
        probs = np.asarray(pred_probs, dtype=np.float64)
        predicted = probs.argmax(axis=1)
        if self.method == "temperature":
            scaled = log_softmax(np.log(np.clip(probs, 1e-300, 1.0)) / self.temperature, axis=1)
            return predicted, np.exp(scaled.max(axis=1))
        return predicted, np.asarray(self.isotonic.predict(probs.max(axis=1)), dtype=np.float64)


def fit_calibration(pred_probs: np.ndarray, labels: np.ndarray, *, method: str = "temperature") -> Calibration:
    """Fit ``method`` (temperature | isotonic) on held-out probabilities of labelled rows and their labels."""
    probs, y = _validated(pred_probs, labels)
    if method == "temperature":
        log_probs = np.log(np.clip(probs, 1e-300, 1.0))

        def log_loss(log_temperature: float) -> float:
            scaled = log_softmax(log_probs / np.exp(log_temperature), axis=1)
            return float(-scaled[np.arange(len(y)), y].mean())

        found = minimize_scalar(log_loss, bounds=(-3.0, 3.0), method="bounded")
        return Calibration("temperature", temperature=float(np.exp(found.x)))
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        correct = (probs.argmax(axis=1) == y).astype(np.float64)
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probs.max(axis=1), correct)
        return Calibration("isotonic", isotonic=fitted)
    raise InputError(f"--calibration {method!r} is unknown; choose one of {', '.join(CALIBRATION_METHODS)}")


def clopper_pearson_lower(successes: np.ndarray, trials: np.ndarray, *, level: float = CONFIDENCE_LEVEL) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound of a binomial proportion (0 where there are no successes)."""
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(1.0 - level, successes, trials - successes + 1.0)
    return np.where(successes > 0, np.nan_to_num(bound, nan=0.0), 0.0)


def class_thresholds(confidence: np.ndarray, predicted: np.ndarray, labels: np.ndarray, *, precision: float,
                     n_classes: int, level: float = CONFIDENCE_LEVEL,
                     pool_confidence: np.ndarray | None = None,
                     pool_predicted: np.ndarray | None = None) -> list[dict]:
    """Per predicted class: ``calibration_threshold``, the lowest grid threshold reached by fixed-sequence testing
    on the calibration rows (see the module docstring), with its calibration support; and ``threshold``, the
    lowest grid threshold at or above it at which, when ``pool_confidence`` / ``pool_predicted`` (calibrated
    confidence and predicted class of the rows to be routed) are given, the mean calibrated confidence of that
    class's pool rows above it (``expected_precision``) also reaches ``precision``. Both are None when no
    threshold passes the calibration test."""
    if not 0.5 <= precision < 1.0:
        raise InputError(f"--precision {precision}: ask for a precision in [0.5, 1), e.g. 0.99")
    if (pool_confidence is None) != (pool_predicted is None):
        raise InputError("class thresholds: pass both pool_confidence and pool_predicted, or neither")
    correct = predicted == labels
    out = []
    for klass in range(n_classes):
        rows = predicted == klass
        ordered = np.sort(confidence[rows])
        hits = np.sort(confidence[rows & correct])
        trials = len(ordered) - np.searchsorted(ordered, THRESHOLD_GRID, side="left")
        successes = len(hits) - np.searchsorted(hits, THRESHOLD_GRID, side="left")
        bounds = clopper_pearson_lower(successes, trials, level=level)
        # A threshold with so few rows that even a perfect record could not pass is skipped, not failed:
        # the descent starts where a verdict is possible (this depends on the confidences, not on correctness).
        possible = clopper_pearson_lower(trials, trials, level=level) >= precision
        proven = None
        for index in np.flatnonzero(possible):
            if bounds[index] < precision:
                break
            proven = index
        final = proven
        expected = np.full(len(THRESHOLD_GRID), np.nan)
        if proven is not None and pool_confidence is not None:
            expected = _mean_above(np.asarray(pool_confidence)[np.asarray(pool_predicted) == klass])
            # The grid runs from the highest threshold down: the lowest one at or above the proven threshold
            # whose pool rows the model expects to be right often enough (none above, nan: accepts nothing).
            trusted = np.flatnonzero(~(expected[: proven + 1] < precision))
            final = int(trusted[-1]) if trusted.size else None  # e.g. a request above the grid's top, 1 - 1e-4
        out.append({"class": klass, "threshold": None if final is None else float(THRESHOLD_GRID[final]),
                    "calibration_threshold": None if proven is None else float(THRESHOLD_GRID[proven]),
                    "calibration_rows": int(rows.sum()),
                    "calibration_accepted": 0 if proven is None else int(trials[proven]),
                    "calibration_correct": 0 if proven is None else int(successes[proven]),
                    "precision_lower_bound": None if proven is None else float(bounds[proven]),
                    "expected_precision": None if final is None or np.isnan(expected[final])
                    else float(expected[final])})
    return out


def _mean_above(values: np.ndarray) -> np.ndarray:
    """Mean of the ``values`` at or above each ``THRESHOLD_GRID`` entry (nan where there are none)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    start = np.searchsorted(ordered, THRESHOLD_GRID, side="left")
    tail_sums = np.concatenate([np.cumsum(ordered[::-1])[::-1], [0.0]])
    counts = len(ordered) - start
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, tail_sums[start] / counts, np.nan)


@dataclass
class Routing:
    """Which unlabelled rows get the model's label, and what that is expected to cost."""

    accepted: np.ndarray  # indices into the pool rows
    predicted: np.ndarray  # predicted class per pool row
    confidence: np.ndarray  # calibrated confidence per pool row
    thresholds: list[dict]
    calibration: Calibration
    precision: float
    expected_wrong: float
    expected_wrong_bound: float


def route_auto_labels(calibration_probs: np.ndarray, calibration_labels: np.ndarray, pool_probs: np.ndarray, *,
                      precision: float, method: str = "temperature",
                      level: float = CONFIDENCE_LEVEL) -> Routing:
    """Calibrate on ``calibration_probs`` (held-out probabilities of human-labelled rows) and accept the pool
    rows whose calibrated confidence reaches their predicted class's threshold for ``precision``."""
    probs, y = _validated(calibration_probs, calibration_labels)
    pool = np.asarray(pool_probs, dtype=np.float64)
    if pool.ndim != 2 or pool.shape[1] != probs.shape[1]:
        raise InputError(f"pool_probs must have {probs.shape[1]} columns like calibration_probs, got {pool.shape}")
    calibration = fit_calibration(probs, y, method=method)
    cal_predicted, cal_confidence = calibration.confidence(probs)
    predicted, confidence = calibration.confidence(pool)
    thresholds = class_thresholds(cal_confidence, cal_predicted, y, precision=precision, n_classes=probs.shape[1],
                                  level=level, pool_confidence=confidence, pool_predicted=predicted)
    cutoff = np.array([np.inf if t["threshold"] is None else t["threshold"] for t in thresholds])
    accepted = np.flatnonzero(confidence >= cutoff[predicted])
    # The conservative figure takes, per class, the lower of the calibration bound and the model's own estimate.
    bound = np.array([0.0 if t["precision_lower_bound"] is None
                      else min(t["precision_lower_bound"], t["expected_precision"] or 1.0) for t in thresholds])
    per_class = np.bincount(predicted[accepted], minlength=probs.shape[1])
    for entry, count in zip(thresholds, per_class, strict=True):
        entry["accepted"] = int(count)
    return Routing(accepted=accepted, predicted=predicted, confidence=confidence, thresholds=thresholds,
                   calibration=calibration, precision=float(precision),
                   expected_wrong=float(np.sum(1.0 - confidence[accepted])),
                   expected_wrong_bound=float(np.sum(per_class * (1.0 - bound))))


def _validated(pred_probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = as_matrix("calibration: pred_probs", pred_probs, finite=False)
    if len(probs) == 0:
        raise InputError("calibration: no human-labelled rows to calibrate on; label some samples first")
    y, _ = as_class_indices("calibration", labels, rows=len(probs), n_classes=probs.shape[1])
    return probs, y
