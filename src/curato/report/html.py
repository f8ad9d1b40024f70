"""The self-contained HTML report (inline CSS, SVG and data-URI thumbnails; works offline)."""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from curato.checks.findings import Finding
from curato.featurestore import PROPERTIES
from curato.report.charts import grouped_bars, heatmap
from curato.report.thumbnails import thumbnail_data_uri
from curato.version import __version__
from curato.workspace import Workspace

REPORT_PROPERTIES = ("brightness_mean", "contrast", "colourfulness", "sharpness", "border_brightness",
                     "edge_density", "width", "height", "jpeg_quality")
EXAMPLES_PER_CLASS = 8
GALLERY_SIZE = 24
GROUPS_SHOWN = 12
CUES_SHOWN = 15
TYPICAL_SHOWN = 8
PROPERTIES_SHOWN = 8
GROUP_MEMBERS_SHOWN = 8


def _environment() -> Environment:
    return Environment(loader=PackageLoader("curato", "report/templates"), autoescape=select_autoescape(["html"]))


def _examples(workspace: Workspace, per_class: int) -> dict[str, list[dict[str, str]]]:
    table = workspace.catalog.samples(("sample_id", "uri", "readable"), kind="image")
    labels = workspace.catalog.current_labels()
    chosen: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for sample_id, uri, ok in zip(table["sample_id"], table["uri"], table["readable"], strict=True):
        label = labels.get(sample_id)
        if ok and label is not None and len(chosen[label]) < per_class:
            chosen[label].append((sample_id, uri))
    return {label: [{"sample_id": sid, "src": thumbnail_data_uri(uri, size=64) or ""} for sid, uri in items]
            for label, items in sorted(chosen.items())}


def _property_table(workspace: Workspace) -> dict[str, Any] | None:
    if not workspace.features.has(PROPERTIES):
        return None
    stored = workspace.features.load(PROPERTIES)
    columns = stored.meta["columns"]
    shown = [c for c in REPORT_PROPERTIES if c in columns]
    labels = workspace.catalog.current_labels()
    row_labels = np.array([labels.get(sid) for sid in stored.ids.tolist()], dtype=object)
    values = np.asarray(stored.vectors, dtype=np.float64)[:, [columns.index(c) for c in shown]]
    rows = {}
    for label in sorted({lab for lab in row_labels if lab is not None}):
        block = values[row_labels == label]
        means = [np.nanmean(block[:, j]) if np.isfinite(block[:, j]).any() else np.nan for j in range(len(shown))]
        rows[label] = ["–" if not np.isfinite(m) else f"{m:.3g}" for m in means]
    return {"columns": shown, "rows": rows} if rows else None


def _note(row: dict[str, Any]) -> str:
    """What a gallery caption says about one flagged sample, from the fields its check provides."""
    if row.get("suggested_label") is not None:
        return f"labeled {row.get('label')} → likely {row['suggested_label']}"
    if row.get("splits"):
        return "in splits " + ", ".join(map(str, row["splits"]))
    for key in ("error", "note"):
        if row.get(key):
            return str(row[key])
    if row.get("members"):
        return f"group of {len(row['members'])}"
    return ""


Renderer = Callable[[Finding], list[dict[str, Any]]]


def _galleries(workspace: Workspace, findings: Sequence[Finding],
               renderers: dict[str, Renderer]) -> dict[str, dict[str, Any]]:
    table = workspace.catalog.samples(("sample_id", "uri"))
    uris = dict(zip(table["sample_id"].tolist(), table["uri"].tolist(), strict=True))
    labels = workspace.catalog.current_labels()

    def item(sample_id: str, score: float, note: str) -> dict[str, Any]:
        uri = uris.get(sample_id)
        return {"sample_id": sample_id, "score": score, "label": labels.get(sample_id),
                "src": thumbnail_data_uri(uri) if uri else None, "note": note[:160]}

    galleries: dict[str, dict[str, Any]] = {}
    for finding in findings:
        groups = finding.evidence.get("groups") if isinstance(finding.evidence, dict) else None
        entry: dict[str, Any] = {"samples": [], "groups": [], "chart": "", "tables": [], "strips": []}
        if groups:
            for members in groups[:GROUPS_SHOWN]:
                entry["groups"].append([item(str(sid), 1.0, "") for sid in list(members)[:GROUP_MEMBERS_SHOWN]])
        else:
            entry["samples"] = [item(row["sample_id"], row["score"], _note(row))
                              for row in finding.issues()[:GALLERY_SIZE]]
        matrix = finding.evidence.get("noise_matrix") if isinstance(finding.evidence, dict) else None
        if matrix is not None:
            names = finding.evidence.get("class_names", [])
            entry["chart"] = heatmap(matrix, names, names, title="estimated noise matrix",
                                     row_title="given label", column_title="true label")
        render = renderers.get(finding.check)
        if render is not None:
            entry["tables"] = render(finding)
        if finding.check == "shortcuts" and finding.evidence.get("cues"):
            entry["strips"] = [
                {"title": f"{column}: each class's images from the lowest to the highest value",
                 "rows": [{"name": name, "items": [item(sid, value, f"{column} = {value:.3g}") for sid, value in picks]}
                          for name, picks in per_class.items()]}
                for column, per_class in finding.evidence.get("examples", {}).items()]
            entry["strips"] = [
                {"title": f"'{singled['class']}' is singled out by {singled['cue']} "
                          f"({singled['share_of_class']:.0%} of its images vs {singled['share_of_others']:.0%} of "
                          f"the others). {singled['advice']}",
                 "rows": [{"name": name, "items": [item(sid, 1.0, singled["cue"] if carries else "without the cue")
                                                   for sid in singled[key]]}
                          for name, key, carries in ((f"{singled['class']}: with the cue", "with_cue", True),
                                                     (f"{singled['class']}: without it", "without_cue", False),
                                                     ("other classes with the cue", "others_with_cue", True))
                          if singled[key]]}
                for singled in finding.evidence.get("one_class", [])] + entry["strips"]
        galleries[finding.check] = entry
    return galleries


def _thumbnail_lookup(workspace: Workspace) -> Any:
    """A template helper: sample id -> inline thumbnail (None when the sample or file is gone)."""
    table = workspace.catalog.samples(("sample_id", "uri"))
    uris = dict(zip(table["sample_id"].tolist(), table["uri"].tolist(), strict=True))

    def lookup(sample_id: str) -> str | None:
        uri = uris.get(sample_id)
        return thumbnail_data_uri(uri) if uri else None

    return lookup


def _bias_view(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report shows of the latest ``curato bias`` run."""
    if not document:
        return None
    cross = document.get("cross_dataset") or {}
    chart = ""
    groups = cross.get("groups") or []
    if groups and cross.get("accuracy"):
        matrix = [[float("nan") if v is None else v for v in row] for row in cross["accuracy"]]
        chart = heatmap(matrix, groups, groups, title="label accuracy: trained on row, tested on column",
                        row_title="trained on", column_title="tested on")
    typical = {group: [row["sample_id"] for row in rows[:TYPICAL_SHOWN]]
               for group, rows in (document.get("typical") or {}).items()}
    return {"by": document.get("by"), "message": document.get("message", ""), "verdict": document.get("verdict"),
            "accuracy": document.get("accuracy"), "chance": document.get("chance"),
            "interval": document.get("interval"), "chance_interval": document.get("chance_interval"),
            "pairs": (document.get("pairwise") or {}).get("pairs", []),
            "properties": (document.get("property_differences") or [])[:PROPERTIES_SHOWN],
            "cross_pairs": cross.get("pairs", []), "chart": chart, "typical": typical}


def _simulate_view(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report shows of the latest ``curato simulate`` run: the curves (seed bands, log x) and a table."""
    if not document or not document.get("strategies"):
        return None
    from curato.report.charts import line_chart

    series = {name: {"x": curve["labels"], "y": curve["accuracy"], "low": curve["low"], "high": curve["high"]}
              for name, curve in document["strategies"].items()}
    chart = line_chart(series, log_x=True, title="test accuracy vs labels (band: min..max over seeds)",
                       x_title="labels", y_title="accuracy")
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
    with its interval band, the target line; the answers in words; the backtest and strategy values."""
    if not document or not document.get("curve"):
        return None
    from curato.report.charts import line_chart

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
    chart = line_chart(series, log_x=True, title=f"{metric} vs labelled training samples", x_title="training samples",
                       y_title=metric, hlines={f"target {document['target']:g}": document["target"]})
    return {"chart": chart, "document": document}


def write_html_report(workspace: Workspace, findings: Sequence[Finding], path: str | Path, *,
                      overview: dict[str, Any], renderers: dict[str, Renderer] | None = None,
                      title: str | None = None) -> Path:
    """Render the report to ``path`` (atomically) and return it.

    ``overview``: the workspace's counts (``curato.commands.info.workspace_overview``). ``renderers``: per finding
    name, a function turning that finding's evidence into tables (``{"title", "columns", "rows", "notes"}``),
    as registered with the check.
    """
    rows = overview["class_split"]["rows"]
    splits = overview["class_split"]["splits"]
    chart = grouped_bars(list(rows), {str(s or "-"): [rows[label].get(s, 0) for label in rows] for s in splits},
                         title="samples per class and split") if rows else ""
    html = _environment().get_template("report.html").render(
        title=title or workspace.root.name, overview=overview, findings=findings, version=__version__,
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), class_chart=chart,
        examples=_examples(workspace, EXAMPLES_PER_CLASS), property_table=_property_table(workspace),
        galleries=_galleries(workspace, findings, renderers or {}),
        bias=_bias_view(workspace.read_latest("bias")), transfer=workspace.read_latest("transfer"),
        thumbnail=_thumbnail_lookup(workspace), simulate=_simulate_view(workspace.read_latest("simulate")),
        route=workspace.read_latest("route"), sizing=_size_view(workspace.read_latest("size")),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
