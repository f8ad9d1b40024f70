"""FiftyOne export: a folder FiftyOne loads as a dataset, with curato's labels and one flag and score per finding.

The folder follows FiftyOne's JSON dataset layout (``fiftyone.types.FiftyOneDataset``, read by its
``LegacyFiftyOneDatasetImporter``): ``metadata.json`` (name, media type, info) and ``samples.json``
(``{"samples": [...]}``), one serialized sample per image with an absolute ``filepath`` (the images are not
copied). Writing it needs no FiftyOne; loading it does (``pip install 'curato[fiftyone]'``)::

    import fiftyone as fo
    dataset = fo.Dataset.from_dir("OUT", dataset_type=fo.types.FiftyOneDataset)

Fields (docs/exports.md, "FiftyOne"): ``ground_truth`` (a Classification of the curated label), ``suggested``
(the audit's suggested label, a Classification with the finding's score as confidence), ``sample_id``, ``split``,
``source``, ``original_label``, ``origin``, and for each audit finding that flagged a sample ``curato_<finding>``
(bool) and ``curato_<finding>_score`` (its score; None where not flagged). ``tags`` hold the split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curato.errors import InputError
from curato.version import __version__
from curato.workspace import Workspace

SAMPLES_FILE = "samples.json"
METADATA_FILE = "metadata.json"
FIELD_PREFIX = "curato_"


def _classification(label: Any, confidence: float | None = None) -> dict[str, Any] | None:
    """A serialized ``fiftyone.core.labels.Classification`` (None without a label)."""
    if label is None:
        return None
    found: dict[str, Any] = {"_cls": "Classification", "label": str(label)}
    if confidence is not None:
        found["confidence"] = confidence
    return found


def fiftyone_samples(rows: list[dict[str, Any]], audit: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The serialized FiftyOne samples of the image ``rows`` (text and IDX samples have no file to show)."""
    flags: dict[str, dict[str, float]] = {}
    suggested: dict[str, tuple[str, float]] = {}
    for finding in (audit or {}).get("checks", []):
        for issue in finding.get("issues", []):
            score = float(issue.get("score") or 0.0)
            flags.setdefault(finding["check"], {})[issue["sample_id"]] = score
            if finding["check"] == "label_issues" and issue.get("suggested_label") is not None:
                suggested[issue["sample_id"]] = (str(issue["suggested_label"]), score)
    samples = []
    for row in rows:
        path = row.get("path")
        if path is None or str(path).startswith("idx:"):
            continue
        sample_id = row["id"]
        hint = suggested.get(sample_id)
        sample: dict[str, Any] = {
            "filepath": str(Path(path).resolve()), "tags": [row["split"]] if row.get("split") else [],
            "metadata": None, "ground_truth": _classification(row.get("label")),
            "suggested": None if hint is None else _classification(hint[0], hint[1]),
            "sample_id": sample_id, "split": row.get("split"), "source": row.get("source"),
            "original_label": row.get("original_label"), "origin": row.get("origin")}
        for name, scores in flags.items():
            sample[f"{FIELD_PREFIX}{name}"] = sample_id in scores
            sample[f"{FIELD_PREFIX}{name}_score"] = scores.get(sample_id)
        samples.append(sample)
    return samples


def export_fiftyone(workspace: Workspace, rows: list[dict[str, Any]], out: Path, audit: dict[str, Any] | None) -> int:
    """Write ``out/metadata.json`` and ``out/samples.json`` (see the module docstring); returns samples written."""
    from curato.commands.export import write_atomic

    samples = fiftyone_samples(rows, audit)
    if not samples:
        raise InputError(f"{out}: no sample has an image file FiftyOne could show; export --format csv")
    classes = sorted({sample["ground_truth"]["label"] for sample in samples if sample["ground_truth"]})
    metadata = {"name": workspace.root.name, "media_type": "image",  # no "version": the legacy layout
                "info": {"exported_by": f"curato {__version__}", "workspace": str(workspace.root),
                         "classes": classes}}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{out}: cannot create this folder ({error.strerror}); choose another") from error
    for name, document in ((METADATA_FILE, metadata), (SAMPLES_FILE, {"samples": samples})):
        def write(tmp: str, document: dict[str, Any] = document) -> None:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(document, handle, ensure_ascii=False)

        write_atomic(out / name, write)
    return len(samples)
