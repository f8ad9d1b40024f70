"""``curato bias`` against a workspace: embed (or reuse embeddings), group the samples by a metadata column, run
:func:`curato.checks.bias.analyse_bias`, record the run and write the document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curato.checks.bias import GROUPINGS, NO_GROUP, analyse_bias
from curato.commands.embed import choose_embedder_name
from curato.commands.rows import embedded_rows
from curato.errors import InputError
from curato.progress import SILENT, Progress
from curato.version import __version__
from curato.workspace import Workspace


def run_bias(workspace: Workspace, by: str = "source", *, embedder: str | None = None, progress: Progress = SILENT,
             json_path: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """``curato bias``: compute (or reuse) embeddings, run :func:`analyse_bias` over the workspace's groups.

    ``by``: ``"source"`` or ``"split"``. Writes ``<workspace>/reports/bias-latest.json`` (and
    ``json_path`` when given) atomically and returns the same document. ``options`` go to
    :func:`analyse_bias` (``alpha``, ``min_effect``, ``n_folds``, ``seed``, ...).
    """
    if by not in GROUPINGS:
        raise InputError(f"--by {by!r}: use one of {', '.join(GROUPINGS)}")
    present = {NO_GROUP if value is None else str(value) for value in workspace.catalog.samples((by,))[by]}
    if len(present) == 1:
        raise InputError(f"all samples have {by} {present.pop()!r}; ingest another {by} with --{by} NAME")
    name = embedder or choose_embedder_name(workspace)
    with workspace.catalog.recorded_run("bias", by, {"embedder": name, **options}) as run:
        rows = embedded_rows(workspace, name, pixels=True, progress=progress)
        data = rows.data
        embedded = np.flatnonzero(data.has_embedding)
        properties = None if data.properties is None else data.properties[embedded]
        analysis, _ = analyse_bias(rows.ids, rows.embeddings, rows.sources if by == "source" else rows.splits,
                                   labels=rows.labels, properties=properties, property_columns=data.property_columns,
                                   by=by, progress=progress, **options)
        document = {"version": __version__, "workspace": str(workspace.root), "embedder": rows.embedder, **analysis}
        workspace.write_latest("bias", document, json_path)
        run.summary = {"verdict": document["verdict"], "accuracy": document["accuracy"]}
    return document
