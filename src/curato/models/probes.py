"""Probes: how well the labels can actually be predicted from frozen features.

Two classic readings of a feature space, both without fine-tuning the backbone:

* ``knn_accuracy``: leave-one-out k-nearest-neighbour vote under cosine similarity (each sample is
  classified by its ``k`` most similar *other* samples; faiss via ``curato.neighbors.knn``).
* ``linear_probe_accuracy``: cross-validated linear softmax head, the same head as the audit's
  out-of-fold probabilities (``curato.models.oof``): standardise, whitened PCA, L2-regularised
  multinomial logistic regression, ``n_folds`` stratified folds; each sample is predicted by the head
  that did not see it.

Both report accuracy and balanced accuracy (mean recall over classes, which an imbalanced dataset
cannot inflate by favouring its big classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curato.errors import InputError

KNN_NEIGHBOURS = 10


@dataclass(frozen=True)
class ProbeAccuracy:
    """Accuracy and balanced accuracy of one probe's held-out predictions."""

    accuracy: float
    balanced_accuracy: float


def knn_accuracy(features: np.ndarray, labels: np.ndarray, *, k: int = KNN_NEIGHBOURS) -> ProbeAccuracy:
    """Leave-one-out accuracy of a ``k``-nearest-neighbour majority vote under cosine similarity.

    A tied vote goes to the class whose tied neighbours are the more similar in total. ``k`` is capped at
    ``n - 1``. Raises ``InputError`` on malformed input.
    """
    from curato.neighbors import knn

    codes, n_classes = _class_codes(features, labels, "kNN probe")
    if k < 1:
        raise InputError(f"kNN probe: k must be at least 1, not {k}")
    similarities, neighbours = knn(features, k)
    width = neighbours.shape[1]
    rows = np.repeat(np.arange(len(codes)), width)
    cells = rows * n_classes + codes[neighbours.ravel()]
    size = len(codes) * n_classes
    votes = np.bincount(cells, minlength=size).reshape(-1, n_classes)
    closeness = np.bincount(cells, weights=similarities.ravel().astype(np.float64), minlength=size)
    # Cosine similarities lie in [-1, 1], so a class's summed similarity spans less than 2k + 1: one more
    # vote always outweighs it, and among equal votes the more similar neighbours win.
    key = votes * (2.0 * width + 1.0) + closeness.reshape(-1, n_classes)
    return _scores(codes, key.argmax(axis=1))


def linear_probe_accuracy(features: np.ndarray, labels: np.ndarray, *, n_folds: int = 5,
                          seed: int = 0) -> ProbeAccuracy:
    """Cross-validated accuracy of a linear softmax head: the argmax of each sample's out-of-fold
    probabilities (``curato.models.oof.out_of_fold_probabilities``) against its label."""
    from curato.models.oof import out_of_fold_probabilities

    codes, n_classes = _class_codes(features, labels, "linear probe")
    probabilities = out_of_fold_probabilities(np.asarray(features), codes, n_folds=n_folds, seed=seed,
                                              n_classes=n_classes)
    return _scores(codes, probabilities.argmax(axis=1))


def _class_codes(features: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """Labels as codes 0..k-1 (sorted class order) after checking they match the features' rows."""
    shape = np.shape(features)
    y = np.asarray(labels)
    if len(shape) != 2:
        raise InputError(f"{what}: features must be a 2-D array (n, d), not shape {shape}")
    if y.shape != (shape[0],):
        raise InputError(f"{what}: labels must have shape ({shape[0]},) to match the features, got {y.shape}")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"{what}: labels hold {len(classes)} class; need at least two")
    return codes.astype(np.int64), len(classes)


def _scores(codes: np.ndarray, predicted: np.ndarray) -> ProbeAccuracy:
    from sklearn.metrics import balanced_accuracy_score  # ~1 s to import: only when a probe has run

    return ProbeAccuracy(accuracy=float(np.mean(predicted == codes)),
                         balanced_accuracy=float(balanced_accuracy_score(codes, predicted)))
