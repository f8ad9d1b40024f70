"""Diversity and coverage on real Fashion-MNIST pictures: a narrowed class, a framed context, an unseen class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curato.checks.diversity import (
    DiversityParams,
    diversity_findings,
    effective_number,
    nearest_in_group,
    spherical_kmeans,
)
from curato.errors import InputError
from curato.features.embedders import get_embedder
from curato.features.properties import PROPERTY_COLUMNS, image_properties
from curato.ingest.readers import FASHION_MNIST_CLASSES
from curato.neighbors import knn, unit_rows

SNEAKER, BAG = 7, 8


def _embed(images: np.ndarray) -> np.ndarray:
    return get_embedder("classic").embed([np.repeat(image[:, :, None], 3, axis=2) for image in images])


@pytest.fixture(scope="module")
def clothes(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """2,000 Fashion-MNIST images: classic embeddings, image properties, class names."""
    images, labels = fashion_mnist
    return {"images": images, "codes": labels.astype(np.int64),
            "ids": np.array([f"fmnist/{i:04d}" for i in range(len(images))], dtype=object),
            "labels": np.array(FASHION_MNIST_CLASSES, dtype=object)[labels],
            "embeddings": _embed(images), "properties": image_properties(list(images))}


def _classes(finding) -> list[str]:
    return [row["class"] for row in finding.evidence["classes"]]


def test_narrowed_class_is_least_diverse(clothes: dict[str, np.ndarray]) -> None:
    data = clothes
    before, _ = diversity_findings(data["ids"], data["embeddings"], data["labels"])
    assert before.severity == "none" and before.count == 0
    assert _classes(before)[0] != "Bag" and before.summary["classes"] == 10

    # keep only the bags of their tightest k-means cluster: one look, one context
    bags = np.flatnonzero(data["codes"] == BAG)
    vectors = unit_rows(data["embeddings"][bags])
    assignment, centroids = spherical_kmeans(vectors, 5, seed=0)
    tightness = [np.mean(vectors[assignment == c] @ (centroids[c] / np.linalg.norm(centroids[c]))) for c in range(5)]
    kept_bags = bags[assignment == int(np.argmax(tightness))]
    keep = np.concatenate([np.flatnonzero(data["codes"] != BAG), kept_bags])
    for seed in (0, 1):
        after, _ = diversity_findings(data["ids"][keep], data["embeddings"][keep], data["labels"][keep], seed=seed)
        table = after.evidence["classes"]
        narrow = table[0]
        assert narrow["class"] == "Bag" and narrow["low_diversity"] and narrow["diversity"] <= 0.5
        assert narrow["contexts"] == min(row["contexts"] for row in table)
        assert narrow["looks"] == min(row["looks"] for row in table)
        assert not any(row["low_diversity"] for row in table[1:])
        assert after.severity in ("medium", "high") and "Bag" in after.message
        flagged = set(after.sample_ids[after.flagged])
        assert flagged <= set(data["ids"][kept_bags]) and len(flagged) >= kept_bags.size // 2
        detail = after.details[next(iter(flagged))]
        assert detail["label"] == "Bag" and detail["reason"] == "low_diversity_class"
        assert after.scores[after.flagged].min() >= 0.5 > after.scores[~after.flagged].max()
        assert json.dumps(after.to_json())


def test_framed_context_is_described_by_its_property(clothes: dict[str, np.ndarray]) -> None:
    data = clothes
    plain, _ = diversity_findings(data["ids"], data["embeddings"], data["labels"], properties=data["properties"],
                                  property_columns=PROPERTY_COLUMNS)
    assert plain.summary["distinctive_contexts"] == 0 and plain.count == 0

    # a white frame on 60% of the sneakers: a context only sneakers have
    sneakers = np.flatnonzero(data["codes"] == SNEAKER)
    framed = sneakers[: int(0.6 * sneakers.size)]
    images = data["images"].copy()
    images[framed, :2], images[framed, -2:], images[framed, :, :2], images[framed, :, -2:] = 255, 255, 255, 255
    embeddings, properties = data["embeddings"].copy(), data["properties"].copy()
    embeddings[framed], properties[framed] = _embed(images[framed]), image_properties(list(images[framed]))
    finding, _ = diversity_findings(data["ids"], embeddings, data["labels"], properties=properties,
                                    property_columns=PROPERTY_COLUMNS)
    distinctive = [e for e in finding.evidence["dominated_contexts"] if e["trait"]["distinctive"]]
    assert len(distinctive) == 1 and finding.severity == "low"
    context = distinctive[0]
    assert context["class"] == "Sneaker" and context["purity"] >= 0.9 and context["class_share"] >= 0.25
    assert context["trait"]["property"].startswith("border_")
    assert context["trait"]["effect_size"] > 0.8 and context["trait"]["effect_vs_others"] >= 3
    flagged = set(finding.sample_ids[finding.flagged])
    assert flagged <= set(data["ids"][framed]) and len(flagged) >= framed.size // 2
    assert finding.details[next(iter(flagged))]["reason"] == "distinctive_context"
    assert "border_" in finding.message and finding.evidence["groups"]


def test_coverage_of_an_unseen_class_and_of_a_random_split(clothes: dict[str, np.ndarray]) -> None:
    data = clothes
    rng = np.random.default_rng(0)
    random_test = rng.random(len(data["ids"])) < 0.1
    splits = np.where(random_test, "test", "train").astype(object)
    _, covered = diversity_findings(data["ids"], data["embeddings"], data["labels"], splits=splits)
    assert covered.severity == "none" and covered.summary["checked"] == random_test.sum()
    assert covered.summary["uncovered_share"] <= 0.03
    assert not covered.flagged[~random_test].any()

    # the test split now also holds every bag: a class the training split never shows
    splits[data["codes"] == BAG] = "test"
    _, unseen = diversity_findings(data["ids"], data["embeddings"], data["labels"], splits=splits)
    by_class = {row["name"]: row for row in unseen.evidence["by_class"]}
    assert unseen.evidence["by_class"][0]["name"] == "Bag" and by_class["Bag"]["share"] >= 0.4
    others = [row["share"] for name, row in by_class.items() if name != "Bag"]
    assert max(others) <= 0.15 and unseen.severity in ("medium", "high")
    flagged_bag = next(sid for sid in unseen.sample_ids[unseen.flagged] if unseen.details[sid]["label"] == "Bag")
    detail = unseen.details[flagged_bag]
    assert detail["split"] == "test" and detail["distance"] > unseen.summary["threshold"]
    nearest = int(np.flatnonzero(data["ids"] == detail["nearest_train"])[0])
    assert splits[nearest] == "train"
    assert unseen.scores[unseen.flagged].min() > 0.5


def test_nearest_training_sample_is_exact_with_a_sparse_graph(clothes: dict[str, np.ndarray]) -> None:
    vectors = unit_rows(clothes["embeddings"])
    train = np.random.default_rng(1).random(len(vectors)) < 0.5
    graph = knn(vectors, 2)  # so sparse that many rows must be searched again
    similarity, index = nearest_in_group(vectors, np.zeros(len(vectors), dtype=np.int64),
                                         np.where(train, 0, -1), graph)
    exact = vectors @ vectors[train].T
    exact[np.flatnonzero(train), np.arange(train.sum())] = -np.inf  # a training row is not its own neighbour
    np.testing.assert_allclose(similarity, exact.max(axis=1), atol=1e-5)
    assert train[index].all() and (index != np.arange(len(vectors))).all()


def test_shared_graph_and_seed_give_the_same_answer(clothes: dict[str, np.ndarray]) -> None:
    data = clothes
    splits = np.where(np.arange(len(data["ids"])) % 5 == 0, "val", "train").astype(object)
    args = (data["ids"], data["embeddings"], data["labels"])
    first = diversity_findings(*args, splits=splits, seed=3)
    again = diversity_findings(*args, splits=splits, seed=3, neighbours=knn(data["embeddings"], 10))
    for one, two in zip(first, again, strict=True):
        assert one.to_json() == two.to_json()
        np.testing.assert_array_equal(one.scores, two.scores)


def test_missing_splits_and_labels_say_why(clothes: dict[str, np.ndarray]) -> None:
    data = clothes
    ids, vectors = data["ids"][:300], data["embeddings"][:300]
    diversity, coverage = diversity_findings(ids, vectors, None)
    assert diversity.severity == coverage.severity == "none"
    assert "no labels" in diversity.message and "no split information" in coverage.message
    _, only_train = diversity_findings(ids, vectors, None, splits=["train"] * 300)
    assert "no split besides 'train'" in only_train.message
    _, no_train = diversity_findings(ids, vectors, None, splits=["a"] * 150 + ["b"] * 150)
    assert "'train' split" in no_train.message and no_train.count == 0


def test_bad_input_raises_input_error(clothes: dict[str, np.ndarray]) -> None:
    data = clothes
    ids, vectors, labels = data["ids"][:100], data["embeddings"][:100], data["labels"][:100]
    with pytest.raises(InputError, match="rows"):
        diversity_findings(ids, data["embeddings"][:99], labels)
    with pytest.raises(InputError, match="labels"):
        diversity_findings(ids, vectors, labels[:99])
    with pytest.raises(InputError, match="splits"):
        diversity_findings(ids, vectors, labels, splits=["train"] * 99)
    with pytest.raises(InputError, match="properties"):
        diversity_findings(ids, vectors, labels, properties=data["properties"][:99])
    with pytest.raises(InputError, match="property_columns"):
        diversity_findings(ids, vectors, labels, properties=data["properties"][:100], property_columns=["a"])


def test_effective_number_counts_equally_filled_bins() -> None:
    assert effective_number(np.array([5, 5, 5, 5]), bias_corrected=False) == pytest.approx(4.0)
    assert effective_number(np.array([20, 0, 0])) == pytest.approx(1.0)
    assert effective_number(np.array([3, 1]), bias_corrected=False) < 2 < effective_number(np.array([1, 1]))
    assert effective_number(np.array([0, 0])) == 0.0


def test_params_move_the_cuts_in_the_expected_direction(clothes: dict[str, np.ndarray]) -> None:
    data = clothes
    splits = np.where(np.random.default_rng(0).random(len(data["ids"])) < 0.1, "test", "train").astype(object)
    args = (data["ids"], data["embeddings"], data["labels"])
    diversity, coverage = diversity_findings(*args, splits=splits)
    assert diversity.count == 0
    # every class below the median class counts as narrow once the cut is 1.0
    wide, _ = diversity_findings(*args, params=DiversityParams(low_diversity=1.0))
    assert wide.count > 0 and wide.severity == "medium" and wide.summary["low_diversity_classes"] >= 1
    # a lower quantile of train's own nearest-neighbour distances leaves more test samples uncovered
    _, stricter = diversity_findings(*args, splits=splits, params=DiversityParams(coverage_quantile=0.9))
    assert stricter.summary["threshold"] < coverage.summary["threshold"]
    assert set(coverage.sample_ids[coverage.flagged]) < set(stricter.sample_ids[stricter.flagged])
    assert stricter.summary["quantile"] == 0.9


@pytest.mark.parametrize(("changes", "message"), [
    ({"low_diversity": -0.1}, "diversity.low_diversity: must be a number >= 0, got -0.1"),
    ({"coverage_quantile": 1.5}, "diversity.coverage_quantile: must be a number in [0, 1], got 1.5"),
    ({"min_class_size": 0}, "diversity.min_class_size: must be an integer >= 1, got 0"),
    ({"looks_sample": 10.5}, "diversity.looks_sample: must be an integer >= 1, got 10.5"),
    ({"very_low_diversity": 0.6}, "diversity.low_diversity: must be >= very_low_diversity (0.6), got 0.5"),
    ({"coverage_high_share": 0.05}, "diversity.coverage_high_share: must be >= coverage_medium_share (0.1), got 0.05"),
])
def test_params_are_validated_naming_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as caught:
        DiversityParams(**changes)
    assert str(caught.value) == message


def test_coverage_flags_samples_only_with_a_severity(clothes: dict[str, np.ndarray]) -> None:
    """About 1% of a random test split lies beyond train's 99th percentile by chance: counted, not flagged."""
    data = clothes
    splits = np.where(np.random.default_rng(0).random(len(data["ids"])) < 0.1, "test", "train").astype(object)
    _, chance = diversity_findings(data["ids"], data["embeddings"], data["labels"], splits=splits)
    assert chance.summary["uncovered"] > 0 and chance.severity == "none" and chance.count == 0
    assert "covers the others" in chance.message and "none flagged" in chance.message
    assert not chance.details
    splits[data["codes"] == BAG] = "test"
    _, unseen = diversity_findings(data["ids"], data["embeddings"], data["labels"], splits=splits)
    assert unseen.severity != "none" and unseen.count == unseen.summary["uncovered"] > 0
