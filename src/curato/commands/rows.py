"""The one typed row loader: a workspace's samples as :class:`~curato.checks.data.AuditData`, and the
embedded, labelled view the model-based commands (bias, transfer, select, route, simulate, size) start from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curato.arrays import encode_labels
from curato.checks.data import AuditData
from curato.featurestore import PROPERTIES, THUMBNAILS, FeatureSet
from curato.progress import SILENT, Progress
from curato.workspace import Workspace


def load_samples(workspace: Workspace, features: FeatureSet | None = None, *, pixels: bool = True) -> AuditData:
    """Every sample of the workspace (sorted by id) with its catalog columns, curated label, image properties,
    thumbnails and (when ``features`` is given) embeddings: the one typed row loader every command uses.
    Samples people excluded (or marked ambiguous) in the labelling app are left out.

    ``pixels=False`` skips the image properties, thumbnails and annotated boxes (commands that only need
    labels and embeddings)."""
    from curato.commands.embed import DECODE_MIN_SIDE
    from curato.imageio import load_rgb

    table = workspace.catalog.samples(
        ("sample_id", "uri", "split", "source", "readable", "error", "content_hash", "phash", "kind", "format",
         "width", "height", "text"))
    states = workspace.catalog.sample_states()
    if states:  # samples people excluded (or found ambiguous) in the app are out of the dataset
        keep = np.array([sid not in states for sid in table["sample_id"].tolist()], dtype=bool)
        table = {column: values[keep] for column, values in table.items()}
    current = workspace.catalog.current_labels()
    ids = table["sample_id"]
    uris = table["uri"]
    data = AuditData(
        sample_ids=ids, uris=uris,
        labels=np.array([current.get(sid) for sid in ids.tolist()], dtype=object),
        splits=table["split"], sources=table["source"],
        readable=np.array([bool(v) for v in table["readable"]], dtype=bool), errors=table["error"],
        content_hashes=table["content_hash"],
        phashes=np.array([int(h, 16) if h else 0 for h in table["phash"].tolist()], dtype=np.uint64),
        has_phash=np.array([bool(h) for h in table["phash"].tolist()], dtype=bool),
        texts=np.array([t if kind == "text" and isinstance(t, str) else None
                        for t, kind in zip(table["text"].tolist(), table["kind"].tolist(), strict=True)], dtype=object),
        kinds=table["kind"],
        formats=np.array([f or "" for f in table["format"].tolist()], dtype=object),
        sizes=np.array([(w or 0, h or 0) for w, h in zip(table["width"].tolist(), table["height"].tolist(),
                                                          strict=True)], dtype=np.int64).reshape(-1, 2),
        object_boxes=workspace.catalog.object_boxes() if pixels else None,
        masks=workspace.catalog.semantic_masks() if pixels else None,
        load_image=lambda row: load_rgb(str(uris[row]), min_side=DECODE_MIN_SIDE),
    )
    if pixels and workspace.features.has(PROPERTIES):
        stored = workspace.features.load(PROPERTIES)
        vectors, found = stored.align(ids.tolist())
        properties = np.asarray(vectors, dtype=np.float64)
        properties[~found] = np.nan
        data.properties, data.property_columns = properties, list(stored.meta["columns"])
    if pixels and any(text is not None for text in data.texts):
        _attach_text_properties(workspace, data)
    if pixels and workspace.features.has(THUMBNAILS):
        data.thumbnails, _ = workspace.features.load(THUMBNAILS).align(ids.tolist())
    if features is not None:
        vectors, found = features.align(ids.tolist())
        data.embeddings, data.has_embedding, data.embedder = np.asarray(vectors, np.float32), found, features.name
    return data


def _attach_text_properties(workspace: Workspace, data: AuditData) -> None:
    """Text rows' properties (stored by ingest, computed here where missing) and the collection's boilerplate
    columns, as columns after the image properties: text rows have NaN image columns and image rows NaN text
    columns, so no rule of one modality reads the other's rows."""
    from curato.features.text_properties import TEXT_PROPERTIES, text_property_table

    stored = None
    if workspace.features.has(TEXT_PROPERTIES):
        found_set = workspace.features.load(TEXT_PROPERTIES)
        vectors, found = found_set.align(data.sample_ids.tolist())
        stored = np.asarray(vectors, dtype=np.float64)
        hashes = dict(zip(found_set.ids.tolist(), found_set.hashes.tolist(), strict=True))
        fresh = np.array([hashes.get(sid) == digest for sid, digest in
                          zip(data.sample_ids.tolist(), data.content_hashes.tolist(), strict=True)], dtype=bool)
        stored[~(found & fresh)] = np.nan
    data.append_properties(*text_property_table(data.texts.tolist(), stored))


@dataclass
class EmbeddedRows:
    """The samples with an embedding (sorted by id): their vectors, current labels as codes, splits, sources."""

    ids: np.ndarray
    embeddings: np.ndarray  # (n, d) float32
    labels: np.ndarray  # current label or None
    codes: np.ndarray  # label code per row, -1 where unlabelled
    classes: list[str]  # names of the codes
    splits: np.ndarray
    sources: np.ndarray
    embedder: str
    data: AuditData  # every sample, for what else a command needs

    @property
    def labeled(self) -> np.ndarray:
        """Rows with a current label."""
        return self.codes >= 0


def embedded_rows(workspace: Workspace, embedder: str | None = None, *, pixels: bool = False,
                  progress: Progress = SILENT) -> EmbeddedRows:
    """Compute (or reuse) the embeddings of ``embedder`` (default: chosen for the data) and return the embedded
    samples with their labels encoded one way (:func:`curato.arrays.encode_labels`)."""
    from curato.commands.embed import compute_embeddings

    features, summary = compute_embeddings(workspace, embedder, progress=progress)
    return rows_of(workspace, features, summary.embedder, pixels=pixels)


def stored_rows(workspace: Workspace, embedder: str) -> EmbeddedRows:
    """Like :func:`embedded_rows` from the embeddings already stored, computing nothing and recording no run
    (for readers that must not write, e.g. the labelling server's background refit)."""
    return rows_of(workspace, workspace.features.load(embedder), embedder)


def rows_of(workspace: Workspace, features: FeatureSet, embedder: str, *, pixels: bool = False) -> EmbeddedRows:
    """The embedded samples of ``features`` with their curated labels encoded one way."""
    data = load_samples(workspace, features, pixels=pixels)
    found = np.flatnonzero(data.has_embedding)
    labels = data.labels[found]
    codes, classes = encode_labels(labels)
    return EmbeddedRows(ids=data.sample_ids[found], embeddings=data.embeddings[found], labels=labels, codes=codes,
                        classes=classes, splits=data.splits[found], sources=data.sources[found],
                        embedder=embedder, data=data)
