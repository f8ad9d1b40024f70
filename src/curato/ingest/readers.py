"""Readers: turn a dataset on disk into SampleRecords. No scanning of pixels happens here.

Every reader raises InputError with one line naming the file or field at fault and the fix.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from curato.catalog import SampleRecord
from curato.errors import InputError
from curato.imageio import idx_uri, read_idx

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "t10k": "test",
}
MANIFEST_COLUMNS = ("id", "path", "label", "split", "source")
TEXT_COLUMNS = ("id", "text", "label", "split", "source")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_imagefolder(root: Path) -> list[SampleRecord]:
    """Images under ``root``: ``class/img`` or ``split/class/img``; loose images are unlabeled.

    Split folders are recognised by name (train, val/validation, test).
    """
    children = [child for child in root.iterdir() if child.is_dir() and not child.name.startswith(".")]
    split_dirs = [child for child in children if child.name.lower() in SPLIT_NAMES]
    records: list[SampleRecord] = []
    if split_dirs:
        for split_dir in sorted(split_dirs):
            records += _class_folders(root, split_dir, SPLIT_NAMES[split_dir.name.lower()])
        others = sorted(set(children) - set(split_dirs))
        if others:
            raise InputError(
                f"{root}: mixes split folders ({', '.join(d.name for d in split_dirs)}) with other folders "
                f"({', '.join(d.name for d in others[:3])}); move class folders inside a split folder"
            )
    else:
        records = _class_folders(root, root, None)
    return records


def _class_folders(root: Path, folder: Path, split: str | None) -> list[SampleRecord]:
    records = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or not _is_image(path):
            continue
        relative = path.relative_to(folder)
        label = relative.parts[0] if len(relative.parts) > 1 else None
        records.append(
            SampleRecord(
                sample_id=path.relative_to(root).as_posix(), uri=str(path.resolve()), split=split, label=label
            )
        )
    return records


def _read_table(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV (header required) or JSONL file."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            rows = []
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise InputError(f"{path}:{number}: invalid JSON ({error.msg}); fix that line") from error
                    if not isinstance(row, dict):
                        raise InputError(f"{path}:{number}: each line must be a JSON object")
                    rows.append(row)
            return rows
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                raise InputError(f"{path}: empty file; a manifest needs a header row and one row per sample")
            fields = [name.strip() for name in reader.fieldnames]
            rows = []
            for raw in reader:
                if None in raw:
                    raise InputError(
                        f"{path}:{reader.line_num}: more values than header columns; quote fields with commas"
                    )
                rows.append({key.strip(): value for key, value in raw.items()})
            if not rows:
                raise InputError(f"{path}: header ({', '.join(fields)}) but no rows; add one row per sample")
            return rows
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason}); save the manifest as UTF-8") from error


def _require_columns(path: Path, rows: list[dict[str, Any]], required: Iterable[str]) -> None:
    if not rows:
        raise InputError(f"{path}: no rows; a manifest needs one row per sample")
    columns = set().union(*(row.keys() for row in rows[:1000]))
    missing = [name for name in required if name not in columns]
    if missing:
        raise InputError(
            f"{path}: missing required column {', '.join(repr(m) for m in missing)} "
            f"(found: {', '.join(sorted(columns)) or 'none'}); add it to the header"
        )


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _meta(row: dict[str, Any], known: Iterable[str]) -> dict[str, Any]:
    skip = set(known)
    return {key: value for key, value in row.items() if key not in skip and value not in (None, "")}


def read_manifest(path: Path) -> list[SampleRecord]:
    """A CSV/JSONL manifest: ``id``, ``path`` (relative to the manifest), optional ``label``,
    ``split``, ``source``; every other column is kept as metadata."""
    rows = _read_table(path)
    _require_columns(path, rows, ("id", "path"))
    base = path.parent
    records = []
    for number, row in enumerate(rows, start=2):
        sample_id, file = _clean(row.get("id")), _clean(row.get("path"))
        if sample_id is None or file is None:
            field = "id" if sample_id is None else "path"
            raise InputError(f"{path}: row {number} has an empty {field!r}; every sample needs an id and a path")
        file_path = Path(file) if Path(file).is_absolute() else base / file
        records.append(
            SampleRecord(
                sample_id=sample_id, uri=str(file_path.resolve()), split=_clean(row.get("split")),
                source=_clean(row.get("source")), label=_clean(row.get("label")),
                meta=_meta(row, MANIFEST_COLUMNS),
            )
        )
    return records


def read_text_table(path: Path) -> list[SampleRecord]:
    """A text CSV/JSONL: ``id``, ``text``, optional ``label``, ``split``, ``source``, metadata."""
    rows = _read_table(path)
    _require_columns(path, rows, ("id", "text"))
    records = []
    for number, row in enumerate(rows, start=2):
        sample_id = _clean(row.get("id"))
        if sample_id is None:
            raise InputError(f"{path}: row {number} has an empty 'id'; every sample needs an id")
        text = row.get("text")
        records.append(
            SampleRecord(
                sample_id=sample_id, kind="text", text="" if text is None else str(text),
                split=_clean(row.get("split")), source=_clean(row.get("source")), label=_clean(row.get("label")),
                meta=_meta(row, TEXT_COLUMNS),
            )
        )
    return records


_IDX_IMAGES = re.compile(r"^(?P<stem>.*?)[-_.]?images[-_.]idx3[-_.]ubyte(\.gz)?$")


def read_idx_source(source: Path) -> list[SampleRecord]:
    """MNIST-style IDX data: a folder holding ``*-images-idx3-ubyte[.gz]`` files with matching
    ``*-labels-idx1-ubyte[.gz]``, or one images file. ``t10k``/``test`` files become the test split."""
    image_files = [source] if source.is_file() else sorted(p for p in source.iterdir() if _IDX_IMAGES.match(p.name))
    if not image_files:
        raise InputError(f"{source}: no '*-images-idx3-ubyte[.gz]' files; point at an MNIST-style IDX folder")
    fashion = "fashion" in str(source.resolve()).lower()
    records = []
    for images_path in image_files:
        match = _IDX_IMAGES.match(images_path.name)
        if match is None:
            raise InputError(f"{images_path}: not named '*-images-idx3-ubyte[.gz]'; rename it or use a manifest")
        stem = match.group("stem")
        images = read_idx(images_path)
        if images.ndim not in (3, 4):
            raise InputError(f"{images_path}: expected an (N, H, W[, C]) image array, found shape {images.shape}")
        labels_path = _matching_labels(images_path)
        labels = None
        if labels_path is not None:
            labels = read_idx(labels_path)
            if len(labels) != len(images):
                raise InputError(
                    f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}"
                )
        split = SPLIT_NAMES.get(stem.lower(), stem or None)
        prefix = split or stem or images_path.stem
        width = len(str(len(images) - 1))
        uri_prefix = idx_uri(images_path, 0)[:-1]  # resolve the path once, not per image
        for index in range(len(images)):
            label = None
            if labels is not None:
                value = int(labels[index])
                label = FASHION_MNIST_CLASSES[value] if fashion and value < 10 else str(value)
            records.append(
                SampleRecord(
                    sample_id=f"{prefix}/{index:0{width}d}", uri=f"{uri_prefix}{index}", split=split, label=label
                )
            )
    return records


def _matching_labels(images_path: Path) -> Path | None:
    name = images_path.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1")
    candidate = images_path.with_name(name)
    return candidate if candidate.exists() and candidate != images_path else None


def read_coco(path: Path, images_root: Path | None = None) -> list[SampleRecord]:
    """A COCO instances JSON: images, categories, boxes and segmentations.

    Images are looked up under ``images_root`` (default: the JSON's folder, then its ``images/``).
    Each image's label is its dominant category (largest total annotated area); all annotations
    are kept for the object-size and background checks.
    """
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: invalid JSON ({error.msg} at line {error.lineno}); fix the file") from error
    for key in ("images", "annotations", "categories"):
        if key not in payload:
            raise InputError(f"{path}: missing top-level {key!r}; expected a COCO instances file")
    categories = {category["id"]: str(category.get("name", category["id"])) for category in payload["categories"]}
    if images_root is None:
        images_root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for number, annotation in enumerate(payload["annotations"]):
        if "image_id" not in annotation or "category_id" not in annotation:
            raise InputError(f"{path}: annotations[{number}] lacks image_id or category_id")
        if annotation["category_id"] not in categories:
            raise InputError(
                f"{path}: annotations[{number}] uses category_id {annotation['category_id']} not in 'categories'"
            )
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    records = []
    for number, image in enumerate(payload["images"]):
        if "file_name" not in image or "id" not in image:
            raise InputError(f"{path}: images[{number}] lacks 'id' or 'file_name'")
        file_name = str(image["file_name"])
        found = by_image.get(image["id"], [])
        area: Counter[str] = Counter()
        annotation_rows = []
        for annotation in found:
            category = categories[annotation["category_id"]]
            size = float(annotation.get("area") or _bbox_area(annotation.get("bbox")))
            area[category] += size
            if annotation.get("bbox") is not None:
                annotation_rows.append({"kind": "bbox", "category": category, "area": size,
                                        "data": {"bbox": [float(v) for v in annotation["bbox"]]}})
            segmentation = annotation.get("segmentation")
            if segmentation:
                kind = "rle" if isinstance(segmentation, dict) else "polygon"
                annotation_rows.append({"kind": kind, "category": category, "area": size,
                                        "data": {"segmentation": segmentation,
                                                 "iscrowd": int(annotation.get("iscrowd", 0))}})
        meta = {key: value for key, value in image.items() if key not in ("file_name", "id", "width", "height")}
        meta["coco_id"] = image["id"]
        meta["categories"] = sorted(area)
        records.append(
            SampleRecord(
                sample_id=file_name, uri=str((images_root / file_name).resolve()),
                label=area.most_common(1)[0][0] if area else None, meta=meta,
                annotations=[{**row, "sample_id": file_name} for row in annotation_rows],
            )
        )
    return records


def _bbox_area(bbox: Any) -> float:
    if not bbox or len(bbox) != 4:
        return 0.0
    return float(bbox[2]) * float(bbox[3])


def detect_format(source: Path) -> str:
    """Guess the reader for ``source`` from its shape on disk."""
    if source.is_dir():
        if any(_IDX_IMAGES.match(p.name) for p in source.iterdir()):
            return "idx"
        return "imagefolder"
    name = source.name.lower()
    if _IDX_IMAGES.match(name):
        return "idx"
    if name.endswith(".json"):
        return "coco"
    if name.endswith((".csv", ".jsonl", ".ndjson", ".tsv")):
        rows = _read_table(source)[:1]
        return "text" if rows and "text" in rows[0] and "path" not in rows[0] else "manifest"
    raise InputError(
        f"{source}: cannot tell the format; pass --format imagefolder|manifest|coco|idx|text"
    )
