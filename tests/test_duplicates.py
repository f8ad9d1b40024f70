"""Duplicate checks on real pictures: exact copies, edited copies, train/test leakage, conflicting labels."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curato.checks.duplicates import RULES, DuplicateParams, duplicate_findings, second_look_side
from curato.errors import InputError
from curato.features.embedders import get_embedder
from curato.features.properties import grey_squares, image_features
from curato.hashing import content_hash
from tests.conftest import photo


def encoded(image: np.ndarray, kind: str = "PNG", quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=kind, quality=quality)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


@pytest.fixture(scope="module")
def dataset(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """60 distinct Fashion-MNIST images (50 train, 10 test), two photos, and planted copies of some of them."""
    images, labels = fashion_mnist
    ids, pictures, stored, splits, given = [], [], [], [], []

    def add(sample_id: str, picture: np.ndarray, data: bytes, split: str, label: object) -> None:
        ids.append(sample_id)
        pictures.append(picture)
        stored.append(data)
        splits.append(split)
        given.append(label)

    for i in range(60):
        split = "train" if i < 50 else "test"
        add(f"{split}/{i}", rgb(images[i]), encoded(images[i]), split, int(labels[i]))
    cat = photo("chelsea")
    add("train/cat", cat, encoded(cat, "JPEG", 90), "train", None)
    coffee = photo("coffee")
    add("train/coffee", coffee, encoded(coffee, "JPEG", 90), "train", None)

    add("train/exact-of-0", rgb(images[0]), encoded(images[0]), "train", int(labels[0]))
    bigger = np.asarray(Image.fromarray(images[1]).resize((56, 56), Image.BILINEAR))
    add("train/resized-of-1", rgb(bigger), encoded(bigger), "train", int(labels[1]))
    jpeg = encoded(images[2], "JPEG", 90)
    add("train/jpeg-of-2", decoded(jpeg), jpeg, "train", int(labels[2]))
    leak = encoded(images[3], "JPEG", 95)
    add("test/leak-of-3", decoded(leak), leak, "test", int(labels[3]))
    relabelled = np.asarray(Image.fromarray(images[4]).resize((42, 42), Image.BILINEAR))
    add("train/relabelled-of-4", rgb(relabelled), encoded(relabelled), "train", (int(labels[4]) + 1) % 10)
    small_cat = np.asarray(Image.fromarray(cat).resize((cat.shape[1] // 2, cat.shape[0] // 2), Image.BILINEAR))
    small_cat_jpeg = encoded(small_cat, "JPEG", 85)
    add("train/cat-small", decoded(small_cat_jpeg), small_cat_jpeg, "train", None)
    shifted = np.zeros_like(images[5])
    shifted[:, 1:] = images[5][:, :-1]
    add("train/shifted-of-5", rgb(shifted), encoded(shifted), "train", int(labels[5]))
    cropped = np.asarray(Image.fromarray(images[6][:, 1:-1]).resize((28, 28), Image.BILINEAR))
    add("train/cropped-of-6", rgb(cropped), encoded(cropped), "train", int(labels[6]))

    _, phashes, thumbnails = image_features(pictures)
    return {
        "ids": np.array(ids, dtype=object), "splits": np.array(splits, dtype=object),
        "labels": np.array(given, dtype=object), "content_hashes": np.array([content_hash(d) for d in stored]),
        "phashes": phashes, "thumbnails": thumbnails,
        "embeddings": get_embedder("efficientnet-lite0-112").embed(pictures),
    }


PLANTED = [{"train/0", "train/exact-of-0"}, {"train/1", "train/resized-of-1"}, {"train/2", "train/jpeg-of-2"},
           {"train/3", "test/leak-of-3"}, {"train/4", "train/relabelled-of-4"}, {"train/cat", "train/cat-small"},
           {"train/5", "train/shifted-of-5"}, {"train/6", "train/cropped-of-6"}]


def groups_of(finding) -> list[set[str]]:
    return [set(members) for members in finding.evidence["groups"]]


@pytest.fixture(scope="module")
def findings(dataset: dict[str, np.ndarray]) -> dict[str, object]:
    result = duplicate_findings(dataset["ids"], embeddings=dataset["embeddings"],
                                content_hashes=dataset["content_hashes"], phashes=dataset["phashes"],
                                thumbnails=dataset["thumbnails"], splits=dataset["splits"], labels=dataset["labels"])
    assert [f.check for f in result] == ["exact_duplicates", "near_duplicates", "split_leakage",
                                         "conflicting_duplicates"]
    return {f.check: f for f in result}


def test_exact_copies_are_grouped(findings: dict[str, object]) -> None:
    exact = findings["exact_duplicates"]
    assert groups_of(exact) == [{"train/0", "train/exact-of-0"}]
    assert exact.severity != "none" and exact.summary["redundant"] == 1
    assert exact.details["train/exact-of-0"]["members"] == ["train/0", "train/exact-of-0"]


def test_edited_copies_are_near_duplicates_and_nothing_else(findings: dict[str, object]) -> None:
    near = findings["near_duplicates"]
    groups = groups_of(near)
    for pair in PLANTED[1:]:
        assert pair in groups, f"{pair} not grouped: {groups}"
    assert len(groups) == len(PLANTED) - 1  # no distinct originals grouped together
    assert near.details["train/resized-of-1"]["members"] == ["train/1", "train/resized-of-1"]
    assert 0.5 < near.scores[list(near.sample_ids).index("train/jpeg-of-2")] <= 1.0
    assert near.summary["distance_scale"] > 0


def test_train_test_copy_is_reported_as_leakage_with_both_ids(findings: dict[str, object]) -> None:
    leakage = findings["split_leakage"]
    assert leakage.severity == "high"
    assert groups_of(leakage) == [{"train/3", "test/leak-of-3"}]
    detail = leakage.details["test/leak-of-3"]
    assert detail["member_splits"] == {"train/3": "train", "test/leak-of-3": "test"}
    assert detail["split"] == "test" and detail["splits"] == ["test", "train"]
    assert set(leakage.sample_ids[leakage.flagged]) == {"train/3", "test/leak-of-3"}


def test_copies_with_different_labels_conflict(findings: dict[str, object], dataset: dict[str, np.ndarray]) -> None:
    conflict = findings["conflicting_duplicates"]
    assert groups_of(conflict) == [{"train/4", "train/relabelled-of-4"}]
    labels = conflict.details["train/4"]["member_labels"]
    assert labels["train/4"] != labels["train/relabelled-of-4"]
    # the photo pair is unlabeled: None never conflicts with anything
    assert not conflict.flagged[list(dataset["ids"]).index("train/cat-small")]


def test_findings_are_json_ready(findings: dict[str, object]) -> None:
    for finding in findings.values():
        text = json.dumps(finding.to_json())
        assert finding.check in text


def documented_rules() -> set[str]:
    """The rule names in the table of docs/findings.md (first column, in backticks)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "findings.md").read_text()
    start = text.index("### Near-duplicate rules")
    section = text[start:text.index("\n## ", start)]
    return {line.split("`")[1] for line in section.splitlines()[1:] if line.startswith("| `")}


def test_every_near_duplicate_names_the_documented_rule_that_accepted_it(findings: dict[str, object]) -> None:
    assert documented_rules() == set(RULES)
    near = findings["near_duplicates"]
    rows = near.to_json()["issues"]
    assert rows and len(rows) == near.count
    ids = list(near.sample_ids)
    for row in rows:
        assert row["rule"] in RULES, row
        assert row["partner"] in row["members"] and row["partner"] != row["sample_id"]
        assert isinstance(row["rule_distances"], dict)
    assert {row["rule"] for row in rows} - {"identical_bytes"}  # edited copies come through the near rules
    # the evidence lists the accepted pairs of every listed group, each with its rule and the rule's distances
    pairs, groups = near.evidence["pairs"], near.evidence["groups"]
    assert len(pairs) == len(groups)
    for members, accepted in zip(groups, pairs, strict=True):
        assert accepted and all(pair["a"] in members and pair["b"] in members for pair in accepted)
        for pair in accepted:
            assert pair["rule"] in RULES and 0.0 <= pair["similarity"] <= 1.0
            if pair["rule"] not in ("identical_bytes", "phash_only"):
                assert pair["distance"] >= 0
    row = next(r for r in rows if r["sample_id"] == "train/resized-of-1")
    assert row["partner"] == "train/1"
    assert near.scores[ids.index("train/resized-of-1")] == pytest.approx(row["similarity"])
    assert sum(near.evidence["pairs_by_rule"].values()) >= len(PLANTED) - 1
    leak = findings["split_leakage"].details["test/leak-of-3"]
    assert leak["rule"] in RULES and leak["partner"] == "train/3"


def test_stricter_thresholds_flag_fewer_near_duplicates(dataset: dict[str, np.ndarray],
                                                        findings: dict[str, object]) -> None:
    strict = DuplicateParams(alone_ratio=0.05, phash_confirm_ratio=0.1, distinct_ratio=0.1, registered_max=0.0005,
                             registered_loose=0.0005, registered_tight=0.0001, structure_max_share=0.0)
    fewer = duplicate_findings(dataset["ids"], embeddings=dataset["embeddings"],
                               content_hashes=dataset["content_hashes"], phashes=dataset["phashes"],
                               thumbnails=dataset["thumbnails"], splits=dataset["splits"], labels=dataset["labels"],
                               params=strict)[1]
    default = findings["near_duplicates"]
    assert set(fewer.sample_ids[fewer.flagged]) < set(default.sample_ids[default.flagged])
    assert fewer.summary["rule"].startswith("cosine distance <= 0.05 x")  # the message reads the params
    looser = DuplicateParams(alone_ratio=1.0, near_high_share=1.0)
    more = duplicate_findings(dataset["ids"], embeddings=dataset["embeddings"], params=looser)[1]
    plain = duplicate_findings(dataset["ids"], embeddings=dataset["embeddings"])[1]
    assert set(plain.sample_ids[plain.flagged]) <= set(more.sample_ids[more.flagged])
    assert more.count > plain.count and more.severity != "high"


@pytest.mark.parametrize(("changes", "message"), [
    ({"alone_ratio": -1}, "duplicates.alone_ratio: must be a number > 0, got -1"),
    ({"structure_max_share": 1.5}, "duplicates.structure_max_share: must be a number in [0, 1], got 1.5"),
    ({"phash_confirm_bits": 65}, "duplicates.phash_confirm_bits: must be an integer in [0, 64], got 65"),
    ({"second_look_block": 0}, "duplicates.second_look_block: must be an integer >= 1, got 0"),
    ({"registered_ranks": 2.5}, "duplicates.registered_ranks: must be an integer >= 1, got 2.5"),
    ({"registered_max": "0.02"}, "duplicates.registered_max: must be a number >= 0, got '0.02'"),
    ({"veto_above": float("nan")}, "duplicates.veto_above: must be a number >= 0, got nan"),
    ({"near_medium_share": 0.2}, "duplicates.near_high_share: must be >= near_medium_share (0.2), got 0.1"),
])
def test_params_are_validated_naming_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as caught:
        DuplicateParams(**changes)
    assert str(caught.value) == message


def test_perceptual_hash_alone_finds_resized_and_recompressed_copies(dataset: dict[str, np.ndarray]) -> None:
    near = duplicate_findings(dataset["ids"], phashes=dataset["phashes"], splits=dataset["splits"])[1]
    groups = groups_of(near)
    for pair in ({"train/1", "train/resized-of-1"}, {"train/2", "train/jpeg-of-2"}, {"train/3", "test/leak-of-3"}):
        assert any(pair <= group for group in groups)
    assert {row["rule"] for row in near.issues()} == {"phash_only"}


def test_fixed_cosine_threshold_and_bad_input(dataset: dict[str, np.ndarray]) -> None:
    strict = duplicate_findings(dataset["ids"], embeddings=dataset["embeddings"], near_threshold=0.99999)[1]
    assert groups_of(strict) == [{"train/0", "train/exact-of-0"}]  # only the identical pixels pass
    with pytest.raises(InputError, match="splits"):
        duplicate_findings(dataset["ids"], embeddings=dataset["embeddings"], splits=["train"])
    with pytest.raises(InputError, match="near_threshold"):
        duplicate_findings(dataset["ids"], embeddings=dataset["embeddings"], near_threshold=2.0)


def test_fine_residual_rule_adds_cropped_recompressed_copies_among_look_alikes(
        fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    """Rule 5 on tops, shirts, pullovers and coats (many look-alikes): 120 copies cropped by a pixel and JPEG'd."""
    images, labels = fashion_mnist
    originals = np.flatnonzero(np.isin(labels, [0, 2, 4, 6]))
    sources = np.random.default_rng(0).choice(originals, 120, replace=False)
    copies = []
    for k, index in enumerate(sources):
        picture = images[index]
        cropped = Image.fromarray([picture[1:, :], picture[:, 1:], picture[:-1, :], picture[:, :-1]][k % 4])
        if k % 2:
            cropped = cropped.resize((28, 28), Image.BILINEAR)
        copies.append(decoded(encoded(np.asarray(cropped), "JPEG", [60, 70, 80][k % 3])))
    pictures = [rgb(images[i]) for i in originals] + copies
    ids = np.array([f"original/{i}" for i in originals] + [f"copy/{k}" for k in range(len(sources))], dtype=object)
    embeddings = get_embedder("efficientnet-lite0-112").embed(pictures)
    _, phashes, thumbnails = image_features(pictures)
    planted = {frozenset((f"original/{i}", f"copy/{k}")) for k, i in enumerate(sources)}

    def pairs(params: DuplicateParams | None = None) -> set[frozenset[str]]:
        near = duplicate_findings(ids, embeddings=embeddings, phashes=phashes, thumbnails=thumbnails,
                                  params=params)[1]
        return {frozenset((a, b)) for group in groups_of(near) for a in group for b in group if a < b}

    with_rule = pairs()
    without_rule = pairs(DuplicateParams(structure_max_share=0.0))  # no residual is that fine: rule 5 off
    assert without_rule <= with_rule
    assert len(with_rule & planted) > len(without_rule & planted)  # it finds copies rules 1-4 miss
    assert with_rule - planted == without_rule - planted  # and adds no other pair
    assert len(with_rule & planted) >= 0.95 * len(planted)

    # Rule 6: the same pictures looked at again at their own 28 px (the thumbnails are 24 px).
    side = second_look_side(np.array([picture.shape[1::-1] for picture in pictures]))
    assert side == 28
    loaded: list[int] = []

    def second_look(rows: np.ndarray) -> np.ndarray:
        loaded.append(rows.size)
        return grey_squares([pictures[row] for row in rows], side)

    closer = duplicate_findings(ids, embeddings=embeddings, phashes=phashes, thumbnails=thumbnails,
                                second_look=second_look)[1]
    with_second_look = {frozenset((a, b)) for group in groups_of(closer) for a in group for b in group if a < b}
    assert loaded and loaded[0] < len(pictures)  # only the doubtful pairs' pictures are loaded
    assert with_rule <= with_second_look
    assert len(with_second_look & planted) > len(with_rule & planted)
    assert with_second_look - planted == with_rule - planted
    blocked = duplicate_findings(ids, embeddings=embeddings, phashes=phashes, thumbnails=thumbnails,
                                 second_look=second_look,
                                 params=DuplicateParams(second_look_block=5))[1]  # many small blocks: same answer
    assert groups_of(blocked) == groups_of(closer) and max(loaded[1:]) <= 10
    with pytest.raises(InputError, match="second_look"):
        duplicate_findings(ids, embeddings=embeddings, thumbnails=thumbnails,
                           second_look=lambda rows: np.zeros((rows.size, 5, 5), np.float32))


def test_second_look_side_is_the_images_own_size_when_finer_than_the_thumbnail() -> None:
    assert second_look_side(np.array([[28, 28], [56, 56], [28, 28], [0, 0]])) == 28
    assert second_look_side(np.array([[640, 480], [800, 600]])) == 64  # capped
    assert second_look_side(np.array([[20, 20], [24, 30]])) is None  # no finer than the 24 px thumbnail
    assert second_look_side(np.zeros((3, 2))) is None and second_look_side(np.zeros((0, 2))) is None
