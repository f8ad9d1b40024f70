"""``curato bias`` against a workspace: embed (or reuse embeddings), group the samples by a catalog column
(source, split, format) or any metadata column (a manifest's extra columns, e.g. ``camera``), run
:func:`curato.checks.bias.analyse_bias`, record the run and write the document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curato.checks.bias import GROUPINGS, NO_GROUP, analyse_bias
from curato.commands.embed import choose_embedder_name
from curato.commands.results import record_document
from curato.commands.rows import embedded_rows
from curato.errors import InputError
from curato.progress import SILENT, Progress
from curato.version import __version__
from curato.workspace import Workspace


def metadata_columns(workspace: Workspace) -> list[str]:
    """The metadata columns the samples carry (a manifest's extra columns, COCO image fields), sorted."""
    found: set[str] = set()
    for meta in workspace.catalog.samples(("meta",))["meta"].tolist():
        found.update(meta or {})
    return sorted(found)


def group_values(workspace: Workspace, by: str) -> dict[str, str | None]:
    """Sample id -> its value of ``by`` (a catalog grouping or a metadata column) as text; None where unknown.
    An unknown column is an ``InputError`` naming the columns there are."""
    if by in GROUPINGS:
        table = workspace.catalog.samples(("sample_id", by))
        return {sid: None if value is None else str(value)
                for sid, value in zip(table["sample_id"].tolist(), table[by].tolist(), strict=True)}
    table = workspace.catalog.samples(("sample_id", "meta"))
    values = {sid: None if (meta or {}).get(by) in (None, "") else str(meta[by])
              for sid, meta in zip(table["sample_id"].tolist(), table["meta"].tolist(), strict=True)}
    if not any(value is not None for value in values.values()):
        columns = [*GROUPINGS, *metadata_columns(workspace)]
        raise InputError(f"--by {by!r}: no sample has this column; columns there are: {', '.join(columns)} "
                         "(metadata columns come from a manifest's extra columns)")
    return values


def run_bias(workspace: Workspace, by: str = "source", *, embedder: str | None = None, progress: Progress = SILENT,
             json_path: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """``curato bias``: compute (or reuse) embeddings, run :func:`analyse_bias` over the workspace's groups.

    ``by``: ``"source"``, ``"split"``, ``"format"`` or a metadata column such as ``"camera"`` (samples without
    a value for a metadata column are left out and counted in ``without_value``). Writes
    ``<workspace>/reports/bias-latest.json`` (and ``json_path`` when given) atomically and returns the same
    document. ``options`` go to :func:`analyse_bias` (``alpha``, ``min_effect``, ``n_folds``, ``seed``, ...).
    """
    values = group_values(workspace, by)
    present = {NO_GROUP if value is None else value for value in values.values()}
    if by not in GROUPINGS:
        present.discard(NO_GROUP)
    if len(present) == 1:
        how = (f"ingest another {by} with --{by} NAME" if by in ("source", "split")
               else "group by a column whose values differ" if by in GROUPINGS
               else f"give some samples another {by} in the manifest")
        raise InputError(f"--by {by}: all samples have {by} {present.pop()!r}; {how}")
    name = embedder or choose_embedder_name(workspace)
    with workspace.catalog.recorded_run("bias", by, {"embedder": name, **options}) as run:
        rows = embedded_rows(workspace, name, pixels=True, progress=progress)
        data = rows.data
        embedded = np.flatnonzero(data.has_embedding)
        properties = None if data.properties is None else data.properties[embedded]
        groups = np.array([values.get(sid) for sid in rows.ids.tolist()], dtype=object)
        keep = np.flatnonzero(np.array([g is not None for g in groups]) | (by in GROUPINGS))
        analysis, _ = analyse_bias(rows.ids[keep], rows.embeddings[keep], groups[keep], labels=rows.labels[keep],
                                   properties=None if properties is None else properties[keep],
                                   property_columns=data.property_columns, by=by, progress=progress, **options)
        document = {"version": __version__, "workspace": str(workspace.root), "embedder": rows.embedder,
                    "without_value": len(groups) - len(keep), **analysis}
        record_document(workspace, "bias", document, json_path)
        run.summary = {"verdict": document["verdict"], "accuracy": document["accuracy"]}
    return document
