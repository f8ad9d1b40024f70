"""The workspace report: one self-contained HTML file (inline CSS, JS, SVG charts and data-URI thumbnails) that
works offline and is rebuilt from the latest document of every command.

Every flagged sample is reachable: the flagged items of all checks travel once as compact JSON inside the
page, with one thumbnail per sample id (shared by checks, group members, partners and neighbours); a small
script draws one page of a gallery at a time ("N of M"), filters by class, split and score, and opens a
larger view with the evidence. The page builds only the thumbnails it shows, so thousands of flagged images
cost file size (measured in docs/benchmarks.md), not layout time.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from curato.featurestore import PROPERTIES
from curato.report.charts import grouped_bars, heatmap, line_chart
from curato.report.thumbnails import thumbnail_data_uri
from curato.version import __version__
from curato.workspace import Workspace

REPORT_PROPERTIES = ("brightness_mean", "contrast", "colourfulness", "sharpness", "border_brightness",
                     "edge_density", "width", "height", "jpeg_quality")
EXAMPLES_PER_CLASS = 8
TYPICAL_SHOWN = 8
PROPERTIES_SHOWN = 8
MEMBERS_WITH_IMAGES = 16  # a duplicate group's members drawn in the larger view (all are listed by id)
SEVERITY_RANK = {"none": 0, "low": 1, "medium": 2, "high": 3}
# Image properties (and shortcut cues) in words, with what their numbers mean.
PROPERTY_WORDS = {
    "brightness_mean": "mean brightness (0 black – 1 white)", "brightness_std": "brightness spread",
    "contrast": "contrast", "colourfulness": "colourfulness", "sharpness": "sharpness",
    "border_brightness": "brightness of the border", "edge_density": "share of edge pixels",
    "width": "width (px)", "height": "height (px)", "aspect": "aspect ratio (width / height)",
    "megapixels": "megapixels", "jpeg_quality": "JPEG quality", "file_bytes": "file size (bytes)",
    "bits_per_pixel": "bits per pixel", "format": "file format", "saturation": "colour saturation",
    "entropy": "information (entropy)",
}


def _when(value: str | None) -> str:
    """An ISO time as the report shows it ("2026-12-07 05:14 UTC"); anything else as it is."""
    if not value:
        return "time unknown"
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _environment() -> Environment:
    environment = Environment(loader=PackageLoader("curato", "report/templates"),
                              autoescape=select_autoescape(["html"]))
    environment.filters["when"] = _when
    return environment


def property_in_words(column: str, value: float | None, formats: Sequence[str] = ()) -> str:
    """A cue or property value as a person reads it: ``format`` codes become format names ("file format: png"),
    other columns get their meaning and a rounded number ("mean brightness (0 black – 1 white): 0.42")."""
    name = PROPERTY_WORDS.get(column, column.replace("_", " "))
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{name}: unknown"
    if column == "format":
        code = round(float(value))
        return f"{name}: {formats[code] if 0 <= code < len(formats) else 'unknown'}"
    return f"{name}: {float(value):,.3g}" if abs(float(value)) < 1e4 else f"{name}: {float(value):,.0f}"


def cue_text_in_words(text: str) -> str:
    """A check's range text ("brightness_mean in [0.1, 0.3]") with the column named in words."""
    column, _, rest = text.partition(" ")
    words = PROPERTY_WORDS.get(column)
    return f"{words.split(' (')[0]} {rest}" if words else text


class _Images:
    """Sample id -> inline thumbnail, each computed once per report; the uris of the samples shown only are read
    (by id: a page shows hundreds of samples, the catalog may hold millions)."""

    def __init__(self, workspace: Workspace, size: int) -> None:
        self.catalog = workspace.catalog
        self.size = size
        self.found: dict[str, str] = {}
        self.missing: set[str] = set()
        self.in_galleries: set[str] = set()  # the ones the page's script draws (the rest are inline <img>)

    def want(self, sample_ids: Iterable[str], *, gallery: bool = False) -> None:
        wanted = list(sample_ids)
        if gallery:
            self.in_galleries.update(wanted)
        new = [sid for sid in dict.fromkeys(wanted) if sid not in self.found and sid not in self.missing]
        uris = {sid: values[0] for sid, values in self.catalog.samples_of(new, ("uri",)).items()}
        for sample_id in new:
            uri = uris.get(sample_id)
            src = thumbnail_data_uri(uri, size=self.size) if uri else None
            if src is None:
                self.missing.add(sample_id)
            else:
                self.found[sample_id] = src


def _examples(workspace: Workspace, per_class: int) -> dict[str, list[str]]:
    """Per class, its first ``per_class`` readable images in sample_id order: a few index lookups per class
    (:meth:`Catalog.curated_examples`), whatever the catalog's size."""
    return workspace.catalog.curated_examples(per_class, kind="image")


def _property_table(workspace: Workspace) -> dict[str, Any] | None:
    """Per curated label, the mean of each shown property over its samples in the properties set (values that are
    not finite left out; "–" where none has a value), from the sums the workspace keeps per label
    (:meth:`Workspace.label_property_sums`: one read of every curated label per generation of the set, then only
    the label changes since)."""
    if not workspace.features.has(PROPERTIES):
        return None
    stored = workspace.features.load(PROPERTIES)
    columns = stored.meta["columns"]
    shown = [c for c in REPORT_PROPERTIES if c in columns]
    if not len(stored.ids) or not shown:
        return None
    sums = workspace.label_property_sums(stored, [columns.index(c) for c in shown])
    rows_shown = {}
    for label, cells in sums.items():
        totals, counts = cells[:len(shown)], cells[len(shown):2 * len(shown)]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        rows_shown[label] = ["–" if not np.isfinite(m) else f"{m:.3g}" for m in means]
    return {"columns": shown, "words": [PROPERTY_WORDS.get(c, c) for c in shown], "rows": rows_shown} \
        if rows_shown else None


def _note(row: dict[str, Any]) -> str:
    """What a gallery caption says about one flagged sample, from the fields its check provides."""
    if row.get("suggested_label") is not None:
        return f"labelled {row.get('label')} → likely {row['suggested_label']}"
    if row.get("splits"):
        return "in splits " + ", ".join(map(str, row["splits"]))
    for key in ("error", "note"):
        if row.get(key):
            return str(row[key])
    if row.get("members"):
        return f"group of {len(row['members'])}"
    return ""


def _cue_by_class(finding: dict[str, Any]) -> dict[str, str]:
    """Shortcuts: per class, its strongest flagged cue range in words with the shares behind it."""
    cues: dict[str, str] = {}
    for row in (finding.get("evidence") or {}).get("per_class") or []:
        if row.get("class") in cues or not row.get("text"):
            continue
        cues[row["class"]] = (f"{cue_text_in_words(row['text'])}: {row['share_of_class']:.0%} of its class vs "
                              f"{row['share_of_others']:.0%} of the others")
    return cues


def _gallery(finding: dict[str, Any], labels: dict[str, str | None], splits: dict[str, str | None],
             images: _Images) -> dict[str, Any]:
    """One check's flagged items for the page's script: samples, or one item per group of copies."""
    issues = finding.get("issues") or []
    cues = _cue_by_class(finding) if finding["check"] == "shortcuts" else {}
    grouped = any("members" in row and "group" in row for row in issues)
    items: list[dict[str, Any]] = []
    seen_groups: set[Any] = set()
    for row in issues:
        sample_id = row["sample_id"]
        if grouped and row.get("members"):
            if row.get("group") in seen_groups:
                continue
            seen_groups.add(row.get("group"))
        item: dict[str, Any] = {"id": sample_id, "label": labels.get(sample_id), "split": splits.get(sample_id),
                                "score": row.get("score", 0.0)}
        note = _note(row)
        if note:
            item["note"] = note[:200]
        if row.get("path"):
            item["path"] = row["path"]
        for key, short in (("given_label_probability", "given_p"), ("suggested_label", "suggested"),
                           ("suggested_label_probability", "suggested_p"), ("label_quality", "quality"),
                           ("rule", "rule"), ("partner", "partner"), ("similarity", "similarity")):
            if row.get(key) is not None:
                item[short] = row[key]
        neighbours = row.get("nearest") or ([row["nearest_train"]] if row.get("nearest_train") else [])
        if neighbours:
            item["neighbours"] = [str(n) for n in neighbours]
        if grouped and row.get("members"):
            members = [str(m) for m in row["members"]]
            item["members"] = members
            item["classes"] = sorted({str(labels.get(m)) for m in members if labels.get(m) is not None})
            item["splits"] = sorted({str(splits.get(m)) for m in members if splits.get(m) is not None})
            images.want(members[:MEMBERS_WITH_IMAGES], gallery=True)
        if cues and item["label"] in cues:
            item["cue"] = cues[item["label"]]
        images.want([sample_id, *item.get("neighbours", []), *([item["partner"]] if "partner" in item else [])],
                    gallery=True)
        items.append(item)
    by_quality = finding["check"] == "label_issues" and any("given_p" in i or "quality" in i for i in items)
    return {"check": finding["check"], "grouped": grouped, "sort": "quality" if by_quality else "score",
            "flagged": (finding.get("summary") or {}).get("flagged", len(issues)), "items": items}


def _strips(finding: dict[str, Any], formats: Sequence[str]) -> list[dict[str, Any]]:
    """Shortcuts: the singled-out classes' images with and without the cue, and each explained cue's images per
    class from its lowest to its highest value, captioned in words."""
    evidence = finding.get("evidence") or {}
    strips = []
    for singled in evidence.get("one_class") or []:
        cue = cue_text_in_words(singled["cue"])
        strips.append({
            "title": f"'{singled['class']}' is singled out by {cue} ({singled['share_of_class']:.0%} of its images vs "
                     f"{singled['share_of_others']:.0%} of the others). {singled['advice']}",
            "rows": [{"name": name, "items": [(sid, cue if carries else "without the cue", "") for sid in singled[key]]}
                     for name, key, carries in ((f"{singled['class']}: with the cue", "with_cue", True),
                                                (f"{singled['class']}: without it", "without_cue", False),
                                                ("other classes with the cue", "others_with_cue", True))
                     if singled.get(key)]})
    for column, per_class in (evidence.get("examples") or {}).items():
        words = PROPERTY_WORDS.get(column, column).split(" (")[0]
        strips.append({"title": f"{words}: each class's images from the lowest to the highest value",
                       "rows": [{"name": name, "items": [(sid, text, text.rsplit(": ", 1)[-1])
                                                         for sid, value in picks
                                                         for text in [property_in_words(column, value, formats)]]}
                                for name, picks in per_class.items()]})
    return strips


def _bias_view(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report shows of the latest ``curato bias`` run."""
    if not document:
        return None
    cross = document.get("cross_dataset") or {}
    chart = ""
    groups = cross.get("groups") or []
    if groups and cross.get("accuracy"):
        chart = heatmap(cross["accuracy"], groups, groups, title="label accuracy: trained on row, tested on column",
                        row_title="trained on", column_title="tested on", spread=True)
    typical = {group: [row["sample_id"] for row in rows[:TYPICAL_SHOWN]]
               for group, rows in (document.get("typical") or {}).items()}
    return {"by": document.get("by"), "message": document.get("message", ""), "verdict": document.get("verdict"),
            "pairs": (document.get("pairwise") or {}).get("pairs", []),
            "properties": (document.get("property_differences") or [])[:PROPERTIES_SHOWN],
            "cross_pairs": cross.get("pairs", []), "chart": chart, "typical": typical}


def _simulate_view(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report shows of the latest ``curato simulate`` run: the curves (seed bands, log x) and a table."""
    if not document or not document.get("strategies"):
        return None
    series = {name: {"x": curve["labels"], "y": curve["accuracy"], "low": curve["low"], "high": curve["high"]}
              for name, curve in document["strategies"].items()}
    chart = line_chart(series, log_x=True, title="test accuracy vs labels (band: min..max over seeds)",
                       x_title="labels", y_title="accuracy", y_bounds=(0.0, 1.0))
    rows = []
    for name, curve in document["strategies"].items():
        efficiency = [entry["efficiency"] for entry in curve["label_efficiency"]]
        shown = ", ".join("–" if e is None else f"{e:.2f}" for e in efficiency)
        needed = curve["labels_to_reach_random_final"]
        rows.append([name, f"{curve['auc']:.3f}", f"{curve['accuracy'][-1]:.3f}",
                     "–" if needed is None else f"{needed:.0f}", shown])
    return {"chart": chart, "rows": rows, "document": document, "routing": document["routing"]["results"]}


def _size_view(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report shows of the latest ``curato size`` run: measured points, each fit, the weighted forecast
    with its interval band, the target line (curves clipped to the metric's range); the answers in words."""
    if not document or not document.get("curve"):
        return None
    curve, grid = document["curve"], document["grid"]
    series: dict[str, dict[str, Any]] = {
        "measured (mean of seeds)": {"x": [p["size"] for p in curve], "y": [p["mean"] for p in curve],
                                     "low": [p["min"] for p in curve], "high": [p["max"] for p in curve],
                                     "points": True}}
    shown = [i for i, size in enumerate(grid["size"]) if size <= curve[-1]["size"] * 20]
    for family, values in grid["fits"].items():
        weight = next((f["weight"] for f in document["fits"] if f["family"] == family), 0.0)
        series[f"{family} ({weight:.0%})"] = {"x": [grid["size"][i] for i in shown], "y": [values[i] for i in shown]}
    forecast = {"x": [grid["size"][i] for i in shown], "y": [grid["metric"][i] for i in shown]}
    if grid.get("low"):
        forecast.update(low=[grid["low"][i] for i in shown], high=[grid["high"][i] for i in shown])
    series["weighted forecast (90% band)"] = forecast
    metric = document["metric"]
    bounded = metric in ("accuracy", "balanced_accuracy", "f1", "macro_f1", "auc", "precision", "recall")
    chart = line_chart(series, log_x=True, title=f"{metric} vs labelled training samples", x_title="training samples",
                       y_title=metric, hlines={f"target {document['target']:g}": document["target"]},
                       y_bounds=(0.0, 1.0) if bounded else (None, None))
    return {"chart": chart, "document": document}


def _select_view(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report shows of the latest ``curato select`` batch: its size and its first picks."""
    if not document or not document.get("batch"):
        return None
    return {"document": document, "count": len(document["batch"]),
            "first": [row["sample_id"] for row in document["batch"][:TYPICAL_SHOWN * 2]]}


def _run_groups(findings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which audit run each check comes from, newest run first (a partial audit replaces only its checks)."""
    runs: dict[Any, dict[str, Any]] = {}
    for finding in findings:
        key = finding.get("run_id")
        entry = runs.setdefault(key, {"run_id": key, "finished_at": finding.get("finished_at"), "checks": []})
        entry["checks"].append(finding["check"])
    return sorted(runs.values(), key=lambda r: str(r["finished_at"] or ""), reverse=True)


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: every "<" escaped, so no "</script>" or "<!--" in a sample id or
    message can end or bend it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")


CHARTED_CLASSES = 40  # the class chart's most classes (the table beside it lists every class)


def _charted_classes(rows: dict[str, dict[str, int]]) -> tuple[list[str], str]:
    """The classes the class chart draws, in the table's order, and its title: every class up to
    ``CHARTED_CLASSES``, else the largest and the smallest half of that each (by samples): a chart of hundreds of
    classes is unreadable at any height and costs seconds to lay out."""
    if len(rows) <= CHARTED_CLASSES:
        return list(rows), "samples per class and split"
    by_size = sorted(rows, key=lambda label: (-sum(rows[label].values()), label))
    half = CHARTED_CLASSES // 2
    kept = {*by_size[:half], *by_size[-half:]}
    return ([label for label in rows if label in kept],
            f"samples per class and split: the {half} largest and {half} smallest of {len(rows):,} classes "
            "(every class in the table below)")


def write_html_report(workspace: Workspace, path: str | Path, *, overview: dict[str, Any],
                      audit: dict[str, Any] | None = None, tables: dict[str, list[dict[str, Any]]] | None = None,
                      runs: dict[str, dict[str, Any]] | None = None, title: str | None = None,
                      thumbnail_size: int = 96) -> Path:
    """Render the workspace report to ``path`` (atomically) and return it.

    ``overview``: the workspace's counts (``curato.commands.info.workspace_overview``). ``audit``: the latest
    audit document (its checks may come from several runs: each carries ``run_id`` and ``finished_at``).
    ``tables``: per finding, the tables its check renders from its evidence. ``runs``: per command kind, the
    run (``run_id``, ``time``) that wrote its latest document; the other commands' documents are read from the
    workspace.
    """
    rows = overview["class_split"]["rows"]
    splits_present = overview["class_split"]["splits"]
    charted, chart_title = _charted_classes(rows)
    class_chart = grouped_bars(charted, {str(s or "-"): [rows[label].get(s, 0) for label in charted]
                                         for s in splits_present}, title=chart_title) if rows else ""
    formats = sorted(str(f) for f in overview.get("formats", {}) if f)
    images = _Images(workspace, thumbnail_size)
    findings = sorted((audit or {}).get("checks") or [], key=lambda f: -SEVERITY_RANK.get(f.get("severity"), 0))
    # the split and curated label of the flagged samples (and their groups' members) only: what the galleries show
    shown = {str(sid) for finding in findings for row in finding.get("issues") or []
             for sid in [row["sample_id"], *(row.get("members") or [])]}
    splits = {sid: values[0] for sid, values in workspace.catalog.samples_of(shown, ("split",)).items()}
    labels = {sid: curated.label for sid, curated in workspace.catalog.curated_labels(shown).items()}
    galleries, sections = {}, []
    for finding in findings:
        evidence = finding.get("evidence") or {}
        chart = ""
        if evidence.get("noise_matrix") is not None:
            names = evidence.get("class_names", [])
            chart = heatmap(evidence["noise_matrix"], names, names, title="estimated noise matrix",
                            row_title="given label", column_title="true label")
        strips = _strips(finding, formats) if finding["check"] == "shortcuts" else []
        for strip in strips:
            images.want(sid for row in strip["rows"] for sid, _, _ in row["items"])
        if finding.get("issues"):
            galleries[finding["check"]] = _gallery(finding, labels, splits, images)
        sections.append({"finding": finding, "chart": chart, "strips": strips,
                         "tables": (tables or {}).get(finding["check"], []),
                         "gallery": finding["check"] in galleries})
    examples = _examples(workspace, EXAMPLES_PER_CLASS)
    images.want(sid for ids in examples.values() for sid in ids)
    bias = _bias_view(workspace.read_latest("bias"))
    if bias:
        images.want(sid for ids in bias["typical"].values() for sid in ids)
    select = _select_view(workspace.read_latest("select"))
    if select:
        images.want(select["first"])
    page_data = {"images": {sid: images.found[sid] for sid in sorted(images.in_galleries) if sid in images.found},
                 "galleries": galleries}
    html = _environment().get_template("report.html").render(
        title=title or workspace.root.name, overview=overview, sections=sections, version=__version__,
        generated=dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), class_chart=class_chart,
        examples=examples, property_table=_property_table(workspace), runs=runs or {},
        audit_runs=_run_groups(findings), audit=audit, bias=bias, transfer=workspace.read_latest("transfer"),
        simulate=_simulate_view(workspace.read_latest("simulate")), route=workspace.read_latest("route"),
        sizing=_size_view(workspace.read_latest("size")), select=select, page_data=_script_json(page_data),
        thumbnail=images.found.get,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
