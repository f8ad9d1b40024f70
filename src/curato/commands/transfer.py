"""``curato transfer`` = ``run_transfer``: embed the labelled samples with each candidate embedder
(cached in the feature store), score them all on the same rows, write the JSON document."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curato.arrays import stratified_subsample
from curato.commands.results import record_document
from curato.errors import InputError
from curato.models.probes import KNN_NEIGHBOURS
from curato.progress import SILENT, Progress
from curato.transfer.rank import rank_agreement, rank_embedders
from curato.version import __version__
from curato.workspace import Workspace


def run_transfer(workspace: Workspace, embedders: Sequence[str], *, max_samples: int | None = None, seed: int = 0,
                 knn_k: int = KNN_NEIGHBOURS, n_folds: int = 5, json_path: Path | None = None,
                 progress: Progress = SILENT) -> dict[str, Any]:
    """Rank ``embedders`` for the workspace's labelled samples; returns the ``transfer --json`` document.

    Embeddings missing from the feature store are computed (and cached). The samples scored are the
    labelled ones that every embedder could embed, in every split; ``max_samples`` keeps a stratified
    random subset of them (``seed``). Writes ``<workspace>/reports/transfer-latest.json`` and, when
    given, ``json_path`` (each atomically). Schema: ``curato/schemas/transfer.schema.json``.
    """
    from curato.commands.embed import compute_embeddings

    names = _embedder_names(embedders)
    if max_samples is not None and max_samples < 2 * n_folds:
        raise InputError(f"--max-samples {max_samples}: need at least {2 * n_folds} samples for "
                         f"{n_folds}-fold probes")
    settings = {"embedders": names, "max_samples": max_samples, "seed": seed, "knn_k": knn_k, "n_folds": n_folds}
    with workspace.catalog.recorded_run("transfer", ",".join(names), settings) as run:
        started = time.perf_counter()
        feature_sets = {name: compute_embeddings(workspace, name, progress=progress)[0] for name in names}
        embedding_seconds = time.perf_counter() - started
        current = workspace.catalog.current_labels()
        ids = sorted(current)
        vectors = {}
        usable = np.ones(len(ids), dtype=bool)
        for name, features in feature_sets.items():
            vectors[name], found = features.align(ids)
            usable &= found
        labels = np.array([current[sid] for sid in ids], dtype=object)[usable]
        n_labeled = int(usable.sum())
        rows = np.flatnonzero(usable)
        classes = sorted(set(labels.tolist()))
        if len(classes) < 2:
            raise InputError(f"{workspace.root}: transfer needs embedded samples labelled with at least two "
                             f"classes, found {len(classes)}; ingest labelled data first")
        if len(labels) < 2 * n_folds:
            raise InputError(f"{workspace.root}: transfer needs at least {2 * n_folds} labelled samples, "
                             f"found {len(labels)}")
        if max_samples is not None and max_samples < len(labels):
            keep = stratified_subsample(labels, max_samples, seed=seed)
            rows, labels = rows[keep], labels[keep]
        progress.stage("transferability scores", len(names))
        entries = rank_embedders({name: vectors[name][rows] for name in names}, labels.astype(str), knn_k=knn_k,
                                 n_folds=n_folds, seed=seed, on_scored=lambda _: progress.advance(1))
        document = {
            "version": __version__, "workspace": str(workspace.root), "n_samples": len(labels),
            "n_labeled": n_labeled, "n_classes": len(classes), "classes": classes, "settings": settings,
            "embedding_seconds": round(embedding_seconds, 3),
            "embedders": [_rounded(entry) for entry in entries],
            "ranking": [entry["name"] for entry in entries],
            "agreement": rank_agreement(entries),
        }
        record_document(workspace, "transfer", document, json_path)
        run.summary = {"ranking": document["ranking"], "kendall_tau": document["agreement"]["kendall_tau"]}
    return document


def _embedder_names(embedders: Sequence[str]) -> list[str]:
    names = [name.strip() for name in embedders if name and name.strip()]
    if not names:
        raise InputError("--embedders: name at least one embedder, e.g. --embedders efficientnet-lite0,classic,pixels")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"--embedders: {', '.join(repeated)} named more than once; name each embedder once")
    return names


def _rounded(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "seconds": {key: round(value, 4) for key, value in entry["seconds"].items()}}
