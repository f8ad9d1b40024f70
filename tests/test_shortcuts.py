"""The shortcut check on real Fashion-MNIST pictures with planted cues, and clean controls."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from curato.checks.shortcuts import (
    ShortcutParams,
    blank_box,
    cue_table,
    foreground_boxes,
    foreground_proxy,
    shortcut_finding,
)
from curato.errors import InputError
from curato.features.properties import PROPERTY_COLUMNS, image_features
from curato.features.thumbnails import grey_thumbnails
from curato.models.oof import out_of_fold_probabilities

SAMPLES = 1500


@pytest.fixture(scope="module")
def data(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    images, labels = fashion_mnist
    images, labels = images[:SAMPLES], labels[:SAMPLES].astype(np.int64)
    # The share-of-signal reference: an out-of-fold head on the raw pixels (what the whole picture gives).
    reference = out_of_fold_probabilities(images.reshape(len(images), -1).astype(np.float32), labels)
    return {"images": images, "labels": labels, "reference": reference}


def rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def check(pictures: list[np.ndarray], data: dict[str, np.ndarray], *, formats: list[str] | None = None,
          seed: int = 0, labels: np.ndarray | None = None, params: ShortcutParams | None = None):
    properties, _, thumbnails = image_features(pictures)
    cues, columns, categories = cue_table(properties, list(PROPERTY_COLUMNS), formats=formats, thumbnails=thumbnails)
    labels = data["labels"] if labels is None else labels
    return shortcut_finding(np.arange(len(pictures)).astype(str), labels, cues, columns,
                            reference_probs=data["reference"], categories=categories, seed=seed, params=params)


def test_clean_images_raise_no_alarm(data: dict[str, np.ndarray]) -> None:
    finding = check([rgb(image) for image in data["images"]], data)
    assert finding.severity == "none" and finding.count == 0
    cues = finding.evidence["cues"]
    # Natural cues are significant (a sandal is darker than a coat) but carry a small share of the signal.
    assert cues[0]["p_value"] <= 0.01 and cues[0]["share_of_signal"] < 0.5
    assert finding.summary["cues_tested"] >= 20


def test_shortcut_thresholds_are_parameters(data: dict[str, np.ndarray]) -> None:
    """On clean pictures the natural cues are significant but carry a share of ~0.3 of the label signal:
    a lower share cut flags them, and fewer shuffles at the same alpha cannot reach significance."""
    pictures = [rgb(image) for image in data["images"]]
    low_cut = check(pictures, data, params=ShortcutParams(share_flag=0.2, permutations=20, alpha=0.05))
    flagged = [row for row in low_cut.evidence["cues"] if row["flagged"]]
    assert flagged and low_cut.severity == "medium" and low_cut.summary["share_flag"] == 0.2
    assert all(0.2 <= row["share_of_signal"] < 0.5 for row in flagged)
    few_shuffles = check(pictures, data, params=ShortcutParams(share_flag=0.2, permutations=20))
    assert few_shuffles.count == 0 and few_shuffles.summary["permutations"] == 20  # p >= 1/21 > 0.01


@pytest.mark.parametrize(("changes", "prefix"), [
    ({"bins": 1}, "shortcuts.bins: must be an integer >= 2, got 1"),
    ({"alpha": 0.0}, "shortcuts.alpha: "),
    ({"share_flag": -0.5}, "shortcuts.share_flag: "),
    ({"max_samples": 100.0}, "shortcuts.max_samples: "),
    ({"foreground_levels": float("inf")}, "shortcuts.foreground_levels: "),
    ({"focus_shift_flag": 0.9}, "shortcuts.focus_shift_flag: "),
    ({"focus_gain_flag": 0.0}, "shortcuts.focus_gain_flag: "),
])
def test_shortcut_params_reject_bad_values(changes: dict, prefix: str) -> None:
    with pytest.raises(InputError) as error:
        ShortcutParams(**changes)
    assert str(error.value).startswith(prefix)


def test_a_planted_border_shortcut_is_found_and_explained(data: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    levels = np.where(rng.random(SAMPLES) < 0.9, data["labels"], rng.integers(0, 10, SAMPLES))
    pictures = []
    for image, level in zip(data["images"], levels, strict=True):
        framed = image.copy()
        value = 40 + 20 * int(level)
        framed[:3, :], framed[-3:, :], framed[:, :3], framed[:, -3:] = value, value, value, value
        pictures.append(rgb(framed))
    finding = check(pictures, data)
    flagged = [row for row in finding.evidence["cues"] if row["flagged"]]
    assert finding.severity in ("medium", "high")
    assert "background_border" in {row["group"] for row in flagged}
    assert "border" in finding.message
    breakdown = finding.evidence["per_class"][0]
    assert breakdown["share_of_class"] - breakdown["share_of_others"] > 0.6
    # The report can show each class's images sorted by the cue.
    examples = finding.evidence["examples"][breakdown["column"]]
    assert len(examples) == 10 and all(len(ids) >= 3 for ids in examples.values())
    assert finding.count > 0.5 * SAMPLES


def test_one_class_stored_as_jpeg_is_singled_out(data: dict[str, np.ndarray]) -> None:
    bag = 8
    pictures, formats = [], []
    for image, label in zip(data["images"], data["labels"], strict=True):
        if label == bag:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=80)
            pictures.append(rgb(np.asarray(Image.open(buffer))))
            formats.append("jpeg")
        else:
            pictures.append(rgb(image))
            formats.append("png")
    finding = check(pictures, data, formats=formats, labels=data["labels"])
    format_row = next(row for row in finding.evidence["cues"] if row["cue"] == "format")
    assert format_row["flagged"] and format_row["classes"][0]["class"] == "8"
    assert (format_row["classes"][0]["gain"], format_row["classes"][0]["share_of_others"]) == (1.0, 0.0)
    assert "format = jpeg" in finding.message
    # Every flagged sample is a JPEG bag.
    assert set(data["labels"][finding.flagged]) == {bag}


def test_shuffled_labels_are_not_flagged(data: dict[str, np.ndarray]) -> None:
    # The cue is real but unrelated to these labels: the permutation test must stay quiet.
    rng = np.random.default_rng(3)
    pictures = [rgb((image * (0.45 + 0.05 * (i % 10))).astype(np.uint8)) for i, image in enumerate(data["images"])]
    finding = check(pictures, data, labels=rng.permutation(data["labels"]))
    assert finding.count == 0 and finding.severity == "none"
    assert all(not row["flagged"] for row in finding.evidence["cues"])


def test_foreground_proxy_sees_a_smaller_object_and_blanking_leaves_the_background(
        fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = fashion_mnist
    coat = images[np.flatnonzero(fashion_mnist[1] == 4)[0]]
    small = np.zeros_like(coat)
    small[7:21, 7:21] = np.asarray(Image.fromarray(coat).resize((14, 14), Image.BILINEAR))
    _, _, thumbnails = image_features([rgb(coat), rgb(small)])
    grey = grey_thumbnails(thumbnails)
    size = foreground_proxy(grey)
    assert size[1, 0] < 0.5 * size[0, 0] and size[1, 1] < 0.7 * size[0, 1]
    _, boxes = foreground_boxes(grey)
    top, left, bottom, right = boxes[1]
    assert top >= 0.2 and bottom <= 0.8 and 0.2 <= left < right <= 0.8 and bottom - top > 0.4
    framed = rgb(small)
    framed[:2], framed[-2:], framed[:, :2], framed[:, -2:] = 200, 200, 200, 200
    blanked = blank_box(framed, (0.1, 0.1, 0.9, 0.9))
    assert (blanked[3:25, 3:25] == 200).all() and (blanked[0] == 200).all()


def test_bad_input_is_named(data: dict[str, np.ndarray]) -> None:
    with pytest.raises(InputError, match="one row per sample"):
        shortcut_finding(["a", "b"], np.array([0, 1]), np.zeros((3, 1)), ["brightness_mean"])
    with pytest.raises(InputError, match="integer class codes"):
        shortcut_finding(["a", "b"], np.array([0.5, 1.0]), np.zeros((2, 1)), ["brightness_mean"])
    few = shortcut_finding(["a", "b"], np.array([0, 1]), np.zeros((2, 1)), ["brightness_mean"])
    assert few.severity == "none" and "not checked" in few.message
    with pytest.raises(InputError, match=r"^shortcuts\.permutations: "):  # keyword overrides are validated too
        shortcut_finding(["a", "b"], np.array([0, 1]), np.zeros((2, 1)), ["brightness_mean"], permutations=0)


def test_object_size_from_coco_boxes_is_a_caught_shortcut(tmp_path, fashion_mnist) -> None:
    """Two classes of the same garment that differ only in how large it is pictured (COCO boxes)."""
    import json

    from curato.commands.audit import run_audit
    from curato.commands.ingest import ingest
    from curato.workspace import Workspace
    from tests.conftest import photo

    images, labels = fashion_mnist
    shirts = images[np.flatnonzero(labels == 0)[:60]]
    backdrop = np.asarray(Image.fromarray(photo("coffee")).resize((64, 64)))
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    entries, annotations = [], []
    for number, shirt in enumerate(shirts):
        near = number % 2 == 0  # "near" shirts are pictured large, "far" ones small, nine times in ten
        large = near if rng.random() < 0.9 else not near
        side = 52 if large else 22
        top, left = rng.integers(0, 64 - side + 1, size=2)
        canvas = backdrop.copy()
        canvas[top:top + side, left:left + side] = rgb(np.asarray(Image.fromarray(shirt).resize((side, side))))
        Image.fromarray(canvas).save(folder / f"{number}.png")
        entries.append({"id": number, "file_name": f"{number}.png", "width": 64, "height": 64})
        annotations.append({"id": number, "image_id": number, "category_id": 1 if near else 2,
                            "bbox": [int(left), int(top), side, side], "area": side * side})
    coco = {"images": entries, "annotations": annotations,
            "categories": [{"id": 1, "name": "near"}, {"id": 2, "name": "far"}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, tmp_path / "instances.json", workers=1)
    finding = run_audit(ws, ["shortcuts"], embedder="classic").findings[0]
    flagged = {row["cue"] for row in finding.evidence["cues"] if row["flagged"]}
    assert {"object_area", "object_extent"} & flagged, finding.evidence["cues"][:4]
    assert finding.severity in ("medium", "high")
    area = next(row for row in finding.evidence["per_class"] if row["column"] in ("object_area", "object_extent"))
    assert area["share_of_class"] >= 0.8 and area["share_of_others"] <= 0.2
    background = finding.evidence["tests"]["background_only"]
    assert background["ran"] and background["samples"] == 60


def _one_class(data: dict[str, np.ndarray], klass: int, plant, share_class: float = 0.9, share_others: float = 0.05,
               seed: int = 3) -> list[np.ndarray]:
    """Real pictures where ``plant`` is applied to ``share_class`` of one class and ``share_others`` of the rest."""
    rng = np.random.default_rng(seed)
    carries = rng.random(len(data["labels"])) < np.where(data["labels"] == klass, share_class, share_others)
    return [plant(rgb(image)) if on else rgb(image) for image, on in zip(data["images"], carries, strict=True)]


def _brighter(picture: np.ndarray) -> np.ndarray:
    return np.minimum(picture.astype(np.int16) + 60, 255).astype(np.uint8)


def _corner_patch(picture: np.ndarray) -> np.ndarray:
    out = picture.copy()
    out[:5, -5:] = 255
    return out


def _half_size(picture: np.ndarray) -> np.ndarray:
    small = np.asarray(Image.fromarray(picture).resize((14, 14), Image.BILINEAR))
    out = np.zeros_like(picture)
    out[7:21, 7:21] = small
    return out


def _blurred(picture: np.ndarray) -> np.ndarray:
    from PIL import ImageFilter

    return np.asarray(Image.fromarray(picture).filter(ImageFilter.GaussianBlur(1.2)))


@pytest.mark.parametrize(("plant", "column"), [(_brighter, "background_brightness"), (_corner_patch, "corner_contrast"),
                                               (_half_size, "object_extent"), (_blurred, "edge_sharpness")])
def test_a_cue_that_singles_out_one_class_is_found_and_named(data: dict[str, np.ndarray], plant, column: str) -> None:
    """The classic shortcut: ONE class carries the cue (the others rarely). Before the one-class test these were
    judged only by their share of the whole label signal, about 1/K, and went unreported."""
    sandal = 5
    finding = check(_one_class(data, sandal, plant), data)
    row = next(row for row in finding.evidence["cues"] if row["cue"] == column)
    assert row["flagged"] and row["classes"][0]["class"] == str(sandal), row
    named = row["classes"][0]
    assert named["share_of_class"] >= 0.8 and named["share_of_others"] <= 0.15
    assert {str(row["classes"][0]["class"]) for row in finding.evidence["cues"] if row.get("classes")} == {"5"}
    assert "'5'" in finding.message and finding.severity in ("medium", "high")
    assert set(data["labels"][finding.flagged]) == {sandal}  # the flagged samples are sandals carrying the cue
    singled = finding.evidence["one_class"][0]  # what the report shows side by side
    assert singled["class"] == str(sandal) and "What to do" in singled["advice"]
    assert {int(data["labels"][int(i)]) for i in singled["with_cue"] + singled["without_cue"]} == {sandal}
    assert sandal not in {int(data["labels"][int(i)]) for i in singled["others_with_cue"]}


def test_natural_differences_between_two_classes_stay_quiet(data: dict[str, np.ndarray]) -> None:
    """With two classes every object-borne difference predicts the label (a trouser is narrower and darker than
    a coat); only cues that do not describe the object may be flagged there."""
    pair = np.isin(data["labels"], (1, 4))
    two = {"images": data["images"][pair], "labels": (data["labels"][pair] == 4).astype(np.int64),
           "reference": out_of_fold_probabilities(data["images"][pair].reshape(int(pair.sum()), -1)
                                                  .astype(np.float32), (data["labels"][pair] == 4).astype(np.int64))}
    finding = check([rgb(image) for image in two["images"]], two)
    assert finding.severity == "none", finding.message
    assert finding.evidence["cues"][0]["p_value"] <= 0.01  # the natural differences are there, and significant


def _pair(data: dict[str, np.ndarray], pair: tuple[int, int]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    members = np.isin(data["labels"], pair)
    labels = (data["labels"][members] == pair[1]).astype(np.int64)
    two = {"labels": labels, "reference": out_of_fold_probabilities(
        data["images"][members].reshape(int(members.sum()), -1).astype(np.float32), labels)}
    return [rgb(image) for image in data["images"][members]], two


NO_FLOOR = ShortcutParams(level_shift_flag=0.0, corner_shift_flag=0.0, focus_ratio_flag=1.0)


def test_natural_background_differences_of_two_classes_are_below_the_visible_floor(
        data: dict[str, np.ndarray]) -> None:
    """A pullover's sleeves reach the frame's edge more often than a dress's, moving the background level by a
    few grey levels: enough to single one out in a quantile range, not a visible difference. Without the floor
    the pair raises a one-class alarm; with it, it stays quiet."""
    pictures, two = _pair(data, (2, 3))
    assert check(pictures, two).severity == "none"
    row = next(row for row in check(pictures, two, params=NO_FLOOR).evidence["cues"] if row["cue"] == "background_red")
    assert row["flagged"] and row["classes"], row
    named = row["classes"][0]
    assert abs(named["median_inside"] - named["median_others"]) < 0.03


def test_focus_is_measured_for_the_contrast_so_garment_shapes_do_not_separate(data: dict[str, np.ndarray]) -> None:
    """Edge steepness over the picture's contrast: a T-shirt's and a pullover's steepest edges climb alike (the
    steepness over mean gradient of the strongest fifth singled out the pullovers here), a blur halves it."""
    pictures, two = _pair(data, (0, 2))
    row = next(row for row in check(pictures, two, params=NO_FLOOR).evidence["cues"] if row["cue"] == "edge_sharpness")
    assert not row["flagged"] and row["balanced_accuracy"] < 0.6, row
    blurred = [_blurred(picture) if label == 1 else picture for picture, label in zip(pictures, two["labels"],
                                                                                       strict=True)]
    row = next(row for row in check(blurred, two).evidence["cues"] if row["cue"] == "edge_sharpness")
    assert row["flagged"] and row["classes"][0]["class"] == "1", row


def test_a_blur_on_one_class_is_found_when_a_tenth_of_the_others_carry_it_too(data: dict[str, np.ndarray]) -> None:
    """Every sandal blurred and a tenth of the other pictures too: the others' natural spread of focus puts 16-17%
    of them inside the sandals' range -- the planted tenth plus a few naturally soft pictures. A limit of 15% of
    the others missed it; the limit of a fifth leaves room for that spread (and so does the focus's second way in
    for a softer class past the limit: under a 15% limit it is still named that way; only with both off is it
    missed)."""
    sandal = 5
    pictures = _one_class(data, sandal, _blurred, share_class=1.0, share_others=0.1)
    row = next(row for row in check(pictures, data).evidence["cues"] if row["cue"] == "edge_sharpness")
    assert row["flagged"] and row["classes"][0]["class"] == str(sandal), row
    assert 0.15 < row["classes"][0]["share_of_others"] <= 0.2
    old_limit = check(pictures, data, params=ShortcutParams(others_share_flag=0.15, focus_gain_flag=1.0))
    assert not next(row for row in old_limit.evidence["cues"] if row["cue"] == "edge_sharpness")["flagged"]
    second_way = check(pictures, data, params=ShortcutParams(others_share_flag=0.15))  # past the limit: softer
    assert next(row for row in second_way.evidence["cues"] if row["cue"] == "edge_sharpness")["flagged"]


def test_shirts_against_ankle_boots_are_not_named_softer() -> None:
    """A clean natural pair whose focus differs by the objects themselves (a shirt's soft folds, a boot's hard
    outline): in-range shifts of 1.29-1.36x and gains of 0.41-0.47 with at most a fifth of the boots inside. The
    focus's second way in (gain 0.4) is only for a range holding more of the others than that, so with 1,000
    pictures of each, in five draws, neither class is named by the focus."""
    from curato.imageio import read_idx
    from tests.conftest import FASHION_MNIST_DIR

    images = read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz").astype(np.int64)
    shirt, boot = 6, 9
    for draw in range(5):
        rng = np.random.default_rng(100 + draw)
        picked = np.concatenate([rng.choice(np.flatnonzero(labels == k), 1000, replace=False) for k in (shirt, boot)])
        two = {"images": images[picked], "labels": (labels[picked] == boot).astype(np.int64)}
        two["reference"] = out_of_fold_probabilities(two["images"].reshape(len(picked), -1).astype(np.float32),
                                                     two["labels"])
        row = next(row for row in check([rgb(picture) for picture in two["images"]], two).evidence["cues"]
                   if row["cue"] == "edge_sharpness")
        assert not row.get("classes"), (draw, row)


@pytest.fixture(scope="module")
def lfw() -> dict[str, np.ndarray]:
    """scikit-image's 100 faces and 100 non-face crops (25x25 grey photographs), with a raw-pixel reference."""
    from skimage.data import lfw_subset

    images = (lfw_subset() * 255).round().astype(np.uint8)
    labels = np.repeat([0, 1], 100).astype(np.int64)
    reference = out_of_fold_probabilities(images.reshape(len(images), -1).astype(np.float32), labels)
    return {"images": images, "labels": labels, "reference": reference}


def test_a_brightened_class_is_found_by_its_lifted_black_level_when_it_looks_like_the_other(
        lfw: dict[str, np.ndarray]) -> None:
    """The non-face crops are darker than the faces at every grey percentile; +60 grey levels on all of them makes
    them about as bright as the faces (no background or corner reads it: both classes fill the frame), but leaves
    no pixel near black: the black level (1st grey percentile) moves by ~0.17 of the scale, the natural difference
    of the two classes is ~0.07. Without the black-level column (or with no floor on it) this is missed (or the
    clean pair alarms)."""
    brightened = [_brighter(rgb(image)) if label == 1 else rgb(image)
                  for image, label in zip(lfw["images"], lfw["labels"], strict=True)]
    finding = check(brightened, lfw)
    row = next(row for row in finding.evidence["cues"] if row["cue"] == "black_level")
    assert row["flagged"] and row["classes"], row
    named = row["classes"][0]
    assert abs(named["median_inside"] - named["median_others"]) >= 0.15
    clean = [rgb(image) for image in lfw["images"]]
    assert check(clean, lfw).severity == "none"
    no_floor = check(clean, lfw, params=ShortcutParams(black_level_flag=0.0))
    natural = next(row for row in no_floor.evidence["cues"] if row["cue"] == "black_level")
    assert natural["flagged"] and abs(natural["classes"][0]["median_inside"]
                                      - natural["classes"][0]["median_others"]) < 0.1, natural


def _lfw_blurred(grey: np.ndarray) -> np.ndarray:
    """The benchmark's blur on a 25-px crop (sigma 1.2 px of a 28-px picture)."""
    from scipy.ndimage import gaussian_filter

    return rgb(np.clip(gaussian_filter(grey.astype(np.float32), sigma=1.2 * 25 / 28), 0, 255).round().astype(np.uint8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_blur_on_most_faces_is_found_although_many_crops_are_naturally_as_soft(
        lfw: dict[str, np.ndarray], seed: int) -> None:
    """80 of the 100 faces blurred and 10 of the 100 texture crops: a quarter or more of the crops are naturally as
    soft (out-of-focus patches), so the faces' focus range holds more than a fifth of the crops and the usual
    one-class rule misses it. The focus flags it through its second way in, for a class singled out as softer --
    no limit on the others, a shift of 1.32x (the faces' range is ~1.5x softer than the crops' median) and a gain of
    0.4; the clean pair, whose faces sit in a narrow focus band, stays quiet."""
    rng = np.random.default_rng(seed)
    carries = np.zeros(len(lfw["labels"]), dtype=bool)
    for klass, count in ((0, 80), (1, 10)):
        carries[rng.choice(np.flatnonzero(lfw["labels"] == klass), count, replace=False)] = True
    pictures = [_lfw_blurred(image) if on else rgb(image) for image, on in zip(lfw["images"], carries, strict=True)]
    row = next(row for row in check(pictures, lfw).evidence["cues"] if row["cue"] == "edge_sharpness")
    assert row["flagged"] and row["classes"], row
    assert [c["class"] for c in row["classes"]] == ["0"]  # the crops' sharper range keeps the usual rule
    faces = row["classes"][0]
    assert faces["share_of_others"] > 0.2 and faces["gain"] >= 0.4
    assert faces["median_others"] >= 1.32 * faces["median_inside"]
    usual_rule_only = check(pictures, lfw, params=ShortcutParams(focus_gain_flag=1.0))
    assert not next(row for row in usual_rule_only.evidence["cues"] if row["cue"] == "edge_sharpness")["flagged"]
    clean = check([rgb(image) for image in lfw["images"]], lfw)
    assert not next(row for row in clean.evidence["cues"] if row["cue"] == "edge_sharpness")["flagged"]


def _framed(picture: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = picture.copy()
    out[:3], out[-3:], out[:, :3], out[:, -3:] = colour, colour, colour, colour
    return out


def test_a_centred_object_on_a_plain_ground_is_no_frame() -> None:
    """A disk or a plain box in the middle of a black picture leaves a band of background on all four sides,
    equally deep. It is no frame: a disk's outline meets the band at a few places and its inner corners stay
    background, a box's inside is flat (its outline is the picture's only edge), a band deeper than the outer
    sixth is background. Their focus is read from the outline. A frame drawn round the same pictures is found."""
    from curato.checks.shortcuts import edge_sharpness, frame_depths

    yy, xx = np.mgrid[:96, :96]
    pictures = []
    for radius in range(20, 48, 2):
        for shift in (0, 3):
            disk = np.zeros((96, 96), dtype=np.uint8)
            disk[(yy - 48) ** 2 + (xx - 48 - shift) ** 2 < radius ** 2] = 180
            box = np.zeros((96, 96), dtype=np.uint8)
            box[(abs(yy - 48) < radius) & (abs(xx - 48 - shift) < radius)] = 180
            pictures += [disk, box]
    flat = np.full((96, 96), 90, dtype=np.uint8)
    _, _, thumbnails = image_features([rgb(picture) for picture in [*pictures, flat]])
    grey = grey_thumbnails(thumbnails).astype(np.float64)
    assert not (frame_depths(grey) > 0).any()
    focus = edge_sharpness(thumbnails)
    assert (focus[:-1] > 0.3).all() and np.isnan(focus[-1])
    # Disks of radius 20-42 px (one of 46 reaches the picture's edge, under the frame).
    _, _, framed = image_features([_framed(rgb(picture), (200, 200, 200)) for picture in pictures[:48:4]])
    assert (frame_depths(grey_thumbnails(framed).astype(np.float64)) > 0).all(axis=1).all()


@pytest.mark.parametrize("colour", [(230, 60, 30), (40, 190, 70)])
def test_a_frame_on_half_of_every_class_does_not_move_the_focus_of_one_class(
        lfw: dict[str, np.ndarray], data: dict[str, np.ndarray], colour: tuple[int, int, int]) -> None:
    """A coloured frame on a random half of the faces and of the texture crops says nothing about the label. Read
    with the frame, the focus is the frame's straight inner edge on the crops (their steepest edges move ~1.4x) but
    not on the soft faces, so it set the two classes apart (that alarm, ``edge_sharpness``, was raised in 7 of 12
    colour x half draws in a one-off scratch run with the old focus); the frame is now found and left out."""
    from curato.checks.shortcuts import edge_sharpness, frame_depths

    rng = np.random.default_rng(0)
    carries = np.zeros(len(lfw["labels"]), dtype=bool)
    for klass in (0, 1):
        carries[rng.choice(np.flatnonzero(lfw["labels"] == klass), 50, replace=False)] = True
    pictures = [_framed(rgb(image), colour) if framed else rgb(image)
                for image, framed in zip(lfw["images"], carries, strict=True)]
    _, _, thumbnails = image_features(pictures)
    grey = grey_thumbnails(thumbnails).astype(np.float64)
    found = (frame_depths(grey) > 0).any(axis=1)
    _, _, plain = image_features([rgb(image) for image in lfw["images"]])
    # A frame round a blank crop is its only edge, as a box's outline on a plain ground: not a frame.
    blank = np.ptp(grey_thumbnails(plain).astype(np.float64), axis=(1, 2)) <= 8
    assert 0 < blank.sum() <= 5 and not found[carries & blank].any()
    assert found[carries & ~blank].mean() >= 0.97
    assert found[~carries].sum() <= 1  # one crop is cut from a photo's black margin: a real band
    _, _, objects = image_features([rgb(image) for image in data["images"][:300]])  # objects on black: no frame
    assert not (frame_depths(grey_thumbnails(objects).astype(np.float64)) > 0).any()
    crops = lfw["labels"] == 1
    focus = edge_sharpness(thumbnails)
    gradient = np.hypot(grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2], grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]) / 2
    with np.errstate(invalid="ignore"):  # a flat crop has no range
        with_frame = np.quantile(gradient.reshape(len(grey), -1), 0.99, axis=1) / np.ptp(grey, axis=(1, 2))
    assert np.nanmedian(with_frame[crops & carries]) / np.nanmedian(with_frame[crops & ~carries]) > 1.3
    assert np.nanmedian(focus[crops & carries]) / np.nanmedian(focus[crops & ~carries]) < 1.15
    finding = check(pictures, lfw)
    assert not next(row for row in finding.evidence["cues"] if row["cue"] == "edge_sharpness")["flagged"]
    assert finding.severity == "none", finding.message


def test_naive_bayes_predictions_equal_scikit_learns_categorical_model_per_fold() -> None:
    """The permutation test's cross-validated naive Bayes (every labelling at once, each distinct row scored
    once) predicts what scikit-learn's CategoricalNB (uniform prior, same smoothing) fitted on the other folds
    predicts, for the real labels and a shuffled labelling, on binned digits (one cue and a group of three)."""
    from sklearn.datasets import load_digits
    from sklearn.naive_bayes import CategoricalNB

    from curato.checks.shortcuts import _naive_bayes_predictions, bin_columns

    digits = load_digits()
    codes = bin_columns(digits.data[:, [20, 28, 36, 43]], ["a", "b", "c", "d"], bins=16)
    labels = digits.target
    rng = np.random.default_rng(0)
    folds = rng.integers(0, 5, len(labels))
    levels = int(codes.max()) + 1
    targets = np.stack([labels, rng.permutation(labels)])
    for columns in ([1], [0, 2, 3]):
        found = _naive_bayes_predictions(codes[:, columns], targets, folds, 10, 5, 1.0)
        for row, target in enumerate(targets):
            expected = np.empty(len(labels), dtype=np.int64)
            for fold in range(5):
                model = CategoricalNB(alpha=1.0, fit_prior=False, min_categories=levels)
                model.fit(codes[folds != fold][:, columns], target[folds != fold])
                expected[folds == fold] = model.classes_[model.predict_log_proba(codes[folds == fold][:, columns])
                                                         .argmax(axis=1)]
            assert np.array_equal(found[row], expected), (columns, row, (found[row] != expected).sum())


def test_row_quantile_is_numpys_linear_quantile_bit_for_bit() -> None:
    from curato.checks.shortcuts import _row_quantile

    rng = np.random.default_rng(1)
    for shape in [(1000, 484), (50, 7), (30, 1), (10, 2)]:
        values = rng.random(shape)
        values[:, ::3] = np.round(values[:, ::3], 1)  # ties, as on flat stretches of a picture
        for q in (0.99, 0.75, 0.5, 0.25, 0.0, 1.0):
            assert np.array_equal(_row_quantile(values, q), np.quantile(values, q, axis=1)), (shape, q)


def test_edge_sharpness_reads_framed_and_unframed_rows_of_one_batch_as_one_at_a_time() -> None:
    """Only framed rows go through the frame masks; a batch mixing them (and a flat and an empty row) gives
    every row what it gets alone."""
    from curato.checks.shortcuts import edge_sharpness, frame_depths
    from tests.conftest import photo

    yy, xx = np.mgrid[:96, :96]
    pictures = []
    for radius in range(20, 40, 4):
        disk = np.zeros((96, 96), dtype=np.uint8)
        disk[(yy - 48) ** 2 + (xx - 48) ** 2 < radius ** 2] = 180
        pictures += [rgb(disk), _framed(rgb(disk), (200, 200, 200))]
    for name in ("chelsea", "coffee"):
        pictures += [photo(name), _framed(photo(name), (30, 200, 60))]
    pictures.append(np.full((50, 50, 3), 90, dtype=np.uint8))
    _, _, thumbnails = image_features(pictures)
    thumbnails = np.vstack([thumbnails, np.zeros((1, thumbnails.shape[1]), dtype=np.uint8)])
    framed = (frame_depths(grey_thumbnails(thumbnails).astype(np.float64)) > 0).any(axis=1)
    assert 3 <= framed.sum() < len(thumbnails) - 3
    together = edge_sharpness(thumbnails)
    alone = np.array([edge_sharpness(thumbnails[row:row + 1])[0] for row in range(len(thumbnails))])
    np.testing.assert_array_equal(together, alone)
    assert np.isnan(together[-2:]).all() and np.isfinite(together[:-2]).all()
