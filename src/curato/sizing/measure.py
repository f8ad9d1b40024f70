"""Measuring a learning curve: train on each (size, seed) subset of the seed's pool, score on rows it never saw
(``CurveFolds``: an evaluation split, or cross-fitting).

The cheap model is ``curato.models.oof.fit_predict_probabilities`` (the audit's softmax head) on
embeddings, with a whitened-PCA width fixed for the whole curve (``curve_components``);
``hook_scorer`` wraps a user's own ``train_and_score(train_ids, eval_ids) -> float`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, recall_score

from curato.errors import InputError
from curato.models.oof import fit_predict_probabilities, pca_components
from curato.sizing.subsets import CurveFolds, nested_subset

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
# A scorer maps (pool positions of the training subset, seed) to {"accuracy": ..., "recall": [...], ...}.
Scorer = Callable[[np.ndarray, int], dict[str, Any]]


def classification_scores(true_labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean recall over classes present), macro F1 and per-class recall."""
    classes = np.arange(n_classes)
    recall = recall_score(true_labels, predicted, labels=classes, average=None, zero_division=0)
    present = np.isin(classes, true_labels)
    return {"accuracy": float(accuracy_score(true_labels, predicted)),
            "balanced_accuracy": float(np.mean(recall[present])),
            "macro_f1": float(f1_score(true_labels, predicted, labels=classes[present], average="macro",
                                       zero_division=0)),
            "recall": [float(r) if p else None for r, p in zip(recall, present, strict=True)]}


def curve_components(n_pool: int) -> int:
    """The head's whitened-PCA width for every point of a learning curve over a pool of ``n_pool`` rows: the
    width the default head uses on the whole pool.

    The default head widens with its training set (``pca_components(n)``, one dimension per 16 rows), so a
    curve measured with it mixes "more data" with "a bigger model": on scikit-learn digits the curve is
    steepest where the width grows, and a forecast from 25% of the pool over-shot the metric at 100% by
    +3.2 points on average (10 held-out splits), against +0.6 with the width fixed (docs/benchmarks.md).
    With one width the L2 penalty, whose weight falls as 1/n, does the small-sample regularisation.
    """
    return pca_components(int(n_pool))


def train_and_score_head(embeddings: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, eval_rows: np.ndarray,
                         *, n_classes: int, seed: int = 0, extra_embeddings: np.ndarray | None = None,
                         extra_labels: np.ndarray | None = None, components: int | None = None) -> dict[str, Any]:
    """Fit the softmax head on ``train_rows`` (plus optional extra rows, e.g. augmented copies or
    pseudo-labelled samples) and score it on ``eval_rows``; returns ``classification_scores``.
    ``components``: the head's whitened-PCA width (default: the head's own, which grows with the rows)."""
    parts = [embeddings[train_rows]]
    targets = [labels[train_rows]]
    if extra_embeddings is not None and len(extra_embeddings):
        parts.append(extra_embeddings)
        targets.append(np.asarray(extra_labels))
    n_train = sum(len(p) for p in parts)
    x = np.concatenate([*parts, embeddings[eval_rows]]).astype(np.float32, copy=False)
    y = np.concatenate([*targets, np.full(len(eval_rows), -1)]).astype(np.int64)
    weights = np.zeros(len(x))
    weights[:n_train] = 1.0
    probs = fit_predict_probabilities(x, y, weights, n_classes=n_classes, seed=seed, components=components)
    return classification_scores(labels[eval_rows], probs[n_train:].argmax(axis=1), n_classes)


def head_scorer(embeddings: np.ndarray, labels: np.ndarray, folds: CurveFolds, *, n_classes: int,
                components: int | None = None, width_grows: bool = False) -> Scorer:
    """A scorer training the softmax head on ``folds.pool(seed)[subset]`` and scoring ``folds.evaluation(seed)``;
    the head's width is ``components``, by default ``curve_components(folds.pool_size)`` at every size;
    ``width_grows``: the default head's own width at each size instead (one whitened dimension per 16 training
    rows)."""
    if width_grows and components is not None:
        raise InputError("head scorer: pass components or width_grows, not both")
    width = None if width_grows else curve_components(folds.pool_size) if components is None else int(components)

    def score(subset: np.ndarray, seed: int) -> dict[str, Any]:
        return train_and_score_head(embeddings, labels, folds.pool(seed)[subset], folds.evaluation(seed),
                                    n_classes=n_classes, seed=seed, components=width)

    return score


def hook_scorer(train_and_score: Callable[[list[str], list[str]], float], ids: Sequence[str],
                folds: CurveFolds) -> Scorer:
    """A scorer calling the user's ``train_and_score(train_ids, eval_ids) -> float`` (a metric in [0, 1]) with the
    ids (``ids``: every row's) of ``folds.pool(seed)[subset]`` and of ``folds.evaluation(seed)``."""
    names = np.asarray(ids, dtype=object)

    def score(subset: np.ndarray, seed: int) -> dict[str, Any]:
        value = train_and_score(names[folds.pool(seed)[subset]].tolist(), names[folds.evaluation(seed)].tolist())
        try:
            value = float(value)
        except (TypeError, ValueError) as error:
            raise InputError(f"train_and_score must return a number in [0, 1], returned {value!r}") from error
        if not 0.0 <= value <= 1.0:
            raise InputError(f"train_and_score must return a metric in [0, 1], returned {value}")
        return {"score": value}

    return score


def measure_curve(labels: np.ndarray, folds: CurveFolds, sizes: Iterable[int], seeds: Iterable[int], score: Scorer,
                  *, known: dict[tuple[int, int], dict[str, Any]] | None = None,
                  on_point: Callable[[int, int, dict[str, Any]], None] | None = None) -> dict[tuple[int, int], dict]:
    """Scores of every (size, seed): the nested stratified subset, of that size and seed, of seed's pool
    ``folds.pool(seed)`` (``labels``: every row's class).

    Points in ``known`` are not recomputed (a resumed run); each new one is passed to ``on_point(size,
    seed, scores)`` as soon as it is done (e.g. to store it). With one fold every seed draws the same subset at
    the full pool size, so only the first seed is measured there.
    """
    labels = np.asarray(labels)
    seeds = list(seeds)
    results = dict(known or {})
    for size, seed in curve_plan(folds, sizes, seeds):
        if (size, seed) in results:
            continue
        scores = score(nested_subset(labels[folds.pool(seed)], size, seed=seed), seed)
        results[(size, seed)] = scores
        if on_point is not None:
            on_point(size, seed, scores)
    return results


def curve_plan(folds: CurveFolds, sizes: Iterable[int], seeds: Sequence[int]) -> list[tuple[int, int]]:
    """The (size, seed) pairs a curve measures, smallest sizes first (one seed at the full pool size, unless the
    seeds' pools differ: cross-fitting)."""
    full = folds.pool_size
    return [(int(size), int(seed)) for size in sorted(set(int(s) for s in sizes))
            for seed in (seeds[:1] if size >= full and not folds.rotating else seeds)]


def curve_values(points: dict[tuple[int, int], dict[str, Any]], metric: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sizes (ascending) and, per size, the metric values over its seeds."""
    sizes = np.array(sorted({size for size, _ in points}), dtype=np.int64)
    values = [np.array([scores[metric] for (s, _), scores in sorted(points.items()) if s == size], dtype=np.float64)
              for size in sizes]
    return sizes, values
