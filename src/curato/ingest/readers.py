"""Readers: turn a dataset on disk into SampleRecords. No scanning of pixels happens here (except the mask
PNGs of ``--masks``, which are annotations, read by :func:`read_mask_folder`).

Every reader raises InputError with one line naming the file (and line) or field at fault and the fix.
Confinement (docs/reliability.md, "Ingest and export confinement"): every file a reader hands on resolves
inside one root folder (the manifest's folder, the image folder, or ``root``) and is a regular file;
nothing is opened before that check. Hidden entries (names starting with '.') are never read. Every entry
a reader sees becomes a sample or a reported skip (:class:`ReadResult`).
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
CSV_FIELD_LIMIT = 10_000_000
"""Longest CSV field read, in characters (Python's default is 131,072: too short for long texts)."""
TABLE_DELIMITERS = {".tsv": "\t"}
"""Field separator by manifest suffix; every other CSV-like file is comma-separated."""

SKIP_HIDDEN = "hidden (name starts with '.'; never read)"
SKIP_NOT_IMAGE = "not an image file (suffix)"
SKIP_BESIDE_SPLITS = "image beside the split folders (in no split)"
SKIP_SYMLINKED_FOLDER = "symlinked folder (not followed)"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class ReadResult:
    """What a reader found: the samples, how many entries it read, and every entry it skipped and why.

    ``rows`` counts manifest rows (blank lines are not rows), COCO images, IDX images, or folder entries
    (a hidden folder is one entry: it is not walked); ``rows == len(records) + skipped entries``.
    """

    records: list[SampleRecord] = field(default_factory=list)
    rows: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    skipped_annotations: list[str] = field(default_factory=list)

    def skip(self, reason: str, what: str) -> None:
        self.skipped.setdefault(reason, []).append(what)

    def close(self) -> ReadResult:
        """Set ``rows`` for readers whose entries are exactly samples plus skips (folders)."""
        self.rows = len(self.records) + sum(len(items) for items in self.skipped.values())
        return self


# ---- confinement -------------------------------------------------------------------------------------------


def resolve_root(root: str | Path | None, default: Path) -> Path:
    """The folder that every file of a source must resolve inside: ``root`` when given, else ``default``."""
    if root is None:
        return default.resolve()
    chosen = Path(root).resolve()
    if not chosen.is_dir():
        raise InputError(f"--root {root}: not a folder; name the folder that holds the dataset's files")
    return chosen


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def regular_file_error(path: Path) -> str | None:
    """Why ``path`` must not be opened (a FIFO blocks, a device never ends), or None for a regular or missing file.

    A missing or unreadable file is left to the scan, which records it as unreadable."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else f"is a {_file_kind(mode)}, not a regular file; only regular files are read"


class Confiner:
    """Resolves a dataset's files (symlinks followed) and refuses any that resolves outside ``root`` (already
    resolved) or is not a regular file. Nothing is opened. Each folder is resolved once, so a manifest of a
    million rows costs one ``lstat`` per row."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._inside = str(root).rstrip(os.sep) + os.sep
        self._folders: dict[str, str] = {}

    def __call__(self, file: Path, where: str) -> Path:
        folder, name = os.path.split(os.fspath(file))
        resolved = os.fspath(file)
        mode: int | None
        try:
            if name in ("", ".", ".."):
                resolved = str(Path(resolved).resolve())
                mode = os.stat(resolved).st_mode
            else:
                if folder not in self._folders:
                    self._folders[folder] = os.path.realpath(folder or ".")
                resolved = os.path.join(self._folders[folder], name)
                mode = os.lstat(resolved).st_mode
                if stat.S_ISLNK(mode):
                    resolved = str(Path(resolved).resolve())
                    mode = os.stat(resolved).st_mode
        except FileNotFoundError:
            mode = None  # missing: the scan records it unreadable
        except (OSError, RuntimeError) as error:  # a symlink loop, a path too long
            raise InputError(f"{where}: cannot be resolved ({error}); fix the path or the symlink") from error
        if resolved != str(self.root) and not resolved.startswith(self._inside):
            raise InputError(f"{where} resolves to {resolved}, outside {self.root}; keep the dataset's files under "
                             f"{self.root}, or pass --root with a folder that holds them")
        if mode is not None and not stat.S_ISREG(mode):
            raise InputError(f"{where}: {resolved} is a {_file_kind(mode)}, not a regular file; only regular files "
                             f"are read")
        return Path(resolved)


def confine(file: Path, root: Path, where: str) -> Path:
    """``file`` resolved (symlinks followed); InputError naming ``where`` if it resolves outside ``root``
    (already resolved) or is not a regular file. Nothing is opened."""
    return Confiner(root)(file, where)


# ---- folders -------------------------------------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as found:
            return sorted(found, key=lambda entry: entry.name)
    except OSError as error:
        raise InputError(f"{folder}: cannot list this folder ({error.strerror}); check its permissions") from error


def _walk(folder: Path, top: Path, confined: Confiner, result: ReadResult) -> Iterator[tuple[Path, Path]]:
    """(path, resolved path) of every image file under ``folder``, depth first in name order; hidden entries,
    other files and symlinked folders are recorded in ``result.skipped`` (names relative to ``top``).
    Iterative: a hostile nesting depth cannot exhaust the stack."""
    pending = [iter(_entries(folder))]
    while pending:
        entry = next(pending[-1], None)
        if entry is None:
            pending.pop()
            continue
        path = Path(entry.path)
        shown = path.relative_to(top).as_posix()
        if entry.name.startswith("."):
            result.skip(SKIP_HIDDEN, shown)
        elif entry.is_dir(follow_symlinks=False):
            pending.append(iter(_entries(path)))
        elif entry.is_symlink() and path.is_dir():
            result.skip(SKIP_SYMLINKED_FOLDER, shown)
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            result.skip(SKIP_NOT_IMAGE, shown)
        else:
            yield path, confined(path, str(path))


def read_imagefolder(folder: Path, root: str | Path | None = None) -> ReadResult:
    """Images under ``folder``: ``class/img`` or ``split/class/img``; loose images are unlabeled.

    Split folders are recognised by name (train, val/validation, test). Hidden files and folders are skipped
    (and reported), so are symlinked folders; a symlinked file must resolve inside ``root`` (default: ``folder``).
    """
    confine_root = resolve_root(root, folder)
    if not folder.resolve().is_relative_to(confine_root):
        raise InputError(f"--root {root}: does not hold the image folder {folder}; name a folder above it")
    result = ReadResult()
    entries = _entries(folder)
    children = [entry for entry in entries if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")]
    split_dirs = [entry for entry in children if entry.name.lower() in SPLIT_NAMES]
    if not split_dirs:
        result.records = _class_folders(folder, folder, None, Confiner(confine_root), result)
        return result.close()
    others = [entry.name for entry in children if entry not in split_dirs]
    if others:
        raise InputError(
            f"{folder}: mixes split folders ({', '.join(d.name for d in split_dirs)}) with other folders "
            f"({', '.join(others[:3])}); move class folders inside a split folder"
        )
    confined = Confiner(confine_root)
    for entry in entries:
        path = Path(entry.path)
        if entry in split_dirs:
            result.records += _class_folders(folder, path, SPLIT_NAMES[entry.name.lower()], confined, result)
        elif entry.name.startswith("."):
            result.skip(SKIP_HIDDEN, entry.name)
        elif entry.is_symlink() and path.is_dir():
            result.skip(SKIP_SYMLINKED_FOLDER, entry.name)
        else:
            result.skip(SKIP_BESIDE_SPLITS if _is_image(path) else SKIP_NOT_IMAGE, entry.name)
    return result.close()


def _class_folders(top: Path, folder: Path, split: str | None, confined: Confiner,
                   result: ReadResult) -> list[SampleRecord]:
    records = []
    names: dict[str, str] = {}  # one string per class, not one per image (~50 bytes each at 1M images)
    for path, resolved in _walk(folder, top, confined, result):
        relative = path.relative_to(folder)
        label = names.setdefault(relative.parts[0], relative.parts[0]) if len(relative.parts) > 1 else None
        records.append(
            SampleRecord(sample_id=path.relative_to(top).as_posix(), uri=str(resolved), split=split, label=label)
        )
    return records


# ---- tables --------------------------------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; write null or a string")


def _read_json(path: Path) -> Any:
    """A whole JSON file (COCO, Label Studio); anything unreadable is a one-line InputError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: invalid JSON ({error.msg} at line {error.lineno}); fix the file") from error
    except UnicodeDecodeError as error:  # a ValueError too: caught first
        raise InputError(f"{path}: not UTF-8 text ({error.reason}); save the file as UTF-8") from error
    except (ValueError, RecursionError) as error:
        raise InputError(f"{path}: invalid JSON ({error or 'nested too deeply'}); fix the file") from error


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # a blank line is not a row
            try:
                row = json.loads(line, object_pairs_hook=_object, parse_constant=_no_constant)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: invalid JSON ({error.msg}); fix that line") from error
            except ValueError as error:  # a duplicate key, NaN, an integer too long to convert
                raise InputError(f"{path}:{number}: invalid JSON ({error}); fix that line") from error
            except RecursionError as error:
                raise InputError(f"{path}:{number}: JSON nested too deeply; flatten that line") from error
            if not isinstance(row, dict):
                raise InputError(f"{path}:{number}: each line must be a JSON object")
            rows.append((number, row))
    return rows


def _csv_error(path: Path, line: int, error: csv.Error, delimiter: str) -> InputError:
    message = str(error)
    if "unexpected end of data" in message:
        return InputError(
            f"{path}:{line}: a quote opened in the row starting on this line never closes (every later line "
            f"would become one field); close the quote, or write a literal quote as \"\" inside a quoted field"
        )
    if "field larger than field limit" in message:
        return InputError(f"{path}:{line}: a field is longer than {CSV_FIELD_LIMIT:,} characters (curato's cap for "
                          f"one CSV field); shorten it, or write the manifest as JSONL")
    return InputError(f"{path}:{line}: malformed CSV ({message}); quote fields that contain {delimiter!r}, "
                      f"quotes or line breaks")


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    delimiter = TABLE_DELIMITERS.get(path.suffix.lower(), ",")
    header: list[str] | None = None
    rows = []
    previous_limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter, strict=True)
            while True:
                start = reader.line_num + 1
                try:
                    values = next(reader)
                except StopIteration:
                    break
                except csv.Error as error:
                    raise _csv_error(path, start, error, delimiter) from error
                if not values:
                    continue  # a blank line is not a row
                if header is None:
                    header = [name.strip() for name in values]
                    repeated = [name for name, count in Counter(header).items() if count > 1]
                    if repeated:
                        raise InputError(f"{path}:{start}: column {repeated[0]!r} appears twice in the header; "
                                         f"rename one")
                    continue
                if len(values) != len(header):
                    fix = "quote fields that contain the separator" if len(values) > len(header) else \
                        "add the missing fields (an empty field is two separators in a row)"
                    raise InputError(f"{path}:{start}: {len(values)} field{'s' if len(values) != 1 else ''} but the "
                                     f"header has {len(header)}; {fix}")
                rows.append((start, dict(zip(header, values, strict=True))))
    finally:
        csv.field_size_limit(previous_limit)
    if header is None:
        raise InputError(f"{path}: empty file; a manifest needs a header row and one row per sample")
    if not rows:
        raise InputError(f"{path}: header ({', '.join(header)}) but no rows; add one row per sample")
    return rows


def _read_table(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV/TSV (header required) or JSONL file; blank lines are not rows."""
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        return _read_csv(path)
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason}); save the manifest as UTF-8") from error


def _require_columns(path: Path, rows: list[tuple[int, dict[str, Any]]], required: Iterable[str]) -> None:
    if not rows:
        raise InputError(f"{path}: no rows; a manifest needs one row per sample")
    columns = set().union(*(row.keys() for _, row in rows[:1000]))
    missing = [name for name in required if name not in columns]
    if missing:
        raise InputError(
            f"{path}: missing required column {', '.join(repr(m) for m in missing)} "
            f"(found: {', '.join(sorted(columns)) or 'none'}); add it to the header"
        )


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, float):
        return "a JSON number with a fraction"
    return "a JSON array" if isinstance(value, list) else "a JSON object"


def text_value(value: Any, where: str, name: str, *, exact: bool = False, lines: bool = False) -> str | None:
    """The canonical string of one field: a string as written, an integer as its decimal digits, null or an
    empty string as None. Booleans, fractions, arrays and objects are refused, so is a control character
    (a line break too, unless ``lines``). ``exact`` (ids): surrounding whitespace is refused, not stripped;
    otherwise it is stripped."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        shown = json.dumps(value, ensure_ascii=False)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise InputError(f"{where}: {name!r} is {shown}, {_json_kind(value)}; write {name} values as strings "
                         f"or integers")
    text = str(value)
    bad = _CONTROL.search(text.replace("\n", "").replace("\r", "").replace("\t", "") if lines else text)
    if bad:
        what = "a line break" if bad.group() in "\r\n" else f"a control character ({bad.group()!r})"
        raise InputError(f"{where}: {name!r} contains {what} ({text[:30]!r}); a {name} must be one line "
                         f"(in CSV this is often an unclosed quote)")
    if exact:
        if text != text.strip():
            raise InputError(f"{where}: {name} {text!r} has leading or trailing whitespace; ids are kept exactly as "
                             f"written, so remove it (' a' and 'a' would be two samples)")
        return text or None
    return text.strip() or None


def _meta(row: dict[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """Every other column, as its JSON value (CSV: the string); empty strings and nulls are left out."""
    skip = set(known)
    return {key: value for key, value in row.items() if key not in skip and value not in (None, "")}


def _common(row: dict[str, Any], where: str) -> dict[str, str | None]:
    return {name: text_value(row.get(name), where, name) for name in ("label", "split", "source")}


def read_manifest(path: Path, root: str | Path | None = None) -> ReadResult:
    """A CSV/TSV/JSONL manifest: ``id``, ``path`` (relative to the manifest), optional ``label``, ``split``,
    ``source``; every other column is kept as metadata. Every path must resolve inside ``root`` (default: the
    manifest's folder) and be a regular file (or missing: recorded unreadable)."""
    rows = _read_table(path)
    _require_columns(path, rows, ("id", "path"))
    base = path.parent
    confined = Confiner(resolve_root(root, base))
    result = ReadResult(rows=len(rows))
    for line, row in rows:
        where = f"{path}:{line}"
        sample_id = text_value(row.get("id"), where, "id", exact=True)
        file = text_value(row.get("path"), where, "path")
        if sample_id is None or file is None:
            field_name = "id" if sample_id is None else "path"
            raise InputError(f"{where}: empty {field_name!r}; every sample needs an id and a path")
        file_path = Path(file) if Path(file).is_absolute() else base / file
        uri = confined(file_path, f"{where}: path {file!r}")
        result.records.append(
            SampleRecord(sample_id=sample_id, uri=str(uri), meta=_meta(row, MANIFEST_COLUMNS), **_common(row, where))
        )
    return result


def read_text_table(path: Path) -> ReadResult:
    """A text CSV/TSV/JSONL: ``id``, ``text``, optional ``label``, ``split``, ``source``, metadata."""
    rows = _read_table(path)
    _require_columns(path, rows, ("id", "text"))
    result = ReadResult(rows=len(rows))
    for line, row in rows:
        where = f"{path}:{line}"
        sample_id = text_value(row.get("id"), where, "id", exact=True)
        if sample_id is None:
            raise InputError(f"{where}: empty 'id'; every sample needs an id")
        raw = row.get("text")
        text = raw if isinstance(raw, str) else text_value(raw, where, "text", lines=True)
        result.records.append(
            SampleRecord(sample_id=sample_id, kind="text", text=text or "", meta=_meta(row, TEXT_COLUMNS),
                         **_common(row, where))
        )
    return result


_IDX_IMAGES = re.compile(r"^(?P<stem>.*?)[-_.]?images[-_.]idx3[-_.]ubyte(\.gz)?$")


def read_idx_source(source: Path, root: str | Path | None = None) -> ReadResult:
    """MNIST-style IDX data: a folder holding ``*-images-idx3-ubyte[.gz]`` files with matching
    ``*-labels-idx1-ubyte[.gz]``, or one images file. ``t10k``/``test`` files become the test split.
    Hidden files are skipped (and reported); every file read must resolve inside ``root`` (default: the folder)."""
    confine_root = resolve_root(root, source if source.is_dir() else source.resolve().parent)
    result = ReadResult()
    if source.is_file():
        image_files = [source]
    else:
        image_files = []
        for entry in _entries(source):
            if not _IDX_IMAGES.match(entry.name):
                continue
            if entry.name.startswith("."):
                result.skip(SKIP_HIDDEN, entry.name)
            else:
                image_files.append(Path(entry.path))
    if not image_files:
        raise InputError(f"{source}: no '*-images-idx3-ubyte[.gz]' files; point at an MNIST-style IDX folder")
    fashion = "fashion" in str(source.resolve()).lower()
    records = result.records
    for images_path in image_files:
        match = _IDX_IMAGES.match(images_path.name)
        if match is None:
            raise InputError(f"{images_path}: not named '*-images-idx3-ubyte[.gz]'; rename it or use a manifest")
        stem = match.group("stem")
        images = read_idx(confine(images_path, confine_root, str(images_path)))
        if images.ndim not in (3, 4):
            raise InputError(f"{images_path}: expected an (N, H, W[, C]) image array, found shape {images.shape}")
        labels_path = _matching_labels(images_path)
        labels = None
        if labels_path is not None:
            labels = read_idx(confine(labels_path, confine_root, str(labels_path)))
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
    return result.close()


def _matching_labels(images_path: Path) -> Path | None:
    name = images_path.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1")
    candidate = images_path.with_name(name)
    return candidate if candidate.exists() and candidate != images_path else None


def _coco_list(path: Path, payload: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = payload[key]
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise InputError(f"{path}: {key!r} must be a list of JSON objects; expected a COCO instances file")
    return items


def _coco_key(value: Any, where: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InputError(f"{where}: an id must be an integer or a string, found {json.dumps(value)[:40]}")
    return value


def read_coco(path: Path, images_root: Path | None = None, root: str | Path | None = None) -> ReadResult:
    """A COCO instances JSON: images, categories, boxes and segmentations.

    Images are looked up under ``images_root`` (default: the JSON's folder, then its ``images/``) and must
    resolve inside ``root`` (default: ``images_root`` when given, else the JSON's folder). Each image's label is
    its dominant category (largest total annotated area); all annotations are kept for the object-size and
    background checks. Annotations of an image id not in ``images`` are skipped and reported.

    curato's own COCO export (docs/exports.md) adds conventions read here: an image's ``curato_label`` (and
    ``curato_split``) field is its label (split), over the area rule (null: unlabelled); an annotation marked
    ``"curato_semantic": true`` is one class of a semantic mask (stored as the mask it was, without a box row).
    Other image fields (``label`` and ``split`` too) are metadata and never shadow the real columns.
    """
    payload = _read_json(path)
    if not isinstance(payload, dict):
        raise InputError(f"{path}: the top level is not a JSON object; expected a COCO instances file")
    for key in ("images", "annotations", "categories"):
        if key not in payload:
            raise InputError(f"{path}: missing top-level {key!r}; expected a COCO instances file")
    categories = {}
    category_index: dict[int | str, int] = {}
    for number, category in enumerate(_coco_list(path, payload, "categories")):
        where = f"{path}: categories[{number}]"
        if "id" not in category:
            raise InputError(f"{where} lacks 'id'")
        key = _coco_key(category["id"], where)
        categories[key] = text_value(category.get("name", key), where, "name") or str(key)
        category_index[key] = number + 1
    confined = Confiner(resolve_root(root, images_root if images_root is not None else path.parent))
    if images_root is None:
        images_root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    images = _coco_list(path, payload, "images")
    image_ids = {_coco_key(image.get("id"), f"{path}: images[{n}]") for n, image in enumerate(images)}
    result = ReadResult(rows=len(images))
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for number, annotation in enumerate(_coco_list(path, payload, "annotations")):
        if "image_id" not in annotation or "category_id" not in annotation:
            raise InputError(f"{path}: annotations[{number}] lacks image_id or category_id")
        if _coco_key(annotation["category_id"], f"{path}: annotations[{number}]") not in categories:
            raise InputError(
                f"{path}: annotations[{number}] uses category_id {annotation['category_id']} not in 'categories'"
            )
        if _coco_key(annotation["image_id"], f"{path}: annotations[{number}]") not in image_ids:
            result.skipped_annotations.append(f"annotations[{number}] (image_id {annotation['image_id']!r})")
            continue
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    for number, image in enumerate(images):
        where = f"{path}: images[{number}]"
        if "file_name" not in image or "id" not in image:
            raise InputError(f"{where} lacks 'id' or 'file_name'")
        file_name = text_value(image["file_name"], where, "file_name", exact=True)
        if file_name is None:
            raise InputError(f"{where}: empty 'file_name'")
        uri = confined(images_root / file_name, f"{where}: file_name {file_name!r}")
        area: Counter[str] = Counter()
        annotation_rows = []
        for annotation in by_image.get(image["id"], []):
            category = categories[annotation["category_id"]]
            try:
                size = float(annotation.get("area") or _bbox_area(annotation.get("bbox")))
                box = None if annotation.get("bbox") is None else [float(v) for v in annotation["bbox"]]
            except (TypeError, ValueError) as error:
                raise InputError(f"{where}: an annotation's 'area' or 'bbox' is not numbers ({error})") from error
            area[category] += size
            segmentation = annotation.get("segmentation")
            if annotation.get("curato_semantic") is True and isinstance(segmentation, dict):
                annotation_rows.append({"kind": "rle", "category": category, "area": size,
                                        "data": {"segmentation": segmentation, "semantic": True,
                                                 "index": category_index[annotation["category_id"]],
                                                 **({} if box is None else {"bbox": box})}})
                continue
            if box is not None:
                annotation_rows.append({"kind": "bbox", "category": category, "area": size, "data": {"bbox": box}})
            if segmentation:
                kind = "rle" if isinstance(segmentation, dict) else "polygon"
                annotation_rows.append({"kind": kind, "category": category, "area": size,
                                        "data": {"segmentation": segmentation,
                                                 "iscrowd": int(annotation.get("iscrowd", 0))}})
        # every other image field is metadata as its JSON value; an export writes one named like a real
        # column (path, label, split, source) as meta.<name>, never over the real column
        meta = {key: value for key, value in image.items()
                if key not in ("file_name", "id", "width", "height", "curato_label", "curato_split")}
        meta["coco_id"] = image["id"]
        meta["categories"] = sorted(area)
        dominant = area.most_common(1)[0][0] if area else None
        label = text_value(image["curato_label"], where, "curato_label") if "curato_label" in image else dominant
        result.records.append(
            SampleRecord(
                sample_id=file_name, uri=str(uri), label=label,
                split=text_value(image.get("curato_split"), where, "curato_split"), meta=meta,
                annotations=[{**row, "sample_id": file_name} for row in annotation_rows],
            )
        )
    return result


@dataclass
class LabelStudioAnswer:
    """One annotation of a Label Studio task: the task's curato sample id (``data.sample_id``) and image file
    (``data.image``: the ``d`` of a local-files URL, or the path), the chosen class (None: no choice), who
    answered (``completed_by``), where in the file it is, and the polygons drawn with ``polygonlabels``."""

    sample_id: str | None
    file: str | None
    label: str | None
    annotator: str
    where: str
    polygons: list[tuple[str, list[list[float]], int, int]] = field(default_factory=list)
    """Mask polygons: (class, points in percent of the image, original width, original height)."""


def _completed_by(value: Any) -> str:
    """Label Studio's ``completed_by``: a user id, or (some exports) an object with ``email``/``id``."""
    if isinstance(value, dict):
        value = value.get("email") or value.get("username") or value.get("id")
    if value is None or isinstance(value, bool):
        return "label-studio"
    return str(value)


def _task_file(image: Any) -> str | None:
    """The file a task's ``data.image`` names: the ``d`` of a local-files URL, else the path itself."""
    from urllib.parse import parse_qs, urlparse

    if not isinstance(image, str) or not image:
        return None
    if "local-files" in image:
        found = parse_qs(urlparse(image).query).get("d")
        return found[0] if found else None
    return image


def _chosen_label(result: Any, where: str, control: str) -> str | None:
    """The first choice of the ``choices`` region of ``control`` (or of the only choices control) in ``result``."""
    if not isinstance(result, list):
        raise InputError(f"{where}: 'result' must be a list of regions; expected Label Studio's JSON export")
    regions = [region for region in result if isinstance(region, dict) and region.get("type") == "choices"
               and region.get("from_name") != "findings"]  # curato's own pre-annotated findings are no class
    own = [region for region in regions if region.get("from_name") == control]
    if not own and len({region.get("from_name") for region in regions}) == 1:
        own = regions
    for region in own:
        choices = (region.get("value") or {}).get("choices")
        if isinstance(choices, list) and choices:
            return text_value(choices[0], where, "choice")
    return None


def _polygons(result: Any, where: str) -> list[tuple[str, list[list[float]], int, int]]:
    """(class, points in percent, original width, original height) of every ``polygonlabels`` region."""
    found = []
    for number, region in enumerate(result if isinstance(result, list) else []):
        if not isinstance(region, dict) or region.get("type") != "polygonlabels":
            continue
        value = region.get("value") or {}
        points, names = value.get("points"), value.get("polygonlabels")
        width, height = region.get("original_width"), region.get("original_height")
        at = f"{where}: result[{number}]"
        if not isinstance(names, list) or not names or not isinstance(points, list) or len(points) < 3:
            raise InputError(f"{at}: a polygon needs 'points' (at least 3) and 'polygonlabels'")
        if not all(isinstance(size, int) and size > 0 for size in (width, height)):
            raise InputError(f"{at}: a polygon needs 'original_width' and 'original_height' in pixels")
        try:
            pairs = [[float(x), float(y)] for x, y in points]
        except (TypeError, ValueError) as error:
            raise InputError(f"{at}: 'points' must be [x, y] pairs of numbers ({error})") from error
        found.append((text_value(names[0], at, "polygonlabels") or "", pairs, width, height))
    return found


def read_label_studio(path: Path, control: str = "label") -> tuple[list[LabelStudioAnswer], int]:
    """(answers, tasks read) of a Label Studio JSON export: a list of tasks, each with ``data`` and
    ``annotations`` (``completions`` in old exports). Cancelled annotations are skipped; an annotation's class is
    the first choice of the ``control`` choices region (or of the only choices control), its mask the
    ``polygonlabels`` regions; predictions and drafts are not answers."""
    payload = _read_json(path)
    if not isinstance(payload, list) or not all(isinstance(task, dict) for task in payload):
        raise InputError(f"{path}: expected a JSON list of tasks (Label Studio: Export -> JSON)")
    answers = []
    for number, task in enumerate(payload):
        where = f"{path}: task {task.get('id', number)}"
        data = task.get("data")
        if not isinstance(data, dict):
            raise InputError(f"{where} has no 'data' object; expected Label Studio's JSON export")
        sample_id = text_value(data.get("sample_id"), where, "sample_id", exact=True)
        file = _task_file(data.get("image"))
        annotations = task.get("annotations", task.get("completions", []))
        if not isinstance(annotations, list):
            raise InputError(f"{where}: 'annotations' must be a list")
        for index, annotation in enumerate(annotations):
            if not isinstance(annotation, dict):
                raise InputError(f"{where}: annotations[{index}] is not an object")
            cancelled = bool(annotation.get("was_cancelled"))
            at = f"{where}: annotations[{index}]"
            label = None if cancelled else _chosen_label(annotation.get("result", []), at, control)
            answers.append(LabelStudioAnswer(sample_id=sample_id, file=file, label=label,
                                             annotator=_completed_by(annotation.get("completed_by")),
                                             where=f"task {task.get('id', number)}",
                                             polygons=[] if cancelled else _polygons(annotation.get("result"), at)))
    return answers, len(payload)


def _bbox_area(bbox: Any) -> float:
    if not bbox or len(bbox) != 4:
        return 0.0
    return float(bbox[2]) * float(bbox[3])


def detect_format(source: Path) -> str:
    """Guess the reader for ``source`` from its shape on disk."""
    if source.is_dir():
        if any(_IDX_IMAGES.match(e.name) and not e.name.startswith(".") for e in _entries(source)):
            return "idx"
        return "imagefolder"
    name = source.name.lower()
    if _IDX_IMAGES.match(name):
        return "idx"
    if name.endswith(".json"):
        with source.open("rb") as handle:
            start = handle.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()
        return "label-studio" if start.startswith(b"[") else "coco"
    if name.endswith((".csv", ".jsonl", ".ndjson", ".tsv")):
        rows = _read_table(source)[:1]
        return "text" if rows and "text" in rows[0][1] and "path" not in rows[0][1] else "manifest"
    raise InputError(
        f"{source}: cannot tell the format; pass --format imagefolder|manifest|coco|idx|text|label-studio"
    )


# ---- pixel masks ---------------------------------------------------------------------------------------------

MASK_CLASSES_FILE = "classes.txt"
_BACKGROUND_NAMES = frozenset({"background", "_background_", "__background__"})


@dataclass
class MaskReadResult:
    """What :func:`read_mask_folder` found: annotation rows (one per class present per mask; no origin), the
    class names (label value i + 1 is ``classes[i]``), the samples that got a mask, and mask files that match no
    sample."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def read_mask_classes(folder: Path) -> list[str] | None:
    """Class names from ``folder/classes.txt`` (line i = label value i; a first line naming the background is
    value 0 and left out), or None without the file."""
    path = folder / MASK_CLASSES_FILE
    if not path.is_file():
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read as UTF-8 text ({error}); write one class name a line") from error
    if names and names[0].lower() in _BACKGROUND_NAMES:
        names = names[1:]
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise InputError(f"{path}: class {repeated[0]!r} is listed twice; each line must name a different class")
    return names


def read_mask_folder(folder: Path, records: list[SampleRecord]) -> MaskReadResult:
    """Indexed-PNG label maps (0 = background, 1..K = classes) for ``records``: the mask of a sample is
    ``folder/<its id's folders>/<file stem>.png``, else ``folder/<file stem>.png``. Class names come from
    ``folder/classes.txt`` when present, else ``class_1``, ``class_2``, ... A mask whose size differs from its
    image's is refused; every mask file must resolve inside ``folder``. Reads each PNG's pixels (the one reader
    that does: masks are their own data)."""
    from curato.catalog.catalog import mask_rows
    from curato.masks import read_label_png

    if not folder.is_dir():
        raise InputError(f"--masks {folder}: not a folder; name the folder holding one PNG mask per image")
    confined = Confiner(folder.resolve())
    available = {}
    for entry in folder.rglob("*"):
        relative = entry.relative_to(folder)
        if entry.suffix.lower() == ".png" and not any(part.startswith(".") for part in relative.parts):
            available[relative.with_suffix("").as_posix()] = entry
    stems = Counter(Path(record.sample_id).stem for record in records)
    classes = read_mask_classes(folder)
    found = MaskReadResult()
    used: set[str] = set()
    maps: list[tuple[SampleRecord, Any]] = []
    for record in records:
        own = Path(record.sample_id).with_suffix("").as_posix()
        stem = Path(record.sample_id).stem
        key = own if own in available else stem if stem in available else None
        if key is None:
            continue
        if key == stem and key != own and stems[stem] > 1:
            raise InputError(f"{available[key]}: {stems[stem]} images share the file stem {stem!r}; put masks in "
                             f"folders mirroring the images' (e.g. {own}.png)")
        path = confined(available[key], f"--masks: {available[key]}")
        label_map = read_label_png(path)
        _check_mask_size(path, label_map.shape, record)
        used.add(key)
        maps.append((record, label_map))
    top = max((int(label_map.max()) for _, label_map in maps if label_map.size), default=0)
    if classes is None:
        classes = [f"class_{value}" for value in range(1, top + 1)]
    elif top > len(classes):
        raise InputError(f"{folder / MASK_CLASSES_FILE}: names {len(classes)} classes but a mask holds label value "
                         f"{top}; add the missing class names (line i names value i)")
    for record, label_map in maps:
        rows = mask_rows(record.sample_id, label_map, classes)
        found.rows += rows
        record.annotations += rows
        found.matched.append(record.sample_id)
    found.classes = list(classes)
    found.unmatched = sorted(key for key in available if key not in used)
    return found


def _check_mask_size(path: Path, shape: tuple[int, ...], record: SampleRecord) -> None:
    from PIL import Image, UnidentifiedImageError

    if record.uri is None or record.uri.startswith("idx:"):
        return
    try:
        with Image.open(record.uri) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError):
        return  # an unreadable image is the scan's to report
    if (height, width) != tuple(shape):
        raise InputError(f"{path}: the mask is {shape[1]}x{shape[0]} but its image {record.sample_id!r} is "
                         f"{width}x{height}; a mask must have its image's size")
