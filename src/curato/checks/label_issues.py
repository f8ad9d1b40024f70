"""Label issues: samples whose given label is probably wrong, from out-of-fold class probabilities.

Inputs are the given labels (``0 .. k-1``) and out-of-fold ``pred_probs`` (``curato.models.oof``): row
``i`` estimates ``q(x_i) = P(given label | x_i)`` from a model that never saw sample ``i``.

Noise model. A given label ``s`` is the true label ``y`` passed through a noise matrix
``T[i, j] = P(s = i | y = j)`` (columns sum to 1) that does not depend on the image beyond its class,
so ``q(x) = T @ p(y | x)``. The default rule ("noise-posterior", what ``method="auto"`` uses, measured
against cleanlab 2.9.0 and "argmax != label" by ``benchmarks/label_issues.py``):

1. *Noise matrix from anchors.* For each class ``j`` take the ``ANCHOR_FRACTION`` share (of the
   class's label count) of samples with the highest ``q_j``: they are almost surely truly ``j``, and
   since the noise does not look at the image, the histogram of their given labels estimates column
   ``T[:, j]``. Unlike confident learning's confident joint, this does not count the model's own
   confusion between look-alike classes (an ambiguous Shirt/T-shirt image) as label noise, which is
   why confident learning over-estimates low noise rates (about 12% found at 5% injected on
   Fashion-MNIST).
2. *Empirical-Bayes smoothing.* The off-diagonal counts of each column are shrunk toward uniform with a
   Dirichlet prior whose strength is fitted by maximum marginal likelihood over all columns: when the
   confusions look uniform (random relabelling) the prior is strong and a cell that happened to
   receive no anchor still gets its share; when they concentrate on a few cells (systematic
   confusions) the prior is weak and the structure is kept. Each column is then blended with
   confident learning's noise matrix, worth ``CL_PRIOR_ANCHORS`` anchors: a class of 1,000 samples
   (200 anchors) barely moves, a class of 30 (6 anchors) mostly follows confident learning, which
   uses every sample.
3. *Posterior per sample.* ``p(y | x)`` is recovered from ``q = T p`` by a few EM (multiplicative)
   steps that stay on the simplex, then ``P(y = j | x, s) ∝ T[s, j] p_j(x)``. The label quality is
   ``P(y = s | x, s)``, the probability that the given label is right.
4. *Count.* The expected number of wrong labels is the sum of the error probabilities. Those inherit
   the classifier's calibration in the tails: a softly regularised linear head gives a mislabelled
   "3" a few percent on label "8" for looking like an 8, which the noise model reads as evidence that
   it might be an 8 (on scikit-learn digits the sum falls 8-30% short). The anchors' implied noise
   rate, ``1 - sum_j T[j, j] P(y = j)``, does not depend on that calibration; when the median class has
   at least ``MIN_ANCHORS_FOR_COUNT`` anchors it sets the count, by shifting every error probability by
   one constant in log-odds (``recalibrate``). With fewer anchors (classes under ~150 samples) the
   implied rate leans on impure anchors and the confident-learning prior and can run high (300
   Fashion-MNIST images: +10 points), so it gets weight ``anchors / MIN_ANCHORS_FOR_COUNT`` and the
   posteriors' sum the rest.
5. *Cut.* Flag the top-``m`` samples by ``1 - quality`` for the ``m`` that maximises the expected F1
   (``2 * sum of the top-m error probabilities / (m + sum of all)``), among samples at least
   ``MIN_FLAG_PROBABILITY`` likely wrong. The flag count follows the estimated noise level, and at
   high noise it flags somewhat more than the expected count, which is what F1 rewards.

The confident-learning rule (Northcutt et al., 2021: per-class thresholds, confident joint, calibration,
prune by noise rate) is implemented too (``method="confident-learning"``) and is the cross-check in the
confidence note; ``method="argmax"`` flags ``argmax(q) != label``.

Limits. Errors that depend on the image (ambiguous images mislabelled more often than clear ones) are
seen by the anchors only through the clear images, so such noise is under-counted; confident learning,
which counts every confusion, then reads much higher and the confidence note says so.
Classes with fewer than ``MIN_CLASS_SIZE`` samples are never flagged (their out-of-fold probabilities
come from models that saw almost none of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, gammaln, logit

from curato.checks.findings import Finding, severity_from_share
from curato.errors import InputError

METHODS = ("auto", "noise-posterior", "confident-learning", "argmax")
ANCHOR_FRACTION = 0.2
CL_PRIOR_ANCHORS = 10.0
POSTERIOR_ITERATIONS = 30
MIN_FLAG_PROBABILITY = 0.25
MIN_CLASS_SIZE = 5
# Median anchors per class from which their implied noise rate alone sets the expected count (a 10% rate
# is then known to about +-5 points); below, it is blended with the posteriors' own sum.
MIN_ANCHORS_FOR_COUNT = 30
# Dirichlet prior strengths tried by the empirical-Bayes smoothing (pseudo-counts per column).
PRIOR_STRENGTHS = np.logspace(-1, 4, 101)
# Severity from the estimated share of wrong labels: 1% is about what curated benchmark test sets hold
# (MNIST 0.15%, CIFAR-10 0.5%); 5% (CIFAR-100 / ImageNet val, ~6%) measurably hurts training and
# evaluation; 15% and up needs relabelling before anything else.
SEVERITY_CUTS = {"low": 0.01, "medium": 0.05, "high": 0.15}


@dataclass
class LabelIssueResult:
    """Per-sample verdicts and dataset-level estimates of ``find_label_issues``.

    ``noise_matrix[i, j] = P(given label = i | true label = j)`` (columns sum to 1);
    ``class_noise_rate[i]`` is the estimated share of samples *given* label ``i`` whose label is wrong.
    """

    is_issue: np.ndarray  # (n,) bool
    label_quality: np.ndarray  # (n,) in [0, 1]: probability that the given label is right; low = suspect
    suggested_label: np.ndarray  # (n,) int: most probable other label where flagged, else the most probable
    noise_matrix: np.ndarray  # (k, k)
    class_noise_rate: np.ndarray  # (k,)
    estimated_noise_rate: float
    method: str
    confidence_note: str


@dataclass
class ConfidentJoint:
    """Confident learning's counts and estimates (rows: given label, columns: true label)."""

    thresholds: np.ndarray  # (k,) mean self-confidence per given label
    counts: np.ndarray  # (k, k) raw confident joint
    joint: np.ndarray  # (k, k) calibrated joint P(given = i, true = j), sums to 1
    label_counts: np.ndarray  # (k,)

    @property
    def noise_matrix(self) -> np.ndarray:
        """``P(given = i | true = j)``: the joint normalised per column."""
        return _normalize_columns(self.joint)

    @property
    def noise_rate(self) -> float:
        """Estimated share of wrong labels: the off-diagonal mass of the joint."""
        return float(1.0 - np.trace(self.joint))


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, method: str = "auto",
                      min_class_size: int = MIN_CLASS_SIZE) -> LabelIssueResult:
    """Find samples whose given label is probably wrong (see the module docstring for the rules).

    ``labels``: ``(n,)`` ints ``0 .. k-1``; ``pred_probs``: ``(n, k)`` out-of-fold probabilities.
    ``method``: ``"auto"`` (= ``"noise-posterior"``), ``"noise-posterior"``, ``"confident-learning"`` or
    ``"argmax"``. The result's ``method`` names the rule applied; for the noise posterior also where the
    expected count came from: ``"noise-posterior:anchor-count"`` (median class has at least
    ``MIN_ANCHORS_FOR_COUNT`` anchors) or ``"noise-posterior:blended-count"``. ``label_quality`` is the
    noise-posterior probability that the label is right whatever the rule. Raises ``InputError`` on bad
    input.
    """
    labels, probs = _validated(labels, pred_probs)
    if method not in METHODS:
        raise InputError(f"label issues: unknown method {method!r}; known: {', '.join(METHODS)}")
    n, k = probs.shape
    rows = np.arange(n)
    label_counts = np.bincount(labels, minlength=k)
    too_small = label_counts[labels] < min_class_size

    cj = confident_joint(labels, probs)
    noise_matrix = anchor_noise_matrix(labels, probs, prior=cj.noise_matrix)
    posterior = label_posterior(labels, probs, noise_matrix)
    error = 1.0 - posterior[rows, labels]
    error[too_small] = 0.0
    # Expected count: the anchors' implied noise rate, trusted fully from MIN_ANCHORS_FOR_COUNT anchors
    # per class (median class) and in proportion below, the rest from the posteriors' own sum.
    anchors_per_class = float(np.median(np.ceil(ANCHOR_FRACTION * label_counts[label_counts > 0])))
    trust = min(1.0, anchors_per_class / MIN_ANCHORS_FOR_COUNT)
    implied = 1.0 - float(np.sum(np.diag(noise_matrix) * posterior.mean(axis=0)))
    error = recalibrate(error, trust * implied + (1.0 - trust) * float(error.mean()), keep_zero=too_small)
    count_source = "anchor-count" if trust >= 1.0 else "blended-count"

    chosen = "noise-posterior" if method == "auto" else method
    if chosen == "noise-posterior":
        chosen = f"noise-posterior:{count_source}"
        is_issue = expected_f1_cut(error)
        estimated = float(error.mean())
        class_noise = np.bincount(labels, weights=error, minlength=k) / np.maximum(label_counts, 1)
    elif chosen == "confident-learning":
        is_issue = prune_by_noise_rate(labels, probs, cj.joint) & (probs.argmax(axis=1) != labels) & ~too_small
        noise_matrix, estimated = cj.noise_matrix, cj.noise_rate
        class_noise = 1.0 - np.diag(cj.joint) / np.maximum(cj.joint.sum(axis=1), 1e-300)
    else:
        is_issue = (probs.argmax(axis=1) != labels) & ~too_small
        estimated = float(is_issue.mean())
        class_noise = np.bincount(labels, weights=is_issue, minlength=k) / np.maximum(label_counts, 1)

    # Suggest the most probable true label; for a flagged sample, the most probable *other* label.
    others = posterior.copy()
    others[rows[is_issue], labels[is_issue]] = -1.0
    suggested = others.argmax(axis=1)
    note = confidence_note(labels, posterior, probs, estimated, cj.noise_rate)
    return LabelIssueResult(is_issue=is_issue, label_quality=np.clip(1.0 - error, 0.0, 1.0),
                            suggested_label=suggested, noise_matrix=noise_matrix,
                            class_noise_rate=np.clip(class_noise, 0.0, 1.0), estimated_noise_rate=estimated,
                            method=chosen, confidence_note=note)


def anchor_noise_matrix(labels: np.ndarray, probs: np.ndarray, *, anchor_fraction: float = ANCHOR_FRACTION,
                        prior: np.ndarray | None = None) -> np.ndarray:
    """``T[i, j] = P(given = i | true = j)`` from the given labels of each class's most confident samples.

    The anchors of class ``j`` are the ``ceil(anchor_fraction * count_j)`` samples with the highest
    ``q_j`` (``count_j``: samples given label ``j``). Their label histogram is smoothed by
    ``smooth_confusions`` and blended with ``prior`` (default: confident learning's noise matrix) worth
    ``CL_PRIOR_ANCHORS`` anchors per column.
    """
    n, k = probs.shape
    label_counts = np.bincount(labels, minlength=k)
    counts = np.zeros((k, k))
    for j in range(k):  # k partial sorts of n values: O(k n), no per-sample Python work
        m = int(np.ceil(anchor_fraction * label_counts[j]))
        if m == 0:
            continue
        m = min(m, n)
        anchors = np.argpartition(-probs[:, j], m - 1)[:m]
        counts[:, j] = np.bincount(labels[anchors], minlength=k)
    anchored = smooth_confusions(counts)
    # Small classes have few anchors: fall back smoothly on confident learning's estimate, worth
    # CL_PRIOR_ANCHORS anchors per class (a 200-anchor class barely moves; a 6-anchor class mostly
    # follows confident learning, which uses every sample).
    weight = counts.sum(axis=0)[None, :]
    if prior is None:
        prior = confident_joint(labels, probs).noise_matrix
    return (anchored * weight + prior * CL_PRIOR_ANCHORS) / (weight + CL_PRIOR_ANCHORS)


def smooth_confusions(counts: np.ndarray) -> np.ndarray:
    """Column-stochastic noise matrix from anchor label counts, off-diagonals shrunk toward uniform.

    Per column ``j`` the off-diagonal share ``r_j`` is the observed share of anchors with another label;
    how it splits over the ``k - 1`` other labels is the posterior mean under a symmetric Dirichlet
    prior of total strength ``b``, with ``b`` chosen by maximum marginal (Dirichlet-multinomial)
    likelihood over all columns.
    """
    k = len(counts)
    totals = counts.sum(axis=0)
    off = counts.copy()
    np.fill_diagonal(off, 0.0)
    off_totals = off.sum(axis=0)
    if k < 3 or off_totals.sum() == 0:
        shares = off / np.maximum(off_totals, 1)[None, :]
        if k >= 2:
            shares[:, off_totals == 0] = 1.0 / (k - 1)
    else:
        cells = off[~np.eye(k, dtype=bool)]
        # Dirichlet-multinomial log-likelihood of all columns per prior strength b (per-cell b / (k-1));
        # the grid loop keeps memory at O(k^2) for any number of classes.
        loglik = [k * gammaln(b) - gammaln(off_totals + b).sum()
                  + (gammaln(cells + b / (k - 1)) - gammaln(b / (k - 1))).sum() for b in PRIOR_STRENGTHS]
        strength = PRIOR_STRENGTHS[int(np.argmax(loglik))]
        shares = (off + strength / (k - 1)) / (off_totals + strength)[None, :]
    np.fill_diagonal(shares, 0.0)
    rate = np.divide(off_totals, totals, out=np.zeros(k), where=totals > 0)
    matrix = shares * rate[None, :]
    matrix[np.diag_indices(k)] = 1.0 - rate
    return matrix


def label_posterior(labels: np.ndarray, probs: np.ndarray, noise_matrix: np.ndarray, *,
                    iterations: int = POSTERIOR_ITERATIONS) -> np.ndarray:
    """``P(true = j | x, given label)`` per sample, ``(n, k)``, under ``q(x) = T p(y | x)``.

    ``p(y | x)`` is the maximum-likelihood deconvolution of ``q`` by EM (multiplicative updates that keep
    it a distribution; started at ``q``, a fixed number of steps, which also keeps it smooth), then
    ``P(y = j | x, s) ∝ T[s, j] p_j(x)``.
    """
    q = np.clip(probs, 1e-12, None)
    q = q / q.sum(axis=1, keepdims=True)
    clean = q.copy()
    for _ in range(iterations):
        clean *= (q / np.maximum(clean @ noise_matrix.T, 1e-300)) @ noise_matrix
        clean /= clean.sum(axis=1, keepdims=True)
    joint = noise_matrix[labels, :] * clean
    return joint / np.maximum(joint.sum(axis=1, keepdims=True), 1e-300)


def recalibrate(error: np.ndarray, target: float, *, keep_zero: np.ndarray | None = None) -> np.ndarray:
    """Shift every error probability by one constant in log-odds so that their mean is ``target``.

    One constant keeps the ranking and moves all samples' odds by the same factor, i.e. it corrects a
    classifier that is uniformly too soft (or too sharp) in the tails. ``keep_zero`` rows stay at 0.
    """
    fixed = np.zeros(len(error), dtype=bool) if keep_zero is None else np.asarray(keep_zero, dtype=bool)
    free = ~fixed
    if not free.any():
        return error
    # The fixed rows count as 0 in the mean: the free rows carry the whole target.
    goal = float(np.clip(target * len(error) / free.sum(), 1e-9, 1.0 - 1e-9))
    odds = logit(np.clip(error[free], 1e-9, 1.0 - 1e-9))
    shift = brentq(lambda c: float(np.mean(expit(odds + c))) - goal, -50.0, 50.0, xtol=1e-6)
    out = np.zeros(len(error))
    out[free] = expit(odds + shift)
    return out


def expected_f1_cut(error: np.ndarray, *, min_probability: float = MIN_FLAG_PROBABILITY) -> np.ndarray:
    """Flag the top-``m`` by error probability for the ``m`` with the highest expected F1.

    With calibrated error probabilities ``e``, flagging the top ``m`` has expected F1 about
    ``2 * sum(e[:m]) / (m + sum(e))``; only samples with ``e >= min_probability`` are candidates, so a
    clean dataset with uniformly tiny error probabilities flags nothing.
    """
    flagged = np.zeros(len(error), dtype=bool)
    total = float(error.sum())
    order = np.argsort(-error, kind="stable")
    candidates = int(np.sum(error >= min_probability))
    if total <= 0 or candidates == 0:
        return flagged
    gains = np.cumsum(error[order[:candidates]])
    expected = 2.0 * gains / (np.arange(1, candidates + 1) + total)
    flagged[order[: int(np.argmax(expected)) + 1]] = True
    return flagged


def confident_joint(labels: np.ndarray, probs: np.ndarray) -> ConfidentJoint:
    """Confident learning's confident joint and its calibration to the label counts.

    Threshold ``t_j`` = mean ``q_j`` over samples given label ``j``. A sample counts in cell
    ``(given, j)`` for the ``j`` with the highest ``q_j`` among the classes where ``q_j >= t_j`` (not
    counted when there is none). Each row is then rescaled to the number of samples given that label,
    and the whole matrix to sum to 1.
    """
    n, k = probs.shape
    label_counts = np.bincount(labels, minlength=k).astype(np.float64)
    self_confidence = probs[np.arange(n), labels]
    thresholds = np.bincount(labels, weights=self_confidence, minlength=k) / np.maximum(label_counts, 1)
    thresholds[label_counts == 0] = np.inf  # no samples: no threshold can be met
    above = probs >= thresholds[None, :]
    confident = np.where(above, probs, -np.inf).argmax(axis=1)
    counted = above.any(axis=1)
    counts = np.zeros((k, k))
    np.add.at(counts, (labels[counted], confident[counted]), 1.0)
    row_totals = counts.sum(axis=1, keepdims=True)
    # A label none of whose samples is confidently anything: assume it is right (identity row).
    rows = np.where(row_totals > 0, counts / np.maximum(row_totals, 1), np.eye(k)) * label_counts[:, None]
    joint = rows / max(rows.sum(), 1.0)
    return ConfidentJoint(thresholds=thresholds, counts=counts, joint=joint, label_counts=label_counts)


def prune_by_noise_rate(labels: np.ndarray, probs: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """Confident learning's "prune by noise rate": for every off-diagonal cell ``(i, j)`` of the joint,
    flag the ``round(n * joint[i, j])`` samples given label ``i`` with the largest margin ``q_j - q_i``."""
    n, _ = probs.shape
    flagged = np.zeros(n, dtype=bool)
    budget = np.rint(n * joint).astype(np.int64)
    np.fill_diagonal(budget, 0)
    own = probs[np.arange(n), labels]
    for given, true in np.argwhere(budget > 0):
        members = np.flatnonzero(labels == given)
        take = min(int(budget[given, true]), len(members))
        if take == 0:
            continue
        margin = probs[members, true] - own[members]
        flagged[members[np.argpartition(-margin, take - 1)[:take]]] = True
    return flagged


def confidence_note(labels: np.ndarray, posterior: np.ndarray, probs: np.ndarray, estimated: float,
                    cl_estimate: float) -> str:
    """One plain sentence on how far to trust the estimate.

    Weighs: how accurate the out-of-fold classifier is against the *corrected* labels (a weak
    classifier's own mistakes look like label errors), the noise level (above ~40% the classes
    themselves get hard to pin down), the smallest class (anchors need a few dozen samples), and
    whether confident learning lands in its usual range (it counts look-alike confusions as noise, so
    it normally reads 0-15 points higher).
    """
    k = probs.shape[1]
    rows = np.arange(len(labels))
    accuracy = float(np.mean(posterior[rows, probs.argmax(axis=1)]))
    counts = np.bincount(labels, minlength=k)
    smallest = int(counts[counts > 0].min())
    gap = cl_estimate - estimated
    reasons = []
    if accuracy < 0.7:
        reasons.append(f"the classifier is weak (about {accuracy:.0%} accurate even against the corrected labels), "
                       "so some of its own mistakes may be counted as label errors")
    if estimated > 0.4:
        reasons.append("with this much noise the classes themselves are hard to pin down")
    if smallest < 50:
        reasons.append(f"the smallest class has only {smallest} samples")
    if gap < -0.05 or gap > 0.15:
        reasons.append(f"confident learning disagrees ({cl_estimate:.1%})")
    if not reasons:
        return (f"Reliable estimate: the classifier is about {accuracy:.0%} accurate against the corrected labels, "
                f"every class has at least {smallest} samples, and confident learning's {cl_estimate:.1%} is in "
                "its usual range (it also counts look-alike classes as noise).")
    trust = "Moderately reliable" if len(reasons) == 1 else "Rough"
    return f"{trust} estimate: {'; '.join(reasons)}."


def label_issue_finding(sample_ids: Sequence[str] | np.ndarray, labels: np.ndarray, pred_probs: np.ndarray,
                        class_names: Sequence[str], *, method: str = "auto") -> Finding:
    """The ``label_issues`` Finding: flags, scores (``1 - label_quality``), summary and evidence.

    Severity from the estimated share of wrong labels (``SEVERITY_CUTS``: low >= 1%, medium >= 5%,
    high >= 15%), and "none" when nothing is flagged.
    """
    labels, probs = _validated(labels, pred_probs)
    names = [str(name) for name in class_names]
    if len(names) != probs.shape[1]:
        raise InputError(f"label issues: {len(names)} class names for {probs.shape[1]} probability columns")
    ids = np.asarray(sample_ids, dtype=object)
    if len(ids) != len(labels):
        raise InputError(f"label issues: {len(ids)} sample ids for {len(labels)} labels")
    result = find_label_issues(labels, probs, method=method)
    flagged = result.is_issue
    count = int(flagged.sum())
    share = result.estimated_noise_rate
    severity = severity_from_share(share, **SEVERITY_CUTS) if count else "none"
    pairs = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(pairs, (labels[flagged], result.suggested_label[flagged]), 1)
    top = [(int(i), int(j)) for i, j in zip(*np.unravel_index(np.argsort(-pairs, axis=None, kind="stable"),
                                                              pairs.shape), strict=True) if pairs[i, j] > 0][:3]
    if count:
        confusions = ", ".join(f"{names[i]}→{names[j]} {pairs[i, j]}" for i, j in top)
        message = (f"≈{share:.1%} of labels look wrong ({count} samples flagged); most confusions "
                   f"(label→likely): {confusions}")
    else:
        message = f"no label looks wrong (estimated noise {share:.1%})"
    details = {
        str(ids[i]): {"label": names[labels[i]], "suggested_label": names[result.suggested_label[i]],
                      "label_quality": round(float(result.label_quality[i]), 6)}
        for i in np.flatnonzero(flagged)
    }
    summary = {
        "estimated_noise_rate": round(share, 6),
        "per_class_noise_rate": {name: round(float(rate), 6)
                                 for name, rate in zip(names, result.class_noise_rate, strict=True)},
        "method": result.method,
        "oof_accuracy": round(float(np.mean(probs.argmax(axis=1) == labels)), 6),
    }
    evidence = {"noise_matrix": np.round(result.noise_matrix, 6).tolist(), "class_names": names,
                "confidence_note": result.confidence_note}
    return Finding(check="label_issues", severity=severity, message=message, sample_ids=ids, flagged=flagged,
                   scores=1.0 - result.label_quality, summary=summary, evidence=evidence, details=details)


def _normalize_columns(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=0, keepdims=True)
    out = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    empty = totals[0] == 0
    out[:, empty] = np.eye(len(matrix))[:, empty]
    return out


def _validated(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(pred_probs, dtype=np.float64)
    y = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise InputError(f"label issues: pred_probs must be (n, k>=2), got shape {probs.shape}")
    if y.shape != (len(probs),):
        raise InputError(f"label issues: labels must have shape ({len(probs)},), got {y.shape}")
    if len(y) == 0:
        raise InputError("label issues: no samples")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError("label issues: labels must be integer class indices")
    if y.min() < 0 or y.max() >= probs.shape[1]:
        raise InputError(f"label issues: labels must lie in 0..{probs.shape[1] - 1}")
    if not np.all(np.isfinite(probs)) or probs.min() < 0:
        raise InputError("label issues: pred_probs must be finite and non-negative")
    sums = probs.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > 1e-3):
        raise InputError("label issues: every row of pred_probs must sum to 1")
    return y.astype(np.int64), probs / sums[:, None]
