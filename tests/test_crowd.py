"""Agreement and aggregation over simulated annotators of real labels (scikit-learn's digits)."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import cohen_kappa_score

from curato.crowd import aggregate_labels, agreement_report, cohen_kappa_pairs, fleiss_kappa, gold_accuracy

CONFUSED = {"3": "8", "8": "3"}  # bob swaps these two digits every time

# Fleiss (1971) as tabulated on Wikipedia: 10 items, 14 raters each, 5 classes
FLEISS_TABLE = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                         [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])


def _simulate(truth: list[str], rng: np.random.Generator, accuracy: float,
              confuse: dict[str, str] | None = None) -> list[str]:
    """One annotator: right with probability ``accuracy``, else a uniform other class; ``confuse`` always wins."""
    classes = sorted(set(truth))
    answers = []
    for label in truth:
        if confuse and label in confuse:
            answers.append(confuse[label])
        elif rng.random() < accuracy:
            answers.append(label)
        else:
            answers.append(str(rng.choice([other for other in classes if other != label])))
    return answers


@pytest.fixture(scope="module")
def crowd() -> dict:
    truth = [str(target) for target in load_digits().target]
    rng = np.random.default_rng(0)
    answers = {"alice": _simulate(truth, rng, 0.95), "bob": _simulate(truth, rng, 0.9, CONFUSED),
               "carol": _simulate(truth, rng, 0.6)}
    items, annotators, labels = [], [], []
    for name, given in answers.items():
        for index, label in enumerate(given):
            items.append(f"digit-{index}")
            annotators.append(name)
            labels.append(label)
    gold = {f"digit-{index}": label for index, label in enumerate(truth)}
    return {"truth": truth, "answers": answers, "items": items, "annotators": annotators, "labels": labels,
            "gold": gold}


def _accuracy(result: dict[str, str], gold: dict[str, str]) -> float:
    return sum(result[item] == label for item, label in gold.items()) / len(gold)


def test_dawid_skene_beats_majority_vote_and_every_annotator(crowd):
    pytest.importorskip("crowdkit")
    args = crowd["items"], crowd["annotators"], crowd["labels"]
    dawid_skene = _accuracy(aggregate_labels(*args), crowd["gold"])
    majority = _accuracy(aggregate_labels(*args, method="majority_vote"), crowd["gold"])
    per_annotator = gold_accuracy(*args, crowd["gold"])
    # measured with seed 0: Dawid-Skene 0.980, majority 0.879, annotators 0.952 / 0.727 / 0.589
    assert dawid_skene >= 0.97
    assert dawid_skene > majority + 0.05
    assert dawid_skene > max(scores["accuracy"] for scores in per_annotator.values())


def test_gold_accuracy_counts_exactly(crowd):
    args = crowd["items"], crowd["annotators"], crowd["labels"]
    scores = gold_accuracy(*args, crowd["gold"])
    assert list(scores) == ["alice", "bob", "carol"]
    for name, given in crowd["answers"].items():
        correct = sum(label == truth for label, truth in zip(given, crowd["truth"], strict=True))
        assert scores[name] == {"gold_items": len(given), "correct": correct, "accuracy": correct / len(given)}
    # bob is never right on 3s and 8s, so at most 90 % of the rest
    swapped = sum(truth in CONFUSED for truth in crowd["truth"])
    assert scores["bob"]["correct"] <= len(crowd["truth"]) - swapped
    assert 0.93 <= scores["alice"]["accuracy"] <= 0.97
    assert 0.55 <= scores["carol"]["accuracy"] <= 0.65

    partial = dict(list(crowd["gold"].items())[:10])
    few = gold_accuracy(*args, partial)
    assert all(entry["gold_items"] == 10 for entry in few.values())
    small = gold_accuracy(["x", "y", "y"], ["ann", "ann", "ben"], ["a", "b", "a"], {"y": "b"})
    assert small == {"ann": {"gold_items": 1, "correct": 1, "accuracy": 1.0},
                     "ben": {"gold_items": 1, "correct": 0, "accuracy": 0.0}}
    assert gold_accuracy(["x"], ["ann"], ["a"], {}) == {"ann": {"gold_items": 0, "correct": 0, "accuracy": None}}


def test_fleiss_kappa_matches_the_worked_example():
    raters = 14
    observed = Fraction(sum(int((row**2).sum()) - raters for row in FLEISS_TABLE),
                        len(FLEISS_TABLE) * raters * (raters - 1))
    shares = [Fraction(int(column), int(FLEISS_TABLE.sum())) for column in FLEISS_TABLE.sum(axis=0)]
    chance = sum(share * share for share in shares)
    by_hand = (observed - chance) / (1 - chance)
    assert observed == Fraction(688, 1820) and chance == Fraction(4170, 19600)
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(float(by_hand), abs=1e-12)
    assert round(fleiss_kappa(FLEISS_TABLE), 3) == 0.210


def test_fleiss_kappa_edge_cases():
    assert fleiss_kappa(np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0]])) == 1.0
    # items with fewer than 2 ratings do not count
    with_singletons = np.vstack([FLEISS_TABLE, [[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]])
    assert fleiss_kappa(with_singletons) == pytest.approx(fleiss_kappa(FLEISS_TABLE))
    # two raters who always disagree on two classes: agreement below chance
    assert fleiss_kappa(np.array([[1, 1], [1, 1]])) == pytest.approx(-1.0)
    assert math.isnan(fleiss_kappa(np.array([[4, 0], [2, 0]])))  # one class: undefined
    assert math.isnan(fleiss_kappa(np.array([[1, 0], [0, 1]])))  # no item with 2 ratings
    assert math.isnan(fleiss_kappa(np.zeros((0, 3))))
    with pytest.raises(ValueError, match="counts"):
        fleiss_kappa(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="counts"):
        fleiss_kappa(np.array([[1, -1], [2, 0]]))


def test_cohen_pairs_equal_sklearn_on_shared_items(crowd):
    rng = np.random.default_rng(1)
    keep = rng.random(len(crowd["items"])) < 0.7  # partial overlap
    items = [item for item, kept in zip(crowd["items"], keep, strict=True) if kept]
    annotators = [name for name, kept in zip(crowd["annotators"], keep, strict=True) if kept]
    labels = [label for label, kept in zip(crowd["labels"], keep, strict=True) if kept]
    pairs = cohen_kappa_pairs(items, annotators, labels)
    assert [(pair["a"], pair["b"]) for pair in pairs] == [("alice", "bob"), ("alice", "carol"), ("bob", "carol")]
    given = {(item, name): label for item, name, label in zip(items, annotators, labels, strict=True)}
    for pair in pairs:
        shared = sorted({item for item, name in given if name == pair["a"]}
                        & {item for item, name in given if name == pair["b"]})
        assert pair["items"] == len(shared) < len(crowd["truth"])
        expected = cohen_kappa_score([given[item, pair["a"]] for item in shared],
                                     [given[item, pair["b"]] for item in shared])
        assert pair["kappa"] == pytest.approx(expected, abs=1e-12)
    kappas = {(pair["a"], pair["b"]): pair["kappa"] for pair in pairs}
    assert kappas["alice", "bob"] > kappas["alice", "carol"] > kappas["bob", "carol"]


def test_cohen_pairs_small_cases():
    # one class, full agreement -> 1.0 instead of nan; fewer than 2 shared items -> no pair
    pairs = cohen_kappa_pairs(["x", "y", "x", "y", "z", "z"], ["a", "a", "b", "b", "c", "a"],
                              ["cat", "cat", "cat", "cat", "dog", "cat"])
    assert pairs == [{"a": "a", "b": "b", "items": 2, "kappa": 1.0}]
    pairs = cohen_kappa_pairs(["x", "y", "x", "y"], ["a", "a", "b", "b"], ["cat", "dog", "dog", "cat"])
    assert pairs[0]["kappa"] == pytest.approx(-1.0)


def test_agreement_report_on_simulated_crowd(crowd):
    report = agreement_report(crowd["items"], crowd["annotators"], crowd["labels"])
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["items_with_overlap"] == len(crowd["truth"])
    # measured with seed 0: overall 0.514; per class 0.10 (3) and 0.13 (8) against 0.58 .. 0.64 for the others
    assert 0.45 <= report["fleiss_kappa"] <= 0.6
    per_class = report["per_class"]
    assert sorted(per_class) == [str(digit) for digit in range(10)]
    for digit, kappa in per_class.items():
        if digit in CONFUSED:
            assert kappa < 0.2
        else:
            assert kappa > 0.5
    annotators = report["per_annotator"]
    assert all(entry["answers"] == entry["overlap_items"] == len(crowd["truth"]) for entry in annotators.values())
    assert annotators["alice"]["mean_kappa"] > annotators["bob"]["mean_kappa"] > annotators["carol"]["mean_kappa"]
    pairs = {(pair["a"], pair["b"]): pair for pair in report["pairs"]}
    weighted = (pairs["alice", "bob"]["kappa"] + pairs["alice", "carol"]["kappa"]) / 2  # equal overlaps
    assert annotators["alice"]["mean_kappa"] == pytest.approx(weighted)
    consensus = aggregate_labels(crowd["items"], crowd["annotators"], crowd["labels"])
    for name, given in crowd["answers"].items():
        share = sum(label == consensus[f"digit-{index}"] for index, label in enumerate(given)) / len(given)
        assert annotators[name]["agreement_with_consensus"] == pytest.approx(share)
    assert annotators["alice"]["agreement_with_consensus"] > 0.9 > annotators["bob"]["agreement_with_consensus"]


def test_agreement_report_small_and_undefined():
    report = agreement_report(["x", "x", "y", "z", "z"], ["a", "b", "a", "a", "b"], ["cat", "cat", "dog", "dog", "dog"],
                              classes=["cat", "dog", "bird"])
    assert report["items_with_overlap"] == 2
    assert report["fleiss_kappa"] == 1.0
    assert report["per_class"] == {"cat": 1.0, "dog": 1.0, "bird": None}
    assert report["per_annotator"]["a"] == {"answers": 3, "overlap_items": 2, "mean_kappa": 1.0,
                                            "agreement_with_consensus": 1.0}
    assert report["pairs"] == [{"a": "a", "b": "b", "items": 2, "kappa": 1.0}]
    lonely = agreement_report(["x", "y"], ["a", "b"], ["cat", "dog"])
    assert lonely["items_with_overlap"] == 0 and lonely["fleiss_kappa"] is None and lonely["pairs"] == []
    assert lonely["per_annotator"]["a"] == {"answers": 1, "overlap_items": 0, "mean_kappa": None,
                                            "agreement_with_consensus": None}
    json.dumps(lonely, allow_nan=False)
    with pytest.raises(ValueError, match="labels"):
        agreement_report(["x", "x"], ["a", "b"], ["cat", "cow"], classes=["cat", "dog"])


@pytest.mark.parametrize("call", [
    lambda items, annotators, labels: cohen_kappa_pairs(items, annotators, labels),
    lambda items, annotators, labels: agreement_report(items, annotators, labels),
    lambda items, annotators, labels: gold_accuracy(items, annotators, labels, {}),
])
def test_lengths_are_validated(call):
    with pytest.raises(ValueError, match="annotators"):
        call(["x", "y"], ["a"], ["cat", "dog"])
    with pytest.raises(ValueError, match="labels"):
        call(["x", "y"], ["a", "b"], ["cat"])
