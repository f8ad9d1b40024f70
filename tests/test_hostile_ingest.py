"""A hostile-but-fair user: manifests, folders and exports that try to read or write outside the dataset,
malformed CSV, values that are not strings, and rows that vanish without a word. Real files throughout."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curato.commands.export import EXPORT_INDEX, export
from curato.commands.ingest import ingest
from curato.errors import InputError
from curato.workspace import Workspace
from tests.conftest import run


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


# ---- 1. export confinement ------------------------------------------------------------------------------


def _hostile_workspace(tmp_path: Path) -> Workspace:
    data = tmp_path / "deep" / "data"
    for index in range(5):
        _png(data / f"{index}.png", index)
    rows = [
        [".bashrc", "0.png", "cat", "train"],
        ["../../escape.png", "1.png", "..", "train"],  # a label '..' (what --relabel can suggest) and an id '../..'
        ["a/b.png", "2.png", "cat", "../.."],
        ["a__b.png", "3.png", "cat", str(tmp_path / "elsewhere")],  # an absolute split inside tmp_path
        ["%2E%2Ebashrc", "4.png", "cat", "train"],  # what an encoder without escaping '%' would produce
    ]
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, _csv(data / "m.csv", ["id", "path", "label", "split"], rows), workers=1)
    return ws


def test_imagefolder_export_writes_only_inside_its_folder_and_reports_each_file(tmp_path):
    ws = _hostile_workspace(tmp_path)
    before = _files(tmp_path)
    out = tmp_path / "deep" / "out"
    _, count = export(ws, out, format="imagefolder")
    written = _files(tmp_path) - before
    assert written and all(file.resolve().is_relative_to(out.resolve()) for file in written)
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "escape.png").exists()
    images = {file for file in written if file.name != EXPORT_INDEX}
    assert count == 5 and len(images) == 5  # five ids, five files: nothing merged, nothing overwritten
    assert not any(part.startswith(".") for file in images for part in file.relative_to(out).parts)
    with (out / EXPORT_INDEX).open(encoding="utf-8") as handle:
        index = {row["id"]: row for row in csv.DictReader(handle)}
    assert set(index) == {".bashrc", "../../escape.png", "a/b.png", "a__b.png", "%2E%2Ebashrc"}
    assert {out / row["file"] for row in index.values()} == images
    assert index["../../escape.png"]["label"] == ".."
    assert (out / index["a/b.png"]["file"]).read_bytes() == (tmp_path / "deep" / "data" / "2.png").read_bytes()


def test_imagefolder_export_never_merges_two_ids_into_one_file(tmp_path):
    data = tmp_path / "data"
    rows = [["a/b.png", "0.png", "cat"], ["a__b.png", "1.png", "cat"], ["a-b.png", "2.png", "cat"]]
    for index in range(3):
        _png(data / f"{index}.png", index)
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, _csv(data / "m.csv", ["id", "path", "label"], rows), workers=1)
    out = tmp_path / "out"
    export(ws, out, format="imagefolder")
    copies = sorted(file.read_bytes() for file in (out / "cat").iterdir())
    assert len(copies) == 3 and copies == sorted((data / f"{i}.png").read_bytes() for i in range(3))


def test_imagefolder_export_refuses_a_file_a_full_folder_and_an_overlong_name(tmp_path):
    data = tmp_path / "data"
    _png(data / "0.png")
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, _csv(data / "m.csv", ["id", "path", "label"], [["x" * 300, "0.png", "cat"]]), workers=1)
    a_file = tmp_path / "taken.txt"
    a_file.write_text("keep me")
    with pytest.raises(InputError, match="not a folder"):
        export(ws, a_file, format="imagefolder")
    assert a_file.read_text() == "keep me"
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        export(ws, full, format="imagefolder")
    with pytest.raises(InputError, match="255 bytes"):
        export(ws, tmp_path / "out", format="imagefolder")
    assert not (tmp_path / "out").exists() or not _files(tmp_path / "out")  # checked before writing anything


def test_imagefolder_export_refuses_ambiguous_folders(tmp_path):
    data = tmp_path / "data"
    for index in range(2):
        _png(data / f"{index}.png", index)
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, _csv(data / "m.csv", ["id", "path", "label"], [["a", "0.png", "unlabeled"], ["b", "1.png", ""]]),
           workers=1)
    with pytest.raises(InputError, match="unlabeled"):
        export(ws, tmp_path / "out", format="imagefolder")
    ws2 = Workspace.create(tmp_path / "ws2")
    ingest(ws2, _csv(data / "m2.csv", ["id", "path", "label", "split"],
                     [["a", "0.png", "cat", "train"], ["b", "1.png", "cat", ""]]), workers=1)
    with pytest.raises(InputError, match="no split"):
        export(ws2, tmp_path / "out2", format="imagefolder")


def test_csv_export_refuses_another_suffix(tmp_path):
    data = tmp_path / "data"
    _png(data / "0.png")
    ws = tmp_path / "ws"
    assert run("ingest", _csv(data / "m.csv", ["id", "path"], [["a", "0.png"]]), "-w", ws).returncode == 0
    result = run("export", tmp_path / "x.json", "-w", ws)
    assert result.returncode == 2 and "'.json'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
    assert run("export", tmp_path / "x.CSV", "-w", ws).returncode == 0


# ---- 2. ingest confinement ------------------------------------------------------------------------------


def test_manifest_paths_outside_the_manifest_folder_are_refused(tmp_path):
    outside = _png(tmp_path / "outside" / "secret.png")
    data = tmp_path / "data"
    _png(data / "ok.png")
    ws = Workspace.create(tmp_path / "ws")
    for number, bad in enumerate(["../outside/secret.png", str(outside), "/dev/null"]):
        manifest = _csv(data / f"m{number}.csv", ["id", "path"], [["ok", "ok.png"], ["bad", bad]])
        with pytest.raises(InputError, match="outside") as raised:
            ingest(ws, manifest, workers=1)
        assert f"{manifest}:3" in str(raised.value) and "--root" in str(raised.value)
    assert ws.catalog.sample_count() == 0


def test_symlinks_out_of_the_root_are_refused_and_root_widens_it(tmp_path):
    outside = _png(tmp_path / "pool" / "secret.png")
    data = tmp_path / "data"
    data.mkdir()
    (data / "link.png").symlink_to(outside)
    manifest = _csv(data / "m.csv", ["id", "path"], [["a", "link.png"]])
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(InputError, match="outside"):
        ingest(ws, manifest, workers=1)
    (data / "pooldir").symlink_to(tmp_path / "pool")  # a symlinked folder on the way
    with pytest.raises(InputError, match="outside"):
        ingest(ws, _csv(data / "m2.csv", ["id", "path"], [["a", "pooldir/secret.png"]]), workers=1)
    folder = tmp_path / "folder" / "cat"
    folder.mkdir(parents=True)
    (folder / "link.png").symlink_to(outside)
    with pytest.raises(InputError, match="outside"):
        ingest(ws, tmp_path / "folder", workers=1)
    assert ws.catalog.sample_count() == 0
    summary = ingest(ws, manifest, root=tmp_path, workers=1)  # --root names the folder that holds the data
    assert summary.samples == 1 and ws.catalog.samples(("uri",))["uri"][0] == str(outside.resolve())


def test_coco_file_names_cannot_leave_the_images_folder(tmp_path):
    _png(tmp_path / "secret.png")
    coco = {"images": [{"id": 1, "file_name": "../secret.png"}], "annotations": [], "categories": []}
    (tmp_path / "coco").mkdir()
    path = tmp_path / "coco" / "instances.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(InputError, match="outside"):
        ingest(Workspace.create(tmp_path / "ws"), path, workers=1)


def test_devices_are_refused_without_being_read(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    manifest = _csv(data / "m.csv", ["id", "path"], [["zero", "/dev/zero"]])
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(InputError, match="character device"):
        ingest(ws, manifest, root="/", workers=1)  # inside the root, yet never opened: /dev/zero never ends
    (data / "zero.png").symlink_to("/dev/zero")
    with pytest.raises(InputError, match="outside"):
        ingest(ws, data, workers=1)


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    data = tmp_path / "data"
    _png(data / "cat" / "ok.png")
    fifo = data / "cat" / "pipe.png"
    os.mkfifo(fifo)
    stop = threading.Event()

    def unblock() -> None:  # a reader blocked on the FIFO gets EOF instead of hanging the test run
        while not stop.is_set():
            with contextlib.suppress(OSError):  # no reader yet
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.02)

    helper = threading.Thread(target=unblock, daemon=True)
    helper.start()
    try:
        ws = Workspace.create(tmp_path / "ws")
        manifest = _csv(data / "m.csv", ["id", "path"], [["ok", "cat/ok.png"], ["pipe", "cat/pipe.png"]])
        with pytest.raises(InputError, match="FIFO") as raised:
            ingest(ws, manifest, workers=1)
        assert f"{manifest}:3" in str(raised.value)
        with pytest.raises(InputError, match="FIFO"):
            ingest(ws, data, workers=1)
        assert ws.catalog.sample_count() == 0
    finally:
        stop.set()
        helper.join()


# ---- 3. malformed CSV ------------------------------------------------------------------------------------


def test_an_unclosed_quote_is_an_error_naming_the_line(tmp_path):
    data = tmp_path / "data"
    for name in "abc":
        _png(data / f"{name}.png")
    manifest = data / "m.csv"
    manifest.write_text('id,path,label\na,a.png,cat\nb,b.png,"dog\nc,c.png,dog\n')
    result = run("ingest", manifest, "-w", tmp_path / "ws")
    assert result.returncode == 2, result.stdout
    assert f"{manifest}:3" in result.stderr and "quote" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,path,label\na,a.png,cat\nb,b.png\n", ":3: 2 fields but the header has 3"),
        ("id,path,label\na,a.png,cat,extra\n", ":2: 4 fields but the header has 3"),
        ('id,path,label\na,a.png,"cat"x\n', ":2: malformed CSV"),
        ("id,path,label,label\na,a.png,cat,dog\n", "column 'label' appears twice"),
        ('id,path,label\na,a.png,"cat\ndog"\n', ":2: 'label' contains a line break"),
    ],
)
def test_ragged_and_broken_rows_name_the_line(tmp_path, content, message):
    path = tmp_path / "m.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as raised:
        ingest(Workspace.create(tmp_path / "ws"), path, workers=1)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_long_fields_are_kept_up_to_a_stated_cap(tmp_path):
    from curato.ingest.readers import CSV_FIELD_LIMIT

    path = tmp_path / "long.csv"
    long_text = "word " * 30_000  # 150,000 characters: over Python's default csv field limit
    path.write_text(f'id,text,label\n1,"{long_text}",pos\n2,short,neg\n')
    ws = Workspace.create(tmp_path / "ws")
    assert ingest(ws, path).samples == 2
    texts = ws.catalog.samples(("sample_id", "text"))["text"].tolist()
    assert texts[0] == long_text
    huge = tmp_path / "huge.csv"
    huge.write_text(f"id,text\n1,{'x' * (CSV_FIELD_LIMIT + 1)}\n")
    with pytest.raises(InputError, match=re.escape(f"{huge}:2: a field is longer than")):
        ingest(ws, huge)


def test_tsv_is_tab_separated(tmp_path):
    data = tmp_path / "data"
    _png(data / "a b.png")
    manifest = _csv(data / "m.tsv", ["id", "path", "label", "note"], [["a", "a b.png", "cat", "x, y"]], "\t")
    ws = Workspace.create(tmp_path / "ws")
    summary = ingest(ws, manifest, workers=1)
    assert summary.format == "manifest" and summary.samples == 1
    assert ws.catalog.samples(("meta",))["meta"][0] == {"note": "x, y"}


# ---- 4. silent wrong results -----------------------------------------------------------------------------


def test_hidden_folders_are_skipped_and_reported(tmp_path, image_folder):
    _png(image_folder / "train" / ".cache" / "thumb.png")
    _png(image_folder / "train" / "Trouser" / ".ipynb_checkpoints" / "cat-checkpoint.png")
    _png(image_folder / ".git" / "x.png")
    (image_folder / "train" / "Trouser" / "notes.txt").write_text("not an image")
    ws = Workspace.create(tmp_path / "ws")
    summary = ingest(ws, image_folder, workers=1)
    ids = ws.catalog.samples(("sample_id",))["sample_id"].tolist()
    assert not any("/." in sid or sid.startswith(".") for sid in ids)
    assert set(ws.catalog.current_labels().values()) == {"T-shirt-top", "Trouser", "Sneaker"}
    assert summary.skipped[readers_reason("hidden")] == 3 and summary.skipped[readers_reason("image")] == 1
    assert summary.rows == summary.samples + sum(summary.skipped.values())


def readers_reason(word: str) -> str:
    from curato.ingest import readers

    return {"hidden": readers.SKIP_HIDDEN, "image": readers.SKIP_NOT_IMAGE}[word]


def test_hidden_idx_files_are_not_a_split(tmp_path, fashion_mnist):
    from tests.test_ingest import _write_idx

    images, labels = fashion_mnist
    folder = tmp_path / "idx"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte.gz", images[:10], 0x08)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", labels[:10].astype(np.uint8), 0x08)
    _write_idx(folder / ".train-images-idx3-ubyte.gz", images[10:15], 0x08)  # an editor's or sync tool's copy
    ws = Workspace.create(tmp_path / "ws")
    summary = ingest(ws, folder, workers=1)
    assert summary.samples == 10 and ws.catalog.group_counts("split") == {"train": 10}
    assert summary.rows == 11 and summary.skipped == {readers_reason("hidden"): 1}


def test_coco_image_fields_never_shadow_the_real_columns(tmp_path):
    _png(tmp_path / "images" / "cat.png")
    coco = {
        "images": [{"id": 1, "file_name": "cat.png", "path": "/etc/passwd", "label": "dog", "split": "test",
                    "source": "forged", "id_hint": 3}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, path, workers=1)
    out = tmp_path / "clean.csv"
    export(ws, out)
    with out.open(encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["path"] == str((tmp_path / "images" / "cat.png").resolve())
    assert (row["label"], row["split"], row["source"]) == ("cat", "", "instances")
    assert (row["meta.path"], row["meta.label"], row["meta.split"], row["meta.source"]) == (
        "/etc/passwd", "dog", "test", "forged")


def test_jsonl_values_are_stored_json_faithfully(tmp_path):
    data = tmp_path / "data"
    _png(data / "a.png")
    manifest = data / "m.jsonl"
    manifest.write_text(json.dumps({"id": 7, "path": "a.png", "label": 3, "tags": [1, "a"], "ok": True,
                                    "box": {"w": 2.5}, "none": None}) + "\n")
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, manifest, workers=1)
    assert ws.catalog.current_labels() == {"7": "3"}  # integers: their decimal string
    assert ws.catalog.samples(("meta",))["meta"][0] == {"tags": [1, "a"], "ok": True, "box": {"w": 2.5}}
    out = tmp_path / "clean.csv"
    export(ws, out)
    with out.open(encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["tags"], row["ok"], row["box"]) == ('[1, "a"]', "true", '{"w": 2.5}')


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "a", "path": "a.png", "label": True}, "'label' is true, a JSON boolean"),
        ({"id": 1.5, "path": "a.png"}, r"'id' is 1\.5, a JSON number with a fraction"),
        ({"id": "a", "path": "a.png", "label": ["x"]}, "'label' is .*a JSON array"),
        ({"id": "a", "path": "a.png", "split": {"x": 1}}, "'split' is .*a JSON object"),
    ],
)
def test_jsonl_non_string_fields_are_refused(tmp_path, row, message):
    _png(tmp_path / "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError, match=re.escape(f"{manifest}:2: ") + message):
        ingest(Workspace.create(tmp_path / "ws"), manifest, workers=1)


def test_ids_are_kept_exactly_so_surrounding_whitespace_is_refused(tmp_path):
    data = tmp_path / "data"
    for name in "ab":
        _png(data / f"{name}.png")
    ws = Workspace.create(tmp_path / "ws")
    manifest = _csv(data / "m.csv", ["id", "path", "label"], [["a", "a.png", " cat "], ["b ", "b.png", "cat"]])
    with pytest.raises(InputError, match=re.escape(f"{manifest}:3: id 'b ' has leading or trailing whitespace")):
        ingest(ws, manifest, workers=1)
    jsonl = data / "m.jsonl"
    jsonl.write_text(json.dumps({"id": " y", "path": "a.png"}) + "\n" + json.dumps({"id": "y", "path": "b.png"}))
    with pytest.raises(InputError, match="whitespace"):
        ingest(ws, jsonl, workers=1)
    inner = _csv(data / "ok.csv", ["id", "path", "label"], [["a b", "a.png", " cat "], ["ab", "b.png", "cat"]])
    ingest(ws, inner, workers=1)
    assert ws.catalog.current_labels() == {"a b": "cat", "ab": "cat"}  # labels lose surrounding spaces (documented)


def test_reingest_under_another_source_name_is_refused(tmp_path):
    data = tmp_path / "data"
    for name in "ab":
        _png(data / f"{name}.png")
    manifest = _csv(data / "m.csv", ["id", "path"], [["a", "a.png"], ["b", "b.png"]])
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, manifest, workers=1)
    with pytest.raises(InputError, match=r"source 'm'.*--source m"):
        ingest(ws, manifest, source_name="site-b", workers=1)
    assert ws.catalog.group_counts("source") == {"m": 2}
    assert ingest(ws, manifest, source_name="m", workers=1).sources_changed == 0
    edited = _csv(data / "m.csv", ["id", "path", "source"], [["a", "a.png", "lab"], ["b", "b.png", ""]])
    summary = ingest(ws, edited, workers=1)  # the manifest's own source column: a change, reported
    assert summary.sources_changed == 1 and ws.catalog.group_counts("source") == {"lab": 1, "m": 1}


# ---- 5. every row accounted for --------------------------------------------------------------------------


def test_every_entry_is_a_sample_or_a_reported_skip(tmp_path, image_folder):
    _png(image_folder / "loose.png")  # beside split folders: in no split
    (image_folder / "README.md").write_text("about this dataset")
    (image_folder / "test" / "Sneaker" / "._00001.png").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble
    ws = Workspace.create(tmp_path / "ws")
    summary = ingest(ws, image_folder, workers=1)
    assert summary.samples == 80 and summary.rows == 83
    assert sum(summary.skipped.values()) == 3 and len(summary.skipped) == 3
    assert all(summary.skipped_examples[reason] for reason in summary.skipped)


def test_blank_lines_are_not_rows_and_orphan_annotations_are_reported(tmp_path):
    data = tmp_path / "data"
    _png(data / "a.png")
    manifest = data / "m.csv"
    manifest.write_text("id,path\n\na,a.png\n\n")
    summary = ingest(Workspace.create(tmp_path / "ws"), manifest, workers=1)
    assert (summary.rows, summary.samples, summary.skipped) == (1, 1, {})
    coco = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]},
                            {"id": 2, "image_id": 99, "category_id": 1, "bbox": [0, 0, 2, 2]}]}
    (data / "coco.json").write_text(json.dumps(coco))
    summary = ingest(Workspace.create(tmp_path / "ws2"), data / "coco.json", workers=1)
    assert summary.annotations == 1 and summary.annotations_skipped == 1


def test_symlink_loops_and_deep_nesting_are_clear_errors_or_fine(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "loop.png").symlink_to(data / "loop.png")
    manifest = _csv(data / "m.csv", ["id", "path"], [["a", "loop.png"]])
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(InputError, match="cannot be resolved"):
        ingest(ws, manifest, workers=1)
    deep = tmp_path / "deep" / "cat"
    deep.mkdir(parents=True)
    depth = 1100  # deeper than Python's recursion limit
    monkeypatch.chdir(deep)  # each step below is relative, so paths stay short
    try:
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        _png(Path("x.png"))
        summary = ingest(ws, tmp_path / "deep", workers=1)
        assert summary.samples == 1 and ws.catalog.current_labels() == {"cat/" + "d/" * depth + "x.png": "cat"}
    finally:  # pytest's own clean-up (shutil.rmtree) recurses per level: take the tree down here
        os.chdir(deep)
        while os.path.isdir("d"):
            os.chdir("d")
        for name in os.listdir("."):
            os.remove(name)
        while Path.cwd() != deep:
            os.chdir("..")
            os.rmdir("d")


def test_a_file_name_that_is_not_utf8_is_named_not_a_traceback(tmp_path):
    """Linux file names are bytes; a Latin-1 name reaches Python as lone surrogates, which no catalog can store."""
    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "cat" / "fine.png")
    with open(os.path.join(os.fsencode(root / "cat"), b"caf\xe9.png"), "wb") as handle:
        Image.new("RGB", (8, 8), (10, 200, 10)).save(handle, format="PNG")
    workspace = Workspace.create(tmp_path / "ws")
    with pytest.raises(InputError, match=r"is not valid UTF-8; rename that file"):
        ingest(workspace, root)
    assert workspace.catalog.sample_count() == 0
