"""`curato export` writes the curated labels: original_label, label, origin, changed per row; --relabel takes the
audit's suggestions but never over a label people set nor, without --relabel-test, in the test split; samples
taken out in the app are left out; the printed counts equal the rows (real Fashion-MNIST images, a real audit)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from curato.api import Workspace
from curato.catalog.catalog import utcnow
from curato.catalog.schema import decisions
from curato.commands.export import CHANGE_REASONS, EXPORT_INDEX, is_evaluation_split
from tests.conftest import run


@pytest.fixture()
def curated(image_folder: Path, tmp_path: Path) -> dict:
    """An audited workspace with planted label errors in train and test, people's labels, a routed model label,
    one sample excluded and one marked ambiguous in the app."""
    for photo in ("cat.jpg", "coffee.jpg"):  # Fashion-MNIST only: 78 images
        (image_folder / "train" / "Trouser" / photo).unlink()
    for split, planted in (("train", 4), ("test", 2)):  # sneakers filed as trousers: errors the audit flags
        for image in sorted((image_folder / split / "Sneaker").iterdir())[:planted]:
            shutil.move(image, image_folder / split / "Trouser" / image.name)
    workspace = tmp_path / "ws"
    assert run("ingest", image_folder, "-w", workspace).returncode == 0
    audit = run("audit", "-w", workspace)
    assert audit.returncode == 0, audit.stderr
    ws = Workspace.open(workspace)
    document = ws.read_latest("audit")
    (finding,) = [f for f in document["checks"] if f["check"] == "label_issues"]
    suggested = {row["sample_id"]: row["suggested_label"] for row in finding["issues"]}
    flagged_test = sorted(sid for sid in suggested if sid.startswith("test/"))
    flagged_train = sorted(sid for sid in suggested if sid.startswith("train/"))
    assert flagged_test and len(flagged_train) >= 2, suggested  # the planted errors are found in both splits
    others = sorted(sid for sid in ws.catalog.current_labels() if sid.startswith("train/T-shirt-top/"))
    confirmed = flagged_train[0]  # a person looked and kept the flagged label: --relabel must not override it
    people, routed, excluded, ambiguous = others[:4]
    with ws.catalog.transaction() as conn:
        ws.catalog.add_labels(conn, {confirmed: "Trouser", people: "Sneaker"}, origin="human", annotator="ann")
        ws.catalog.add_labels(conn, {routed: "Sneaker"}, origin="model")
        conn.execute(decisions.insert(), [
            {"queue": "labelling", "item": sid, "action": state, "sample_ids": [sid], "effects": {state: [sid]},
             "user": "ann", "created_at": utcnow()}
            for sid, state in ((excluded, "excluded"), (ambiguous, "ambiguous"))])
    return {"workspace": workspace, "suggested": suggested, "flagged_test": flagged_test,
            "flagged_train": flagged_train, "confirmed": confirmed, "people": people, "routed": routed,
            "excluded": excluded, "ambiguous": ambiguous}


def _folder_label(sid: str) -> str:
    return sid.split("/")[1]


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def _printed(stdout: str) -> dict[str, int]:
    """The per-reason lines the CLI printed, as reason -> count."""
    by_line = {line: reason for reason, line in CHANGE_REASONS.items()}
    counts = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"\s+(\d+)\s+(.+?)\s*", line)
        if match and match.group(2) in by_line:
            counts[by_line[match.group(2)]] = int(match.group(1))
    return counts


def _expected_changes(rows: dict[str, dict[str, str]]) -> dict[str, int]:
    """The change counts the rows themselves imply."""
    by_origin = {"suggested": "relabelled_by_model", "human": "relabelled_by_people",
                 "model": "routed_model_labels", "imported": "reimported_labels"}
    counts: dict[str, int] = {}
    for row in rows.values():
        if row["changed"] == "true":
            reason = by_origin[row["origin"]]
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def test_plain_export_writes_the_curated_labels_and_leaves_out_what_people_took_out(curated, tmp_path):
    out = tmp_path / "plain.csv"
    result = run("export", out, "-w", curated["workspace"])
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert curated["excluded"] not in rows and curated["ambiguous"] not in rows
    assert len(rows) == 78 - 2
    for sid, row in rows.items():
        assert row["original_label"] == _folder_label(sid)
        assert row["changed"] == ("true" if row["label"] != row["original_label"] else "false")
        assert set(row) >= {"id", "path", "label", "split", "source", "original_label", "origin", "changed"}
    assert (rows[curated["people"]]["label"], rows[curated["people"]]["origin"]) == ("Sneaker", "human")
    assert (rows[curated["routed"]]["label"], rows[curated["routed"]]["origin"]) == ("Sneaker", "model")
    assert (rows[curated["confirmed"]]["origin"], rows[curated["confirmed"]]["changed"]) == ("human", "false")
    untouched = set(rows) - {curated["people"], curated["routed"], curated["confirmed"]}
    assert all(rows[sid]["origin"] == "imported" and rows[sid]["changed"] == "false" for sid in untouched)
    assert _printed(result.stdout) == {**_expected_changes(rows), "excluded": 1, "ambiguous": 1}
    assert _expected_changes(rows) == {"relabelled_by_people": 1, "routed_model_labels": 1}
    assert "wrote 76 samples" in result.stdout and "2 with a label other than the original" in result.stdout


def test_relabel_keeps_test_split_and_human_labels(curated, tmp_path):
    out = tmp_path / "relabelled.csv"
    result = run("export", out, "-w", curated["workspace"], "--relabel")
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    suggested = curated["suggested"]
    for sid in curated["flagged_test"]:  # the model alone never relabels the test split
        assert is_evaluation_split(rows[sid]["split"])
        assert (rows[sid]["label"], rows[sid]["origin"], rows[sid]["changed"]) == (
            _folder_label(sid), "imported", "false")
    confirmed = rows[curated["confirmed"]]  # a person's label survives --relabel
    assert (confirmed["label"], confirmed["origin"]) == ("Trouser", "human")
    for sid in curated["flagged_train"][1:]:
        assert (rows[sid]["label"], rows[sid]["origin"]) == (suggested[sid], "suggested")
        assert rows[sid]["original_label"] == _folder_label(sid) and rows[sid]["changed"] == "true"
    printed = _printed(result.stdout)
    assert printed == {**_expected_changes(rows), "kept_test_labels": len(curated["flagged_test"]),
                       "kept_human_labels": 1, "excluded": 1, "ambiguous": 1}
    assert printed["relabelled_by_model"] == len(curated["flagged_train"]) - 1
    assert sum(row["changed"] == "true" for row in rows.values()) == Workspace.open(curated["workspace"]).export(
        tmp_path / "again.csv", relabel=True).changed


def test_relabel_test_also_relabels_the_test_split(curated, tmp_path):
    assert run("export", tmp_path / "x.csv", "-w", curated["workspace"], "--relabel-test").returncode != 0
    out = tmp_path / "all.csv"
    result = run("export", out, "-w", curated["workspace"], "--relabel", "--relabel-test")
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    for sid in curated["flagged_test"]:
        assert (rows[sid]["label"], rows[sid]["origin"], rows[sid]["changed"]) == (
            curated["suggested"][sid], "suggested", "true")
    assert rows[curated["confirmed"]]["origin"] == "human"
    printed = _printed(result.stdout)
    assert "kept_test_labels" not in printed
    assert printed["relabelled_by_model"] == len(curated["flagged_train"]) - 1 + len(curated["flagged_test"])
    assert printed == {**_expected_changes(rows), "kept_human_labels": 1, "excluded": 1, "ambiguous": 1}


def test_imagefolder_export_files_under_the_curated_label_and_indexes_it(curated, tmp_path):
    out = tmp_path / "exported"
    result = Workspace.open(curated["workspace"]).export(out, format="imagefolder", relabel=True)
    with (out / EXPORT_INDEX).open(newline="", encoding="utf-8") as handle:
        index = {row["id"]: row for row in csv.DictReader(handle)}
    assert result.count == len(index) == 76 and result.index == out / EXPORT_INDEX
    relabelled = curated["flagged_train"][1]
    row = index[relabelled]
    assert (row["label"], row["original_label"], row["origin"], row["changed"]) == (
        curated["suggested"][relabelled], "Trouser", "suggested", "true")
    assert row["file"].split("/")[:2] == ["train", curated["suggested"][relabelled]]
    assert (out / row["file"]).is_file()
    assert index[curated["flagged_test"][0]]["file"].split("/")[1] == "Trouser"
    assert sum(r["changed"] == "true" for r in index.values()) == result.changed
    assert result.changes["excluded"] == result.changes["ambiguous"] == 1
    assert json.loads(json.dumps(result.changes)) == result.changes  # plain ints, ready for a JSON report
