"""Out-of-fold class probabilities from embeddings: the input of the label-issue check.

Every sample gets ``P(given label | embedding)`` from a model that never saw that sample: the data is
split into ``n_folds`` stratified folds and fold ``f`` is predicted by a head trained on the other folds.

The head is a linear softmax (multinomial logistic) regression on a whitened PCA of the standardised
embeddings:

* standardise each dimension, project onto the top principal axes and whiten. PCA
  uses no labels, so it is fitted once on all rows (transductive, like any unsupervised preprocessing);
  whitening makes the problem well conditioned, so L-BFGS needs few iterations, and it makes the one
  L2 penalty mean the same thing on every axis.
* the softmax heads of all folds are fitted *jointly* by one L-BFGS run over the sum of their
  (independent) objectives: the row ``i`` of the logits of fold ``f`` enters fold ``f``'s loss only when
  ``i`` is not in fold ``f``. One ``(n, d) @ (d, folds * k)`` product per step is about twice as fast on
  two contended cores as ``folds`` separate ``(0.8 n, d) @ (d, k)`` products, and the problem is convex, so the
  joint optimum is each fold's own optimum.
* the penalty is ``||W||^2 / (2 C)`` against the summed log-loss (sklearn's ``C`` convention), with
  ``C = REGULARIZATION_C``, chosen for log-loss on Fashion-MNIST / EfficientNet-Lite0 features from 300
  to 60k rows (the label-issue check needs calibrated probabilities more than a top-1 gain; 0.05 was
  best or within 0.01 of best from 3k rows up, and 0.04 behind 0.1 at 1k); the bias is not penalised.
* whitened dimensions: ``pca_components(n)`` = 256, but at most one per 16 rows.

Classes with fewer samples than folds: folds are assigned round-robin within each class, so such a
class appears in fewer than ``n_folds`` folds, and when one of its few samples is held out the head was
trained on even fewer (possibly none) of its members. Nothing crashes and every row still sums to 1,
but those samples' probability for their own class is low by construction; the label-issue check does
not flag classes that small (see ``curato.checks.label_issues.MIN_CLASS_SIZE``).

Results are deterministic for a given ``seed`` (fold assignment) on one machine and BLAS build.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from curato.arrays import as_class_indices, stratified_folds
from curato.compiled import softmax_residual_kernels
from curato.errors import InputError

# Bump when anything below changes the probabilities for the same inputs (cache key for callers).
OOF_SETTINGS_VERSION = 3
PCA_COMPONENTS = 256
MIN_PCA_COMPONENTS = 8
SAMPLES_PER_COMPONENT = 16
# Rows used to estimate the PCA basis: a 1280-d covariance is well estimated from 20k rows, and the
# cost of X^T X grows with the rows used.
PCA_MAX_ROWS = 20_000
REGULARIZATION_C = 0.05
MAX_ITER = 300
# L-BFGS stops when the objective's relative decrease falls below this (scipy's ``ftol``); the
# probabilities then agree with a fully converged fit to about three decimals.
TOLERANCE = 1e-7
MAXCOR = 10
# BLAS threads for the fit. The products here are skinny ((n, 256) @ (256, 50)); on two cores with
# another process busy, two OpenBLAS threads ran 2-4x *slower* than one (60k rows: 49 s vs 21 s), and
# one thread loses little when the machine is idle. The result does not depend on it.
BLAS_THREADS = 1


def oof_settings(*, n_folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Everything besides the embeddings and labels that determines ``out_of_fold_probabilities``.

    A caller that caches the probabilities keys them on this dict plus its own digest of the inputs.
    """
    return {
        "version": OOF_SETTINGS_VERSION,
        "model": "standardize+pca-whiten+softmax-regression(l-bfgs, joint folds)",
        # the compiled objective's float32 rounding moves where L-BFGS stops (within its tolerance)
        "objective": "compiled" if softmax_residual_kernels() is not None else "numpy",
        "pca_components": f"min({PCA_COMPONENTS}, max({MIN_PCA_COMPONENTS}, n // {SAMPLES_PER_COMPONENT}))",
        "pca_max_rows": PCA_MAX_ROWS,
        "C": REGULARIZATION_C,
        "max_iter": MAX_ITER,
        "tolerance": TOLERANCE,
        "maxcor": MAXCOR,
        "folds": "stratified round-robin",
        "n_folds": int(n_folds),
        "seed": int(seed),
    }


def out_of_fold_probabilities(embeddings: np.ndarray, labels: np.ndarray, *, n_folds: int = 5, seed: int = 0,
                              progress: Callable[[int], None] | None = None,
                              n_classes: int | None = None, folds: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold ``P(label | embedding)`` for every row, shape ``(n, k)``, rows summing to 1.

    ``labels`` are integers ``0 .. k-1``; ``k`` is ``n_classes`` or ``labels.max() + 1`` (a class with
    no samples gets probabilities near 0). ``folds``: a fold index ``0 .. n_folds-1`` per row, e.g. to
    keep near-duplicates in one fold; by default ``stratified_folds`` with ``seed``. ``progress(1)`` is
    called once per fold when that fold's probabilities are written (the folds are fitted together, so
    the calls come at the end). Raises ``InputError`` on malformed input.
    """
    x, y, k = _validated(embeddings, labels, n_folds, n_classes)
    rng = np.random.default_rng(seed)
    folds = stratified_folds(y, n_folds, rng) if folds is None else _validated_folds(folds, len(y), n_folds)
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        features = whitened_pca(x, pca_components(len(x)), rng)
        # Fold f's head trains on the rows outside fold f, each counted once.
        trains = (folds[:, None] != np.arange(n_folds)[None, :]).astype(np.float32)
        weights, bias = _fit_joint_softmax(features, y, k, trains)
    probs = np.empty((len(y), k), dtype=np.float64)
    for fold in range(n_folds):
        rows = folds == fold
        block = slice(fold * k, (fold + 1) * k)
        logits = features[rows].astype(np.float64) @ weights[:, block] + bias[block]
        probs[rows] = np.exp(log_softmax(logits, axis=1))
        if progress is not None:
            progress(1)
    return probs


def fit_predict_probabilities(embeddings: np.ndarray, labels: np.ndarray, train_weights: np.ndarray, *,
                              n_classes: int | None = None, seed: int = 0,
                              components: int | None = None) -> np.ndarray:
    """``P(class | embedding)`` for every row from softmax heads trained on weighted rows; the same head
    as ``out_of_fold_probabilities`` (standardise, whitened PCA, L2 softmax regression).

    ``train_weights`` is ``(n,)`` for one head or ``(n, heads)`` for several fitted together (e.g.
    bootstrap counts of an ensemble); row ``i`` counts ``train_weights[i, h]`` times in head ``h``'s loss,
    and rows weighted 0 in every head are only predicted (their ``labels`` are ignored and may be -1).
    The PCA basis uses every row's embedding (no labels: transductive, like any unsupervised
    preprocessing) and keeps ``pca_components`` of the *training* rows, or exactly ``components`` whitened
    dimensions when given (a head whose width does not change with the training-set size, e.g. for a
    learning curve). Returns ``(n, k)`` for a 1-D ``train_weights``, else ``(heads, n, k)``. Raises
    ``InputError`` on malformed input.
    """
    weights = np.asarray(train_weights, dtype=np.float64)
    single = weights.ndim == 1
    weights = weights[:, None] if single else weights
    x = np.asarray(embeddings)
    y = np.asarray(labels)
    if weights.ndim != 2 or weights.shape[0] != len(x) or weights.shape[1] < 1:
        raise InputError(f"softmax head: train_weights must have shape ({len(x)},) or ({len(x)}, heads), "
                         f"got {np.shape(train_weights)}")
    if not np.all(np.isfinite(weights)) or weights.min() < 0:
        raise InputError("softmax head: train_weights must be finite and non-negative")
    if np.any(weights.sum(axis=0) <= 0):
        raise InputError("softmax head: every head needs at least one training row with positive weight")
    if components is not None and components < 1:
        raise InputError(f"softmax head: components must be at least 1, got {components}")
    used = weights.sum(axis=1) > 0
    if y.shape != (len(x),):
        raise InputError(f"softmax head: labels must have shape ({len(x)},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError("softmax head: labels must be integer class indices 0..k-1 (-1 for unlabelled rows)")
    x_all, codes, k = _validated(x, np.where(used, y, 0), None, n_classes, context="softmax head")
    train_y = codes[used]
    rng = np.random.default_rng(seed)
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        width = pca_components(int(used.sum())) if components is None else int(components)
        features = whitened_pca(x_all, width, rng)
        coef, bias = _fit_joint_softmax(features[used], train_y, k, weights[used].astype(np.float32))
        logits = features.astype(np.float64) @ coef + bias
    heads = weights.shape[1]
    probs = np.exp(log_softmax(logits.reshape(len(x_all), heads, k), axis=2)).transpose(1, 0, 2)
    return probs[0] if single else probs


def pca_components(n_samples: int) -> int:
    """Whitened PCA dimensions for ``n_samples`` rows: ``PCA_COMPONENTS``, but at most one per 16 rows.

    Whitening puts weak axes on an equal footing with strong ones, so with few samples the trailing
    components only add variance (300 Fashion-MNIST rows: 34% OOF accuracy at 256 dimensions, 75% at 18).
    """
    return min(PCA_COMPONENTS, max(MIN_PCA_COMPONENTS, n_samples // SAMPLES_PER_COMPONENT))


def whitened_pca(x: np.ndarray, components: int, rng: np.random.Generator) -> np.ndarray:
    """Standardise, project onto the top principal axes and scale each to unit variance (float32).

    Mean, scale and axes come from at most ``PCA_MAX_ROWS`` rows; standardising and whitening are
    folded into one ``(d, components)`` matrix so the full data is read once, by one product.
    """
    x = np.asarray(x, dtype=np.float32)
    sample = x if len(x) <= PCA_MAX_ROWS else x[np.sort(rng.choice(len(x), PCA_MAX_ROWS, replace=False))]
    mean = sample.mean(axis=0, dtype=np.float64)
    centered = (sample - mean.astype(np.float32)).astype(np.float32)
    scale = np.sqrt(np.einsum("ij,ij->j", centered, centered, dtype=np.float64) / len(sample))
    constant = ~_varies(scale, mean)
    if constant.all():
        # Every row has the same embedding (e.g. a dataset of one picture): there is no axis to project on,
        # and dividing by its zero variance made NaN. One all-zero feature leaves a head its bias: the priors.
        return np.zeros((len(x), 1), dtype=np.float32)
    scale[constant] = 1.0  # constant dimensions carry nothing; zero them so rounding noise is not whitened
    centered[:, constant] = 0.0
    standardized = centered / scale.astype(np.float32)
    if len(sample) < x.shape[1]:
        # Fewer rows than dimensions (e.g. 3,072 raw pixels): the covariance's nonzero eigenpairs follow from
        # the smaller (rows x rows) Gram matrix, X^T X v = l v with v = X^T u / sqrt(rows * l).
        gram = (standardized @ standardized.T).astype(np.float64) / len(sample)
        eigenvalues, left = np.linalg.eigh(gram)
        eigenvalues, left = eigenvalues[::-1], left[:, ::-1]
        norms = np.sqrt(np.maximum(eigenvalues, 1e-300) * len(sample))
        eigenvectors = (standardized.T.astype(np.float64) @ left) / norms
    else:
        covariance = (standardized.T @ standardized).astype(np.float64) / len(sample)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    # Drop axes with (numerically) no variance: whitening them would blow up rounding noise. At least one
    # standardised dimension varies, so the top eigenvalue is about 1 or more and the first axis is kept.
    keep = max(1, int(min(components, np.sum(eigenvalues > 1e-6 * max(eigenvalues[0], 1e-12)))))
    basis = eigenvectors[:, :keep] / np.sqrt(eigenvalues[:keep]) / scale[:, None]
    basis[constant] = 0.0
    projected = x @ basis.astype(np.float32)
    projected -= (mean @ basis).astype(np.float32)
    return projected


# A dimension whose spread is below this share of its mean magnitude only holds float32 rounding (the same
# picture embedded in two batches); standardising it would turn that noise into a unit-variance feature.
RELATIVE_SPREAD_FLOOR = 1e-5


def _varies(scale: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return scale > np.maximum(1e-12, RELATIVE_SPREAD_FLOOR * np.abs(mean))


def varying_dimensions(embeddings: np.ndarray) -> np.ndarray:
    """Mask of the embedding dimensions that vary over the rows by more than rounding (what the head can use).

    None varying means every row has the same embedding: probabilities from it are the class priors only.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2 or len(x) == 0:
        raise InputError(f"embeddings must be a non-empty 2-D array, got shape {x.shape}")
    # Two passes over row blocks in float64: the same mean and spread as x.std(axis=0) without a float64 copy of
    # the whole matrix and its centred twin (4 GB each at 1M x 256).
    total = np.zeros(x.shape[1])
    for start in range(0, len(x), _STATS_BLOCK):
        total += x[start:start + _STATS_BLOCK].sum(axis=0, dtype=np.float64)
    mean = total / len(x)
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), _STATS_BLOCK):
        centred = x[start:start + _STATS_BLOCK].astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", centred, centred)
    return _varies(np.sqrt(squares / len(x)), mean)


# Rows per block of the float64 statistics: a block's float64 copy stays small (65,536 rows of 1,280 columns made
# a 670 MB temporary whose first touch cost ~2 s at 70k x 1,280; 4,096 rows: 0.4 s for the pass; scratch timings).
_STATS_BLOCK = 4_096


def _fit_joint_softmax(features: np.ndarray, labels: np.ndarray, k: int,
                       row_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(d, heads * k)`` and biases of one softmax head per column of ``row_weights``, fitted in
    one L-BFGS run.

    ``row_weights[i, h]`` >= 0 is how much row ``i`` counts in head ``h``'s loss (1/0 for the folds of a
    cross-validation, bootstrap counts for an ensemble); each head's loss is its weighted mean log-loss
    plus ``||W_h||^2 / (2 C n_h)`` with ``n_h`` the head's total weight (sklearn's convention for ``C``).
    The objective runs in float32 (logits, softmax, both products) and sums in float64: the products
    dominate the cost and float32 halves it; the gradient's rounding (~1e-7 relative) is far below the
    stopping tolerance.
    """
    n, d = features.shape
    n_heads = row_weights.shape[1]
    width = n_heads * k
    rows = np.arange(n)
    head_sizes = row_weights.sum(axis=0, dtype=np.float64)
    row_weight = (row_weights / head_sizes).astype(np.float32)
    penalty_cols = np.repeat(1.0 / (REGULARIZATION_C * head_sizes), k)[None, :]  # (1, width)

    fused = softmax_residual_kernels()
    label_codes = np.ascontiguousarray(labels, dtype=np.int64)
    given_logit = np.empty((n, n_heads), dtype=np.float32)  # the fused passes' shifted logit of the given label

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights = theta[: d * width].reshape(d, width)
        bias = theta[d * width:]
        logits = features @ weights.astype(np.float32)
        logits += bias.astype(np.float32)
        if fused is not None:  # three passes over the (n, heads * k) logits instead of eight
            shift, to_residual = fused
            shift(logits, label_codes, k, given_logit)
            np.exp(logits, out=logits)
            loss = to_residual(logits, label_codes, row_weight, given_logit, k)
            residual = logits  # d loss / d logits, in place
        else:
            cube = logits.reshape(n, n_heads, k)
            cube -= cube.max(axis=2, keepdims=True)
            true_logit = cube[rows, :, labels]  # (n, n_heads), shifted logit of the given label
            np.exp(cube, out=cube)
            total = cube.sum(axis=2, keepdims=True)
            loss = float(np.sum(row_weight * (np.log(total[:, :, 0]) - true_logit), dtype=np.float64))
            cube /= total  # now softmax probabilities
            cube[rows, :, labels] -= 1.0
            cube *= row_weight[:, :, None]  # d loss / d logits
            residual = cube.reshape(n, width)
        grad_w = (features.T @ residual).astype(np.float64) + penalty_cols * weights
        loss += 0.5 * float(np.sum(penalty_cols * weights * weights))
        return loss, np.concatenate([grad_w.ravel(), residual.sum(axis=0, dtype=np.float64)])

    start = np.zeros(d * width + width)
    result = minimize(objective, start, jac=True, method="L-BFGS-B",
                      options={"maxiter": MAX_ITER, "ftol": TOLERANCE, "gtol": 1e-6, "maxcor": MAXCOR})
    if not np.all(np.isfinite(result.x)):
        raise FloatingPointError("softmax fit diverged (non-finite weights)")
    return result.x[: d * width].reshape(d, width), result.x[d * width:]


def _validated_folds(folds: np.ndarray, n: int, n_folds: int) -> np.ndarray:
    folds = np.asarray(folds)
    if folds.shape != (n,) or not np.issubdtype(folds.dtype, np.integer):
        raise InputError(f"out-of-fold probabilities: folds must be {n} integers, got shape {folds.shape}")
    if folds.min() < 0 or folds.max() >= n_folds or len(np.unique(folds)) != n_folds:
        raise InputError(f"out-of-fold probabilities: folds must use every index 0..{n_folds - 1}")
    return folds.astype(np.int64)


def _validated(embeddings: np.ndarray, labels: np.ndarray, n_folds: int | None, n_classes: int | None, *,
               context: str = "out-of-fold probabilities") -> tuple[np.ndarray, np.ndarray, int]:
    """Checked ``(embeddings, integer labels, k)``; errors name ``context``. ``n_folds`` None: no folds to check."""
    x = np.asarray(embeddings)
    if x.ndim != 2 or len(x) == 0:
        raise InputError(f"{context}: embeddings must be a non-empty 2-D array, got shape {x.shape}")
    if n_folds is not None and (n_folds < 2 or len(x) < n_folds):
        raise InputError(f"{context}: need 2 <= n_folds <= samples, got n_folds={n_folds}, "
                         f"{len(x)} samples")
    if len(x) < 2:
        raise InputError(f"{context}: need at least 2 rows, got {len(x)}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{context}: embeddings contain NaN or infinite values")
    y, k = as_class_indices(context, labels, rows=len(x), n_classes=n_classes)
    if k < 2:
        raise InputError(f"{context}: need at least two classes")
    return x, y, k
