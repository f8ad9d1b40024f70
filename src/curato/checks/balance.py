"""Class imbalance and split health: how many of each class, and whether the splits agree.

Imbalance: class counts and the largest/smallest ratio; samples of classes well under a balanced share
(``n / classes``) are flagged, since a model sees too few of them to learn them. Split health: per pair of
splits, a chi-square test of the class mix with Cramér's V as the effect size (a large dataset makes any
difference significant, so both must pass), and classes missing from a split (a class never tested, or
never trained on, is a hole in the evaluation). Every threshold is a field of :class:`BalanceParams`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

# scipy.stats and scikit-learn are imported inside the functions that use them: importing them costs seconds, paid
# by every command that loads the checks (the report, `curato checks`) whether or not it runs them
from curato.arrays import check_field, check_length, encode_labels
from curato.checks.findings import Finding
from curato.errors import InputError


@dataclass(frozen=True)
class BalanceParams:
    """Thresholds of the ``imbalance`` check: class imbalance and split health (defaults: the tuned values)."""

    rare_share: float = 0.5  # a class under this fraction of a balanced share (n / classes) is flagged
    ratio_low: float = 1.5  # largest/smallest class count from which imbalance is low
    ratio_medium: float = 3.0  # ... medium
    ratio_high: float = 10.0  # ... high
    split_v_medium: float = 0.1  # Cramér's V between split and class from which two splits' mixes differ (medium)
    split_v_high: float = 0.2  # ... differ materially (high)
    split_alpha: float = 0.001  # chi-square p-value below which a difference in class mix counts

    def __post_init__(self) -> None:
        check_field("imbalance", self, "rare_share", low=0.0, high=1.0, strict=True)
        for name in ("ratio_low", "ratio_medium", "ratio_high"):
            check_field("imbalance", self, name, low=1.0)
        for name in ("split_v_medium", "split_v_high"):
            check_field("imbalance", self, name, low=0.0, high=1.0)
        check_field("imbalance", self, "split_alpha", low=0.0, high=1.0, strict=True)
        for lower, upper in (("ratio_low", "ratio_medium"), ("ratio_medium", "ratio_high"),
                             ("split_v_medium", "split_v_high")):
            if getattr(self, upper) < getattr(self, lower):
                raise InputError(f"imbalance.{upper}: must be >= {lower} ({getattr(self, lower)}), "
                                 f"got {getattr(self, upper)!r}")


def class_imbalance_finding(sample_ids: Sequence[str], labels: Sequence[object | None], *,
                            params: BalanceParams | None = None) -> Finding:
    """Counts per class and the largest/smallest ratio; samples of under-represented classes are flagged.

    A class is under-represented when it holds fewer than ``params.rare_share`` (default half) of the
    samples of a balanced share; severity from the ratio (``params.ratio_low/medium/high``).
    """
    p = BalanceParams() if params is None else params
    ids = np.asarray(sample_ids, dtype=object)
    check_length("labels", labels, len(ids))
    codes, names = encode_labels(labels)
    mask = codes >= 0
    if len(names) == 0:
        return Finding("class_imbalance", "none", "no labeled samples", ids, np.zeros(len(ids), bool),
                       np.zeros(len(ids)))
    inverse = codes[mask]
    counts = np.bincount(inverse, minlength=len(names))
    ratio = float(counts.max() / counts.min())
    balanced = mask.sum() / len(names)
    rare = counts < p.rare_share * balanced
    flagged = np.zeros(len(ids), dtype=bool)
    flagged[mask] = rare[inverse]
    scores = np.zeros(len(ids))
    scores[mask] = np.clip(1 - counts[inverse] / balanced, 0, 1)
    severity = ("high" if ratio >= p.ratio_high else "medium" if ratio >= p.ratio_medium
                else "low" if ratio >= p.ratio_low else "none")
    largest, smallest = names[counts.argmax()], names[counts.argmin()]
    if counts.max() == counts.min():
        message = f"{len(names)} classes of {counts.max()} samples each"
    else:
        under = "half" if p.rare_share == 0.5 else f"{p.rare_share:g} of"
        message = (f"largest/smallest class = {ratio:.1f} ({largest}: {counts.max()}, {smallest}: {counts.min()})"
                   + (f"; {int(rare.sum())} class(es) under {under} a balanced share" if rare.any() else ""))
    return Finding("class_imbalance", severity, message, ids, flagged, scores,
                   summary={"imbalance_ratio": ratio, "classes": len(names),
                            "counts": {n: int(c) for n, c in zip(names, counts, strict=True)}})


def split_health_finding(sample_ids: Sequence[str], labels: Sequence[object | None],
                         splits: Sequence[str | None], *, params: BalanceParams | None = None) -> Finding:
    """Whether each pair of splits has the same class mix (chi-square, Cramér's V) and every class.

    Samples of a class missing from another split are flagged: a class that is never tested (or
    never trained on) is a hole in the evaluation. A pair differs (medium / high) when Cramér's V reaches
    ``params.split_v_medium`` / ``split_v_high`` at p < ``params.split_alpha``; a missing class is high.
    """
    from scipy.stats import chi2_contingency
    p = BalanceParams() if params is None else params
    ids = np.asarray(sample_ids, dtype=object)
    check_length("labels", labels, len(ids))
    check_length("splits", splits, len(ids))
    codes, classes = encode_labels(labels)
    mask = codes >= 0
    split_names = np.array([s if s is not None else "-" for s in splits], dtype=object)
    present = sorted(set(split_names[mask].tolist()))
    flagged = np.zeros(len(ids), dtype=bool)
    if len(present) < 2:
        return Finding("split_health", "none", "one split only: nothing to compare", ids, flagged,
                       np.zeros(len(ids)), summary={"splits": present})
    position = {split: i for i, split in enumerate(present)}
    table = np.zeros((len(present), len(classes)), dtype=np.int64)
    np.add.at(table, ([position[s] for s in split_names[mask]], codes[mask]), 1)
    pairs = []
    worst = "none"
    messages = []
    for a, b in combinations(range(len(present)), 2):
        sub = table[[a, b]]
        keep = sub.sum(axis=0) > 0
        statistic, p_value, _, _ = chi2_contingency(sub[:, keep]) if keep.sum() > 1 else (0.0, 1.0, 0, None)
        n = sub.sum()
        v = float(np.sqrt(statistic / n)) if n else 0.0  # Cramér's V for a 2 x k table
        # (split without the class, class) for every class one split of the pair has and the other lacks
        missing = [(x, j) for x, other in ((0, 1), (1, 0)) for j in range(len(classes))
                   if sub[x, j] == 0 and sub[other, j] > 0]
        pairs.append({"splits": [present[a], present[b]], "chi2": float(statistic), "p_value": float(p_value),
                      "cramers_v": v,
                      "missing": [{"split": present[(a, b)[x]], "class": classes[j]} for x, j in missing]})
        level = "high" if missing or (v >= p.split_v_high and p_value < p.split_alpha) else \
            "medium" if v >= p.split_v_medium and p_value < p.split_alpha else "none"
        if ["none", "medium", "high"].index(level) > ["none", "medium", "high"].index(worst):
            worst = level
        for x, j in missing:
            other = present[(b, a)[x]]
            flagged |= (split_names == other) & (codes == j)
            messages.append(f"class {classes[j]!r} has no samples in {present[(a, b)[x]]}")
        if level != "none" and not missing:
            messages.append(f"{present[a]} and {present[b]} differ in class mix (Cramér's V {v:.2f}, p={p_value:.1e})")
    message = "; ".join(messages) if messages else "every split has every class in similar proportions"
    return Finding("split_health", worst, message, ids, flagged, flagged.astype(float),
                   summary={"splits": len(present), "classes": len(classes),
                            "max_cramers_v": max(pair["cramers_v"] for pair in pairs)},
                   evidence={"table": table.tolist(), "splits": present, "classes": classes, "pairs": pairs})
