"""Class imbalance and split health: how many of each class, and whether the splits agree."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
from scipy.stats import chi2_contingency

from curato.checks.findings import Finding

# Cramér's V between split and class above which the splits' class mixes differ materially
SPLIT_V_MEDIUM = 0.1
SPLIT_V_HIGH = 0.2
SPLIT_ALPHA = 0.001


def _labeled(labels: Sequence[object | None]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=object)
    mask = np.array([label is not None for label in labels], dtype=bool)
    return labels, mask


def class_imbalance_finding(sample_ids: Sequence[str], labels: Sequence[object | None]) -> Finding:
    """Counts per class and the largest/smallest ratio; samples of under-represented classes are flagged.

    A class is under-represented when it holds fewer than half the samples of a balanced share.
    """
    ids = np.asarray(sample_ids, dtype=object)
    labels, mask = _labeled(labels)
    names, inverse, counts = np.unique(labels[mask].astype(str), return_inverse=True, return_counts=True)
    if len(names) == 0:
        return Finding("class_imbalance", "none", "no labeled samples", ids, np.zeros(len(ids), bool),
                       np.zeros(len(ids)))
    ratio = float(counts.max() / counts.min())
    balanced = mask.sum() / len(names)
    rare = counts < 0.5 * balanced
    flagged = np.zeros(len(ids), dtype=bool)
    flagged[np.flatnonzero(mask)] = rare[inverse]
    scores = np.zeros(len(ids))
    scores[np.flatnonzero(mask)] = np.clip(1 - counts[inverse] / balanced, 0, 1)
    severity = "high" if ratio >= 10 else "medium" if ratio >= 3 else "low" if ratio >= 1.5 else "none"
    largest, smallest = names[counts.argmax()], names[counts.argmin()]
    if counts.max() == counts.min():
        message = f"{len(names)} classes of {counts.max()} samples each"
    else:
        message = (f"largest/smallest class = {ratio:.1f} ({largest}: {counts.max()}, {smallest}: {counts.min()})"
                   + (f"; {int(rare.sum())} class(es) under half a balanced share" if rare.any() else ""))
    return Finding("class_imbalance", severity, message, ids, flagged, scores,
                   summary={"imbalance_ratio": ratio, "classes": len(names),
                            "counts": {str(n): int(c) for n, c in zip(names, counts, strict=True)}})


def split_health_finding(sample_ids: Sequence[str], labels: Sequence[object | None],
                         splits: Sequence[str | None]) -> Finding:
    """Whether each pair of splits has the same class mix (chi-square, Cramér's V) and every class.

    Samples of a class missing from another split are flagged: a class that is never tested (or
    never trained on) is a hole in the evaluation.
    """
    ids = np.asarray(sample_ids, dtype=object)
    labels, mask = _labeled(labels)
    split_names = np.array([s if s is not None else "-" for s in splits], dtype=object)
    present = sorted(set(split_names[mask].tolist()))
    flagged = np.zeros(len(ids), dtype=bool)
    if len(present) < 2:
        return Finding("split_health", "none", "one split only: nothing to compare", ids, flagged,
                       np.zeros(len(ids)), summary={"splits": present})
    classes = sorted(set(labels[mask].astype(str).tolist()))
    table = np.array([[np.sum((split_names == s) & mask & (labels.astype(str) == c)) for c in classes]
                      for s in present])
    pairs = []
    worst = "none"
    messages = []
    for a, b in combinations(range(len(present)), 2):
        sub = table[[a, b]]
        keep = sub.sum(axis=0) > 0
        statistic, p_value, _, _ = chi2_contingency(sub[:, keep]) if keep.sum() > 1 else (0.0, 1.0, 0, None)
        n = sub.sum()
        v = float(np.sqrt(statistic / n)) if n else 0.0  # Cramér's V for a 2 x k table
        missing = [(present[x], c) for x in (a, b) for j, c in enumerate(classes) if sub[0 if x == a else 1, j] == 0
                   and sub[1 if x == a else 0, j] > 0]
        pairs.append({"splits": [present[a], present[b]], "chi2": float(statistic), "p_value": float(p_value),
                      "cramers_v": v, "missing": [{"split": s, "class": c} for s, c in missing]})
        level = "high" if missing or (v >= SPLIT_V_HIGH and p_value < SPLIT_ALPHA) else \
            "medium" if v >= SPLIT_V_MEDIUM and p_value < SPLIT_ALPHA else "none"
        if ["none", "medium", "high"].index(level) > ["none", "medium", "high"].index(worst):
            worst = level
        for split, klass in missing:
            other = present[b] if split == present[a] else present[a]
            flagged |= (split_names == other) & (labels.astype(str) == klass) & mask
            messages.append(f"class {klass!r} has no samples in {split}")
        if level != "none" and not missing:
            messages.append(f"{present[a]} and {present[b]} differ in class mix (Cramér's V {v:.2f}, p={p_value:.1e})")
    message = "; ".join(messages) if messages else "every split has every class in similar proportions"
    return Finding("split_health", worst, message, ids, flagged, flagged.astype(float),
                   summary={"splits": len(present), "classes": len(classes),
                            "max_cramers_v": max(pair["cramers_v"] for pair in pairs)},
                   evidence={"table": table.tolist(), "splits": present, "classes": classes, "pairs": pairs})
