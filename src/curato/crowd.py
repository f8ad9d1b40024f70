"""Many annotators, one label: aggregation of overlapping labels and agreement between annotators.

Pure functions over parallel sequences ``(item, annotator, label)``, one entry per (item, annotator) answer.
Aggregation uses crowd-kit's Dawid-Skene (each annotator gets a confusion matrix, so a careful annotator
outweighs a careless one) and falls back to majority vote when Dawid-Skene cannot be fitted (too few
overlapping answers, or crowd-kit is not installed); a tie in the vote goes to the most recent answer.

Agreement (how far the annotators can be trusted, for the multi-annotator part of the labelling app): Cohen's kappa
per annotator pair (:func:`cohen_kappa_pairs`), Fleiss' kappa over items with several answers, overall and one class
against the rest (:func:`fleiss_kappa`), both gathered in a JSON-ready :func:`agreement_report`; and accuracy on gold
items (:func:`gold_accuracy`). These keep one answer per (item, annotator): the last one when an annotator repeats.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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
        with warnings.catch_warnings():  # crowd-kit 1.4 uses pandas keywords pandas 3 deprecates
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            fitted = DawidSkene(n_iter=n_iter).fit_predict(frame)
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return voted
    result = dict(voted)
    for item, label in fitted.items():
        if per_item[item] >= DAWID_SKENE_MIN_OVERLAP and isinstance(label, str):
            result[str(item)] = label
    return result


def _check_lengths(items: Sequence[str], annotators: Sequence[str], labels: Sequence[str]) -> None:
    """ValueError naming the sequence whose length differs from ``items``."""
    for name, values in (("annotators", annotators), ("labels", labels)):
        if len(values) != len(items):
            raise ValueError(f"{name} has {len(values)} entries but items has {len(items)}; "
                             "items, annotators and labels must be parallel")


def _answers(items: Sequence[str], annotators: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, str]]:
    """item -> {annotator: label}, keeping an annotator's last answer to an item."""
    _check_lengths(items, annotators, labels)
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    for item, annotator, label in zip(items, annotators, labels, strict=True):
        answers[item][annotator] = label
    return dict(answers)


def _json_float(value: float) -> float | None:
    """A plain float, or None for nan (JSON has no nan)."""
    value = float(value)
    return None if np.isnan(value) else value


def cohen_kappa_pairs(items: Sequence[str], annotators: Sequence[str], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Cohen's kappa of every annotator pair sharing at least 2 items: ``[{"a", "b", "items", "kappa"}]``, a < b.

    Kappa corrects raw agreement for the agreement chance alone would give. A pair that agrees everywhere with a
    single class present has kappa 0/0 (nan in scikit-learn); it is reported as 1.0, since they never disagree.
    """
    from sklearn.metrics import cohen_kappa_score

    by_annotator: dict[str, dict[str, str]] = defaultdict(dict)
    for item, answered in _answers(items, annotators, labels).items():
        for annotator, label in answered.items():
            by_annotator[annotator][item] = label
    names = sorted(by_annotator)
    pairs: list[dict[str, Any]] = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = [item for item in by_annotator[a] if item in by_annotator[b]]
            if len(shared) < 2:
                continue
            first = [by_annotator[a][item] for item in shared]
            second = [by_annotator[b][item] for item in shared]
            single_class = len(set(first) | set(second)) == 1
            kappa = 1.0 if single_class else float(cohen_kappa_score(first, second))
            pairs.append({"a": a, "b": b, "items": len(shared), "kappa": kappa})
    return pairs


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (items x classes) matrix of how many annotators gave each class to each item.

    Items with fewer than 2 ratings are ignored; items may have different numbers of ratings (the observed
    agreement is the mean of the per-item agreements, chance agreement uses the pooled class shares). nan when
    undefined: no item left, or every rating in one class.
    """
    matrix = np.asarray(counts, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"counts must be a 2-D (items x classes) matrix, got {matrix.ndim} dimension(s)")
    if matrix.size and (not np.all(np.isfinite(matrix)) or np.any(matrix < 0)):
        raise ValueError("counts must hold finite, non-negative counts")
    raters = matrix.sum(axis=1)
    keep = raters >= 2
    matrix, raters = matrix[keep], raters[keep]
    if not len(raters):
        return float("nan")
    observed = float((((matrix**2).sum(axis=1) - raters) / (raters * (raters - 1))).mean())
    shares = matrix.sum(axis=0) / raters.sum()
    chance = float((shares**2).sum())
    if np.isclose(chance, 1.0):
        return float("nan")
    return (observed - chance) / (1.0 - chance)


def agreement_report(items: Sequence[str], annotators: Sequence[str], labels: Sequence[str], *,
                     classes: Sequence[str] | None = None) -> dict[str, Any]:
    """How well annotators agree, JSON-ready (plain floats, None for undefined values).

    ``{"items_with_overlap", "fleiss_kappa", "per_class": {class: one-vs-rest Fleiss kappa}, "per_annotator":
    {name: {"answers", "overlap_items", "mean_kappa", "agreement_with_consensus"}}, "pairs"}``. Fleiss' kappas
    use the items with at least 2 answers; ``mean_kappa`` is the annotator's Cohen's kappa against each other
    annotator weighted by shared items; ``agreement_with_consensus`` is the share of their answers on overlap
    items equal to :func:`aggregate_labels`. ``classes`` (default: the labels seen) fixes the per-class keys.
    """
    answers = _answers(items, annotators, labels)
    seen = sorted({label for answered in answers.values() for label in answered.values()})
    if classes is None:
        classes = seen
    else:
        classes = list(dict.fromkeys(classes))
        unknown = sorted(set(seen) - set(classes))
        if unknown:
            raise ValueError(f"labels holds classes not in classes: {unknown[:5]}")
    index = {label: position for position, label in enumerate(classes)}
    overlap = [item for item, answered in answers.items() if len(answered) >= 2]
    counts = np.zeros((len(overlap), len(classes)))
    for row, item in enumerate(overlap):
        for label in answers[item].values():
            counts[row, index[label]] += 1
    raters = counts.sum(axis=1)
    per_class = {label: _json_float(fleiss_kappa(np.stack([counts[:, k], raters - counts[:, k]], axis=1)))
                 for label, k in index.items()}

    pairs = cohen_kappa_pairs(items, annotators, labels)
    consensus = aggregate_labels(items, annotators, labels) if overlap else {}
    per_annotator: dict[str, dict[str, Any]] = {}
    for name in sorted({annotator for answered in answers.values() for annotator in answered}):
        answered = {item: given[name] for item, given in answers.items() if name in given}
        on_overlap = [item for item in answered if len(answers[item]) >= 2]
        mine = [(pair["kappa"], pair["items"]) for pair in pairs if name in (pair["a"], pair["b"])]
        weight = sum(shared for _, shared in mine)
        mean_kappa = sum(kappa * shared for kappa, shared in mine) / weight if weight else float("nan")
        agreeing = sum(answered[item] == consensus.get(item) for item in on_overlap)
        per_annotator[name] = {
            "answers": len(answered),
            "overlap_items": len(on_overlap),
            "mean_kappa": _json_float(mean_kappa),
            "agreement_with_consensus": agreeing / len(on_overlap) if on_overlap else None,
        }
    return {
        "items_with_overlap": len(overlap),
        "fleiss_kappa": _json_float(fleiss_kappa(counts)),
        "per_class": per_class,
        "per_annotator": per_annotator,
        "pairs": pairs,
    }


def gold_accuracy(items: Sequence[str], annotators: Sequence[str], labels: Sequence[str],
                  gold: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """annotator -> ``{"gold_items", "correct", "accuracy"}`` on their answers to items in ``gold`` (item -> label).

    Every annotator is listed; ``accuracy`` is None for one who answered no gold item.
    """
    result: dict[str, dict[str, Any]] = {}
    for item, answered in _answers(items, annotators, labels).items():
        for annotator, label in answered.items():
            scores = result.setdefault(annotator, {"gold_items": 0, "correct": 0, "accuracy": None})
            if item in gold:
                scores["gold_items"] += 1
                scores["correct"] += int(label == gold[item])
    for scores in result.values():
        if scores["gold_items"]:
            scores["accuracy"] = scores["correct"] / scores["gold_items"]
    return dict(sorted(result.items()))
