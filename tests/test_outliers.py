"""Outlier checks on real pictures: photos among clothes, and clothes under the wrong class."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curato.checks.outliers import outlier_findings, robust_z, z_score_to_unit
from curato.errors import InputError
from curato.features.embedders import get_embedder
from tests.conftest import photo

PHOTOS = ("chelsea", "astronaut", "coffee")


@pytest.fixture(scope="module")
def clothes_and_photos(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """300 Fashion-MNIST images of three classes (T-shirt, trouser, sneaker) and three photos.

    Two sneakers are labelled T-shirt; the photos are labelled T-shirt too.
    """
    images, labels = fashion_mnist
    picks = np.concatenate([np.flatnonzero(labels == c)[:100] for c in (0, 1, 7)])
    given = labels[picks].astype(object)
    sneakers = np.flatnonzero(labels[picks] == 7)[:2]
    given[sneakers] = 0
    pictures = [np.repeat(images[i][:, :, None], 3, axis=2) for i in picks] + [photo(name) for name in PHOTOS]
    ids = [f"fmnist/{i}" for i in picks] + [f"photo/{name}" for name in PHOTOS]
    return {"ids": np.array(ids, dtype=object), "labels": np.concatenate([given, [0] * len(PHOTOS)]).astype(object),
            "embeddings": get_embedder("efficientnet-lite0-112").embed(pictures),
            "mislabelled": np.array([f"fmnist/{picks[i]}" for i in sneakers], dtype=object)}


def test_photos_among_clothes_are_outliers(clothes_and_photos: dict[str, np.ndarray]) -> None:
    data = clothes_and_photos
    outliers, _ = outlier_findings(data["ids"], data["embeddings"], data["labels"])
    flagged = set(outliers.sample_ids[outliers.flagged])
    assert {f"photo/{name}" for name in PHOTOS} <= flagged
    assert len(flagged) <= len(PHOTOS) + 6  # at most 2% of the clothes
    photo_rows = np.isin(outliers.sample_ids, [f"photo/{name}" for name in PHOTOS])
    assert outliers.scores[photo_rows].min() > 0.5 > np.median(outliers.scores[~photo_rows])
    detail = outliers.details["photo/chelsea"]
    assert detail["z"] >= 4 and len(detail["nearest"]) == 3
    assert json.dumps(outliers.to_json())


def test_clothes_under_the_wrong_class_are_class_outliers(clothes_and_photos: dict[str, np.ndarray]) -> None:
    data = clothes_and_photos
    outliers, class_outliers = outlier_findings(data["ids"], data["embeddings"], data["labels"])
    flagged = set(class_outliers.sample_ids[class_outliers.flagged])
    assert set(data["mislabelled"]) <= flagged
    # a sample is reported by one of the two checks, not both
    assert not (outliers.flagged & class_outliers.flagged).any()
    assert len(flagged) <= 2 + 6
    assert class_outliers.details[data["mislabelled"][0]]["label"] == 0
    assert class_outliers.summary["classes"] == 3


def test_unlabeled_and_excluded_samples(clothes_and_photos: dict[str, np.ndarray]) -> None:
    data = clothes_and_photos
    valid = np.ones(len(data["ids"]), dtype=bool)
    valid[-len(PHOTOS):] = False  # e.g. unreadable files
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
