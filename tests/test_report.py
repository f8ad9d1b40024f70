"""The workspace report: one file every command rebuilds, partial audits merged check by check, galleries that
reach every flagged sample (paged, filtered, a larger view with the evidence) in real Chromium at 360 and
1600 px, and matplotlib charts with readable ticks and curves clipped to the metric's range."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from curato.commands.results import merge_audit_documents
from curato.imageio import read_idx
from curato.ingest.readers import FASHION_MNIST_CLASSES
from curato.report.charts import grouped_bars, heatmap, line_chart
from curato.report.html import CHARTED_CLASSES, _charted_classes, property_in_words
from tests.browser import chromium_page
from tests.conftest import FASHION_MNIST_DIR

SAMPLES = 1200
FLIPPED = 0.4  # share of planted wrong labels: far more than 500 flagged samples on 1,200 images


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """Real Fashion-MNIST images in class folders, 40% of them in a wrong class folder; audited (label issues,
    duplicates, outliers), then a partial audit of duplicates alone, then ``bias``: each rebuilt the report."""
    from curato.api import Workspace

    images = read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz")[:SAMPLES]
    labels = read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz")[:SAMPLES]
    rng = np.random.default_rng(0)
    given = np.where(rng.random(SAMPLES) < FLIPPED, (labels + rng.integers(1, 10, SAMPLES)) % 10, labels)
    root = tmp_path_factory.mktemp("report")
    for index, (image, label) in enumerate(zip(images, given, strict=True)):
        split = "test" if index % 5 == 0 else "train"
        folder = root / "data" / split / FASHION_MNIST_CLASSES[label].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:05d}.png")
    ws = Workspace.create(root / "ws")
    ws.ingest(root / "data")
    full = ws.audit(["label_issues", "duplicates", "outliers"], embedder="classic")
    after_full = json.loads((root / "ws" / "reports" / "audit-latest.json").read_text())
    partial = ws.audit(["duplicates"], embedder="classic", json=root / "duplicates.json")
    before_bias = (root / "ws" / "reports" / "report.html").read_text()
    ws.bias(by="split", embedder="classic", permutations=20)
    return {"root": root, "ws": ws, "full": full, "partial": partial, "after_full": after_full,
            "before_bias": before_bias, "report": root / "ws" / "reports" / "report.html"}


def _by_check(document):
    return {finding["check"]: finding for finding in document["checks"]}


def test_a_partial_audit_replaces_only_its_checks_and_each_says_its_run(flipped):
    latest = json.loads((flipped["root"] / "ws" / "reports" / "audit-latest.json").read_text())
    schema = json.loads(resources.files("curato").joinpath("schemas/audit.schema.json").read_text())
    jsonschema.validate(latest, schema)
    checks = _by_check(latest)
    full_run, partial_run = flipped["full"].run_id, flipped["partial"].run_id
    assert partial_run > full_run
    assert checks["label_issues"]["run_id"] == full_run and checks["outliers"]["run_id"] == full_run
    assert checks["near_duplicates"]["run_id"] == partial_run and checks["split_leakage"]["run_id"] == partial_run
    for finding in latest["checks"]:
        assert dt.datetime.fromisoformat(finding["finished_at"]).tzinfo is not None
    assert checks["label_issues"] == _by_check(flipped["after_full"])["label_issues"]  # kept as it was
    # --json gets that run's own document: the duplicate findings only
    own = json.loads((flipped["root"] / "duplicates.json").read_text())
    jsonschema.validate(own, schema)
    assert own["checks_run"] == ["duplicates"] and "label_issues" not in _by_check(own)
    assert set(latest["checks_run"]) == {"duplicates", "label_issues", "outliers"}
    # every issue names its file; a label issue carries the out-of-fold probabilities of both labels
    for issue in checks["label_issues"]["issues"][:50] + checks["near_duplicates"]["issues"][:10]:
        assert Path(issue["path"]).is_file() and issue["path"].endswith(issue["sample_id"].split("/")[-1])
    flagged = checks["label_issues"]["issues"]
    assert len(flagged) > 500
    assert all(0 <= i["given_label_probability"] <= 1 and 0 <= i["suggested_label_probability"] <= 1 for i in flagged)
    assert np.median([i["given_label_probability"] for i in flagged]) < 0.5
    html = flipped["report"].read_text()
    assert "These checks come from 2 audit runs" in html
    assert f"run {partial_run}" in html and f"run {full_run}" in html


def test_every_command_rebuilds_the_one_report(flipped):
    from curato.workspace import Workspace

    html = flipped["report"].read_text()
    assert 'id="bias"' not in flipped["before_bias"] and 'id="bias"' in html
    bias_run = Workspace.open(flipped["root"] / "ws").catalog.runs("bias")[-1]["id"]
    assert re.search(rf"latest <code>curato bias</code> · run {bias_run} · \d{{4}}-\d\d-\d\d \d\d:\d\d UTC", html)
    assert 'id="check-label_issues"' in html  # the audit's sections are still there
    assert not re.search(r'(src|href)="(https?:)?//|url\((https?:)?//|<link ', html)  # nothing fetched
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)[1])
    gallery = data["galleries"]["label_issues"]
    assert gallery["sort"] == "quality" and len(gallery["items"]) > 500
    missing = [item["id"] for item in gallery["items"] if item["id"] not in data["images"]]
    assert not missing  # every flagged sample has its thumbnail, once
    assert all(src.startswith("data:image/") for src in data["images"].values())


def test_examples_and_property_means_equal_those_of_every_sample(flipped, tmp_path):
    """The report's examples per class (a few index reads per class) and per-class property means (labels
    streamed in batches, joined to the properties set by id) equal reading every sample in id order with its
    curated label, as the report did before; on a copy of the audited workspace where people relabelled some
    samples and two classes' first images became unreadable."""
    from sqlalchemy import update

    from curato.catalog.schema import samples
    from curato.featurestore import PROPERTIES
    from curato.report.html import EXAMPLES_PER_CLASS, REPORT_PROPERTIES, _examples, _property_table
    from curato.workspace import Workspace

    shutil.copytree(flipped["root"] / "ws", tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws")
    catalog = ws.catalog
    ids = catalog.samples(("sample_id",))["sample_id"].tolist()
    labels = catalog.current_labels()
    classes = sorted(set(labels.values()))
    with catalog.transaction() as conn:
        catalog.add_labels(conn, {sid: classes[(classes.index(labels[sid]) + 1) % len(classes)]
                                  for sid in ids[::37]}, origin="human", annotator="person")
        firsts = [min(sid for sid in ids if labels[sid] == label) for label in classes[:2]]
        conn.execute(update(samples).where(samples.c.sample_id.in_(firsts)).values(readable=False))
    labels = catalog.current_labels()
    every = catalog.samples(("sample_id", "kind", "readable"))
    walked: dict[str, list[str]] = {}
    for sid, kind, readable in zip(*(every[c].tolist() for c in ("sample_id", "kind", "readable")), strict=True):
        picked = walked.setdefault(labels[sid], []) if kind == "image" and readable and sid in labels else None
        if picked is not None and len(picked) < EXAMPLES_PER_CLASS:
            picked.append(sid)
    assert _examples(ws, EXAMPLES_PER_CLASS) == dict(sorted(walked.items()))
    assert not set(firsts) & {sid for shown in walked.values() for sid in shown}
    stored = ws.features.load(PROPERTIES)
    columns = [c for c in REPORT_PROPERTIES if c in stored.meta["columns"]]
    values = np.asarray(stored.vectors, dtype=np.float64)[:, [stored.meta["columns"].index(c) for c in columns]]
    row_labels = np.array([labels.get(sid) for sid in stored.ids.tolist()], dtype=object)
    expected = {}
    for label in sorted(set(row_labels.tolist()) - {None}):
        block = values[row_labels == label]
        means = [np.nanmean(block[:, j]) if np.isfinite(block[:, j]).any() else np.nan for j in range(len(columns))]
        expected[label] = ["–" if not np.isfinite(m) else f"{m:.3g}" for m in means]
    table = _property_table(ws)
    assert table["columns"] == columns and len(columns) >= 6
    assert table["rows"] == expected and len(expected) == 10
    assert any(cell != "–" for row in expected.values() for cell in row)


def test_property_means_with_missing_longer_and_unsorted_ids(flipped, tmp_path):
    """The property table counts only samples in the properties set, matched by their whole id: with catalog
    samples missing from the set, a catalog sample whose id is a stored id plus a suffix (longer than any stored
    id, under a label no stored sample has), and a set whose ids are not sorted (as older sets may be), the means
    equal those of each stored row under its sample's curated label."""
    import json

    from curato.featurestore import PROPERTIES
    from curato.report.html import REPORT_PROPERTIES, _property_table
    from curato.workspace import Workspace

    shutil.copytree(flipped["root"] / "ws", tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws")
    catalog = ws.catalog
    stored = ws.features.load(PROPERTIES)
    kept = np.arange(len(stored.ids)) % 7 != 3  # every 7th catalog sample missing from the set
    ids, hashes = stored.ids[kept].tolist(), stored.hashes[kept].tolist()
    vectors, meta = np.asarray(stored.vectors)[kept], dict(stored.meta)
    longest = max(ids, key=len)
    row = catalog.samples_of([longest], ("kind", "uri", "split", "readable"))[longest]
    with catalog.transaction() as conn:  # the longer id, not in the set: cut to the set's width it is `longest`
        catalog.upsert_samples(conn, [{"sample_id": longest + "-copy.png", "kind": row[0], "uri": row[1],
                                       "split": row[2], "readable": row[3]}])
        catalog.add_labels(conn, {longest + "-copy.png": "Zz-longer-id"}, origin="human", annotator="person")
    shutil.rmtree(ws.features.folder(PROPERTIES))
    ws.features.save(PROPERTIES, ids, hashes, vectors, meta)
    labels = catalog.current_labels()
    assert labels[longest + "-copy.png"] == "Zz-longer-id" and len(labels) > len(ids)
    columns = [c for c in REPORT_PROPERTIES if c in meta["columns"]]
    values = vectors.astype(np.float64)[:, [meta["columns"].index(c) for c in columns]]
    row_labels = np.array([labels.get(sid) for sid in ids], dtype=object)
    expected = {}
    for label in sorted(set(row_labels.tolist()) - {None}):
        block = values[row_labels == label]
        means = [np.nanmean(block[:, j]) if np.isfinite(block[:, j]).any() else np.nan for j in range(len(columns))]
        expected[label] = ["–" if not np.isfinite(m) else f"{m:.3g}" for m in means]
    assert _property_table(ws)["rows"] == expected and len(expected) == 10
    folder = ws.features.folder(PROPERTIES)
    generation = json.loads((folder / "meta.json").read_text())["generation"]
    order = np.random.default_rng(1).permutation(len(ids))
    for part in ("ids", "hashes", "vectors"):  # the same rows in another order: an older, unsorted set
        path = folder / f"{part}-{generation}.npy"
        np.save(path, np.load(path)[order])
    assert not bool(np.all(ws.features.load(PROPERTIES).ids[1:] >= ws.features.load(PROPERTIES).ids[:-1]))
    assert _property_table(ws)["rows"] == expected


@pytest.mark.parametrize("width", [360, 1600])
def test_galleries_in_chromium(flipped, width):
    with chromium_page() as page:
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type in ("error", "warning")
                else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(flipped["report"].as_uri())
        gallery = page.locator('.flagged[data-check="label_issues"]')
        count = gallery.locator(".count")
        total = int(re.search(r"of (\d+) samples", count.inner_text())[1])
        assert total > 500 and count.inner_text().startswith("1–48 of")
        # worst label quality first
        first = [float(t) for t in re.findall(r"label quality ([\d.]+)", gallery.locator(".gallery").inner_text())]
        assert len(first) == 48 and first == sorted(first)
        gallery.locator("button.next").click()
        assert count.inner_text().startswith(f"49–96 of {total}")
        # filter by class: only that class's tiles, "N of M (filtered from total)"
        gallery.locator("select.filter-class").select_option("Trouser")
        assert f"(filtered from {total})" in count.inner_text() and count.inner_text().startswith("1–")
        tiles = gallery.locator("figure")
        assert tiles.count() > 0
        assert all("Trouser · label quality" in tiles.nth(i).inner_text() for i in range(tiles.count()))
        # the larger view: the given label's probability and the suggested label with its own
        tiles.first.click()
        dialog = page.locator("dialog#detail")
        assert dialog.evaluate("d => d.open")
        text = dialog.inner_text()
        assert "label quality (out-of-fold probability of the given label)" in text and "suggested label" in text
        assert dialog.locator("img.big").evaluate("i => i.complete && i.naturalWidth > 0")
        dialog.locator("button.close").click()
        assert not dialog.evaluate("d => d.open")
        # a duplicate group: its members side by side
        groups = page.locator('.flagged[data-check="near_duplicates"]')
        assert re.search(r"of \d+ groups", groups.locator(".count").inner_text())
        groups.locator("figure").first.click()
        assert "copies side by side" in dialog.inner_text() and dialog.locator(".thumbs img").count() >= 2
        page.keyboard.press("Escape")
        # an outlier: its nearest neighbours
        page.locator('.flagged[data-check="outliers"] figure').first.click()
        assert "nearest neighbours" in dialog.inner_text() and dialog.locator(".thumbs img").count() >= 1
        page.keyboard.press("Escape")
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scroll
        assert not problems, problems
        if width == 1600 and shutil.which("chromium"):
            page.screenshot(path=str(flipped["root"] / "report.png"))


def _texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def test_charts_have_round_ticks_legends_and_stay_in_the_metric_range():
    series = {"measured": {"x": [50, 100, 200, 400], "y": [0.62, 0.7, 0.79, 0.84], "points": True},
              "power law (fit running past 1.0)": {"x": [50, 400, 4000, 40000], "y": [0.6, 0.85, 0.99, 1.12],
                                                   "low": [0.5, 0.8, 0.95, 1.05], "high": [0.7, 0.9, 1.03, 1.2]}}
    svg = line_chart(series, log_x=True, title="accuracy vs labels", x_title="labels", y_title="accuracy",
                     hlines={"target 0.95": 0.95}, y_bounds=(0.0, 1.0))
    texts = _texts(svg)
    assert {"measured", "power law (fit running past 1.0)", "target 0.95"} <= set(texts)  # legend entries
    numbers = [float(t.replace(",", "")) for t in texts if re.fullmatch(r"[\d,.]+", t)]
    x_ticks = [n for n in numbers if n >= 10]
    y_ticks = [n for n in numbers if n <= 1]
    assert len(x_ticks) >= 6 and {100.0, 1000.0, 10000.0} <= set(x_ticks)  # several ticks on the log axis
    assert max(y_ticks) == 1.0 and all(round(t * 10) == t * 10 for t in y_ticks)  # round steps, none above 1
    assert "class=\"chart line-chart\"" in svg and "<metadata>" not in svg
    matrix = heatmap([[0.9, 0.1], [0.25, 0.75]], ["coat", "shirt"], ["coat", "shirt"], title="noise")
    assert {"0.90", "0.10", "0.25", "0.75", "coat", "shirt"} <= set(_texts(matrix))


def test_cue_values_and_merges_in_words():
    assert property_in_words("format", 1.0, ["jpeg", "png"]) == "file format: png"
    assert property_in_words("brightness_mean", 0.4213) == "mean brightness (0 black – 1 white): 0.421"
    # an older document (no produced_by): a partial run of `duplicates` still replaces only its own findings
    old = {"checks_run": ["duplicates", "outliers"], "checks": [
        {"check": "near_duplicates", "severity": "low", "issues": [], "summary": {"flagged": 0, "total": 3}},
        {"check": "outliers", "severity": "high", "issues": [], "summary": {"flagged": 0, "total": 3}}]}
    new = {"checks_run": ["duplicates"], "checks": [
        {"check": "exact_duplicates", "severity": "medium", "produced_by": "duplicates", "run_id": 9}]}
    merged = merge_audit_documents(old, new)
    assert [f["check"] for f in merged["checks"]] == ["outliers", "exact_duplicates"]
    assert merged["checks_run"] == ["duplicates", "outliers"]


def test_class_chart_draws_the_largest_and_smallest_classes_and_values_only_where_they_fit() -> None:
    """With hundreds of classes the chart keeps the 20 largest and 20 smallest (in the table's order, its title
    says so: the table lists every class); a chart squeezed to its height limit writes no value at its bars (they
    would overlap), a small one writes each."""
    rows = {f"class {i:03d}": {"train": 1003 + 7 * i, "test": 3 * i + 1} for i in range(300)}
    charted, title = _charted_classes(rows)
    assert len(charted) == CHARTED_CLASSES == 40
    assert charted == [*(f"class {i:03d}" for i in range(20)), *(f"class {i:03d}" for i in range(280, 300))]
    assert "20 largest and 20 smallest of 300 classes" in title
    assert _charted_classes(dict(list(rows.items())[:40])) == (list(rows)[:40], "samples per class and split")

    def values(svg: str) -> set[str]:
        return set(re.findall(r">([\d,]+)<", svg))

    small = grouped_bars(["a", "b"], {"train": [1234.0, 5.0], "test": [77.0, 9.0]})
    assert {"1,234", "77"} <= values(small)
    squeezed = grouped_bars(charted, {"train": [float(rows[c]["train"]) for c in charted],
                                      "test": [float(rows[c]["test"]) for c in charted]})
    assert values(squeezed) and not {f"{rows[c][s]:,}" for c in charted for s in ("train", "test")} & values(squeezed)
    # (the values left are the axis's round ticks)


def test_loading_the_checks_imports_neither_scipy_stats_nor_scikit_learn() -> None:
    """The report and `curato checks` load every check's module; scipy.stats and scikit-learn (seconds to import)
    are imported only by the functions that use them."""
    import subprocess
    import sys

    probe = ("import sys, curato.checks.builtin, curato.report.html; "
             "print(sorted(m for m in ('scipy.stats', 'sklearn', 'pandas') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]"
