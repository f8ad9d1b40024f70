"""Outliers: samples unlike the rest of the dataset, and samples unlike the rest of their class.

:func:`outlier_findings` is a pure function over embeddings (and labels) and returns two Findings:

``outliers`` (global)
    The outlier distance of a sample is its mean cosine distance to its ``k`` nearest neighbours
    (:func:`curato.neighbors.knn`), compared with the rest by a robust z-score
    ``z = (m - median) / (1.4826 * MAD)``. A sample is flagged when ``z >= flag_threshold(n)`` =
    ``max(3.5, Phi^-1(1 - 1/n))`` (3.5 up to ~4,300 samples, 4.1 at 50k, 4.4 at 200k): the point
    beyond which a normal bulk of ``n`` samples would put less than one sample by chance. The rule is
    relative to the data (no embedder-specific distance), and grows with ``n`` like the bulk's own
    largest values do.
``class_outliers``
    The same measure inside each class (``k`` nearest neighbours of the same label, z against the
    class's own median and MAD, cut at ``flag_threshold`` of the class size), for samples not already
    global outliers: what remains sits in populated regions but far from its own class (often
    mislabeled, or an unusual view of the class). Unlabeled samples and classes under
    ``min_class_size`` (5) members are skipped. A sample whose ``k`` nearest neighbours in the whole
    dataset all share its label reads its distance off the shared graph; only the others are searched
    again within their class (a few flags can differ from an exact per-class search where an IVF graph
    misses a true neighbour).

Scores: ``1 - 0.5 ** (z / threshold)`` for ``z > 0`` (0 otherwise), so the flag cut maps to 0.5 and
the score grows towards 1 with the distance. Every threshold is a field of :class:`OutlierParams`;
how the rule was chosen: docs/benchmarks.md, "Outliers: how the rule was chosen".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# scipy.stats and scikit-learn are imported inside the functions that use them: importing them costs seconds, paid
# by every command that loads the checks (the report, `curato checks`) whether or not it runs them
from curato.arrays import check_field, encode_values
from curato.checks.findings import Finding
from curato.errors import InputError
from curato.neighbors import EXACT_LIMIT, knn, unit_rows

_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class OutlierParams:
    """Thresholds of the ``outliers`` check (defaults: the tuned values)."""

    k: int = 10  # nearest neighbours whose mean cosine distance is a sample's outlier distance
    min_z_threshold: float = 3.5  # floor of the n-dependent flag cut max(floor, Phi^-1(1 - 1/n))
    z_threshold: float | None = None  # a fixed flag cut for global outliers (None: the n-dependent one)
    class_z_threshold: float | None = None  # a fixed flag cut within classes (None: per class size)
    min_class_size: int = 5  # classes with fewer members are not checked for class outliers
    nearest_listed: int = 3  # nearest neighbours named in each flagged sample's details
    severity_medium: float = 0.02  # share flagged from which a finding is medium (any flag is low)
    severity_high: float = 0.05  # share flagged from which a finding is high

    def __post_init__(self) -> None:
        check_field("outliers", self, "k", integer=True, low=1)
        check_field("outliers", self, "min_z_threshold", low=0.0, strict=True)
        for name in ("z_threshold", "class_z_threshold"):
            if getattr(self, name) is not None:
                check_field("outliers", self, name, low=0.0, strict=True)
        check_field("outliers", self, "min_class_size", integer=True, low=2)
        check_field("outliers", self, "nearest_listed", integer=True, low=0)
        for name in ("severity_medium", "severity_high"):
            check_field("outliers", self, name, low=0.0, high=1.0)
        if self.severity_high < self.severity_medium:
            raise InputError(f"outliers.severity_high: must be >= severity_medium ({self.severity_medium}), "
                             f"got {self.severity_high!r}")


def outlier_findings(
    sample_ids: Sequence[str] | np.ndarray,
    embeddings: np.ndarray,
    labels: Sequence[Any] | np.ndarray | None = None,
    *,
    k: int | None = None,
    z_threshold: float | None = None,
    class_z_threshold: float | None = None,
    valid: np.ndarray | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    exact_limit: int = EXACT_LIMIT,
    params: OutlierParams | None = None,
) -> list[Finding]:
    """Global outliers and class outliers (see the module docstring for the rules).

    ``embeddings`` (n, d) are aligned with ``sample_ids``; all-zero rows and rows where ``valid`` is
    False take no part. ``labels`` (``None`` = unlabeled) feed ``class_outliers``; without labels that
    finding is empty. ``neighbours`` reuses a kNN graph ``(similarities, indices)`` from
    :func:`curato.neighbors.knn` over all rows (its first ``k`` columns are used). ``params`` holds the
    thresholds (default: :class:`OutlierParams`); ``k``, ``z_threshold`` and ``class_z_threshold``, when
    given, override its fields. A fixed ``z_threshold`` / ``class_z_threshold`` replaces the default cut,
    :func:`flag_threshold` of the number of samples compared. Returns ``[outliers, class_outliers]``.
    """
    overrides = {"k": k, "z_threshold": z_threshold, "class_z_threshold": class_z_threshold}
    p = dataclasses.replace(OutlierParams() if params is None else params,
                            **{name: value for name, value in overrides.items() if value is not None})
    k = p.k
    ids = np.asarray(sample_ids, dtype=object)
    n = len(ids)
    vectors = unit_rows(embeddings)
    if len(vectors) != n:
        raise InputError(f"embeddings have {len(vectors)} rows but there are {n} samples")
    usable = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    usable &= np.abs(vectors).max(axis=1) > 0
    rows = np.flatnonzero(usable)

    distance = np.full(n, np.nan)
    neighbour_ids = np.full((n, 0), -1, dtype=np.int64)
    if rows.size > 1:
        if neighbours is None:
            sims, local = knn(vectors[rows], k, exact_limit=exact_limit)
            idx = rows[local]
        else:
            sims, idx = (np.asarray(a)[rows, :k] for a in neighbours)
            if sims.shape[1] < 1:
                raise InputError("neighbours must be knn() output over all rows of embeddings")
        distance[rows] = np.mean(1.0 - sims, axis=1)
        neighbour_ids = np.full((n, idx.shape[1]), -1, dtype=np.int64)
        neighbour_ids[rows] = idx
    z = robust_z(distance)
    z_threshold = flag_threshold(rows.size, floor=p.min_z_threshold) if p.z_threshold is None else p.z_threshold
    flagged = usable & (z >= z_threshold)
    scores = z_score_to_unit(z, z_threshold)
    details = {}
    for row in np.flatnonzero(flagged):
        nearest = [str(ids[j]) for j in neighbour_ids[row, :p.nearest_listed] if j >= 0]
        details[str(ids[row])] = {"mean_distance": round(float(distance[row]), 6), "z": round(float(z[row]), 3),
                                  "nearest": nearest}
    typical = float(np.nanmedian(distance)) if rows.size > 1 else None
    outliers = Finding(
        check="outliers", severity=_severity(flagged.sum(), rows.size, p), message=_message(int(flagged.sum()), False),
        sample_ids=ids, flagged=flagged, scores=scores,
        summary={"k": k, "z_threshold": z_threshold, "median_distance": None if typical is None else round(typical, 6)},
        evidence={"mean_distance_percentiles": _percentiles(distance[rows])}, details=details,
    )
    graph = None if rows.size <= 1 else (np.full((n, sims.shape[1]), np.nan, dtype=np.float32), neighbour_ids)
    if graph is not None:
        graph[0][rows] = sims
    return [outliers, _class_outliers(ids, vectors, labels, usable, flagged, p, exact_limit, graph)]


def flag_threshold(n: int, *, floor: float | None = None) -> float:
    """The z-score a sample must reach among ``n``: ``max(floor, Phi^-1(1 - 1/n))``.

    Beyond that point a normal bulk of ``n`` samples would put less than one sample by chance, so
    what is flagged is out of the bulk's reach rather than its ordinary tail; the floor (default
    ``OutlierParams.min_z_threshold``, 3.5) keeps small datasets from flagging their ordinary tail too.
    """
    from scipy.stats import norm
    floor = OutlierParams().min_z_threshold if floor is None else floor
    return max(floor, float(norm.isf(1.0 / max(n, 2))))


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(v - median) / (1.4826 * MAD)`` over the finite values; NaN stays NaN, a zero MAD gives 0 or inf."""
    finite = np.isfinite(values)
    z = np.full(values.shape, np.nan)
    if not finite.any():
        return z
    centre = np.median(values[finite])
    spread = _MAD_TO_SIGMA * np.median(np.abs(values[finite] - centre))
    deviation = values[finite] - centre
    if spread > 0:
        z[finite] = deviation / spread
    else:  # more than half the values are equal: anything different is infinitely unusual
        z[finite] = np.where(deviation > 0, np.inf, 0.0)
    return z


def z_score_to_unit(z: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Map z-scores to [0, 1): 0 at or below 0, 0.5 at ``threshold``, towards 1 beyond."""
    positive = np.where(np.isfinite(z), np.maximum(z, 0.0), np.where(np.isnan(z), 0.0, np.inf))
    return 1.0 - np.power(0.5, positive / threshold)


def _class_outliers(
    ids: np.ndarray, vectors: np.ndarray, labels: Sequence[Any] | np.ndarray | None, usable: np.ndarray,
    global_flag: np.ndarray, params: OutlierParams, exact_limit: int,
    graph: tuple[np.ndarray, np.ndarray] | None = None,
) -> Finding:
    k, threshold = params.k, params.class_z_threshold
    n = len(ids)
    flagged = np.zeros(n, dtype=bool)
    z = np.full(n, np.nan)
    cut = np.full(n, np.inf)
    distance = np.full(n, np.nan)
    if labels is None:
        return Finding(check="class_outliers", severity="none", message="no labels: class outliers not checked",
                       sample_ids=ids, flagged=flagged, scores=np.zeros(n), summary={"classes": 0})
    codes, names = encode_values(labels, name="labels", n=n)
    codes[~usable] = -1
    known = codes >= 0
    checked = 0
    for code in range(len(names)):
        members = np.flatnonzero(codes == code)
        if members.size < params.min_class_size:
            continue
        checked += 1
        distance[members] = _class_mean_distance(vectors, members, codes, code, min(k, members.size - 1),
                                                 exact_limit, graph)
        z[members] = robust_z(distance[members])
        cut[members] = flag_threshold(members.size, floor=params.min_z_threshold) if threshold is None else threshold
    flagged = np.nan_to_num(z, nan=-np.inf) >= cut
    flagged &= ~global_flag
    details = {str(ids[row]): {"label": names[codes[row]], "class_mean_distance": round(float(distance[row]), 6),
                               "z": round(float(z[row]), 3)} for row in np.flatnonzero(flagged)}
    count = int(flagged.sum())
    return Finding(
        check="class_outliers", severity=_severity(count, int(known.sum()), params), message=_message(count, True),
        sample_ids=ids, flagged=flagged, scores=np.where(global_flag, 0.0, z_score_to_unit(z, cut)),
        summary={"classes": checked, "k": k, "z_threshold": "per class" if threshold is None else threshold},
        details=details,
    )


def _class_mean_distance(vectors: np.ndarray, members: np.ndarray, codes: np.ndarray, code: int, k: int,
                         exact_limit: int, graph: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Mean cosine distance of each member to its ``k`` nearest members of its own class.

    A member whose ``k`` nearest neighbours in the whole dataset (``graph``) all belong to its class has
    them as its nearest class members too: its distance is read off the graph. Only the others are
    searched again, against their class alone.
    """
    result = np.empty(members.size)
    search = np.ones(members.size, dtype=bool)
    if graph is not None and graph[1].shape[1] >= k:
        sims, idx = graph[0][members, :k], graph[1][members, :k]
        inside = np.all((idx >= 0) & (codes[np.maximum(idx, 0)] == code), axis=1) & np.all(np.isfinite(sims), axis=1)
        result[inside] = np.mean(1.0 - sims[inside], axis=1)
        search = ~inside
    if search.any():
        sims, idx = knn(vectors[members], k + 1, queries=vectors[members[search]], exclude_self=False,
                        exact_limit=exact_limit)
        # Drop each query's own row (exact copies may tie with it; if it fell out, drop the last neighbour).
        own = idx == np.flatnonzero(search)[:, None]
        drop = np.where(own.any(axis=1), own.argmax(axis=1), idx.shape[1] - 1)
        keep = np.ones(idx.shape, dtype=bool)
        keep[np.arange(len(idx)), drop] = False
        result[search] = np.mean(1.0 - sims[keep].reshape(len(idx), -1), axis=1)
    return result


def _severity(count: int, total: int, params: OutlierParams) -> str:
    """A few outliers are normal in any real collection; many suggest mixed sources or broken files."""
    if count == 0 or total == 0:
        return "none"
    share = count / total
    return "high" if share >= params.severity_high else "medium" if share >= params.severity_medium else "low"


def _message(count: int, per_class: bool) -> str:
    if count == 0:
        return "no sample is far from its class" if per_class else "no sample is far from the rest of the data"
    counted = "1 sample is" if count == 1 else f"{count} samples are"
    if per_class:
        return (f"{counted} far from the other samples of their own class (though not from the dataset): "
                "check their labels, or whether they show an unusual view of the class")
    return (f"{counted} far from every other sample: possibly out-of-domain, corrupt or "
            "wrongly included files worth a look")


def _percentiles(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {}
    return {f"p{q}": round(float(np.percentile(finite, q)), 6) for q in (1, 5, 25, 50, 75, 95, 99)}
