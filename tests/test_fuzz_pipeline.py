"""Fuzzing ingest -> audit -> export with hostile manifests (Hypothesis): ids, labels, splits and paths drawn from
what breaks tools (``..``, absolute paths, devices, FIFOs, links out of the dataset, markup, long and odd names).

Whatever the manifest, curato must: never crash (exit 0, or 2 with one line naming the fault), never write
outside its workspace and output folders, and never drop a row silently (rows in = samples ingested, and every
sample is either exported or reported unreadable).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import run

HOSTILE_TEXT = ["..", ".", "../up", "/etc/passwd", ".bashrc", "a/b", "a\\b", "[/]", "[bold red]x", "%2F", "ü-é",
                "x" * 300, "unlabeled", "CON", "a b", "-rf", "*", "?"]
INSIDE = ["img0.png", "img1.png", "sub/img2.png", "missing.png", "sub/../img1.png", "./img1.png"]
ESCAPING = ["../outside.png", "/dev/zero", "fifo", "link-out.png", "sub"]
names = st.one_of(st.sampled_from(HOSTILE_TEXT),
                  st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12))
# Half the manifests point only inside the dataset (so ingest -> audit -> export runs through with hostile ids,
# labels and splits); the others may also point out of it, at devices, FIFOs and folders (ingest must refuse).
rows = st.booleans().flatmap(lambda escaping: st.lists(st.fixed_dictionaries({
    "id": names,
    "path": st.sampled_from(INSIDE + ESCAPING if escaping else INSIDE),
    "label": st.one_of(st.none(), names),
    "split": st.sampled_from(["", "train", "test", "../up", "[/]"]),
}), min_size=1, max_size=10, unique_by=lambda row: row["id"]))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(manifest_rows=rows)
def test_hostile_manifests_never_crash_escape_or_drop(manifest_rows, tmp_path_factory, fashion_mnist):
    images, _ = fashion_mnist
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    for index, name in enumerate(["img0.png", "img1.png", "sub/img2.png"]):
        Image.fromarray(images[index]).save(data / name)
    Image.fromarray(images[3]).save(root / "outside.png")
    os.mkfifo(data / "fifo")
    (data / "link-out.png").symlink_to(root / "outside.png")
    manifest = data / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "path", "label", "split"])
        writer.writeheader()
        writer.writerows([{**row, "label": row["label"] or ""} for row in manifest_rows])
    before = _files(root)
    ws, out_csv, out_dir = root / "ws", root / "export.csv", root / "exported"

    ingested = run("ingest", manifest, "-w", ws, "--workers", "1")
    assert ingested.returncode in (0, 2), ingested.stderr
    if ingested.returncode == 2:  # refused as a whole: one line naming the fault, nothing half-ingested
        assert len(ingested.stderr.strip().splitlines()) == 1 and "Traceback" not in ingested.stderr
        assert "manifest.csv" in ingested.stderr or "id" in ingested.stderr
    else:
        import curato

        workspace = curato.Workspace.open(ws)
        info = workspace.info()
        assert info["samples"] == len(manifest_rows)  # nothing dropped: every row is a sample or the run failed
        audited = run("audit", "-w", ws, "--checks", "unreadable,imbalance")
        assert audited.returncode == 0, audited.stderr
        exported = run("export", out_csv, "-w", ws)
        assert exported.returncode == 0, exported.stderr
        with out_csv.open(encoding="utf-8") as handle:
            written = list(csv.DictReader(handle))
        assert len(written) + len(info["unreadable"]) == len(manifest_rows)
        folder = run("export", out_dir, "-w", ws, "--format", "imagefolder")
        assert folder.returncode in (0, 2), folder.stderr
        if folder.returncode == 2:
            assert len(folder.stderr.strip().splitlines()) == 1
        else:
            copied = [p for p in out_dir.rglob("*") if p.is_file() and p.name != ".curato-export.csv"]
            assert len(copied) == len(written)
            assert all(p.resolve().is_relative_to(out_dir.resolve()) for p in copied)
    # nothing written anywhere but the workspace and the two outputs
    after = _files(root)
    new = {p for p in after - before if not p.startswith(("ws", "export.csv", "exported"))}
    assert not new, new
    assert before <= after  # and nothing of the user's removed
