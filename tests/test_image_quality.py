"""Image-quality and balance checks on real photos and real Fashion-MNIST items."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from curato.checks.balance import BalanceParams, class_imbalance_finding, split_health_finding
from curato.checks.image_quality import ImageQualityParams, image_quality_findings
from curato.errors import InputError
from curato.features.properties import PROPERTY_COLUMNS, image_properties
from tests.conftest import photo


def _crops(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    sources = [photo(name) for name in ("chelsea", "coffee", "astronaut", "rocket")]
    crops = []
    for i in range(count):
        source = sources[i % len(sources)]
        h, w = source.shape[:2]
        y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
        crop = Image.fromarray(source[y:y + h // 2 + h // 4, x:x + w // 2 + w // 4]).resize((160, 120))
        crops.append(np.asarray(crop))
    return crops


def _by_check(findings):
    return {f.check: f for f in findings}


def test_planted_quality_problems_are_found_and_clean_images_pass():
    rng = np.random.default_rng(0)
    images = _crops(rng, 60)
    base = images[0]
    planted = {
        "dark": (base.astype(np.float32) * 0.03).astype(np.uint8),
        "overexposed": np.clip(base.astype(np.int32) + 200, 0, 255).astype(np.uint8),
        "blurry": np.asarray(Image.fromarray(images[1]).filter(ImageFilter.GaussianBlur(6))),
        "low_information": np.full_like(base, 128),
        "grayscale": np.repeat(np.asarray(Image.fromarray(images[2]).convert("L"))[..., None], 3, axis=2),
        "odd_size": np.asarray(Image.fromarray(images[3]).resize((900, 60))),
    }
    ids = [f"photo-{i}" for i in range(len(images))] + list(planted)
    properties = image_properties(images + list(planted.values()))
    findings = _by_check(image_quality_findings(ids, properties, PROPERTY_COLUMNS))
    for check in planted:
        flagged = set(findings[check].sample_ids[findings[check].flagged].tolist())
        assert check in flagged, f"{check} not found: {flagged}"
        assert not {i for i in flagged if i.startswith("photo-")}, f"{check} flags clean photos: {flagged}"
        assert findings[check].severity != "none"
    issues = findings["dark"].issues()
    assert issues[0]["sample_id"] == "dark" and issues[0]["score"] == 1.0 and "brightness" in issues[0]["note"]


def test_fashion_mnist_is_not_called_dark_or_grayscale(fashion_mnist):
    images, _ = fashion_mnist
    properties = image_properties(list(images[:500]))
    findings = _by_check(image_quality_findings([str(i) for i in range(500)], properties, PROPERTY_COLUMNS))
    assert findings["grayscale"].count == 0  # a grayscale dataset has no stray grayscale images
    assert findings["dark"].count <= 5 and findings["odd_size"].count == 0


def test_imbalance_and_split_health(fashion_mnist):
    _, labels = fashion_mnist
    names = np.array([f"c{v}" for v in labels[:1200]], dtype=object)
    keep = (names != "c3") | (np.arange(1200) % 10 == 0)  # class c3 down to a tenth
    ids = np.array([f"s{i}" for i in range(1200)])[keep]
    names = names[keep]
    finding = class_imbalance_finding(ids, names)
    assert finding.severity in ("medium", "high") and finding.summary["imbalance_ratio"] > 5
    assert set(names[finding.flagged]) == {"c3"}
    splits = np.where(np.arange(len(ids)) % 4 == 0, "test", "train").astype(object)
    assert split_health_finding(ids, names, splits).severity == "none"
    splits[(names == "c5")] = "train"  # class c5 never tested
    health = split_health_finding(ids, names, splits)
    assert health.severity == "high" and "'c5' has no samples in test" in health.message
    assert set(names[health.flagged]) == {"c5"}
    shifted = splits.copy()
    shifted[(names == "c1") & (np.arange(len(ids)) % 2 == 0)] = "test"  # c1 over-represented in test
    skew = split_health_finding(ids, names, shifted)
    pair = skew.evidence["pairs"][0]
    assert pair["p_value"] < 1e-3 and pair["cramers_v"] > 0.1


def test_image_quality_thresholds_are_parameters(fashion_mnist):
    images, _ = fashion_mnist
    properties = image_properties(list(images[:500]))
    ids = [str(i) for i in range(500)]

    def counts(params=None):
        return {f.check: (f.count, f.severity)
                for f in image_quality_findings(ids, properties, PROPERTY_COLUMNS, params=params)}

    default = counts()
    assert counts(ImageQualityParams()) == default
    # A lower robust-z limit flags more blurry items, a higher one fewer.
    assert (counts(ImageQualityParams(z_limit=6.0))["blurry"][0] < default["blurry"][0]
            < counts(ImageQualityParams(z_limit=2.0))["blurry"][0])
    # Fashion-MNIST's mean brightness runs from 0.03 (median 0.26): a higher absolute limit calls some dark.
    assert default["dark"][0] == 0 < counts(ImageQualityParams(absolute_dark=0.15))["dark"][0]
    # The same flags read as more severe under lower severity cut-offs.
    severe = counts(ImageQualityParams(severity_medium=0.001, severity_high=0.005))
    assert default["blurry"][1] == "low" and severe["blurry"] == (default["blurry"][0], "high")


def test_imbalance_thresholds_are_parameters(fashion_mnist):
    _, labels = fashion_mnist
    names = np.array([f"c{v}" for v in labels[:1200]], dtype=object)
    keep = (names != "c3") | (np.arange(1200) % 3 == 0)  # class c3 down to a third: ratio ~3.7
    ids = np.array([f"s{i}" for i in range(1200)])[keep]
    names = names[keep]
    default = class_imbalance_finding(ids, names)
    assert default.severity == "medium" and set(names[default.flagged]) == {"c3"}
    strict = class_imbalance_finding(ids, names, params=BalanceParams(ratio_medium=5.0, rare_share=0.2))
    assert strict.severity == "low" and strict.count == 0
    splits = np.where(np.arange(len(ids)) % 4 == 0, "test", "train").astype(object)
    splits[(names == "c1") & (np.arange(len(ids)) % 3 == 0)] = "test"  # c1 somewhat over-represented in test
    v = split_health_finding(ids, names, splits).evidence["pairs"][0]["cramers_v"]
    assert split_health_finding(ids, names, splits, params=BalanceParams(split_v_medium=v + 0.01,
                                                                          split_v_high=v + 0.02)).severity == "none"
    assert split_health_finding(ids, names, splits, params=BalanceParams(split_v_medium=v - 0.01,
                                                                          split_v_high=v + 0.02)).severity == "medium"


@pytest.mark.parametrize(("make", "prefix"), [
    (lambda: ImageQualityParams(z_limit=0), "image_quality.z_limit: "),
    (lambda: ImageQualityParams(absolute_dark=1.5), "image_quality.absolute_dark: "),
    (lambda: ImageQualityParams(size_class_min_group=2.5), "image_quality.size_class_min_group: "),
    (lambda: ImageQualityParams(severity_medium=0.1), "image_quality.severity_high: "),
    (lambda: BalanceParams(rare_share=0.0), "imbalance.rare_share: "),
    (lambda: BalanceParams(ratio_high=2.0), "imbalance.ratio_high: "),
    (lambda: BalanceParams(split_alpha="0.01"), "imbalance.split_alpha: "),
])
def test_params_reject_bad_values_naming_the_field(make, prefix):
    with pytest.raises(InputError) as error:
        make()
    assert str(error.value).startswith(prefix) and "\n" not in str(error.value)
