"""What a check reads: the samples' arrays, aligned by row, loaded once per audit and shared by every check."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curato.arrays import encode_labels
from curato.errors import InputError


@dataclass
class AuditData:
    """Everything a check may read, aligned by row with ``sample_ids``.

    Built by ``curato.commands.rows.load_samples`` from a workspace, or by ``curato.find_issues`` from arrays.
    Optional fields are None when the audit has no such data (e.g. text has no thumbnails).
    """

    sample_ids: np.ndarray
    labels: np.ndarray  # object array; None where unlabeled
    uris: np.ndarray | None = None
    splits: np.ndarray | None = None
    sources: np.ndarray | None = None
    readable: np.ndarray | None = None
    errors: np.ndarray | None = None
    content_hashes: np.ndarray | None = None
    phashes: np.ndarray | None = None  # uint64; 0 where unknown -- read only where has_phash
    has_phash: np.ndarray | None = None  # bool: the phash was computed (None: every non-zero one)
    texts: np.ndarray | None = None  # object: a text sample's text, None for other samples
    kinds: np.ndarray | None = None
    properties: np.ndarray | None = None  # (n, p), NaN rows where missing
    property_columns: list[str] = field(default_factory=list)
    property_categories: dict[str, list[str]] = field(default_factory=dict)  # names of categorical columns' codes
    thumbnails: np.ndarray | None = None  # (n, THUMBNAIL_COLUMNS) uint8, zero rows where missing
    formats: np.ndarray | None = None  # stored file format per sample ("" where unknown)
    sizes: np.ndarray | None = None  # (n, 2) width, height (0 where unknown)
    object_boxes: dict[str, dict[str, Any]] | None = None  # annotated objects (catalog.object_boxes)
    embeddings: np.ndarray | None = None  # (n, d) float32, zero rows where missing
    has_embedding: np.ndarray | None = None
    embedder: str | None = None
    pred_probs: np.ndarray | None = None  # (n, k) for labeled rows with embeddings, NaN elsewhere
    class_names: list[str] = field(default_factory=list)
    load_image: Any = None  # sample row -> HxWx3 uint8 image, for checks that look at pixels again
    masks: Any = None  # Mapping sample_id -> (label map, class names): samples with masks (Catalog.semantic_masks)
    mask_predictions: Any = None  # Mapping sample_id -> the pre-label model's label map (same class values)
    neighbours: int = 10  # k of the shared k-NN graph (duplicates, outliers, diversity)
    _graphs: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)
    _graph_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.sample_ids)
        self.sample_ids = np.asarray(self.sample_ids, dtype=object)
        self.labels = np.asarray(self.labels, dtype=object)
        if self.splits is None:
            self.splits = np.full(n, None, dtype=object)
        if self.sources is None:
            self.sources = np.full(n, None, dtype=object)
        if self.readable is None:
            self.readable = np.ones(n, dtype=bool)
        if self.errors is None:
            self.errors = np.full(n, None, dtype=object)
        for name in ("labels", "splits", "sources", "readable", "errors"):
            if len(getattr(self, name)) != n:
                raise InputError(f"{name} has {len(getattr(self, name))} entries but there are {n} samples")

    @property
    def size(self) -> int:
        """Number of samples."""
        return len(self.sample_ids)

    def append_properties(self, values: np.ndarray, columns: Sequence[str],
                          categories: Mapping[str, list[str]] | None = None) -> None:
        """Add property columns after the present ones (text columns after the image ones: each modality's rows
        are NaN in the other's columns, so no rule of one modality reads the other's rows)."""
        values = np.asarray(values, dtype=np.float64)
        if self.properties is None:
            self.properties, self.property_columns = values, list(columns)
        else:
            self.properties = np.concatenate([np.asarray(self.properties, dtype=np.float64), values], axis=1)
            self.property_columns = [*self.property_columns, *columns]
        self.property_categories = {**self.property_categories, **(categories or {})}

    def labeled_rows(self) -> np.ndarray:
        """Indices of rows with a label and an embedding (what label-aware checks use)."""
        mask = np.array([label is not None for label in self.labels], dtype=bool)
        if self.has_embedding is not None:
            mask &= self.has_embedding
        return np.flatnonzero(mask)

    def require_embeddings(self, check: str) -> np.ndarray:
        """Indices of rows with an embedding; raises a clear error naming ``check`` when there are none."""
        if self.embeddings is None or self.has_embedding is None or not self.has_embedding.any():
            raise InputError(f"--checks {check}: needs embeddings; run `curato embed` first (or pass features=)")
        return np.flatnonzero(self.has_embedding)

    def class_codes(self, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Integer codes of the labels of ``rows`` (classes sorted as strings) and the class names."""
        return encode_labels(self.labels[rows])

    def embeddings_at(self, rows: np.ndarray) -> np.ndarray:
        """``embeddings[rows]``; the array itself (no copy: 1 GB at 1M x 256) when ``rows`` is every row in order."""
        if self.embeddings is None:
            raise InputError("no embeddings; run `curato embed` first (or pass features=)")
        return self.embeddings if _every_row(rows, len(self.embeddings)) else self.embeddings[rows]

    def neighbour_graph(self, rows: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k-NN graph over the embedded ``rows``, ``neighbours`` wide (or ``k`` when a check's parameters ask
        for more), built once per width and shared by the checks that use it. A graph of each width is its own
        search (a wider one cut down differs where similarities tie), so what a check gets does not depend on
        which check asked first (checks may run side by side)."""
        from curato.neighbors import knn, unit_rows

        width = max(self.neighbours, k or 0)
        with self._graph_lock:  # the first check of a width builds it, the others wait and share
            if width not in self._graphs:
                self._graphs[width] = knn(unit_rows(self.embeddings_at(rows)), width)
            return self._graphs[width]


def _every_row(rows: np.ndarray, n: int) -> bool:
    """Is ``rows`` exactly ``0 .. n-1`` in order?"""
    return len(rows) == n and (n == 0 or (int(rows[0]) == 0 and int(rows[-1]) == n - 1
                                          and bool(np.all(np.diff(rows) == 1))))
