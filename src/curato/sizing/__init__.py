"""Sizing: how many labels reach a target metric, and what augmentation or pseudo-labels are worth in labels.

Pure functions over arrays: ``curve_sizes`` / ``nested_subset`` (the subsets), ``CurveFolds`` (what each seed trains
on and is scored on: an evaluation split, or cross-fitting over stratified folds), ``measure_curve`` with
``head_scorer`` (one head width, ``curve_components``, for the whole curve) or ``hook_scorer`` (the measured
points), ``select_fits`` (curve families weighted by extrapolation error), ``forecast`` / ``backtest`` /
``labels_worth`` (the answers, with bootstrap intervals); ``curato.sizing.meta`` and ``curato.sizing.prior``: the
forecasts learned on LCDB real curves (the meta-model is the default of ``curato size``).
``curato.commands.size.run_size`` is the workspace shell behind ``curato size``; the folds come from
``curato.arrays.stratified_folds``.
"""

from curato.sizing.curves import FAMILIES, FamilyFit, FittedCurve, fit_curve, select_fits, weighted_metric
from curato.sizing.forecast import backtest, forecast, labels_needed, labels_worth, per_class_answers
from curato.sizing.measure import (
    METRICS,
    classification_scores,
    curve_components,
    curve_values,
    head_scorer,
    hook_scorer,
    measure_curve,
    train_and_score_head,
)
from curato.sizing.subsets import CurveFolds, curve_sizes, nested_subset

__all__ = [
    "FAMILIES",
    "METRICS",
    "CurveFolds",
    "FamilyFit",
    "FittedCurve",
    "backtest",
    "classification_scores",
    "curve_components",
    "curve_sizes",
    "curve_values",
    "fit_curve",
    "forecast",
    "head_scorer",
    "hook_scorer",
    "labels_needed",
    "labels_worth",
    "measure_curve",
    "nested_subset",
    "per_class_answers",
    "select_fits",
    "train_and_score_head",
    "weighted_metric",
]
