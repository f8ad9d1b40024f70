"""Dataset bias: can a classifier tell the groups apart ("Name That Dataset"), and does a model trained
on one group work on another (cross-dataset generalisation)?

A *group* is where a sample came from (its ``source``) or which split it is in. The core is a set of
pure functions over arrays; :func:`analyse_bias` runs them all and :func:`run_bias` feeds it from a
workspace (``curato bias``).

Name That Dataset (Torralba & Efros, 2011)
    A linear softmax head predicts each sample's group from its embedding, out of fold
    (:func:`curato.models.oof.out_of_fold_probabilities` with the group as the label, stratified
    folds), so every prediction comes from a head that never saw the sample. If the groups were
    drawn from one distribution, no head could beat *chance* = the share of the largest group (what
    "always answer the largest group" scores).

    * ``interval``: the Clopper-Pearson (exact binomial) ``1 - alpha`` interval of the measured
      accuracy.
    * ``chance_interval``: the central ``1 - alpha`` interval of the accuracies that chance alone
      produces at this ``n``: ``Binomial(n, chance)`` quantiles divided by ``n`` (kept as
      ``binomial_chance_interval``), widened for cross-validation's extra spread. Out-of-fold
      predictions are not independent trials: each sample helps train the heads that judge the other
      folds, so a chance pattern shared by two folds raises (or lowers) both folds' accuracy. On
      shuffled group labels the out-of-fold accuracy spread 1.2-1.4 times as widely as a binomial
      (Fashion-MNIST, 600-2,000 samples, classic and EfficientNet-Lite0 features), which put up to 3%
      of random splits above the plain binomial interval instead of 0.5%. So when the accuracy lies
      outside the binomial interval, but inside one ``MAX_DISPERSION`` (4) times as wide (only then
      can the spread decide the verdict, or whether the accuracy is within chance), the group head is
      refitted on ``auto_permutations(n)`` (20-100) shuffles of the group labels, reusing the
      whitened PCA. The ratio of their standard deviation (at its one-sided 90% upper confidence
      bound) to the binomial one is ``overdispersion``, and both intervals and the ``p_value`` are
      those of a binomial with ``effective_n = n / overdispersion**2`` trials.
    * ``effect``: the share of chance's errors the head avoids, ``(accuracy - chance) / (1 - chance)``
      (0 = no better than chance, 1 = every sample named correctly); unlike the raw gap it means the
      same with balanced and with lopsided groups (95/5 groups leave only 5 points of gap to win).
    * verdict: ``distinguishable`` when the accuracy is above the chance interval's upper bound
      (a one-sided test at ``alpha / 2``: at most that share of truly indistinguishable group pairs is
      flagged) AND ``effect >= min_effect`` (default 0.1). The second condition keeps a huge ``n``
      from flagging a trivial difference: with 1M samples in two balanced groups 50.2% is already
      outside the chance interval, but a head that removes 0.4% of chance's errors says the groups
      are practically the same. ``negligible`` when only the first condition holds; otherwise
      ``not distinguishable``.

    ``balanced_accuracy`` (mean recall over groups; chance = 1 / number of groups) is reported as
    well: it shows whether the small groups are recognised, which accuracy hides when one group
    dominates.

    Any difference counts: a different class mix is enough to tell two sources apart. The property
    differences and the cross-dataset matrix below say what differs and whether it matters.

Pairwise
    The confusion matrix between groups, and for every pair of groups the two-group accuracy (the
    same out-of-fold probabilities, each sample of the pair assigned to the likelier of the two)
    against that pair's own chance, with the same intervals and verdict.

Group-typical samples
    Per group, the samples with the highest out-of-fold probability of their own group: what the
    head found most characteristic of it (look at them to see what differs).

Property differences
    Per image property (``curato.features.properties``) and group, one group against the rest (or
    against the other group when there are two), Cliff's delta = ``2 * AUC - 1`` = ``P(group > rest)
    - P(group < rest)``, from average ranks (``scipy.stats.rankdata``) in one pass for all groups and
    properties: rank based, so it needs no assumption about the distributions and a few extreme
    values cannot dominate it. Missing values (NaN) are left out per property; a property needs at
    least two values on each side. Sorted by ``|delta|``, largest first.

Cross-dataset generalisation
    For every ordered pair of labeled groups (A, B) the label head (the same softmax head on a
    whitened PCA) is fitted on all of A and scored on B, over the classes that both groups hold with
    at least ``min_class_samples`` labeled samples. Both directions come from one call of
    ``out_of_fold_probabilities`` with two folds, A's rows in one and B's rows in the other: fold
    "B" is predicted by the head trained on A alone and fold "A" by the head trained on B alone. The
    PCA is fitted on A and B together, as ``curato.models.oof`` always does (it uses no labels). The
    diagonal is each group's own out-of-fold accuracy (cross-validation), and each pair reports its
    ``drop``: A's out-of-fold accuracy on the shared classes (choosing among those classes only)
    minus the accuracy on B. Pairs without two shared classes are skipped, with the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

# scipy.stats and scikit-learn are imported inside the functions that use them: importing them costs seconds, paid
# by every command that loads the checks (the report, `curato checks`) whether or not it runs them
from curato.checks.findings import Finding, severity_from_share
from curato.errors import InputError
from curato.models.oof import BLAS_THREADS, out_of_fold_probabilities, pca_components, whitened_pca
from curato.progress import SILENT, Progress

CHECK_NAME = "dataset_bias"
# Catalog columns a workspace can be grouped by; ``curato bias --by`` also takes any metadata column.
GROUPINGS = ("source", "split", "format")
DEFAULT_ALPHA = 0.01
# Least share of chance's errors the group head must avoid to call groups distinguishable.
MIN_EFFECT = 0.1
# Severity of a distinguishable result by that share: low from MIN_EFFECT, then these.
EFFECT_MEDIUM = 0.3
EFFECT_HIGH = 0.6
TYPICAL_PER_GROUP = 10
# Refits of the group head on shuffled group labels (to measure how widely chance alone spreads):
# PERMUTATION_ROWS // n, within these bounds. Each refit reuses the whitened PCA.
MIN_PERMUTATIONS = 20
MAX_PERMUTATIONS = 100
PERMUTATION_ROWS = 200_000
# The spread of the null is estimated conservatively: the one-sided upper bound of its standard
# deviation at this confidence (chi-square), so a low draw of the shuffles cannot narrow the interval.
SPREAD_CONFIDENCE = 0.9
# Shuffles are skipped when the verdict is the same for every spread from binomial up to this many times
# wider (measured: 1.2-1.4 on Fashion-MNIST random splits, see docs/bias.md).
MAX_DISPERSION = 4.0
DEFAULT_FOLDS = 5
# A group with fewer embedded samples is left out of the analysis (named in ``skipped_groups``).
MIN_GROUP_SIZE = 2 * DEFAULT_FOLDS
# Labeled samples a class needs in a group to take part in the cross-dataset matrix.
MIN_CLASS_SAMPLES = DEFAULT_FOLDS
VERDICTS = ("distinguishable", "negligible", "not distinguishable")
NO_GROUP = "-"


def chance_interval(n: int, chance: float, *, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    """The central ``1 - alpha`` interval of accuracies that guessing at rate ``chance`` gives on ``n`` samples."""
    from scipy.stats import binom
    low, high = binom.ppf([alpha / 2, 1 - alpha / 2], n, chance)
    return float(low) / n, float(high) / n


def accuracy_interval(correct: int, n: int, *, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    """Clopper-Pearson (exact) ``1 - alpha`` interval of an accuracy of ``correct`` out of ``n``."""
    from scipy.stats import binomtest
    interval = binomtest(int(correct), int(n)).proportion_ci(confidence_level=1 - alpha, method="exact")
    return float(interval.low), float(interval.high)


def overdispersion(null_accuracies: Sequence[float] | np.ndarray, n: int, chance: float) -> float:
    """How much wider out-of-fold accuracy spreads under the null than a binomial does (at least 1).

    ``null_accuracies``: the accuracies of the same procedure on shuffled group labels. Their standard
    deviation is taken at its one-sided ``SPREAD_CONFIDENCE`` upper bound (chi-square with ``len - 1``
    degrees of freedom) and divided by the binomial ``sqrt(chance * (1 - chance) / n)``; 1 when fewer
    than two accuracies are given.
    """
    from scipy.stats import chi2
    values = np.asarray(null_accuracies, dtype=np.float64)
    if len(values) < 2:
        return 1.0
    dof = len(values) - 1
    upper = values.std(ddof=1) * np.sqrt(dof / chi2.ppf(1.0 - SPREAD_CONFIDENCE, dof))
    return max(1.0, float(upper / np.sqrt(chance * (1.0 - chance) / n)))


def spread_matters(accuracy: float, n: int, chance: float, *, alpha: float = DEFAULT_ALPHA) -> bool:
    """Whether the null's spread decides where ``accuracy`` lies: outside the binomial chance interval,
    but inside one ``MAX_DISPERSION`` times as wide (above it, the verdict is the same for any spread)."""
    low, high = chance_interval(n, chance, alpha=alpha)
    widest_low, widest_high = chance_interval(max(1, round(n / MAX_DISPERSION**2)), chance, alpha=alpha)
    return widest_low <= accuracy < low or high < accuracy <= widest_high


def auto_permutations(n: int) -> int:
    """Shuffles for ``n`` samples: ``PERMUTATION_ROWS // n`` within ``MIN_PERMUTATIONS..MAX_PERMUTATIONS``."""
    return int(np.clip(PERMUTATION_ROWS // max(n, 1), MIN_PERMUTATIONS, MAX_PERMUTATIONS))


def distinguishability(correct: int, n: int, chance: float, *, alpha: float = DEFAULT_ALPHA,
                       min_effect: float = MIN_EFFECT, dispersion: float = 1.0) -> dict[str, Any]:
    """Accuracy ``correct / n`` against ``chance``: intervals, effect, one-sided p-value and verdict.

    ``dispersion`` (:func:`overdispersion`, >= 1) widens both intervals and the p-value to a binomial
    of ``effective_n = n / dispersion**2`` trials. The rule is the module docstring's:
    ``distinguishable`` when the accuracy is above the chance interval's upper bound and
    ``(accuracy - chance) / (1 - chance) >= min_effect``.
    """
    from scipy.stats import binom
    if n <= 0:
        raise InputError("distinguishability: need at least one sample")
    if not 0.0 < chance < 1.0:
        raise InputError(f"distinguishability: chance must lie strictly between 0 and 1, got {chance}")
    accuracy = correct / n
    effective_n = max(1, round(n / max(dispersion, 1.0) ** 2))
    hits = accuracy * effective_n
    low, high = chance_interval(effective_n, chance, alpha=alpha)
    effect = (accuracy - chance) / (1.0 - chance)
    above = accuracy > high
    verdict = VERDICTS[0] if above and effect >= min_effect else VERDICTS[1] if above else VERDICTS[2]
    return {"n": int(n), "accuracy": accuracy, "chance": chance,
            "interval": list(accuracy_interval(round(hits), effective_n, alpha=alpha)),
            "chance_interval": [low, high], "binomial_chance_interval": list(chance_interval(n, chance, alpha=alpha)),
            "overdispersion": float(max(dispersion, 1.0)), "effective_n": int(effective_n), "effect": effect,
            "p_value": float(binom.sf(np.ceil(hits - 1e-9) - 1, effective_n, chance)), "verdict": verdict}


def encode_groups(groups: Sequence[Any] | np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sorted group names and each row's index into them (``None`` becomes ``"-"``)."""
    names = np.array([NO_GROUP if g is None else str(g) for g in groups], dtype=object)
    unique, index = np.unique(names.astype(str), return_inverse=True)
    return unique.tolist(), index.astype(np.int64)


def group_probabilities(features: np.ndarray, group_index: np.ndarray, n_groups: int, *,
                        n_folds: int = DEFAULT_FOLDS, seed: int = 0,
                        progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Out-of-fold ``P(group | embedding)``, shape ``(n, n_groups)``, folds stratified by group."""
    return out_of_fold_probabilities(features, group_index, n_folds=n_folds, seed=seed, progress=progress,
                                     n_classes=n_groups)


def head_accuracies(probs: np.ndarray, group_index: np.ndarray) -> tuple[float, np.ndarray]:
    """Accuracy over all groups, and per pair of groups (``itertools.combinations`` order) the two-group
    accuracy: each sample of the pair named the likelier of the two."""
    k = probs.shape[1]
    overall = float(np.mean(probs.argmax(axis=1) == group_index))
    pairs = []
    for a, b in combinations(range(k), 2):
        rows = (group_index == a) | (group_index == b)
        named_a = probs[rows, a] >= probs[rows, b]
        pairs.append(np.mean(named_a == (group_index[rows] == a)))
    return overall, np.asarray(pairs, dtype=np.float64)


def null_accuracies(features: np.ndarray, group_index: np.ndarray, n_groups: int, *, permutations: int,
                    n_folds: int = DEFAULT_FOLDS, seed: int = 0,
                    progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`head_accuracies` of the group head refitted on ``permutations`` shuffles of the group labels.

    Shapes ``(permutations,)`` and ``(permutations, pairs)``. Shuffled labels carry no information, so
    these are draws of what chance alone gives, cross-validation's extra spread included (see
    the module docstring).
    """
    rng = np.random.default_rng([seed, 1])
    overall = np.empty(permutations)
    pairs = np.empty((permutations, n_groups * (n_groups - 1) // 2))
    for p in range(permutations):
        shuffled = rng.permutation(group_index)
        probs = group_probabilities(features, shuffled, n_groups, n_folds=n_folds, seed=seed + 1 + p,
                                    progress=progress)
        overall[p], pairs[p] = head_accuracies(probs, shuffled)
    return overall, pairs


def name_that_dataset(probs: np.ndarray, group_index: np.ndarray, group_names: Sequence[str], *,
                      null: Sequence[float] | np.ndarray = (), alpha: float = DEFAULT_ALPHA,
                      min_effect: float = MIN_EFFECT) -> dict[str, Any]:
    """How well out-of-fold group probabilities name each sample's group, against chance (module docstring).

    ``null``: accuracies on shuffled labels (:func:`null_accuracies`), for the over-dispersion.
    """
    from sklearn.metrics import balanced_accuracy_score
    predicted = probs.argmax(axis=1)
    counts = np.bincount(group_index, minlength=len(group_names))
    n = len(group_index)
    chance = float(counts.max() / n)
    result = distinguishability(int(np.sum(predicted == group_index)), n, chance, alpha=alpha,
                                min_effect=min_effect, dispersion=overdispersion(null, n, chance))
    return {**result, "balanced_accuracy": float(balanced_accuracy_score(group_index, predicted)),
            "balanced_chance": 1.0 / len(group_names), "largest_group": group_names[int(counts.argmax())]}


def pairwise_distinguishability(probs: np.ndarray, group_index: np.ndarray, group_names: Sequence[str], *,
                                null: np.ndarray | None = None, alpha: float = DEFAULT_ALPHA,
                                min_effect: float = MIN_EFFECT) -> dict[str, Any]:
    """The confusion matrix (rows: true group, columns: named group) and every pair's two-group test.

    ``null``: ``(permutations, pairs)`` two-group accuracies on shuffled labels (:func:`null_accuracies`).
    """
    from sklearn.metrics import confusion_matrix
    k = len(group_names)
    confusion = confusion_matrix(group_index, probs.argmax(axis=1), labels=np.arange(k))
    _, accuracies = head_accuracies(probs, group_index)
    sizes, chances = pair_chances(group_index, k)
    pairs = []
    for p, (a, b) in enumerate(combinations(range(k), 2)):
        dispersion = 1.0 if null is None else overdispersion(null[:, p], sizes[p], chances[p])
        test = distinguishability(round(accuracies[p] * sizes[p]), int(sizes[p]), float(chances[p]), alpha=alpha,
                                  min_effect=min_effect, dispersion=dispersion)
        pairs.append({"groups": [group_names[a], group_names[b]], **test})
    return {"groups": list(group_names), "confusion": confusion.tolist(), "pairs": pairs}


def pair_chances(group_index: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples and chance (larger group's share) of every pair of groups, in ``combinations`` order."""
    counts = np.bincount(group_index, minlength=n_groups)
    pairs = np.array(list(combinations(range(n_groups), 2)), dtype=np.int64).reshape(-1, 2)
    sizes = counts[pairs].sum(axis=1)
    return sizes, counts[pairs].max(axis=1) / sizes


def tell_groups_apart(features: np.ndarray, group_index: np.ndarray, group_names: Sequence[str], *,
                      n_folds: int = DEFAULT_FOLDS, seed: int = 0, alpha: float = DEFAULT_ALPHA,
                      min_effect: float = MIN_EFFECT, permutations: int | None = None,
                      progress: Progress = SILENT) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """Name That Dataset with its pairwise tests: (out-of-fold probabilities, overall test, pairwise).

    ``features``: whitened embeddings (``curato.models.oof.whitened_pca``), so the shuffles refit only
    the head. ``permutations``: shuffles of the group labels that measure the null's spread; ``None``
    = :func:`auto_permutations` when :func:`spread_matters` for the overall or a pairwise test, else 0.
    """
    k = len(group_names)
    progress.stage("telling the groups apart", n_folds)
    probs = group_probabilities(features, group_index, k, n_folds=n_folds, seed=seed, progress=progress.advance)
    if permutations is None:
        overall, pair_accuracies = head_accuracies(probs, group_index)
        sizes, chances = pair_chances(group_index, k)
        n = len(group_index)
        matters = spread_matters(overall, n, float(np.bincount(group_index).max() / n), alpha=alpha) or any(
            spread_matters(accuracy, int(size), float(chance), alpha=alpha)
            for accuracy, size, chance in zip(pair_accuracies, sizes, chances, strict=True))
        permutations = auto_permutations(n) if matters else 0
    if permutations:
        progress.stage("chance level: shuffled groups", permutations * n_folds)
    null, null_pairs = null_accuracies(features, group_index, k, permutations=permutations, n_folds=n_folds,
                                       seed=seed, progress=progress.advance)
    test = {**name_that_dataset(probs, group_index, group_names, null=null, alpha=alpha, min_effect=min_effect),
            "permutations": permutations}
    pairwise = pairwise_distinguishability(probs, group_index, group_names, null=null_pairs if permutations else None,
                                           alpha=alpha, min_effect=min_effect)
    return probs, test, pairwise


def most_typical(probs: np.ndarray, group_index: np.ndarray, group_names: Sequence[str],
                 sample_ids: Sequence[str] | np.ndarray, *, per_group: int = TYPICAL_PER_GROUP
                 ) -> dict[str, list[dict[str, Any]]]:
    """Per group, the ``per_group`` samples with the highest out-of-fold probability of their own group."""
    ids = np.asarray(sample_ids, dtype=object)
    own = probs[np.arange(len(group_index)), group_index]
    typical = {}
    for g, name in enumerate(group_names):
        members = np.flatnonzero(group_index == g)
        top = members[np.argsort(-own[members], kind="stable")[:per_group]]
        typical[name] = [{"sample_id": str(ids[i]), "probability": float(own[i])} for i in top]
    return typical


def property_differences(properties: np.ndarray, columns: Sequence[str], group_index: np.ndarray,
                         group_names: Sequence[str]) -> list[dict[str, Any]]:
    """Cliff's delta of every property between each group and the rest, largest ``|delta|`` first.

    ``delta > 0``: the group's values tend to be larger. With two groups only the first group's rows
    are returned (the second's are the same with the sign flipped), ``versus`` naming the other group.
    """
    from scipy.stats import rankdata
    values = np.asarray(properties, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(group_index), len(columns)):
        raise InputError(f"property differences: properties must have shape ({len(group_index)}, {len(columns)}), "
                         f"got {values.shape}")
    k = len(group_names)
    finite = np.isfinite(values)
    ranks = np.nan_to_num(rankdata(values, axis=0, nan_policy="omit"), nan=0.0)
    member = (group_index[:, None] == np.arange(k)[None, :]).astype(np.float64)  # (n, k)
    rank_sums = member.T @ ranks  # (k, p)
    n_group = member.T @ finite  # (k, p)
    n_rest = finite.sum(axis=0)[None, :] - n_group
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sums - n_group * (n_group + 1) / 2) / (n_group * n_rest)
    usable = (n_group >= 2) & (n_rest >= 2)
    shown = range(1) if k == 2 else range(k)
    rows = []
    for g in shown:
        inside = group_index == g
        with warnings.catch_warnings():  # an all-NaN column has no median; such columns are not usable
            warnings.simplefilter("ignore", RuntimeWarning)
            group_median = np.nanmedian(np.where(inside[:, None], values, np.nan), axis=0)
            rest_median = np.nanmedian(np.where(inside[:, None], np.nan, values), axis=0)
        for j in np.flatnonzero(usable[g]):
            rows.append({"property": str(columns[j]), "group": group_names[g],
                         "versus": group_names[1] if k == 2 else "rest",
                         "cliffs_delta": float(2 * auc[g, j] - 1), "auc": float(auc[g, j]),
                         "group_median": float(group_median[j]), "rest_median": float(rest_median[j]),
                         "n_group": int(n_group[g, j]), "n_rest": int(n_rest[g, j])})
    return sorted(rows, key=lambda row: -abs(row["cliffs_delta"]))


def cross_dataset_generalisation(embeddings: np.ndarray, group_index: np.ndarray, group_names: Sequence[str],
                                 labels: Sequence[Any] | np.ndarray, *, n_folds: int = DEFAULT_FOLDS, seed: int = 0,
                                 min_class_samples: int = MIN_CLASS_SAMPLES,
                                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train the label head on group A, test on group B, for every ordered pair (see module docstring).

    ``labels``: one per row, ``None`` = unlabeled. Returns ``groups``, ``accuracy`` (matrix: row = train
    group, column = test group, diagonal = out-of-fold accuracy within the group, ``None`` = skipped),
    ``pairs`` (one entry per computed off-diagonal cell, with the drop vs in-source accuracy) and
    ``skipped`` (cells left out, with the reason). ``progress(1)`` after each fit.
    """
    k = len(group_names)
    labels = np.asarray(labels, dtype=object)
    labeled = np.array([label is not None for label in labels], dtype=bool)
    class_names, class_index = np.unique(labels[labeled].astype(str), return_inverse=True)
    classes = np.full(len(labels), -1, dtype=np.int64)
    classes[labeled] = class_index
    n_classes = len(class_names)
    minimum = max(int(min_class_samples), n_folds)
    counts = np.zeros((k, max(n_classes, 1)), dtype=np.int64)
    np.add.at(counts, (group_index[labeled], class_index), 1)
    usable = counts >= minimum  # (k, classes)
    matrix: list[list[float | None]] = [[None] * k for _ in range(k)]
    skipped: list[dict[str, str]] = []
    in_source: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # group -> classes, labels, OOF probs
    for g in range(k):
        kept = np.flatnonzero(usable[g])
        if len(kept) < 2:
            skipped.append({"train": group_names[g], "test": group_names[g],
                            "reason": f"fewer than 2 classes with >= {minimum} labeled samples"})
            continue
        rows = np.flatnonzero((group_index == g) & np.isin(classes, kept))
        local = np.searchsorted(kept, classes[rows])
        probs = out_of_fold_probabilities(embeddings[rows], local, n_folds=n_folds, seed=seed, n_classes=len(kept))
        in_source[g] = (kept, local, probs)
        matrix[g][g] = float(np.mean(probs.argmax(axis=1) == local))
        if progress is not None:
            progress(1)
    pairs: list[dict[str, Any]] = []
    for a, b in combinations(range(k), 2):
        shared = np.flatnonzero(usable[a] & usable[b])
        if len(shared) < 2:
            reason = f"fewer than 2 classes with >= {minimum} labeled samples in both groups"
            skipped += [{"train": group_names[x], "test": group_names[y], "reason": reason}
                        for x, y in ((a, b), (b, a))]
            continue
        rows_a = np.flatnonzero((group_index == a) & np.isin(classes, shared))
        rows_b = np.flatnonzero((group_index == b) & np.isin(classes, shared))
        rows = np.concatenate([rows_a, rows_b])
        local = np.searchsorted(shared, classes[rows])
        folds = np.concatenate([np.ones(len(rows_a), np.int64), np.zeros(len(rows_b), np.int64)])
        # fold 0 (B's rows) is predicted by the head fitted on fold 1 (A's rows) alone, and vice versa
        probs = out_of_fold_probabilities(embeddings[rows], local, n_folds=2, folds=folds, seed=seed,
                                          n_classes=len(shared))
        if progress is not None:
            progress(1)
        correct = probs.argmax(axis=1) == local
        for train, test, test_part in ((a, b, slice(len(rows_a), None)), (b, a, slice(0, len(rows_a)))):
            accuracy = float(np.mean(correct[test_part]))
            matrix[train][test] = accuracy
            own = _in_source_accuracy(in_source[train], shared)  # shared classes are usable in both groups
            pairs.append({"train": group_names[train], "test": group_names[test],
                          "classes": [str(class_names[c]) for c in shared],
                          "n_train": int(len(rows_a) if train == a else len(rows_b)),
                          "n_test": int(len(rows_b) if train == a else len(rows_a)),
                          "accuracy": accuracy, "in_source_accuracy": own,
                          "drop": own - accuracy})
    order = {name: i for i, name in enumerate(group_names)}
    pairs.sort(key=lambda p: (order[p["train"]], order[p["test"]]))
    return {"groups": list(group_names), "accuracy": matrix, "pairs": pairs, "skipped": skipped,
            "min_class_samples": minimum}


def _in_source_accuracy(own: tuple[np.ndarray, np.ndarray, np.ndarray], shared: np.ndarray) -> float:
    """A group's out-of-fold accuracy on the shared classes' samples, choosing among those classes only."""
    kept, truth, probs = own
    columns = np.searchsorted(kept, shared)  # shared is a subset of kept
    rows = np.isin(truth, columns)
    named = columns[np.argmax(probs[np.ix_(rows, columns)], axis=1)]
    return float(np.mean(named == truth[rows]))


def dataset_bias_finding(sample_ids: Sequence[str] | np.ndarray, probs: np.ndarray, group_index: np.ndarray,
                         test: dict[str, Any], typical: dict[str, list[dict[str, Any]]], *, by: str = "group",
                         min_effect: float = MIN_EFFECT) -> Finding:
    """The ``dataset_bias`` Finding: flags the group-typical samples when the groups are distinguishable.

    Every sample's score is the out-of-fold probability of its own group. Severity (only when
    distinguishable) from ``test["effect"]``: low from ``min_effect``, medium from 0.3, high from 0.6.
    """
    ids = np.asarray(sample_ids, dtype=object)
    own = probs[np.arange(len(group_index)), group_index]
    distinguishable = test["verdict"] == VERDICTS[0]
    flagged = np.zeros(len(ids), dtype=bool)
    details: dict[str, dict[str, Any]] = {}
    if distinguishable:
        for group, rows in typical.items():
            for row in rows:
                details[row["sample_id"]] = {"group": group, "probability": row["probability"]}
        flagged = np.isin(ids.astype(str), list(details))
    severity = severity_from_share(test["effect"], low=min_effect, medium=EFFECT_MEDIUM, high=EFFECT_HIGH) \
        if distinguishable else "none"
    named = (f"a classifier names the {by} of a sample with {test['accuracy']:.1%} accuracy "
             f"(chance {test['chance']:.1%}, chance alone gives {test['chance_interval'][0]:.1%}"
             f"-{test['chance_interval'][1]:.1%})")
    if distinguishable:
        message = f"{named}: the {by}s are distinguishable; flagged: the most {by}-typical samples"
    elif test["verdict"] == VERDICTS[1]:
        message = (f"{named}: above chance, but it avoids only {test['effect']:.1%} of chance's errors "
                   f"({min_effect:.0%} needed): a negligible difference")
    else:
        message = f"{named}: the {by}s are not distinguishable"
    summary = {key: test[key] for key in ("accuracy", "balanced_accuracy", "chance", "effect", "p_value", "verdict")}
    return Finding(CHECK_NAME, severity, message, ids, flagged, own, summary=summary,
                   evidence={"interval": test["interval"], "chance_interval": test["chance_interval"]},
                   details=details)


def analyse_bias(sample_ids: Sequence[str] | np.ndarray, embeddings: np.ndarray, groups: Sequence[Any] | np.ndarray,
                 *, labels: Sequence[Any] | np.ndarray | None = None, properties: np.ndarray | None = None,
                 property_columns: Sequence[str] = (), by: str = "group", n_folds: int = DEFAULT_FOLDS,
                 seed: int = 0, alpha: float = DEFAULT_ALPHA, min_effect: float = MIN_EFFECT,
                 permutations: int | None = None, per_group: int = TYPICAL_PER_GROUP,
                 min_group_size: int = MIN_GROUP_SIZE, progress: Progress = SILENT) -> tuple[dict[str, Any], Finding]:
    """Everything ``curato bias`` reports, for rows aligned across all arguments; returns (document, Finding).

    ``groups``: one name per row (source or split; ``None`` becomes ``"-"``). ``labels``: class per row
    or ``None`` (unlabeled), for the cross-dataset matrix. ``properties``: ``(n, p)`` with NaN where
    unknown, columns named by ``property_columns``. ``by`` names the grouping in messages. Groups with
    fewer than ``min_group_size`` rows are left out (``skipped_groups``). Raises ``InputError`` when
    fewer than two groups remain or the arrays do not line up.
    """
    ids = np.asarray(sample_ids, dtype=object)
    x = np.asarray(embeddings)
    n = len(ids)
    if x.ndim != 2 or len(x) != n or len(groups) != n:
        raise InputError(f"bias: sample_ids ({n}), embeddings ({x.shape}) and groups ({len(groups)}) must line up")
    if labels is not None and len(labels) != n:
        raise InputError(f"bias: labels has {len(labels)} rows for {n} samples")
    names, index = encode_groups(groups)
    if len(names) < 2:
        only = repr(names[0]) if names else "(none)"
        how = (f"ingest another {by} with --{by} NAME" if by in ("source", "split")
               else "group by a column whose values differ")
        raise InputError(f"all samples have {by} {only}; {how}")
    sizes = np.bincount(index, minlength=len(names))
    kept = np.flatnonzero(sizes >= max(min_group_size, n_folds))
    skipped_groups = [{"name": names[g], "samples": int(sizes[g]),
                       "reason": f"fewer than {max(min_group_size, n_folds)} embedded samples"}
                      for g in range(len(names)) if g not in set(kept.tolist())]
    if len(kept) < 2:
        found = ", ".join(f"{name}: {size}" for name, size in zip(names, sizes.tolist(), strict=True))
        raise InputError(f"--by {by}: need two {by}s with at least {max(min_group_size, n_folds)} embedded samples "
                         f"each; found {found}")
    rows = np.flatnonzero(np.isin(index, kept))
    ids, x, index = ids[rows], x[rows], np.searchsorted(kept, index[rows])
    names = [names[g] for g in kept]
    label_values = np.full(len(rows), None, dtype=object) if labels is None else np.asarray(labels, object)[rows]

    # PCA uses no labels: whiten once, so each shuffle of the group labels refits only the head
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"):
        features = whitened_pca(x, pca_components(len(x)), np.random.default_rng(seed))
    probs, test, pairwise = tell_groups_apart(features, index, names, n_folds=n_folds, seed=seed, alpha=alpha,
                                              min_effect=min_effect, permutations=permutations, progress=progress)
    typical = most_typical(probs, index, names, ids, per_group=per_group)
    finding = dataset_bias_finding(ids, probs, index, test, typical, by=by, min_effect=min_effect)
    differences: list[dict[str, Any]] = []
    if properties is not None and len(property_columns):
        differences = property_differences(np.asarray(properties)[rows], property_columns, index, names)
    progress.stage("cross-dataset generalisation", len(names) * (len(names) + 1) // 2)
    cross = cross_dataset_generalisation(x, index, names, label_values, n_folds=n_folds, seed=seed,
                                         progress=progress.advance)
    labeled = np.array([label is not None for label in label_values], dtype=bool)
    document = {
        "by": by, "n_samples": len(rows), "alpha": alpha, "min_effect": min_effect,
        "groups": [{"name": name, "samples": int(np.sum(index == g)), "labeled": int(np.sum(labeled & (index == g)))}
                   for g, name in enumerate(names)],
        "skipped_groups": skipped_groups,
        **{key: value for key, value in test.items() if key != "n"},
        "severity": finding.severity, "message": finding.message,
        "pairwise": pairwise,
        "typical": typical, "property_differences": differences, "cross_dataset": cross,
        "finding": finding.to_json(),
    }
    return document, finding
