"""Heads that feed the query strategies: the softmax head on labelled rows, a bootstrap ensemble of such heads
(one joint fit of :func:`curato.models.oof.fit_predict_probabilities`), and an MC-dropout MLP for BALD."""

from __future__ import annotations

import numpy as np

from curato.errors import InputError
from curato.models.oof import fit_predict_probabilities, pca_components, whitened_pca

# The active-learning head's whitened PCA width never drops below this: the default rule (one dimension per 16
# labelled rows, ``pca_components``) suits out-of-fold estimates on a whole dataset, but at the few hundred labels
# of an active-learning loop 8-50 axes underfit Fashion-MNIST's embeddings (docs/internals/active-tuning.md).
HEAD_MIN_COMPONENTS = 64
ENSEMBLE_HEADS = 5
MC_SAMPLES = 20
MC_HIDDEN = 256
MC_DROPOUT = 0.5
MC_STEPS = 300
MC_BATCH = 256


def _training_labels(labels: np.ndarray, labeled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(labeled, dtype=bool)
    y = np.asarray(labels)
    if mask.shape != y.shape:
        raise InputError(f"labeled mask has shape {mask.shape}, labels {y.shape}; pass one entry per row")
    if not mask.any():
        raise InputError("no labelled rows: a head needs labels; label a first batch (e.g. --strategy typiclust)")
    return np.where(mask, y, -1).astype(np.int64), mask


def head_components(n_labeled: int) -> int:
    """Whitened PCA width of the active-learning head for ``n_labeled`` labelled rows: ``pca_components``, but at
    least ``HEAD_MIN_COMPONENTS`` (the PCA keeps fewer when the embeddings have fewer informative axes)."""
    return max(HEAD_MIN_COMPONENTS, pca_components(n_labeled))


def head_probabilities(embeddings: np.ndarray, labels: np.ndarray, labeled: np.ndarray, *,
                       n_classes: int | None = None, seed: int = 0, components: int | None = None) -> np.ndarray:
    """``(n, k)`` probabilities for every row from the softmax head trained on the labelled rows.

    ``components``: the head's whitened PCA width (default ``head_components`` of the labelled rows).
    """
    y, mask = _training_labels(labels, labeled)
    width = head_components(int(mask.sum())) if components is None else components
    return fit_predict_probabilities(embeddings, y, mask.astype(np.float64), n_classes=n_classes, seed=seed,
                                     components=width)


def bootstrap_ensemble_probabilities(embeddings: np.ndarray, labels: np.ndarray, labeled: np.ndarray, *,
                                     heads: int = ENSEMBLE_HEADS, n_classes: int | None = None,
                                     seed: int = 0) -> np.ndarray:
    """``(heads, n, k)``: softmax heads each trained on a Poisson(1) bootstrap of the labelled rows (fitted in
    one joint run), predicting every row."""
    y, mask = _training_labels(labels, labeled)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.0, size=(int(mask.sum()), heads)).astype(np.float64)
    empty = counts.sum(axis=0) == 0
    counts[0, empty] = 1.0  # a head with no rows at all (tiny labelled sets) keeps one
    weights = np.zeros((len(mask), heads))
    weights[mask] = counts
    return fit_predict_probabilities(embeddings, y, weights, n_classes=n_classes, seed=seed,
                                     components=head_components(int(mask.sum())))


def mc_dropout_probabilities(embeddings: np.ndarray, labels: np.ndarray, labeled: np.ndarray, *,
                             samples: int = MC_SAMPLES, n_classes: int | None = None, seed: int = 0) -> np.ndarray:
    """``(samples, n, k)``: predictions of a one-hidden-layer MLP (dropout 0.5) on the whitened PCA of the
    embeddings, with dropout left on at prediction time (Gal & Ghahramani 2016). Needs torch."""
    try:
        import torch
    except ImportError as error:  # pragma: no cover - torch is an optional extra
        raise InputError("strategy 'bald' needs torch: pip install 'curato[torch]'") from error
    y, mask = _training_labels(labels, labeled)
    k = int(n_classes or y.max() + 1)
    rng = np.random.default_rng(seed)
    features = whitened_pca(np.asarray(embeddings), head_components(int(mask.sum())), rng)
    threads = torch.get_num_threads()
    # Tiny products: with more than one intra-op thread torch spent 10-30x longer waiting than computing
    # on two contended cores.
    torch.set_num_threads(1)
    try:
        return _mc_dropout(torch, features, y, mask, k, samples=samples, seed=seed)
    finally:
        torch.set_num_threads(threads)


def ensemble_probabilities(kind: str, embeddings: np.ndarray, labels: np.ndarray, labeled: np.ndarray, *,
                           n_classes: int, seed: int = 0) -> np.ndarray:
    """(heads, n, k) probabilities of the ensemble a strategy asks for: ``"bootstrap"`` heads or
    ``"mc-dropout"`` samples (see ``StrategySpec.ensemble``)."""
    if kind == "bootstrap":
        return bootstrap_ensemble_probabilities(embeddings, labels, labeled, n_classes=n_classes, seed=seed)
    if kind == "mc-dropout":
        return mc_dropout_probabilities(embeddings, labels, labeled, n_classes=n_classes, seed=seed)
    raise ValueError(f"unknown ensemble kind {kind!r}; expected 'bootstrap' or 'mc-dropout'")


def _mc_dropout(torch, features: np.ndarray, y: np.ndarray, mask: np.ndarray, k: int, *, samples: int,
                seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    inputs = torch.from_numpy(np.ascontiguousarray(features))
    model = torch.nn.Sequential(torch.nn.Linear(features.shape[1], MC_HIDDEN), torch.nn.ReLU(),
                                torch.nn.Dropout(MC_DROPOUT), torch.nn.Linear(MC_HIDDEN, k))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    train_x, train_y = inputs[torch.from_numpy(mask)], torch.from_numpy(y[mask])
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(MC_STEPS):
        batch = torch.randint(len(train_y), (min(MC_BATCH, len(train_y)),), generator=generator)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        passes = [torch.softmax(model(inputs), dim=1).numpy() for _ in range(samples)]
    return np.stack(passes).astype(np.float64)


def cross_fitted_probabilities(embeddings: np.ndarray, labels: np.ndarray, labeled: np.ndarray, *,
                               n_folds: int = 5, n_classes: int | None = None, seed: int = 0) -> np.ndarray:
    """``(n, k)`` probabilities from ``n_folds`` heads fitted jointly on stratified folds of the labelled rows:
    each labelled row is predicted by the head that did not see it (out-of-fold: calibration data), each
    unlabelled row by the head of a fold drawn at random, so pool and calibration predictions come from the
    same kind of head (what the routing guarantee needs)."""
    from curato.models.oof import stratified_folds

    y, mask = _training_labels(labels, labeled)
    rng = np.random.default_rng(seed)
    if np.bincount(y[mask]).max() < 2 or mask.sum() < 2 * n_folds:
        raise InputError(f"routing needs at least {2 * n_folds} labelled samples and two of some class; "
                         f"found {int(mask.sum())}")
    folds = np.empty(len(mask), dtype=np.int64)
    folds[mask] = stratified_folds(y[mask], n_folds, rng)
    folds[~mask] = rng.integers(n_folds, size=int((~mask).sum()))
    weights = (mask[:, None] & (folds[:, None] != np.arange(n_folds)[None, :])).astype(np.float64)
    every = fit_predict_probabilities(embeddings, y, weights, n_classes=n_classes, seed=seed,
                                      components=head_components(int(mask.sum())))
    return every[folds, np.arange(len(mask))]
