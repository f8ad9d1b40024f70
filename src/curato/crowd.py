"""Many annotators, one label: aggregation of overlapping labels and agreement between annotators.

Pure functions over parallel sequences ``(item, annotator, label)``, one entry per (item, annotator) answer.
Aggregation uses crowd-kit's Dawid-Skene (each annotator gets a confusion matrix, so a careful annotator
outweighs a careless one) and falls back to majority vote when Dawid-Skene cannot be fitted (too few
overlapping answers, or crowd-kit is not installed); a tie in the vote goes to the most recent answer.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

DAWID_SKENE_MIN_OVERLAP = 2  # items with at least this many annotators before Dawid-Skene is worth fitting


def majority_vote(items: Sequence[str], annotators: Sequence[str], labels: Sequence[str]) -> dict[str, str]:
    """item -> the label most annotators gave; a tie goes to the label answered last among the tied."""
    del annotators  # one vote per entry; callers pass one entry per (item, annotator)
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    last_seen: dict[tuple[str, str], int] = {}
    for position, (item, label) in enumerate(zip(items, labels, strict=True)):
        votes[item][label] += 1
        last_seen[item, label] = position
    return {item: max(counter, key=lambda label: (counter[label], last_seen[item, label]))
            for item, counter in votes.items()}


def aggregate_labels(items: Sequence[str], annotators: Sequence[str], labels: Sequence[str], *,
                     method: str = "dawid_skene", n_iter: int = 100) -> dict[str, str]:
    """item -> one label from the answers of several annotators (``method``: dawid_skene or majority_vote).

    Items answered by one annotator keep that answer. Dawid-Skene is fitted on every answer when at least one
    item has answers from :data:`DAWID_SKENE_MIN_OVERLAP` annotators; otherwise (or when it fails) majority
    vote decides.
    """
    if not (len(items) == len(annotators) == len(labels)):
        raise ValueError("items, annotators and labels must have the same length")
    if method not in ("dawid_skene", "majority_vote"):
        raise ValueError(f"method must be dawid_skene or majority_vote, not {method!r}")
    voted = majority_vote(items, annotators, labels)
    per_item = Counter(items)
    if method == "majority_vote" or not any(count >= DAWID_SKENE_MIN_OVERLAP for count in per_item.values()):
        return voted
    try:
        import pandas as pd
        from crowdkit.aggregation import DawidSkene
    except ImportError:
        return voted
    frame = pd.DataFrame({"task": list(items), "worker": list(annotators), "label": list(labels)})
    try:
        fitted = DawidSkene(n_iter=n_iter).fit_predict(frame)
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return voted
    result = dict(voted)
    for item, label in fitted.items():
        if per_item[item] >= DAWID_SKENE_MIN_OVERLAP and isinstance(label, str):
            result[str(item)] = label
    return result
