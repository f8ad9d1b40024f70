"""Outlier checks on real pictures: a photo among clothes, and clothes under the wrong class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curato.checks.outliers import OutlierParams, outlier_findings, robust_z, z_score_to_unit
from curato.errors import InputError
from curato.features.embedders import get_embedder
from tests.conftest import photo


@pytest.fixture(scope="module")
def clothes_and_photo(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """2,000 Fashion-MNIST images and one photo (a cat, labelled T-shirt); two bags are labelled Trouser."""
    images, labels = fashion_mnist
    given = labels.astype(object)
    bags = np.flatnonzero(labels == 8)[:2]
    given[bags] = 1
    pictures = [np.repeat(image[:, :, None], 3, axis=2) for image in images] + [photo("chelsea")]
    ids = [f"fmnist/{i}" for i in range(len(images))] + ["photo/chelsea"]
    return {"ids": np.array(ids, dtype=object), "labels": np.concatenate([given, [0]]).astype(object),
            "embeddings": get_embedder("efficientnet-lite0-112").embed(pictures),
            "mislabelled": np.array([f"fmnist/{i}" for i in bags], dtype=object)}


@pytest.mark.slow
def test_photo_among_clothes_is_an_outlier(clothes_and_photo: dict[str, np.ndarray]) -> None:
    data = clothes_and_photo
    outliers, _ = outlier_findings(data["ids"], data["embeddings"], data["labels"])
    flagged = set(outliers.sample_ids[outliers.flagged])
    assert "photo/chelsea" in flagged
    assert len(flagged) <= 1 + 20  # at most 1% of the clothes
    assert outliers.scores[-1] > 0.5 > np.median(outliers.scores[:-1])
    detail = outliers.details["photo/chelsea"]
    assert detail["z"] >= outliers.summary["z_threshold"] >= 3.5 and len(detail["nearest"]) == 3
    assert json.dumps(outliers.to_json())


def test_bags_labelled_trouser_are_class_outliers(clothes_and_photo: dict[str, np.ndarray]) -> None:
    data = clothes_and_photo
    outliers, class_outliers = outlier_findings(data["ids"], data["embeddings"], data["labels"])
    flagged = set(class_outliers.sample_ids[class_outliers.flagged])
    assert set(data["mislabelled"]) <= flagged
    assert not outliers.flagged[np.isin(outliers.sample_ids, data["mislabelled"])].any()  # usual as pictures
    assert not (outliers.flagged & class_outliers.flagged).any()  # one report per sample
    assert len(flagged) <= 0.03 * len(data["ids"])
    assert class_outliers.details[data["mislabelled"][0]]["label"] == 1
    assert class_outliers.summary["classes"] == 10


def test_unlabeled_and_excluded_samples(clothes_and_photo: dict[str, np.ndarray]) -> None:
    data = clothes_and_photo
    valid = np.ones(len(data["ids"]), dtype=bool)
    valid[-1] = False  # e.g. an unreadable file
    outliers, class_outliers = outlier_findings(data["ids"], data["embeddings"], None, valid=valid)
    assert not outliers.flagged[~valid].any() and outliers.scores[~valid].max() == 0
    assert class_outliers.severity == "none" and class_outliers.count == 0
    with pytest.raises(InputError, match="rows"):
        outlier_findings(data["ids"][:5], data["embeddings"])


def test_robust_z_and_score_mapping() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    z = robust_z(values)
    assert z[2] == 0 and z[4] > 10 and np.isnan(z[5])
    scores = z_score_to_unit(np.array([-1.0, 0.0, 4.0, 8.0, np.inf, np.nan]), 4.0)
    np.testing.assert_allclose(scores, [0.0, 0.0, 0.5, 0.75, 1.0, 0.0])
    assert robust_z(np.array([1.0, 1.0, 1.0, 5.0]))[3] == np.inf


def test_outlier_thresholds_are_parameters(clothes_and_photo: dict[str, np.ndarray]) -> None:
    data = clothes_and_photo
    args = (data["ids"], data["embeddings"], data["labels"])
    outliers, class_outliers = outlier_findings(*args)
    assert outlier_findings(*args, params=OutlierParams())[0].flagged.tolist() == outliers.flagged.tolist()
    # A lower floor of the flag cut (3.29 = Phi^-1(1 - 1/2001) instead of 3.5) flags more, a higher one fewer.
    lower, lower_class = outlier_findings(*args, params=OutlierParams(min_z_threshold=3.0))
    assert set(outliers.sample_ids[outliers.flagged]) < set(lower.sample_ids[lower.flagged])
    assert lower.summary["z_threshold"] < outliers.summary["z_threshold"] and lower_class.count > class_outliers.count
    higher, higher_class = outlier_findings(*args, params=OutlierParams(min_z_threshold=5.0))
    assert set(higher.sample_ids[higher.flagged]) == {"photo/chelsea"} and higher_class.count < class_outliers.count
    # Keyword arguments override the parameters' fields.
    fixed, _ = outlier_findings(*args, z_threshold=3.0, params=OutlierParams(z_threshold=5.0))
    assert fixed.summary["z_threshold"] == 3.0 and fixed.count > outliers.count
    # Classes under min_class_size are skipped; nearest_listed caps the neighbours named.
    few, no_classes = outlier_findings(*args, params=OutlierParams(min_class_size=250, nearest_listed=1))
    assert no_classes.summary["classes"] == 0 and no_classes.count == 0
    assert len(few.details["photo/chelsea"]["nearest"]) == 1
    with pytest.raises(InputError, match=r"^outliers\.k: "):  # an override is validated like a field
        outlier_findings(*args, k=0)


@pytest.mark.parametrize(("changes", "prefix"), [
    ({"k": 0}, "outliers.k: must be an integer >= 1, got 0"),
    ({"k": 2.5}, "outliers.k: "),
    ({"min_z_threshold": -1.0}, "outliers.min_z_threshold: "),
    ({"class_z_threshold": 0.0}, "outliers.class_z_threshold: "),
    ({"min_class_size": 1}, "outliers.min_class_size: "),
    ({"severity_medium": 0.5}, "outliers.severity_high: "),
])
def test_outlier_params_reject_bad_values(changes: dict, prefix: str) -> None:
    with pytest.raises(InputError) as error:
        OutlierParams(**changes)
    assert str(error.value).startswith(prefix)
