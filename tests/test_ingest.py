"""Ingest on real images in every supported layout; idempotence, change detection, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curato.commands.ingest import ingest
from curato.errors import InputError
from curato.features.properties import PROPERTY_COLUMNS
from curato.featurestore import PROPERTIES
from curato.ingest.readers import FASHION_MNIST_CLASSES
from curato.workspace import Workspace
from tests.conftest import InterruptAfter, photo


def test_imagefolder_with_splits(tmp_path, image_folder):
    ws = Workspace.create(tmp_path / "ws")
    summary = ingest(ws, image_folder, workers=1)
    assert summary.format == "imagefolder"
    assert summary.samples == 3 * 26 + 2 and summary.new == summary.samples and summary.unreadable == 0
    table = ws.catalog.samples(("sample_id", "split", "source", "width", "height", "format", "phash"))
    ids = table["sample_id"].tolist()
    assert "train/Trouser/cat.jpg" in ids
    row = ids.index("train/Trouser/cat.jpg")
    assert (table["width"][row], table["height"][row], table["format"][row]) == (451, 300, "jpeg")
    assert set(table["split"]) == {"train", "test"} and set(table["source"]) == {"folder"}
    labels = ws.catalog.current_labels()
    assert {labels[sid] for sid in ids} == {"T-shirt-top", "Trouser", "Sneaker"}
    properties = ws.features.load(PROPERTIES)
    assert properties.vectors.shape == (summary.samples, len(PROPERTY_COLUMNS))
    brightness = properties.vectors[:, PROPERTY_COLUMNS.index("brightness_mean")]
    assert np.isfinite(brightness).all()


def test_reingest_is_idempotent_and_detects_changes(tmp_path, image_folder):
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, image_folder, workers=1)
    again = ingest(ws, image_folder, workers=1)
    assert (again.new, again.changed, again.scanned, again.labels_added) == (0, 0, 0, 0)
    assert again.unchanged == again.samples
    target = image_folder / "train" / "Trouser" / "cat.jpg"
    Image.fromarray(photo("chelsea")[::-1]).save(target, quality=60)  # a re-exported, flipped file
    before = dict(zip(*(ws.features.load(PROPERTIES).ids.tolist(), ws.features.load(PROPERTIES).hashes.tolist()),
                      strict=True))
    changed = ingest(ws, image_folder, workers=1)
    assert (changed.changed, changed.scanned, changed.new) == (1, 1, 0)
    after = ws.features.load(PROPERTIES)
    hashes = dict(zip(after.ids.tolist(), after.hashes.tolist(), strict=True))
    assert hashes["train/Trouser/cat.jpg"] != before["train/Trouser/cat.jpg"]
    assert ws.catalog.known_samples()["train/Trouser/cat.jpg"][1] == hashes["train/Trouser/cat.jpg"]


def test_unreadable_images_are_recorded_not_fatal(tmp_path, image_folder):
    broken = image_folder / "train" / "Trouser" / "broken.jpg"
    data = (image_folder / "train" / "Trouser" / "cat.jpg").read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # truncated JPEG
    (image_folder / "train" / "Trouser" / "notes.png").write_text("not an image")
    ws = Workspace.create(tmp_path / "ws")
    summary = ingest(ws, image_folder, workers=1)
    assert summary.unreadable == 2
    errors = dict(ws.catalog.unreadable())
    assert set(errors) == {"train/Trouser/broken.jpg", "train/Trouser/notes.png"}
    assert all(errors.values())
    clean = tmp_path / "clean.csv"
    clean.write_text(f"id,path\nok,{image_folder / 'train' / 'Trouser' / 'cat.jpg'}\n")
    assert ingest(ws, clean, workers=1).unreadable == 0  # counts this source's files, not the workspace's


def test_manifest_csv_and_jsonl_keep_metadata(tmp_path, image_folder):
    files = sorted((image_folder / "train").rglob("*.png"))[:6]
    csv_path = tmp_path / "m.csv"
    lines = ["id,path,label,split,camera"] + [
        f"s{i},{f.relative_to(tmp_path)},{'a' if i % 2 else 'b'},train,cam{i % 3}" for i, f in enumerate(files)
    ]
    csv_path.write_text("\n".join(lines) + "\n")
    ws = Workspace.create(tmp_path / "ws")
    summary = ingest(ws, csv_path, workers=1)
    assert summary.format == "manifest" and summary.samples == 6
    table = ws.catalog.samples(("sample_id", "meta", "source"))
    assert table["meta"][0] == {"camera": "cam0"} and table["source"][0] == "m"
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": f"j{i}", "path": str(f), "label": "c", "site": i})
                               for i, f in enumerate(files[:2])))
    ingest(ws, jsonl, source_name="site-b", workers=1)
    assert ws.catalog.group_counts("source") == {"m": 6, "site-b": 2}


def _write_idx(path: Path, array: np.ndarray, code: int) -> None:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def test_idx_pairs_become_splits(tmp_path, fashion_mnist):
    images, labels = fashion_mnist
    folder = tmp_path / "fashion-idx"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte.gz", images[:50], 0x08)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", labels[:50].astype(np.uint8), 0x08)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", images[50:70], 0x08)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels[50:70].astype(np.uint8), 0x08)
    ws = Workspace.create(tmp_path / "ws")
    summary = ingest(ws, folder, workers=1)
    assert summary.format == "idx" and summary.samples == 70
    assert ws.catalog.group_counts("split") == {"test": 20, "train": 50}
    assert ws.catalog.group_counts("format") == {"idx": 70}
    labels_now = ws.catalog.current_labels()
    assert labels_now["train/00"] == FASHION_MNIST_CLASSES[int(labels[0])]
    assert labels_now["test/19"] == FASHION_MNIST_CLASSES[int(labels[69])]
    assert len(set(labels_now.values())) == len(set(labels[:70].tolist()))


def test_coco_keeps_boxes_and_segmentations(tmp_path):
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    Image.fromarray(photo("chelsea")).save(images_dir / "cat.jpg")
    Image.fromarray(photo("coffee")).save(images_dir / "coffee.jpg")
    coco = {
        "images": [{"id": 1, "file_name": "cat.jpg", "width": 451, "height": 300},
                   {"id": 2, "file_name": "coffee.jpg", "width": 600, "height": 400}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "cup"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 30, 250, 260], "area": 50000,
             "segmentation": [[100, 30, 350, 30, 350, 290, 100, 290]]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [150, 50, 300, 250], "area": 60000},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    ws = Workspace.create(tmp_path / "ws")
    summary = ingest(ws, path, workers=1)
    assert summary.format == "coco" and summary.annotations == 4
    assert ws.catalog.current_labels() == {"cat.jpg": "cat", "coffee.jpg": "cup"}
    assert ws.catalog.annotation_count() == {"bbox": 3, "polygon": 1}
    again = ingest(ws, path, workers=1)
    assert again.annotations == 4 and ws.catalog.annotation_count() == {"bbox": 3, "polygon": 1}


def test_text_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('id,text,label,lang\n1,"great phone, love it",pos,en\n2,awful battery,neg,en\n')
    ws = Workspace.create(tmp_path / "ws")
    summary = ingest(ws, path)
    assert summary.format == "text" and summary.samples == 2
    table = ws.catalog.samples(("sample_id", "kind", "text", "meta"))
    assert table["kind"].tolist() == ["text", "text"] and table["text"][0] == "great phone, love it"
    assert table["meta"][0] == {"lang": "en"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,label\n1,a\n", "missing required column 'path'"),
        ("id,path,label\n1,a.png,cat\n1,b.png,dog\n", "duplicate sample id"),
        ("id,path,label\n1,a.png,3\n2,b.png,cat\n", "mixes numbers"),
        ("id,path\n", "no rows"),
    ],
)
def test_bad_manifests_fail_with_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(InputError, match=message) as raised:
        ingest(ws, path)
    assert "\n" not in str(raised.value) and str(path) in str(raised.value)
    assert ws.catalog.sample_count() == 0


def test_missing_and_empty_sources(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(InputError, match="no such file"):
        ingest(ws, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        ingest(ws, tmp_path / "empty")


def test_interrupted_ingest_resumes_where_it_stopped(tmp_path, image_folder):
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(KeyboardInterrupt):
        ingest(ws, image_folder, workers=1, chunk_size=20, progress=InterruptAfter("scanning", 30))
    assert ws.catalog.runs("ingest")[-1]["status"] == "interrupted"
    committed = {sid for sid, (_, digest, _) in ws.catalog.known_samples().items() if digest}
    assert len(committed) >= 20  # finished chunks are in the catalog
    resumed = ingest(ws, image_folder, workers=1, chunk_size=20)
    assert resumed.scanned == resumed.samples - len(committed)
    properties = ws.features.load(PROPERTIES)
    assert len(properties) == resumed.samples and ws.features.pending_parts(PROPERTIES) == []


def _catalog_rows(ws: Workspace) -> dict[str, list[tuple]]:
    columns = ("sample_id", "uri", "split", "source", "content_hash", "readable", "error", "width", "height",
               "format", "bytes", "phash")
    table = ws.catalog.samples(columns)
    samples = sorted(zip(*(table[name].tolist() for name in columns), strict=True))
    labels = sorted(ws.catalog.current_labels().items())
    return {"samples": samples, "labels": labels}


def _store_files(ws: Workspace) -> dict[str, bytes]:
    root = ws.features.root
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*.npy"))}


def _windowed_source(tmp_path: Path, kind: str, folder: Path) -> Path:
    """The source to ingest for ``kind``: the image folder itself, a CSV manifest listing its files (labels,
    splits, a metadata column) or a JSONL text table of one line per file (the text written from its bytes)."""
    files = sorted(path for path in folder.rglob("*.png"))
    if kind == "imagefolder":
        return folder
    if kind == "manifest":
        path = tmp_path / "manifest.csv"
        lines = ["id,path,label,split,camera"] + [
            f"{f.parent.name}-{f.stem},{f.relative_to(tmp_path)},{f.parent.name},{('train', 'test')[i % 4 > 0]},"
            f"c{i % 3}"
            for i, f in enumerate(files)]
        path.write_text("\n".join(lines) + "\n")
        return path
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"{f.parent.name}/{f.stem}", "text": f.read_bytes()[-40:].hex(),
                                          "label": f.parent.name, "lang": "en" if i % 2 else "de"})
                              for i, f in enumerate(files)) + "\n")
    return path


@pytest.mark.parametrize("kind", ["imagefolder", "manifest", "text"])
def test_ingest_in_windows_writes_what_one_window_writes(tmp_path, kind):
    """Images are hashed, looked up and scanned a window of chunks at a time (bounded memory at 1M+): the catalog
    rows, the feature-store files (byte for byte) and the counts do not depend on where the windows fall, on a
    first ingest and on a re-ingest after files changed, vanished and appeared; for an image folder, a CSV
    manifest of the same files and a JSONL text table (``--format text``; texts are not windowed, the chunk size
    must not matter to them either)."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "images"
    for index in range(150):
        target = folder / f"class-{index % 3}" / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)).save(target)
    (folder / "class-0" / "broken.png").write_bytes(b"not a png")
    (folder / "class-1" / "résumé ü.png").write_bytes((folder / "class-1" / "0001.png").read_bytes())
    one, many = Workspace.create(tmp_path / "one"), Workspace.create(tmp_path / "many")
    form = "text" if kind == "text" else None
    for step in range(2):
        if step:
            (folder / "class-2" / "0002.png").unlink()
            (folder / "class-2" / "0005.png").write_bytes((folder / "class-0" / "0000.png").read_bytes())
            (folder / "class-0" / "new.png").write_bytes((folder / "class-1" / "0004.png").read_bytes())
        source = _windowed_source(tmp_path, kind, folder)
        whole = ingest(one, source, format=form, workers=1, chunk_size=4096)
        windowed = ingest(many, source, format=form, workers=1, chunk_size=3)  # windows of 48 images, chunks of 3
        assert whole.format == kind
        assert {**whole.__dict__, "source": ""} == {**windowed.__dict__, "source": ""}
        assert _catalog_rows(one) == _catalog_rows(many)
        assert _store_files(one) == _store_files(many)
        if kind != "text":
            properties = one.features.load(PROPERTIES)
            rows = _catalog_rows(one)["samples"]
            readable = {row[0]: row[4] for row in rows if row[5]}
            assert dict(zip(properties.ids.tolist(), properties.hashes.tolist(), strict=True)) == readable
    assert (whole.new, whole.changed, whole.unchanged, whole.not_in_source) == (1, 1, 150, 1)
    assert (whole.scanned, whole.unreadable, whole.samples) == ((0, 0, 152) if kind == "text" else (2, 1, 152))
