"""Active-learning simulation: known labels play the oracle.

For every strategy and seed the loop starts with nothing labelled, and at round ``r`` labels rows until
``schedule[r]`` are labelled, fits the softmax head (:func:`curato.active.heads.head_probabilities`) on
them and measures its accuracy on fixed held-out test rows (never selectable). Strategies that need a
head (uncertainty, BADGE, ensembles) take their first batch at random, the same draw as ``random``'s first
batch for that seed; ``auto`` and the cold-start strategies pick it themselves.

Each finished ``(strategy, seed, round)`` is handed to ``on_result`` with the rows it picked, and a
``completed`` mapping of such records replays them, so an interrupted simulation resumes where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from curato.active.heads import (
    cross_fitted_probabilities,
    ensemble_probabilities,
    head_probabilities,
)
from curato.active.routing import route_auto_labels
from curato.active.strategies import available_strategies, select_batch, strategy_spec
from curato.errors import InputError
from curato.progress import SILENT, Progress


def label_schedule(budget: int, rounds: int, *, start: int | None = None) -> list[int]:
    """Cumulative labels after each round: geometric from ``start`` (default ``budget / 2^(rounds-1)``) to
    ``budget``, rounded, strictly increasing."""
    if budget < 1 or rounds < 1:
        raise InputError(f"--budget {budget} / --rounds {rounds}: both must be at least 1")
    first = start if start is not None else max(1, round(budget / 2 ** (rounds - 1)))
    if not 1 <= first <= budget:
        raise InputError(f"--start {first}: the first round's labels must be between 1 and --budget {budget}")
    if rounds == 1:
        return [budget]
    values = np.round(np.geomspace(first, budget, rounds)).astype(int)
    schedule = sorted(set(values.tolist()))
    if len(schedule) < rounds:
        raise InputError(f"--rounds {rounds}: too many rounds between {first} and {budget} labels; use fewer rounds")
    return schedule


def simulate_active_learning(embeddings: np.ndarray, labels: np.ndarray, *, test: np.ndarray,
                             strategies: Sequence[str], schedule: Sequence[int], seeds: Sequence[int],
                             features: np.ndarray | None = None, n_classes: int | None = None,
                             head: Callable[..., np.ndarray] | None = None,
                             completed: Mapping[tuple[str, int, int], dict[str, Any]] | None = None,
                             on_result: Callable[[dict[str, Any]], None] | None = None,
                             progress: Progress = SILENT) -> list[dict[str, Any]]:
    """Run every (strategy, seed) loop; returns one record per (strategy, seed, round) with ``labels``,
    ``accuracy`` (on the ``test`` rows), ``picked`` (row indices) and timings.

    ``head(labeled_mask, seed)`` -> ``(n, k)`` probabilities replaces the active-learning head
    (:func:`curato.active.heads.head_probabilities`), e.g. to compare with another library on exactly the same
    learner; the head that is measured is also the one the strategies rank by.
    """
    y = np.asarray(labels, dtype=np.int64)
    test_mask = np.asarray(test, dtype=bool)
    if test_mask.shape != y.shape or not test_mask.any():
        raise InputError("simulation needs a non-empty test mask with one entry per row")
    known = available_strategies()
    unknown = [name for name in strategies if name not in known]
    if unknown:
        raise InputError(f"--strategies: {', '.join(unknown)} unknown; choose from {', '.join(known)}")
    pool_size = int((~test_mask).sum())
    if schedule[-1] > pool_size:
        raise InputError(f"--budget {schedule[-1]}: the pool has only {pool_size} samples outside the test rows")
    k = int(n_classes or y.max() + 1)

    def default_head(mask: np.ndarray, seed: int) -> np.ndarray:
        return head_probabilities(embeddings, y, mask, n_classes=k, seed=seed)

    fit = head or default_head
    completed = completed or {}
    progress.stage("simulate", len(strategies) * len(seeds) * len(schedule))
    records = []
    for strategy in strategies:
        for seed in seeds:
            labeled = np.zeros(len(y), dtype=bool)
            probs: np.ndarray | None = None
            for round_index, target in enumerate(schedule):
                done = completed.get((strategy, int(seed), round_index))
                if done is not None:
                    labeled[np.asarray(done["picked"], dtype=np.int64)] = True
                    probs = None  # recomputed only if a later round still has to run
                    records.append(done)
                    progress.advance(1)
                    continue
                if probs is None and labeled.any():
                    probs = fit(labeled, seed)
                started = time.perf_counter()
                name = strategy
                if probs is None and not strategy_spec(strategy).cold_start:
                    name = "random"
                extra: dict[str, Any] = {}
                kind = strategy_spec(name).ensemble
                if kind is not None:
                    extra["ensemble_probs"] = ensemble_probabilities(kind, embeddings, y, labeled, n_classes=k,
                                                                     seed=seed)
                selection = select_batch(name, budget=int(target - labeled.sum()), labeled=labeled,
                                         selectable=~test_mask,
                                         pred_probs=probs, features=features, n_classes=k,
                                         seed=_round_seed(seed, round_index), structure_seed=int(seed), **extra)
                select_seconds = time.perf_counter() - started
                labeled[selection.indices] = True
                started = time.perf_counter()
                probs = fit(labeled, seed)
                accuracy = float(np.mean(probs[test_mask].argmax(axis=1) == y[test_mask]))
                record = {"strategy": strategy, "seed": int(seed), "round": round_index, "labels": int(target),
                          "accuracy": accuracy, "picked": selection.indices.tolist(), "selected_by": name,
                          "select_seconds": select_seconds, "fit_seconds": time.perf_counter() - started}
                records.append(record)
                if on_result is not None:
                    on_result(record)
                progress.advance(1)
    return records


def _round_seed(seed: int, round_index: int) -> int:
    # The first round's random draw is the same for every strategy that starts at random (same seed).
    return int(seed) * 1_000 + round_index


def summarize_curves(records: Sequence[dict[str, Any]], *, strategies: Sequence[str], schedule: Sequence[int],
                     seeds: Sequence[int], baseline: str = "random") -> dict[str, dict[str, Any]]:
    """Per strategy: mean / per-seed accuracy per round, the seed band (min..max), the normalised area under
    the mean curve over log labels, the labels it needs to reach ``baseline``'s final accuracy and its
    ``label_efficiency`` at each budget (labels the baseline needs / labels the strategy needs for the
    baseline's accuracy at that budget; log-linear interpolation between rounds)."""
    by_key = {(r["strategy"], r["seed"], r["round"]): r["accuracy"] for r in records}
    curves: dict[str, dict[str, Any]] = {}
    for strategy in strategies:
        per_seed = {str(seed): [by_key[(strategy, seed, r)] for r in range(len(schedule))] for seed in seeds}
        matrix = np.array(list(per_seed.values()))
        curves[strategy] = {"labels": list(map(int, schedule)), "accuracy": matrix.mean(axis=0).tolist(),
                            "per_seed": per_seed, "low": matrix.min(axis=0).tolist(),
                            "high": matrix.max(axis=0).tolist(), "auc": _normalised_auc(schedule, matrix.mean(axis=0))}
    reference = curves.get(baseline)
    # The baseline's accuracy at a budget is the best it reached by then (seed-averaged curves are not always
    # monotone; a dip would otherwise credit every strategy, the baseline included, with a spurious gain).
    reference_accuracy = None if reference is None else np.maximum.accumulate(reference["accuracy"]).tolist()
    for curve in curves.values():
        if reference is None:
            curve["labels_to_reach_random_final"] = None
            curve["label_efficiency"] = []
            continue
        curve["labels_to_reach_random_final"] = _labels_needed(schedule, curve["accuracy"], reference_accuracy[-1])
        efficiency = []
        for budget, target in zip(schedule, reference_accuracy, strict=True):
            needed = _labels_needed(schedule, curve["accuracy"], target)
            status = "reached" if needed is not None else "not_reached"
            if needed is not None and needed <= schedule[0] and curve["accuracy"][0] > target:
                status = "at_least"  # reached before the first round: the ratio is a lower bound
            efficiency.append({"labels": int(budget), "random_accuracy": float(target),
                               "labels_needed": needed, "efficiency": None if needed is None else budget / needed,
                               "status": status})
        curve["label_efficiency"] = efficiency
    return curves


def _normalised_auc(schedule: Sequence[int], accuracy: np.ndarray) -> float:
    if len(schedule) == 1:
        return float(accuracy[0])
    x = np.log10(np.asarray(schedule, dtype=np.float64))
    return float(np.trapezoid(accuracy, x) / (x[-1] - x[0]))


def _labels_needed(schedule: Sequence[int], accuracy: Sequence[float], target: float) -> float | None:
    """Labels at which the (running-maximum) curve first reaches ``target``, interpolated on log labels;
    ``schedule[0]`` when the first round already does, None when it never does."""
    best = np.maximum.accumulate(np.asarray(accuracy, dtype=np.float64))
    reached = np.flatnonzero(best >= target - 1e-12)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(schedule[0])
    low, high = best[i - 1], best[i]
    fraction = 1.0 if high <= low else (target - low) / (high - low)
    log_labels = math.log(schedule[i - 1]) + fraction * (math.log(schedule[i]) - math.log(schedule[i - 1]))
    return float(math.exp(log_labels))


def simulate_routing(embeddings: np.ndarray, labels: np.ndarray, labeled: np.ndarray, pool: np.ndarray, *,
                     precisions: Sequence[float], method: str = "temperature", n_classes: int | None = None,
                     seed: int = 0) -> list[dict[str, Any]]:
    """Auto-label routing with ``labeled`` rows as the human-labelled calibration set, measured on the
    ``pool`` rows that are not labelled (their known labels are the truth). One dict per requested precision;
    its ``classes`` holds each predicted class's thresholds and calibration support (as
    :func:`curato.active.routing.class_thresholds` gives them), rows accepted, wrong and measured precision."""
    y = np.asarray(labels, dtype=np.int64)
    k = int(n_classes or y.max() + 1)
    probs = cross_fitted_probabilities(embeddings, y, labeled, n_classes=k, seed=seed)
    targets = np.flatnonzero(np.asarray(pool, dtype=bool) & ~labeled)
    out = []
    for precision in precisions:
        routing = route_auto_labels(probs[labeled], y[labeled], probs[targets], precision=precision, method=method)
        accepted = routing.accepted
        right = routing.predicted[accepted] == y[targets][accepted]
        correct = int(np.sum(right))
        wrong_per_class = np.bincount(routing.predicted[accepted][~right], minlength=k)
        classes = [{**entry, "wrong": int(wrong_per_class[entry["class"]]),
                    "measured_precision": None if entry["accepted"] == 0
                    else 1.0 - wrong_per_class[entry["class"]] / entry["accepted"]} for entry in routing.thresholds]
        out.append({"seed": int(seed), "requested_precision": float(precision), "calibration": method,
                    "calibration_labels": int(labeled.sum()), "pool": len(targets),
                    "auto_labelled": len(accepted), "share_auto_labelled": len(accepted) / max(len(targets), 1),
                    "measured_precision": None if len(accepted) == 0 else correct / len(accepted),
                    "wrong": int(len(accepted) - correct), "expected_wrong": routing.expected_wrong,
                    "expected_wrong_bound": routing.expected_wrong_bound, "classes": classes})
    return out
