"""Outlier checks on real pictures: a photo among clothes, and clothes under the wrong class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curato.checks.outliers import outlier_findings, robust_z, z_score_to_unit
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
