"""Label issues: samples whose given label is probably wrong, from out-of-fold class probabilities.

Inputs: the given labels (``0 .. k-1``) and out-of-fold ``pred_probs`` (``curato.models.oof``), row ``i``
estimating ``q(x_i) = P(given label | x_i)`` from a model that never saw sample ``i``. Noise model: the
given label ``s`` is the true label ``y`` passed through ``T[i, j] = P(s = i | y = j)``, which does not look
at the image beyond its class, so ``q(x) = T p(y | x)``. The default rule (``method="auto"``):

1. *Anchors.* Each class's ``anchor_fraction`` most confident samples (highest ``q_j``) are almost surely
   truly ``j``; their given labels estimate column ``T[:, j]``. Unlike confident learning's confident
   joint, this does not count the model's own confusion between look-alike classes as label noise.
2. *Smoothing.* Off-diagonal counts are shrunk toward uniform by a Dirichlet prior whose strength is fitted
   by maximum marginal likelihood (strong for random relabelling, weak for systematic confusions); each
   column is blended with confident learning's noise matrix, worth ``cl_prior_anchors`` anchors.
3. *Posterior.* ``p(y | x)`` is recovered from ``q = T p`` by EM steps that stay on the simplex; the label
   quality ``P(y = s | x, s)`` is the probability that the given label is right.
4. *Count.* The expected number of wrong labels comes from the anchors' implied noise rate
   ``1 - sum_j T[j, j] P(y = j)``, which does not inherit the classifier's soft tails: every error
   probability is shifted by one log-odds constant to match it (``recalibrate``). Below
   ``min_anchors_for_count`` anchors in the median class it is blended with the posteriors' own sum.
5. *Cut.* Flag the top ``m`` by error probability for the ``m`` with the highest expected F1, among
   samples at least ``min_flag_probability`` likely wrong.

``method="confident-learning"`` (Northcutt et al., 2021) is the cross-check in the confidence note;
``method="argmax"`` flags ``argmax(q) != label``. Noise that depends on the image (ambiguous images
mislabelled more often) is under-counted; the confidence note says so when confident learning reads much
higher. Classes under ``min_class_size`` samples are never flagged. Every threshold is a field of
:class:`LabelIssueParams`; measurements and tuning history: docs/benchmarks.md, "Label issues".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, gammaln, logit

from curato.arrays import as_class_indices, as_matrix, check_field, check_length
from curato.checks.findings import Finding, severity_from_share
from curato.errors import InputError
from curato.system import require_memory

METHODS = ("auto", "noise-posterior", "confident-learning", "argmax")


@dataclass(frozen=True)
class LabelIssueParams:
    """Thresholds of the ``label_issues`` check (defaults: the tuned values)."""

    anchor_fraction: float = 0.2  # share of each class's label count taken as its anchors (its most confident)
    cl_prior_anchors: float = 10.0  # weight of confident learning's noise matrix per column, in anchors
    prior_strength_min: float = 0.1  # weakest Dirichlet prior (pseudo-counts per column) the smoothing tries
    prior_strength_max: float = 10_000.0  # strongest one
    prior_strength_steps: int = 101  # prior strengths tried, log-spaced from the weakest to the strongest
    posterior_iterations: int = 30  # EM steps recovering p(y | x) from q = T p
    min_anchors_for_count: int = 30  # median anchors per class from which their implied rate alone sets the count
    min_flag_probability: float = 0.25  # error probability a sample needs to be flagged at all
    min_class_size: int = 5  # samples of smaller classes are never flagged
    severity_low: float = 0.01  # estimated share of wrong labels from which the finding is low
    severity_medium: float = 0.05  # ... medium
    severity_high: float = 0.15  # ... high
    confusions_listed: int = 3  # label -> likely label pairs named in the message
    note_min_accuracy: float = 0.7  # confidence note: an OOF classifier less accurate than this is weak
    note_max_noise: float = 0.4  # ... an estimated noise rate above this makes the classes hard to pin down
    note_min_class: int = 50  # ... a smallest class under this many samples is mentioned
    note_cl_gap_low: float = -0.05  # ... confident learning's estimate minus ours below this: it disagrees
    note_cl_gap_high: float = 0.15  # ... or above this (it normally reads 0-15 points higher)

    def __post_init__(self) -> None:
        check = "label_issues"
        check_field(check, self, "anchor_fraction", low=0.0, high=1.0, strict=True)
        for name in ("cl_prior_anchors", "prior_strength_min"):
            check_field(check, self, name, low=0.0, strict=True)
        check_field(check, self, "prior_strength_max", low=self.prior_strength_min)
        for name, low in (("prior_strength_steps", 1), ("posterior_iterations", 0), ("min_anchors_for_count", 1),
                          ("min_class_size", 0), ("confusions_listed", 1), ("note_min_class", 0)):
            check_field(check, self, name, integer=True, low=low)
        for name in ("min_flag_probability", "severity_low", "severity_medium", "severity_high",
                     "note_min_accuracy", "note_max_noise"):
            check_field(check, self, name, low=0.0, high=1.0)
        for name in ("note_cl_gap_low", "note_cl_gap_high"):
            check_field(check, self, name, low=-1.0, high=1.0)
        for lower, upper in (("severity_low", "severity_medium"), ("severity_medium", "severity_high"),
                             ("note_cl_gap_low", "note_cl_gap_high")):
            if getattr(self, upper) < getattr(self, lower):
                raise InputError(f"{check}.{upper}: must be >= {lower} ({getattr(self, lower)}), "
                                 f"got {getattr(self, upper)!r}")

    def prior_strengths(self) -> np.ndarray:
        """The Dirichlet prior strengths the smoothing tries, log-spaced."""
        return np.logspace(math.log10(self.prior_strength_min), math.log10(self.prior_strength_max),
                           self.prior_strength_steps)


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
                      min_class_size: int | None = None, params: LabelIssueParams | None = None) -> LabelIssueResult:
    """Find samples whose given label is probably wrong (see the module docstring for the rules).

    ``labels``: ``(n,)`` ints ``0 .. k-1``; ``pred_probs``: ``(n, k)`` out-of-fold probabilities.
    ``method``: ``"auto"`` (= ``"noise-posterior"``), ``"noise-posterior"``, ``"confident-learning"`` or
    ``"argmax"``. The result's ``method`` names the rule applied; for the noise posterior also where the
    expected count came from: ``"noise-posterior:anchor-count"`` (median class has at least
    ``min_anchors_for_count`` anchors) or ``"noise-posterior:blended-count"``. ``label_quality`` is the
    noise-posterior probability that the label is right whatever the rule. ``params``: the thresholds
    (default: :class:`LabelIssueParams`); ``min_class_size``, when given, overrides its field. Raises
    ``InputError`` on bad input.
    """
    p = LabelIssueParams() if params is None else params
    if min_class_size is not None:
        p = dataclasses.replace(p, min_class_size=min_class_size)
    try:
        shape = np.shape(pred_probs)
    except ValueError:  # ragged rows: _validated says so in one line
        shape = ()
    if len(shape) == 2:
        # The validated copy, the posterior, its copy for the suggestions and the confident joint's masks hold a
        # few (n, k) float64 matrices at once: say so before allocating them rather than be killed part-way.
        require_memory(LABEL_ISSUE_MATRICES * shape[0] * shape[1] * 8,
                       f"label issues over {shape[0]:,} samples x {shape[1]:,} classes",
                       "audit fewer samples at a time, or merge rare classes")
    labels, probs = _validated(labels, pred_probs)
    if method not in METHODS:
        raise InputError(f"label issues: unknown method {method!r}; known: {', '.join(METHODS)}")
    n, k = probs.shape
    rows = np.arange(n)
    label_counts = np.bincount(labels, minlength=k)
    too_small = label_counts[labels] < p.min_class_size

    cj = confident_joint(labels, probs)
    noise_matrix = anchor_noise_matrix(labels, probs, prior=cj.noise_matrix, params=p)
    posterior = label_posterior(labels, probs, noise_matrix, iterations=p.posterior_iterations)
    error = 1.0 - posterior[rows, labels]
    error[too_small] = 0.0
    # Expected count: the anchors' implied noise rate, trusted fully from min_anchors_for_count anchors
    # per class (median class) and in proportion below, the rest from the posteriors' own sum.
    anchors_per_class = float(np.median(np.ceil(p.anchor_fraction * label_counts[label_counts > 0])))
    trust = min(1.0, anchors_per_class / p.min_anchors_for_count)
    implied = 1.0 - float(np.sum(np.diag(noise_matrix) * posterior.mean(axis=0)))
    error = recalibrate(error, trust * implied + (1.0 - trust) * float(error.mean()), keep_zero=too_small)
    count_source = "anchor-count" if trust >= 1.0 else "blended-count"

    chosen = "noise-posterior" if method == "auto" else method
    if chosen == "noise-posterior":
        chosen = f"noise-posterior:{count_source}"
        is_issue = expected_f1_cut(error, min_probability=p.min_flag_probability)
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
    note = confidence_note(labels, posterior, probs, estimated, cj.noise_rate, params=p)
    return LabelIssueResult(is_issue=is_issue, label_quality=np.clip(1.0 - error, 0.0, 1.0),
                            suggested_label=suggested, noise_matrix=noise_matrix,
                            class_noise_rate=np.clip(class_noise, 0.0, 1.0), estimated_noise_rate=estimated,
                            method=chosen, confidence_note=note)


def anchor_noise_matrix(labels: np.ndarray, probs: np.ndarray, *, anchor_fraction: float | None = None,
                        prior: np.ndarray | None = None, params: LabelIssueParams | None = None) -> np.ndarray:
    """``T[i, j] = P(given = i | true = j)`` from the given labels of each class's most confident samples.

    The anchors of class ``j`` are the ``ceil(anchor_fraction * count_j)`` samples with the highest
    ``q_j`` (``count_j``: samples given label ``j``). Their label histogram is smoothed by
    ``smooth_confusions`` and blended with ``prior`` (default: confident learning's noise matrix) worth
    ``cl_prior_anchors`` anchors per column. ``anchor_fraction``, when given, overrides ``params``'.
    """
    p = LabelIssueParams() if params is None else params
    anchor_fraction = p.anchor_fraction if anchor_fraction is None else anchor_fraction
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
    anchored = smooth_confusions(counts, params=p)
    # Small classes have few anchors: fall back smoothly on confident learning's estimate, worth
    # cl_prior_anchors anchors per class (a 200-anchor class barely moves; a 6-anchor class mostly
    # follows confident learning, which uses every sample).
    weight = counts.sum(axis=0)[None, :]
    if prior is None:
        prior = confident_joint(labels, probs).noise_matrix
    return (anchored * weight + prior * p.cl_prior_anchors) / (weight + p.cl_prior_anchors)


def smooth_confusions(counts: np.ndarray, *, params: LabelIssueParams | None = None) -> np.ndarray:
    """Column-stochastic noise matrix from anchor label counts, off-diagonals shrunk toward uniform.

    Per column ``j`` the off-diagonal share ``r_j`` is the observed share of anchors with another label;
    how it splits over the ``k - 1`` other labels is the posterior mean under a symmetric Dirichlet
    prior of total strength ``b``, with ``b`` chosen by maximum marginal (Dirichlet-multinomial)
    likelihood over all columns among ``params.prior_strengths()``.
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
        strengths = (LabelIssueParams() if params is None else params).prior_strengths()
        # Dirichlet-multinomial log-likelihood of all columns per prior strength b (per-cell b / (k-1));
        # the grid loop keeps memory at O(k^2) for any number of classes.
        loglik = [k * gammaln(b) - gammaln(off_totals + b).sum()
                  + (gammaln(cells + b / (k - 1)) - gammaln(b / (k - 1))).sum() for b in strengths]
        strength = strengths[int(np.argmax(loglik))]
        shares = (off + strength / (k - 1)) / (off_totals + strength)[None, :]
    np.fill_diagonal(shares, 0.0)
    rate = np.divide(off_totals, totals, out=np.zeros(k), where=totals > 0)
    matrix = shares * rate[None, :]
    matrix[np.diag_indices(k)] = 1.0 - rate
    return matrix


def label_posterior(labels: np.ndarray, probs: np.ndarray, noise_matrix: np.ndarray, *,
                    iterations: int | None = None) -> np.ndarray:
    """``P(true = j | x, given label)`` per sample, ``(n, k)``, under ``q(x) = T p(y | x)``.

    ``p(y | x)`` is the maximum-likelihood deconvolution of ``q`` by EM (multiplicative updates that keep
    it a distribution; started at ``q``, a fixed number of steps, which also keeps it smooth), then
    ``P(y = j | x, s) ∝ T[s, j] p_j(x)``. ``iterations`` defaults to ``LabelIssueParams.posterior_iterations``.
    """
    iterations = LabelIssueParams().posterior_iterations if iterations is None else iterations
    posterior = np.empty(probs.shape, dtype=np.float64)
    # Each row's posterior depends on that row alone: blocks of rows keep the EM's temporaries bounded (a few
    # (block, k) matrices instead of (n, k) ones: 8 GB each at 1M rows x 1,000 classes).
    for start in range(0, len(probs), POSTERIOR_BLOCK):
        rows = slice(start, start + POSTERIOR_BLOCK)
        q = np.clip(probs[rows], 1e-12, None)
        q = q / q.sum(axis=1, keepdims=True)
        clean = q.copy()
        for _ in range(iterations):
            clean *= (q / np.maximum(clean @ noise_matrix.T, 1e-300)) @ noise_matrix
            clean /= clean.sum(axis=1, keepdims=True)
        joint = noise_matrix[labels[rows], :] * clean
        posterior[rows] = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1e-300)
    return posterior


POSTERIOR_BLOCK = 65_536
LABEL_ISSUE_MATRICES = 4


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


def expected_f1_cut(error: np.ndarray, *, min_probability: float | None = None) -> np.ndarray:
    """Flag the top-``m`` by error probability for the ``m`` with the highest expected F1.

    With calibrated error probabilities ``e``, flagging the top ``m`` has expected F1 about
    ``2 * sum(e[:m]) / (m + sum(e))``; only samples with ``e >= min_probability`` are candidates, so a
    clean dataset with uniformly tiny error probabilities flags nothing (default:
    ``LabelIssueParams.min_flag_probability``).
    """
    min_probability = LabelIssueParams().min_flag_probability if min_probability is None else min_probability
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
                    cl_estimate: float, *, params: LabelIssueParams | None = None) -> str:
    """One plain sentence on how far to trust the estimate.

    Weighs: how accurate the out-of-fold classifier is against the *corrected* labels (a weak
    classifier's own mistakes look like label errors), the noise level (above ~40% the classes
    themselves get hard to pin down), the smallest class (anchors need a few dozen samples), and
    whether confident learning lands in its usual range (it counts look-alike confusions as noise, so
    it normally reads 0-15 points higher). The cut-offs are ``params``' ``note_*`` fields.
    """
    p = LabelIssueParams() if params is None else params
    k = probs.shape[1]
    rows = np.arange(len(labels))
    accuracy = float(np.mean(posterior[rows, probs.argmax(axis=1)]))
    counts = np.bincount(labels, minlength=k)
    smallest = int(counts[counts > 0].min())
    gap = cl_estimate - estimated
    reasons = []
    if accuracy < p.note_min_accuracy:
        reasons.append(f"the classifier is weak (about {accuracy:.0%} accurate even against the corrected labels), "
                       "so some of its own mistakes may be counted as label errors")
    if estimated > p.note_max_noise:
        reasons.append("with this much noise the classes themselves are hard to pin down")
    if smallest < p.note_min_class:
        reasons.append(f"the smallest class has only {smallest} samples")
    if gap < p.note_cl_gap_low or gap > p.note_cl_gap_high:
        reasons.append(f"confident learning disagrees ({cl_estimate:.1%})")
    if not reasons:
        return (f"Reliable estimate: the classifier is about {accuracy:.0%} accurate against the corrected labels, "
                f"every class has at least {smallest} samples, and confident learning's {cl_estimate:.1%} is in "
                "its usual range (it also counts look-alike classes as noise).")
    trust = "Moderately reliable" if len(reasons) == 1 else "Rough"
    return f"{trust} estimate: {'; '.join(reasons)}."


def label_issue_finding(sample_ids: Sequence[str] | np.ndarray, labels: np.ndarray, pred_probs: np.ndarray,
                        class_names: Sequence[str], *, method: str = "auto",
                        params: LabelIssueParams | None = None) -> Finding:
    """The ``label_issues`` Finding: flags, scores (``1 - label_quality``), summary and evidence.

    Severity from the estimated share of wrong labels (``params.severity_*``: low >= 1%, medium >= 5%,
    high >= 15% by default), and "none" when nothing is flagged.
    """
    p = LabelIssueParams() if params is None else params
    labels, probs = _validated(labels, pred_probs)
    names = [str(name) for name in class_names]
    if len(names) != probs.shape[1]:
        raise InputError(f"label issues: {len(names)} class names for {probs.shape[1]} probability columns")
    ids = np.asarray(sample_ids, dtype=object)
    check_length("label issues: sample_ids", ids, len(labels))
    result = find_label_issues(labels, probs, method=method, params=p)
    flagged = result.is_issue
    count = int(flagged.sum())
    share = result.estimated_noise_rate
    severity = (severity_from_share(share, low=p.severity_low, medium=p.severity_medium, high=p.severity_high)
                if count else "none")
    pairs = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(pairs, (labels[flagged], result.suggested_label[flagged]), 1)
    top = [(int(i), int(j)) for i, j in zip(*np.unravel_index(np.argsort(-pairs, axis=None, kind="stable"),
                                                              pairs.shape), strict=True)
           if pairs[i, j] > 0][:p.confusions_listed]
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


def label_issues_not_checked(sample_ids: Sequence[str] | np.ndarray, reason: str) -> Finding:
    """The ``label_issues`` Finding when the check cannot judge the labels: nothing flagged, ``reason`` said."""
    ids = np.asarray(sample_ids, dtype=object)
    return Finding(check="label_issues", severity="none", message=f"{reason}: label issues not checked",
                   sample_ids=ids, flagged=np.zeros(len(ids), dtype=bool), scores=np.zeros(len(ids)),
                   summary={"checked": False, "reason": reason})


def _normalize_columns(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=0, keepdims=True)
    out = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    empty = totals[0] == 0
    out[:, empty] = np.eye(len(matrix))[:, empty]
    return out


def _validated(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = as_matrix("label issues: pred_probs", pred_probs, finite=False)
    if probs.shape[1] < 2:
        raise InputError(f"label issues: pred_probs must be (n, k>=2), got shape {probs.shape}")
    if len(probs) == 0:
        raise InputError("label issues: no samples")
    y, _ = as_class_indices("label issues", labels, rows=len(probs), n_classes=probs.shape[1])
    if not np.all(np.isfinite(probs)) or probs.min() < 0:
        raise InputError("label issues: pred_probs must be finite and non-negative")
    sums = probs.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > 1e-3):
        raise InputError("label issues: every row of pred_probs must sum to 1")
    return y, probs / sums[:, None]
