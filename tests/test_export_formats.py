"""`curato export` to the formats other tools read, each read back: CSV/Parquet manifests, the audit's issues with
file paths, COCO (labels, boxes, instance and semantic masks), Label Studio tasks (and their annotations back as
human labels), a FiftyOne dataset; the format from --format or the name, a mismatch refused; the audit run named and
stale or missing findings warned about; `select` batches with file paths. Real Fashion-MNIST images, a real audit,
real photos from scikit-image."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data as skdata
from PIL import Image

from curato import masks as M
from curato.api import Workspace
from curato.commands.export import ISSUE_COLUMNS, export_format, issue_rows
from curato.commands.ingest import ingest
from curato.errors import InputError
from curato.ingest.readers import read_coco, read_label_studio
from tests.conftest import run, write_fashion_folder


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: tuple[np.ndarray, np.ndarray]) -> Path:
    """A workspace of real Fashion-MNIST images (train 20 + test 6 per class, 3 classes), four train and two test
    sneakers filed as trousers (label errors the audit flags), audited once for the whole module."""
    root = write_fashion_folder(tmp_path_factory.mktemp("export") / "folder", fashion_mnist)
    for split in ("train", "test"):
        for image in sorted((root / split / "Sneaker").iterdir())[:4 if split == "train" else 2]:
            shutil.move(image, root / split / "Trouser" / image.name)
    workspace = root.parent / "ws"
    assert run("ingest", root, "-w", workspace, "--workers", "1").returncode == 0
    audit = run("audit", "-w", workspace)
    assert audit.returncode == 0, audit.stderr
    return workspace


@pytest.fixture()
def copied(audited: Path, tmp_path: Path) -> Path:
    """A copy of the audited workspace that a test may change."""
    return Path(shutil.copytree(audited, tmp_path / "ws"))


def _said(result: object) -> str:
    """What a command printed, line wraps undone (rich wraps long paths)."""
    return " ".join(f"{result.stdout} {result.stderr}".split())  # type: ignore[attr-defined]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---- the format: --format or the name --------------------------------------------------------------------------


def test_format_comes_from_the_name_and_a_mismatch_is_refused(audited, tmp_path):
    assert export_format(tmp_path / "a.csv") == "csv" and export_format(tmp_path / "a.parquet") == "parquet"
    assert export_format(tmp_path / "folder") == "imagefolder" and export_format(tmp_path / "a.json", "coco") == "coco"
    refused = {"x.json": [], "x.csv": ["--format", "parquet"], "y.parquet": ["--format", "csv"],
               "z.json": ["--format", "imagefolder"], "w.txt": [], "v.csv": ["--format", "label-studio"]}
    for name, options in refused.items():
        result = run("export", tmp_path / name, "-w", audited, *options)
        assert result.returncode == 2, (name, result.stdout)
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / name).exists()
    assert "--format coco or --format label-studio" in run("export", tmp_path / "x.json", "-w", audited).stderr
    # a folder name is an image-folder copy, and it says so (it used to print nothing)
    result = run("export", tmp_path / "copy", "-w", audited)
    assert result.returncode == 0 and "wrote 78 samples (imagefolder)" in result.stdout
    assert len(list((tmp_path / "copy").rglob("*.png"))) == 78


def test_csv_and_parquet_hold_the_same_rows(audited, tmp_path):
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    assert run("export", tmp_path / "all.csv", "-w", audited).returncode == 0
    result = run("export", tmp_path / "all.parquet", "-w", audited)
    assert result.returncode == 0 and "wrote 78 samples (parquet)" in result.stdout, result.stdout
    rows = {row["id"]: row for row in _csv(tmp_path / "all.csv")}
    frame = pandas.read_parquet(tmp_path / "all.parquet")
    assert list(frame.columns) == list(next(iter(rows.values())))
    assert frame["changed"].dtype == bool and len(frame) == len(rows)
    for record in frame.to_dict("records"):
        assert rows[record["id"]]["label"] == record["label"] and Path(record["path"]).is_file()


# ---- the audit's issues with file paths ------------------------------------------------------------------------


def test_issues_table_has_one_row_per_flagged_sample_and_check_with_paths(audited, tmp_path):
    document = json.loads((audited / "reports" / "audit-latest.json").read_text())
    flagged = [(finding["check"], issue["sample_id"]) for finding in document["checks"]
               for issue in finding["issues"]]
    result = run("export", tmp_path / "issues.csv", "-w", audited, "--issues")
    assert result.returncode == 0 and f"wrote {len(flagged)} issue rows (csv)" in result.stdout, result.stdout
    assert "using audit run" in result.stdout
    rows = _csv(tmp_path / "issues.csv")
    assert tuple(rows[0]) == ISSUE_COLUMNS
    assert [(row["check"], row["sample_id"]) for row in rows] == flagged
    assert all(Path(row["path"]).is_file() and row["path"].endswith(row["sample_id"]) for row in rows)
    label_rows = [row for row in rows if row["check"] == "label_issues"]
    assert label_rows and all(row["suggested_label"] and row["run_id"] for row in label_rows)
    # the planted sneakers filed as trousers are among them, with the sneaker suggested
    assert any(row["label"] == "Trouser" and row["suggested_label"] == "Sneaker" for row in label_rows)
    if pytest.importorskip("pyarrow"):
        import pandas

        assert run("export", tmp_path / "issues.parquet", "-w", audited, "--issues").returncode == 0
        frame = pandas.read_parquet(tmp_path / "issues.parquet")
        assert frame["sample_id"].tolist() == [sid for _, sid in flagged] and frame["score"].dtype == float
    assert run("export", tmp_path / "issues.json", "-w", audited, "--issues", "--format", "coco").returncode == 2


# ---- which audit an export uses --------------------------------------------------------------------------------


def test_export_names_its_audit_and_warns_about_missing_or_stale_findings(copied, tmp_path):
    result = run("export", tmp_path / "a.csv", "-w", copied, "--relabel", "--drop-duplicates")
    assert result.returncode == 0 and "using audit run 2" in result.stdout and "warning" not in result.stderr
    assert "; checks unreadable, image_quality, imbalance, label_issues, duplicates" in _said(result)
    ws = Workspace.open(copied)
    some = min(ws.catalog.current_labels())
    with ws.catalog.transaction() as conn:  # a person labels after the audit: its suggestions may be stale
        ws.catalog.add_labels(conn, {some: "Trouser"}, origin="human", annotator="ann")
    result = run("export", tmp_path / "b.csv", "-w", copied, "--relabel")
    assert result.returncode == 0 and "older than the latest label" in result.stderr
    assert "--checks label_issues" in result.stderr
    # a partial audit that did not run label_issues: --relabel says so instead of silently changing nothing
    latest = copied / "reports" / "audit-latest.json"
    document = json.loads(latest.read_text())
    document["checks"] = [finding for finding in document["checks"] if finding["check"] != "label_issues"]
    for finding in document["checks"]:  # a merged audit names each finding's run
        finding.update(run_id=7, finished_at="2999-01-01T00:00:00+00:00")
    latest.write_text(json.dumps(document))
    result = run("export", tmp_path / "c.csv", "-w", copied, "--relabel")
    assert "no 'label_issues' finding" in result.stderr and "using audit run 7 (finished 2999-01-01" in result.stdout
    assert "relabelled" not in result.stdout
    # a finding newer than every label is not stale
    assert "older than" not in run("export", tmp_path / "d.csv", "-w", copied, "--drop-duplicates").stderr


# ---- COCO ------------------------------------------------------------------------------------------------------


def test_coco_export_reads_back_to_the_same_labels_and_splits(audited, tmp_path):
    result = run("export", tmp_path / "out.json", "-w", audited, "--format", "coco", "--relabel")
    assert result.returncode == 0 and "wrote 78 images (coco)" in result.stdout, result.stdout
    exported = {row["id"]: row for row in _csv_export(audited, tmp_path, "--relabel")}
    again = tmp_path / "again"
    folder = audited.parent / "folder"
    assert run("ingest", tmp_path / "out.json", "-w", again, "--format", "coco", "--images", folder,
               "--root", folder, "--workers", "1").returncode == 0
    ws = Workspace.open(again)
    labels = ws.catalog.current_labels()
    splits = dict(zip(*ws.catalog.samples(("sample_id", "split")).values(), strict=True))
    assert labels == {sid: row["label"] for sid, row in exported.items()}
    assert splits == {sid: row["split"] for sid, row in exported.items()}
    assert sum(row["changed"] == "true" for row in exported.values()) >= 3  # the relabelled sneakers came along


def _csv_export(workspace: Path, tmp_path: Path, *options: str) -> list[dict[str, str]]:
    assert run("export", tmp_path / "rows.csv", "-w", workspace, *options).returncode == 0
    return _csv(tmp_path / "rows.csv")


def test_coco_round_trip_keeps_boxes_instance_masks_and_painted_masks(tmp_path):
    astronaut, coins = skdata.astronaut(), skdata.coins()
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    Image.fromarray(coins).save(tmp_path / "coins.png")
    Image.fromarray(skdata.camera()).save(tmp_path / "camera.png")
    helmet = [150, 40, 260, 20, 330, 70, 340, 170, 290, 230, 180, 230, 140, 160]
    coin_mask = coins > 100
    document = {
        "images": [{"id": 1, "file_name": "astronaut.png", "height": 512, "width": 512},
                   {"id": 2, "file_name": "coins.png", "height": 303, "width": 384},
                   {"id": 3, "file_name": "camera.png", "height": 512, "width": 512}],
        "categories": [{"id": 1, "name": "helmet"}, {"id": 2, "name": "coin"}, {"id": 3, "name": "face"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [helmet], "iscrowd": 0,
             "area": 30000.0, "bbox": [140, 20, 200, 210]},
            {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 8000.0, "bbox": [170, 90, 80, 100]},
            {"id": 3, "image_id": 2, "category_id": 2, "segmentation": M.encode_rle(coin_mask), "iscrowd": 1,
             "area": float(coin_mask.sum()), "bbox": M.mask_bbox(coin_mask)},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(document))
    first = Workspace.create(tmp_path / "ws")
    ingest(first, tmp_path / "instances.json", workers=1)
    painted = np.zeros((512, 512), dtype=np.uint8)
    painted[100:300, 150:350] = 1  # a person paints the camera man's coat in the app
    with first.catalog.transaction() as conn:
        first.catalog.save_semantic_mask(conn, "camera.png", painted, ["coat"], "human", "ann")
    result = run("export", tmp_path / "out.json", "-w", tmp_path / "ws", "--format", "coco")
    assert result.returncode == 0, result.stdout + result.stderr
    written = json.loads((tmp_path / "out.json").read_text())
    assert {image["file_name"]: image["curato_label"] for image in written["images"]} == \
        first.catalog.current_labels() | {"camera.png": None}
    again = Workspace.create(tmp_path / "again")
    ingest(again, tmp_path / "out.json", images_root=tmp_path, workers=1)
    assert again.catalog.current_labels() == first.catalog.current_labels()
    assert again.catalog.object_boxes() == first.catalog.object_boxes()
    for sample_id in ("astronaut.png", "coins.png", "camera.png"):
        before, after = first.catalog.semantic_mask(sample_id), again.catalog.semantic_mask(sample_id)
        names_before, names_after = before[1], after[1]
        decoded_before = np.array([*names_before, "-"], dtype=object)[before[0].astype(int) - 1]
        decoded_after = np.array([*names_after, "-"], dtype=object)[after[0].astype(int) - 1]
        assert (decoded_before == decoded_after).all(), sample_id
    coat = [a for a in written["annotations"] if a.get("curato_semantic")]
    assert len(coat) == 1 and M.decode_rle(coat[0]["segmentation"]).sum() == 200 * 200
    assert again.catalog.mask_classes() == ["coat"]


# ---- Label Studio ----------------------------------------------------------------------------------------------


def _label_studio(workspace: Path, tmp_path: Path) -> tuple[list[dict], str]:
    result = run("export", tmp_path / "tasks.json", "-w", workspace, "--format", "label-studio")
    assert result.returncode == 0 and "wrote 78 tasks (label-studio)" in result.stdout, result.stdout
    assert "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=" in result.stdout
    return json.loads((tmp_path / "tasks.json").read_text()), (tmp_path / "tasks.label_config.xml").read_text()


def test_label_studio_tasks_carry_suggestions_and_findings(audited, tmp_path):
    tasks, config = _label_studio(audited, tmp_path)
    document = json.loads((audited / "reports" / "audit-latest.json").read_text())
    (finding,) = [f for f in document["checks"] if f["check"] == "label_issues"]
    suggested = {issue["sample_id"]: issue["suggested_label"] for issue in finding["issues"]}
    folder = (audited.parent / "folder").resolve()
    for task in tasks:
        data = task["data"]
        assert data["image"] == "/data/local-files/?d=" + data["sample_id"]  # relative to the folder served
        assert (folder / data["image"].split("?d=")[1]).is_file() and data["path"] == str(folder / data["sample_id"])
        regions = {region["from_name"]: region["value"]["choices"] for region in task["predictions"][0]["result"]}
        assert regions["label"] == [suggested.get(data["sample_id"], data["label"])]
        if data["sample_id"] in suggested:
            assert "label_issues" in regions["findings"] and 0 < task["predictions"][0]["score"] <= 1
    assert '<Choices name="label" toName="image" choice="single"' in config and 'value="label_issues"' in config


def test_label_studio_sdk_accepts_the_tasks(audited, tmp_path):
    interface = pytest.importorskip("label_studio_sdk.label_interface", reason="label-studio-sdk 2.1 needs "
                                    "numpy<2.3 (via opencv-python-headless<4.13); not installed (docs/exports.md)")
    tasks, config = _label_studio(audited, tmp_path)
    checker = interface.LabelInterface(config)
    checker.validate()
    assert all(checker.validate_task({"data": task["data"]}) for task in tasks)
    assert not [error for task in tasks for error in checker.validate_prediction(task["predictions"][0],
                                                                                  return_errors=True)]


def test_label_studio_annotations_come_back_as_human_labels(copied, tmp_path):
    tasks, _ = _label_studio(copied, tmp_path)
    by_id = {task["data"]["sample_id"]: task for task in tasks}
    trouser, sneaker, other_sneaker, shirt = (min(sid for sid in by_id if sid.startswith(prefix)) for prefix in (
        "train/Trouser/", "test/Sneaker/", "train/Sneaker/", "train/T-shirt-top/"))
    answers = {trouser: ("Trouser", 7), sneaker: ("Trouser", 7)}
    for sample_id, (label, who) in answers.items():
        by_id[sample_id]["annotations"] = [{"id": 1, "completed_by": who, "was_cancelled": False, "result": [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}},
            {"from_name": "findings", "to_name": "image", "type": "choices", "value": {"choices": ["blurry"]}}]}]
    # a second annotator answers by image only (no sample_id), another cancels, one task is unknown
    answered_by_image = by_id.pop(other_sneaker)
    only_image = dict(answered_by_image, data={"image": answered_by_image["data"]["image"]})
    only_image["annotations"] = [{"completed_by": {"id": 3, "email": "b@example.org"}, "result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["T-shirt-top"]}}]}]
    by_id[shirt]["annotations"] = [{"completed_by": 7, "was_cancelled": True, "result": []}]
    unknown = {"data": {"image": "/data/local-files/?d=nowhere/x.png"}, "annotations": [{"completed_by": 7, "result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["Trouser"]}}]}]}
    exported = [*by_id.values(), only_image, unknown]
    (tmp_path / "annotated.json").write_text(json.dumps(exported))
    assert len(read_label_studio(tmp_path / "annotated.json")[0]) == 5
    result = run("ingest", tmp_path / "annotated.json", "-w", copied)  # the format is told from the list of tasks
    said = _said(result)
    assert result.returncode == 0 and "(label-studio)" in said and "3 labels added" in said
    assert "skipped 1 task names no sample" in said and "skipped 1 annotation without a choice" in said
    curated = Workspace.open(copied).catalog.curated_labels()
    assert curated[sneaker].label == "Trouser" and curated[sneaker].origin == "human"
    assert curated[other_sneaker].label == "T-shirt-top"
    with Workspace.open(copied).catalog.engine.connect() as conn:
        from sqlalchemy import select

        from curato.catalog.schema import labels
        who = dict(conn.execute(select(labels.c.sample_id, labels.c.annotator)
                                .where(labels.c.origin == "human")).all())
    assert who == {trouser: "7", sneaker: "7", other_sneaker: "b@example.org"}
    again = run("ingest", tmp_path / "annotated.json", "-w", copied, "--format", "label-studio")
    assert again.returncode == 0 and "0 labels added" in _said(again)  # the same file twice adds nothing
    (tmp_path / "bad.json").write_text(json.dumps({"tasks": []}))
    bad = run("ingest", tmp_path / "bad.json", "-w", copied, "--format", "label-studio")
    assert bad.returncode == 2 and "list of tasks" in bad.stderr


def test_label_studio_masks_go_out_as_polygons_and_come_back_as_masks(tmp_path):
    from scipy import ndimage

    images, masks = tmp_path / "images", tmp_path / "masks"
    (images / "horse").mkdir(parents=True)
    (images / "coin").mkdir()
    masks.mkdir()
    horse, coins = ~skdata.horse(), skdata.coins() > 100  # a real silhouette; coins with holes and specks
    Image.fromarray(np.where(horse, 60, 220).astype(np.uint8)).save(images / "horse" / "horse.png")
    Image.fromarray(skdata.coins()).save(images / "coin" / "coins.png")
    M.write_label_png(masks / "horse.png", horse.astype(np.uint8) * 2)
    M.write_label_png(masks / "coins.png", coins.astype(np.uint8))
    (masks / "classes.txt").write_text("background\ncoin\nhorse\n")
    assert run("ingest", images, "-w", tmp_path / "ws", "--masks", masks, "--workers", "1").returncode == 0
    assert run("export", tmp_path / "t.json", "-w", tmp_path / "ws", "--format", "label-studio").returncode == 0
    tasks = json.loads((tmp_path / "t.json").read_text())
    assert '<PolygonLabels name="mask"' in (tmp_path / "t.label_config.xml").read_text()
    for task in tasks:  # the annotator accepts the pre-annotation as it is
        task["annotations"] = [{"completed_by": 5, "result": task["predictions"][0]["result"]}]
    (tmp_path / "annotated.json").write_text(json.dumps(tasks))
    assert run("ingest", images, "-w", tmp_path / "again", "--workers", "1").returncode == 0
    result = run("ingest", tmp_path / "annotated.json", "-w", tmp_path / "again")
    polygons = sum(region["type"] == "polygonlabels" for task in tasks for region in task["annotations"][0]["result"])
    assert result.returncode == 0 and f"{polygons} annotations" in _said(result), result.stdout + result.stderr
    catalog = Workspace.open(tmp_path / "again").catalog
    for sample_id, truth, klass in (("horse/horse.png", horse, "horse"), ("coin/coins.png", coins, "coin")):
        label_map, names = catalog.semantic_mask(sample_id)
        got, filled = label_map == names.index(klass) + 1, ndimage.binary_fill_holes(truth)
        assert (got & filled).sum() / (got | filled).sum() > 0.97, sample_id  # outlines simplified to 1 px
        assert (label_map > 0).sum() == got.sum()
    assert {row["origin"] for row in catalog.masks("horse/horse.png")} == {"human"}


# ---- FiftyOne --------------------------------------------------------------------------------------------------


def test_fiftyone_export_has_a_flag_and_score_per_finding(audited, tmp_path):
    result = run("export", tmp_path / "fo", "-w", audited, "--format", "fiftyone")
    assert result.returncode == 0 and "wrote 78 samples (fiftyone)" in result.stdout, result.stdout
    metadata = json.loads((tmp_path / "fo" / "metadata.json").read_text())
    assert metadata["media_type"] == "image" and "version" not in metadata  # FiftyOne's JSON dataset layout
    samples = json.loads((tmp_path / "fo" / "samples.json").read_text())["samples"]
    issues = issue_rows(Workspace.open(audited), json.loads((audited / "reports" / "audit-latest.json").read_text()))
    for row in issues:
        sample = next(s for s in samples if s["sample_id"] == row["sample_id"])
        assert sample[f"curato_{row['check']}"] is True and sample[f"curato_{row['check']}_score"] == row["score"]
    flagged = {(row["check"], row["sample_id"]) for row in issues}
    assert sum(value is True for s in samples for key, value in s.items() if key.startswith("curato_")) == len(flagged)
    for sample in samples:
        assert Path(sample["filepath"]).is_file() and sample["tags"] == [sample["split"]]
        assert sample["ground_truth"] == {"_cls": "Classification", "label": sample["sample_id"].split("/")[1]}
        assert (sample["suggested"] is not None) == sample["curato_label_issues"]


def test_fiftyone_loads_the_export(audited, tmp_path):
    importers = pytest.importorskip("fiftyone.utils.data.importers", reason="fiftyone would downgrade starlette "
                                    "under fastapi here; not installed (docs/exports.md)")
    assert run("export", tmp_path / "fo", "-w", audited, "--format", "fiftyone").returncode == 0
    assert importers.FiftyOneDatasetImporter(str(tmp_path / "fo"))._is_legacy_format_data()
    reader = importers.LegacyFiftyOneDatasetImporter(str(tmp_path / "fo"))
    reader.setup()
    samples = list(iter(reader))
    assert len(samples) == 78 and {type(s["ground_truth"]).__name__ for s in samples} == {"Classification"}


# ---- select names files ----------------------------------------------------------------------------------------


def test_select_batch_names_each_sample_file(tmp_path, fashion_mnist):
    images, labels = fashion_mnist
    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for index in range(60):
        Image.fromarray(images[index]).save(folder / f"{index:03d}.png")
        rows.append({"id": f"s{index}", "path": f"{index:03d}.png", "label": str(labels[index]) if index < 40 else ""})
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    assert run("ingest", folder / "manifest.csv", "-w", tmp_path / "ws", "--workers", "1").returncode == 0
    result = run("select", "-w", tmp_path / "ws", "--budget", "5", "--embedder", "classic", "--out",
                 tmp_path / "batch.csv")
    assert result.returncode == 0, result.stdout + result.stderr
    batch = _csv(tmp_path / "batch.csv")
    assert len(batch) == 5 and all(Path(row["path"]) == (folder / f"{int(row['sample_id'][1:]):03d}.png").resolve()
                                   for row in batch)
    latest = json.loads((tmp_path / "ws" / "reports" / "select-latest.json").read_text())
    assert [row["path"] for row in latest["batch"]] == [row["path"] for row in batch]


def test_readers_refuse_what_is_not_theirs(tmp_path):
    (tmp_path / "tasks.json").write_text(json.dumps([{"data": {"image": "x.png"}, "annotations": {"no": 1}}]))
    with pytest.raises(InputError, match="'annotations' must be a list"):
        read_label_studio(tmp_path / "tasks.json")
    (tmp_path / "coco.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png",
                                                                "curato_label": ["a"]}],
                                                    "annotations": [], "categories": []}))
    with pytest.raises(InputError, match="'curato_label' is"):
        read_coco(tmp_path / "coco.json")
