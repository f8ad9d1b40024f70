"""Pixel masks as data (issue 21, part A): RLE codec, polygons, label maps, indexed PNGs, catalog rows, ingest
--masks, export to PNG and COCO and back, and the ``masks`` audit check -- on real photographs with masks from
deterministic real segmentations (Otsu threshold of scikit-image's coins; the horse silhouette)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import data as skdata
from skimage import filters, morphology

from curato import masks as M
from curato.checks.masks import MaskParams, mask_findings
from curato.errors import InputError
from curato.ingest.readers import read_coco
from curato.workspace import Workspace
from tests.conftest import run


def coins_mask() -> np.ndarray:
    """Coins vs background: Otsu's threshold of a real photograph (speckled, with holes)."""
    coins = skdata.coins()
    return coins > filters.threshold_otsu(coins)


def clean_coins_mask() -> np.ndarray:
    """The Otsu coins mask with specks removed and holes filled: what a careful annotator would save."""
    return ndimage.binary_fill_holes(morphology.remove_small_objects(coins_mask(), max_size=200))


def horse_mask() -> np.ndarray:
    """scikit-image's horse: a real binary silhouette (True = horse)."""
    return ~skdata.horse()


# ---- RLE --------------------------------------------------------------------------------------------------------

# A COCO-format file written by hand from the published format: counts are column-major runs starting with 0s;
# the compressed strings were worked out on paper (5-bit groups, 48 + group, 0x20 = more, deltas from the count
# two places back after the second) and are decoded here without using the encoder.
HAND_COCO = {
    "images": [{"id": 7, "file_name": "tiny.png", "height": 3, "width": 4}],
    "categories": [{"id": 1, "name": "coin"}],
    "annotations": [
        # counts [2, 3, 7]: column-major pixels 2..4 set, i.e. (row 2, col 0), (0, 1), (1, 1)
        {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 1, "area": 3, "bbox": [0, 0, 2, 3],
         "segmentation": {"size": [3, 4], "counts": "237"}},
        # counts [0, 4, 4, 1, 3]: deltas 1 - 4 = -3 -> 'M' and 3 - 4 = -1 -> 'O'
        {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 1, "area": 5, "bbox": [0, 0, 4, 3],
         "segmentation": {"size": [3, 4], "counts": "044MO"}},
    ],
}


def test_hand_written_compressed_rle_decodes_to_the_runs_on_paper():
    first = M.decode_rle(HAND_COCO["annotations"][0]["segmentation"])
    expected = np.zeros(12, dtype=bool)
    expected[2:5] = True
    assert (first == expected.reshape((3, 4), order="F")).all()
    assert M.mask_area(first) == 3 and M.mask_bbox(first) == [0, 0, 2, 3]
    second = M.decode_rle(HAND_COCO["annotations"][1]["segmentation"])
    assert M.rle_counts(second) == [0, 4, 4, 1, 3] and M.mask_area(second) == 5
    assert M.decompress_counts("T3").tolist() == [100]  # 100 = 4 + 3 * 32: two groups
    assert M.decompress_counts("0`0").tolist() == [0, 16]  # 16 sets the sign bit: needs a second group
    assert M.compress_counts([0, 4, 4, 1, 3]) == "044MO" and M.compress_counts([2, 3, 7]) == "237"


@pytest.mark.parametrize("mask", [coins_mask(), horse_mask(), clean_coins_mask()], ids=["coins", "horse", "clean"])
def test_rle_round_trips_real_masks_both_forms(mask):
    for compressed in (True, False):
        rle = M.encode_rle(mask, compressed=compressed)
        assert rle["size"] == list(mask.shape)
        assert isinstance(rle["counts"], str if compressed else list)
        assert (M.decode_rle(rle) == mask).all()
    counts = M.rle_counts(mask)
    assert sum(counts[1::2]) == M.mask_area(mask) == int(mask.sum())
    assert (M.decompress_counts(M.compress_counts(counts)) == counts).all()
    assert json.loads(json.dumps(M.encode_rle(mask)))["counts"] == M.encode_rle(mask)["counts"]  # plain ASCII


def test_rle_edge_cases_and_damage():
    assert M.rle_counts(np.ones((2, 2), bool)) == [0, 4]
    assert M.rle_counts(np.zeros((2, 3), bool)) == [6]
    with pytest.raises(InputError, match="cover"):
        M.decode_rle({"size": [3, 4], "counts": [2, 3]})
    with pytest.raises(InputError, match="middle of a number"):
        M.decode_rle({"size": [3, 4], "counts": "0`"})


def test_polygon_area_and_bbox_on_astronaut():
    image = skdata.astronaut()
    # a hand-made polygon around the astronaut's helmet (x, y pairs, COCO order)
    helmet = [150, 40, 260, 20, 330, 70, 340, 170, 290, 230, 180, 230, 140, 160]
    mask = M.polygon_mask([helmet], image.shape[:2])
    assert mask.shape == image.shape[:2]
    x, y, w, h = M.mask_bbox(mask)
    assert (x, y) == (140, 20) and 195 <= w <= 201 and 205 <= h <= 211
    assert 25_000 < M.mask_area(mask) < 35_000
    assert (M.segmentation_mask([helmet], image.shape[:2]) == mask).all()
    assert (M.polygon_mask(helmet, image.shape[:2]) == mask).all()  # one flat polygon


def test_label_map_split_merge_and_png(tmp_path):
    label_map = np.zeros((303, 384), dtype=np.uint8)
    label_map[clean_coins_mask()] = 1
    horse = np.zeros_like(label_map, dtype=bool)
    horse[:300, :380] = horse_mask()[:300, :380]
    label_map[horse & (label_map == 0)] = 3
    present, binaries = M.split_label_map(label_map)
    assert present.tolist() == [1, 3] and binaries.shape == (2, 303, 384)
    assert (M.merge_masks(binaries, present) == label_map).all()
    path = tmp_path / "map.png"
    M.write_label_png(path, label_map)
    with Image.open(path) as image:
        assert image.mode == "P"
    assert (M.read_label_png(path) == label_map).all()
    Image.fromarray(label_map, mode="L").save(tmp_path / "grey.png")
    assert (M.read_label_png(tmp_path / "grey.png") == label_map).all()
    Image.fromarray(np.stack([label_map] * 3, axis=2)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="indexed"):
        M.read_label_png(tmp_path / "rgb.png")


# ---- catalog, ingest, export ------------------------------------------------------------------------------------


@pytest.fixture()
def mask_dataset(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """An image folder (two real photos) and a mask folder beside it: coins (class 1, the Otsu mask) and horse
    (class 2, its silhouette), class names in classes.txt."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    (images / "coin").mkdir(parents=True)
    (images / "horse").mkdir(parents=True)
    masks.mkdir()
    Image.fromarray(skdata.coins()).save(images / "coin" / "coins.png")
    horse_photo = np.where(horse_mask(), 60, 220).astype(np.uint8)
    Image.fromarray(horse_photo).save(images / "horse" / "horse.jpg")
    maps = {"coin/coins.png": coins_mask().astype(np.uint8),
            "horse/horse.jpg": horse_mask().astype(np.uint8) * 2}
    M.write_label_png(masks / "coins.png", maps["coin/coins.png"])
    M.write_label_png(masks / "horse.png", maps["horse/horse.jpg"])
    (masks / "classes.txt").write_text("background\ncoin\nhorse\n", encoding="utf-8")
    return images, masks, maps


def test_ingest_masks_and_catalog_history(tmp_path, mask_dataset):
    images, masks, maps = mask_dataset
    ws = Workspace.create(tmp_path / "ws")
    from curato.commands.ingest import ingest

    summary = ingest(ws, images, masks=masks, workers=1)
    assert summary.masks == 2 and summary.mask_classes == ["coin", "horse"] and summary.annotations == 2
    catalog = ws.catalog
    assert catalog.mask_classes() == ["coin", "horse"]
    for sid, expected in maps.items():
        label_map, names = catalog.semantic_mask(sid)
        assert names == ["coin", "horse"] and (label_map == expected).all()
    row = catalog.masks("coin/coins.png")[0]
    assert row["kind"] == "rle" and row["origin"] == "imported" and row["category"] == "coin"
    assert row["data"]["semantic"] is True and isinstance(row["data"]["segmentation"]["counts"], str)
    assert row["area"] == float(coins_mask().sum())
    # a person cleans the coins mask: human beats imported; a second human save supersedes the first
    clean = clean_coins_mask().astype(np.uint8)
    with catalog.transaction() as conn:
        first = catalog.save_semantic_mask(conn, "coin/coins.png", coins_mask().astype(np.uint8), ["coin", "horse"],
                                           "human", "ann")
    with catalog.transaction() as conn:
        catalog.save_semantic_mask(conn, "coin/coins.png", clean, ["coin", "horse"], "human", "ann")
    label_map, _ = catalog.semantic_mask("coin/coins.png")
    assert (label_map == clean).all()
    rows = catalog.masks("coin/coins.png")
    assert [r["origin"] for r in rows] == ["imported", "human", "human"]
    assert rows[1]["id"] == first[0] and rows[1]["data"]["superseded_by"] == rows[2]["id"]
    assert "superseded_by" not in rows[0]["data"]  # another origin's rows are not touched
    with catalog.transaction() as conn:  # a model mask does not override the human one
        catalog.save_semantic_mask(conn, "coin/coins.png", np.zeros_like(clean), ["coin", "horse"], "model", "m1")
    assert (catalog.semantic_mask("coin/coins.png")[0] == clean).all()
    assert catalog.semantic_mask("horse/horse.jpg")[0].max() == 2
    # re-ingest is idempotent for masks
    again = ingest(ws, images, masks=masks, workers=1)
    assert again.masks == 2 and (catalog.semantic_mask("horse/horse.jpg")[0] == maps["horse/horse.jpg"]).all()


def test_ingest_masks_refuses_wrong_size_and_unknown_values(tmp_path, mask_dataset):
    images, masks, _ = mask_dataset
    from curato.commands.ingest import ingest

    M.write_label_png(masks / "horse.png", horse_mask()[:100].astype(np.uint8))
    with pytest.raises(InputError, match="its image's size"):
        ingest(Workspace.create(tmp_path / "a"), images, masks=masks, workers=1)
    M.write_label_png(masks / "horse.png", horse_mask().astype(np.uint8) * 5)
    with pytest.raises(InputError, match="label value 5"):
        ingest(Workspace.create(tmp_path / "b"), images, masks=masks, workers=1)


def _coco_label_maps(path: Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    document = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in document["categories"]}
    result = {}
    for image in document["images"]:
        label_map = np.zeros((image["height"], image["width"]), dtype=np.uint8)
        for annotation in document["annotations"]:
            if annotation["image_id"] == image["id"]:
                binary = M.decode_rle(annotation["segmentation"])
                assert annotation["area"] == binary.sum() and annotation["bbox"] == M.mask_bbox(binary)
                assert isinstance(annotation["segmentation"]["counts"], str)
                label_map[binary] = annotation["category_id"]
        result[image["file_name"]] = (label_map, [names[i] for i in sorted(names)])
    return result


def test_export_png_and_coco_read_back_pixel_for_pixel(tmp_path, mask_dataset):
    images, masks, maps = mask_dataset
    ws_path = tmp_path / "ws"
    assert run("ingest", images, "-w", ws_path, "--masks", masks, "--workers", "1").returncode == 0
    result = run("export", tmp_path / "out_masks", "-w", ws_path, "--format", "masks")
    assert result.returncode == 0, result.stdout + result.stderr
    assert run("export", tmp_path / "out.json", "-w", ws_path, "--format", "coco").returncode == 0
    assert (tmp_path / "out_masks" / "classes.txt").read_text().split() == ["background", "coin", "horse"]
    for sid, expected in maps.items():
        png = tmp_path / "out_masks" / Path(sid).with_suffix(".png")
        assert (M.read_label_png(png) == expected).all()
    coco = _coco_label_maps(tmp_path / "out.json")
    assert set(coco) == set(maps)
    for sid, expected in maps.items():
        assert coco[sid][1] == ["coin", "horse"] and (coco[sid][0] == expected).all()
    # both exports ingest again, as PNG masks and as COCO, to the same pixels
    again = Workspace.create(tmp_path / "again")
    from curato.commands.ingest import ingest

    ingest(again, images, masks=tmp_path / "out_masks", workers=1)
    for sid, expected in maps.items():
        assert (again.catalog.semantic_mask(sid)[0] == expected).all()
    found = read_coco(tmp_path / "out.json", images_root=images)
    for record in found.records:
        rle_rows = [a for a in record.annotations if a["kind"] == "rle"]
        merged = np.zeros_like(maps[record.sample_id])
        for row in rle_rows:
            merged[M.segmentation_mask(row["data"]["segmentation"])] = ["coin", "horse"].index(row["category"]) + 1
        assert (merged == maps[record.sample_id]).all()


def test_coco_ingest_decodes_compressed_rle_and_polygons(tmp_path):
    astronaut = skdata.astronaut()
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    Image.fromarray(skdata.coins()).save(tmp_path / "coins.png")
    helmet = [150, 40, 260, 20, 330, 70, 340, 170, 290, 230, 180, 230, 140, 160]
    coins = coins_mask()
    document = {
        "images": [{"id": 1, "file_name": "astronaut.png", "height": 512, "width": 512},
                   {"id": 2, "file_name": "coins.png", "height": 303, "width": 384}],
        "categories": [{"id": 1, "name": "helmet"}, {"id": 2, "name": "coin"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [helmet], "iscrowd": 0,
             "area": 30000.0, "bbox": [140, 20, 200, 210]},
            {"id": 2, "image_id": 2, "category_id": 2, "segmentation": M.encode_rle(coins), "iscrowd": 1,
             "area": float(coins.sum()), "bbox": M.mask_bbox(coins)},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(document))
    ws = Workspace.create(tmp_path / "ws")
    from curato.commands.ingest import ingest

    ingest(ws, tmp_path / "instances.json", workers=1)
    label_map, names = ws.catalog.semantic_mask("coins.png")
    assert (label_map == np.where(coins, names.index("coin") + 1, 0)).all()
    label_map, names = ws.catalog.semantic_mask("astronaut.png")
    assert ((label_map == names.index("helmet") + 1) == M.polygon_mask([helmet], (512, 512))).all()


# ---- the masks check --------------------------------------------------------------------------------------------


def test_mask_findings_on_real_masks():
    classes = ["coin", "horse"]
    horse = horse_mask().astype(np.uint8) * 2
    speckled = coins_mask().astype(np.uint8)
    clean = clean_coins_mask().astype(np.uint8)
    nearly_empty = np.zeros_like(clean)
    nearly_empty[150:154, 100:104] = 1  # 16 pixels of 116k: saved by mistake
    ids = ["horse", "otsu", "clean", "empty", "none", "labelled_coin"]
    maps = [horse, speckled, clean, nearly_empty, None, horse]
    labels = ["horse", "coin", "coin", "coin", "coin", "coin"]
    findings = {f.check: f for f in mask_findings(ids, maps, classes, image_labels=labels)}
    flagged = {name: {str(s) for s in f.sample_ids[f.flagged]} for name, f in findings.items()}
    assert flagged["mask_speckle"] == {"otsu"}
    assert flagged["mask_holes"] == {"otsu"}
    assert flagged["empty_masks"] == {"empty"}
    assert flagged["mask_missing_classes"] == {"labelled_coin"}
    assert "mask_disagreement" not in findings
    speck = findings["mask_speckle"].issues()[0]
    assert speck["sample_id"] == "otsu" and speck["by_class"]["coin"] >= 10
    # a stricter hole threshold spares the Otsu mask; a given prediction finds the disagreeing one
    stricter = MaskParams(hole_fraction=0.5)
    predicted = {"clean": clean, "otsu": clean, "horse": (horse_mask() & False).astype(np.uint8)}
    findings = {f.check: f for f in mask_findings(ids, maps, classes, image_labels=labels, predicted=predicted,
                                                  params=stricter)}
    assert not findings["mask_holes"].flagged.any()
    disagreement = findings["mask_disagreement"]
    assert {str(s) for s in disagreement.sample_ids[disagreement.flagged]} == {"horse"}
    assert disagreement.summary["checked"] == 3
    assert disagreement.issues()[0]["largest"] == {"mask": "horse", "predicted": "background",
                                                   "pixels": int(horse_mask().sum())}
    with pytest.raises(InputError):
        MaskParams(min_area_fraction=2.0)


def test_masks_check_in_the_audit(tmp_path, mask_dataset):
    images, masks, _ = mask_dataset
    from curato.api import Workspace as ApiWorkspace

    plain = ApiWorkspace.create(tmp_path / "plain")
    plain.ingest(images, workers=1)
    assert plain.audit(checks=["masks"]).findings == []  # no masks: nothing to check
    ws = ApiWorkspace.create(tmp_path / "ws")
    ws.ingest(images, masks=masks, workers=1)
    result = ws.audit(checks=["masks"], params={"masks": {"speckle_count": "10"}})
    by_check = {f.check: f for f in result.findings}
    assert set(by_check) == {"empty_masks", "mask_speckle", "mask_holes", "mask_missing_classes"}
    assert [row["sample_id"] for row in by_check["mask_speckle"].issues()] == ["coin/coins.png"]
    assert by_check["mask_missing_classes"].count == 0  # folder labels coin / horse match the masks
