"""Diversity and coverage: is every class seen in varied contexts, and does the training split cover the others?

A network learns the simplest rule that fits its training data: a class only ever seen in one context (one
background, one pose, one studio) may be recognised by that context, and a test sample unlike every training
sample is a case the model was never shown. :func:`diversity_findings` is a pure function over embeddings
(cosine geometry), labels, splits and, optionally, image properties, and returns two Findings.

``diversity``
    The whole dataset is clustered by spherical k-means (faiss, seeded) into *contexts* (at least four per
    class, at least ten samples each). Per class with enough samples: ``contexts`` (the effective number of
    contexts it occupies, ``exp`` of the Miller-Madow corrected entropy of its context histogram), ``spread``
    (mean cosine distance to the class centroid), ``looks`` (the effective number of *distinct* sub-clusters of
    k-means inside the class: a Vendi score of the centres, corrected for their sampling noise) and, reported
    only, ``nn_distance``. Each ranked measure is divided by its median over the classes; ``diversity`` is the
    geometric mean of the three ratios. A class at or below ``low_diversity`` is flagged in its dominant
    contexts. A context dominated by one class that an image property sets apart from all other samples
    (Cohen's d at or above ``distinctive_effect``) is a *distinctive* context: the label could be read from it.
``coverage``
    Per sample outside the training split, the cosine distance to its nearest training sample against the
    training samples' own nearest-neighbour distances: beyond their ``coverage_quantile`` it is *uncovered*
    (about 1% are when the splits come from one distribution). Severity from the uncovered share overall and
    per class.

Nearest neighbours come from a shared kNN graph (``neighbours``, as :func:`curato.neighbors.knn` returns it;
built here when not given); rows whose graph lists no member of the wanted group are searched again against
that group alone. Every threshold is a field of :class:`DiversityParams`. Definitions in full: docs/findings.md,
"Diversity and coverage"; how the cuts were chosen: docs/benchmarks.md, "Diversity and coverage: how the cuts
were chosen".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from scipy import sparse

from curato.arrays import check_field, encode_values
from curato.checks.findings import SEVERITIES, Finding, severity_from_share
from curato.checks.outliers import robust_z, z_score_to_unit
from curato.errors import InputError
from curato.neighbors import EXACT_LIMIT, knn, set_threads, unit_rows

DEFAULT_TRAIN_SPLIT = "train"
DEFAULT_K = 10  # neighbours of the graph built when none is given
# k-means training below this many multiply-adds per iteration runs on one thread (see spherical_kmeans): speed only
_SERIAL_KMEANS_WORK = 100_000_000


@dataclass(frozen=True)
class DiversityParams:
    """Thresholds of :func:`diversity_findings`; invalid values raise ``InputError`` naming the field."""

    # Which classes are compared
    min_class_size: int = 10  # classes with fewer embedded samples are not measured
    min_classes_compared: int = 3  # diversity is relative: fewer measured classes than this, nothing is judged
    # Contexts: k = clip(round(sqrt(n / samples_per_context)), contexts_per_class x classes, max_contexts)
    samples_per_context: int = 10  # at least this many samples per context
    contexts_per_class: int = 4  # at least this many contexts per class
    max_contexts: int = 128  # at most this many contexts
    # Looks: k-means inside each class
    subclusters: int = 8  # sub-clusters per class ...
    samples_per_subcluster: int = 20  # ... at most one per this many samples
    looks_sample: int = 2_048  # a larger class's looks are measured on a random sample of this many
    # k-means
    kmeans_iterations: int = 10
    # faiss trains on a random sample of this many rows per centroid: enough to place centroids, and the cost
    # stays bounded whatever n (at most 64 x 128 = 8,192 rows); all rows are then assigned
    kmeans_points_per_centroid: int = 64
    # Low-diversity classes
    low_diversity: float = 0.5  # diversity at or below: low-diversity class, medium severity
    very_low_diversity: float = 0.25  # ... at or below: high severity
    dominant_share: float = 0.5  # a class's dominant contexts: the fewest that hold this share of it
    # Dominated and distinctive contexts
    dominance: float = 0.9  # one class is at least this share of a context's labeled members ...
    min_class_share: float = 0.25  # ... the context holds at least this share of that class ...
    min_share_elsewhere: float = 0.1  # ... and at least this share of the class lies elsewhere
    large_effect: float = 0.8  # |Cohen's d| against the rest of the class for a property to be the trait
    distinctive_effect: float = 3.0  # |d| against all others for a distinctive context (flagged)
    # Coverage
    coverage_quantile: float = 0.99  # beyond this quantile of train's own nearest-neighbour distances: uncovered
    coverage_low_share: float = 0.03  # uncovered share of all non-train samples for low severity ...
    coverage_medium_share: float = 0.10  # ... medium
    coverage_high_share: float = 0.25  # ... high
    class_coverage_low_share: float = 0.10  # uncovered share of one class (>= min_class_size checked) for low ...
    class_coverage_medium_share: float = 0.25  # ... medium
    class_coverage_high_share: float = 0.50  # ... high
    # Group searches
    exact_search_pairs: int = 50_000_000  # below this many query x group pairs a search is exact, above it IVF
    # Evidence
    examples: int = 8  # example ids per context
    max_groups: int = 12  # example groups in the evidence

    def __post_init__(self) -> None:
        for name in ("min_class_size", "min_classes_compared", "samples_per_context", "contexts_per_class",
                     "max_contexts", "subclusters", "samples_per_subcluster", "looks_sample", "kmeans_iterations",
                     "kmeans_points_per_centroid", "exact_search_pairs"):
            check_field("diversity", self, name, integer=True, low=1)
        for name in ("examples", "max_groups"):
            check_field("diversity", self, name, integer=True, low=0)
        for name in ("low_diversity", "very_low_diversity", "large_effect", "distinctive_effect"):
            check_field("diversity", self, name, low=0.0)
        for name in ("dominant_share", "dominance", "min_class_share", "min_share_elsewhere", "coverage_quantile",
                     "coverage_low_share", "coverage_medium_share", "coverage_high_share",
                     "class_coverage_low_share", "class_coverage_medium_share", "class_coverage_high_share"):
            check_field("diversity", self, name, low=0.0, high=1.0)
        for low, high in (("very_low_diversity", "low_diversity"), ("coverage_low_share", "coverage_medium_share"),
                          ("coverage_medium_share", "coverage_high_share"),
                          ("class_coverage_low_share", "class_coverage_medium_share"),
                          ("class_coverage_medium_share", "class_coverage_high_share")):
            if getattr(self, high) < getattr(self, low):
                raise InputError(f"diversity.{high}: must be >= {low} ({getattr(self, low)}), "
                                 f"got {getattr(self, high)!r}")


def context_count(n: int, n_classes: int, params: DiversityParams | None = None) -> int:
    """Number of k-means contexts for ``n`` samples of ``n_classes`` classes:
    ``clip(round(sqrt(n / samples_per_context)), contexts_per_class x classes, min(max_contexts, n /
    samples_per_context))``."""
    p = params or DiversityParams()
    wanted = max(round(np.sqrt(n / p.samples_per_context)), p.contexts_per_class * max(n_classes, 1))
    return int(max(1, min(wanted, p.max_contexts, n // p.samples_per_context)))


def effective_number(counts: np.ndarray, *, bias_corrected: bool = True) -> float:
    """``exp`` of the Shannon entropy of a histogram: how many equally filled bins it is worth.

    ``bias_corrected`` adds the Miller-Madow term ``(bins used - 1) / (2 * total)``, which offsets the
    plug-in entropy's downward bias when a histogram holds few samples.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    share = counts[counts > 0] / total
    entropy = float(-(share * np.log(share)).sum())
    if bias_corrected:
        entropy += (share.size - 1) / (2.0 * total)
    return float(np.exp(entropy))


def distinct_subclusters(vectors: np.ndarray, *, max_clusters: int | None = None, seed: int = 0,
                         params: DiversityParams | None = None) -> float:
    """Effective number of distinct looks among the rows of ``vectors`` (one class): k-means into ``max_clusters``
    (default ``params.subclusters``) sub-clusters, at most one per ``samples_per_subcluster`` rows; ``exp`` of
    the entropy of the eigenvalues of the size-weighted similarity ``exp(-|c_i - c_j|^2 / (2 s^2))`` of their
    centres (``s^2`` the rows' mean squared distance to their own centre), each squared gap less the part
    expected from the centres' sampling noise (``s_i^2 / (m_i - 1)``). Centres closer than the rows' own
    scatter count as one look: one Gaussian blob cut in eight scores 1.1, two separate ones 2.1."""
    p = params or DiversityParams()
    vectors = unit_rows(vectors)
    clusters = min(p.subclusters if max_clusters is None else max_clusters, len(vectors) // p.samples_per_subcluster)
    if clusters < 2:
        return 1.0
    assignment, _ = spherical_kmeans(vectors, clusters, seed=seed, params=p)
    sums, sizes = _group_sums(assignment, clusters, vectors)
    used = sizes > 0
    centres, sizes = sums[used] / sizes[used, None], sizes[used]
    share = sizes / sizes.sum()
    squared = np.einsum("ij,ij->i", centres, centres)
    # mean |x - c|^2 over the members of a cluster with unit x and c their mean is 1 - |c|^2
    own_scatter = np.maximum(1.0 - squared, 0.0)
    scatter = float(np.sum(share * own_scatter))
    if scatter <= 0:
        return 1.0
    # a centre estimated from m samples sits about scatter / (m - 1) (squared) off its true place: take that off
    # the gaps, or a small class would seem to have many looks
    noise = own_scatter / np.maximum(sizes - 1.0, 1.0)
    gaps = squared[:, None] + squared[None, :] - 2.0 * centres @ centres.T - noise[:, None] - noise[None, :]
    gaps = np.maximum(gaps, 0.0)
    root = np.sqrt(share)
    similarity = root[:, None] * np.exp(-gaps / (2.0 * scatter)) * root[None, :]
    eigen = np.clip(np.linalg.eigvalsh(similarity), 0.0, None)
    eigen = eigen[eigen > 1e-12] / eigen.sum()
    return float(np.exp(-(eigen * np.log(eigen)).sum()))


def spherical_kmeans(vectors: np.ndarray, k: int, *, seed: int = 0,
                     params: DiversityParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cluster unit rows into ``k`` groups by cosine (faiss, seeded; ``kmeans_iterations`` iterations, trained on
    at most ``kmeans_points_per_centroid`` rows per centroid); returns ``(assignment, centroids)``."""
    p = params or DiversityParams()
    vectors = unit_rows(vectors)
    k = int(min(k, len(vectors)))
    if k <= 1:
        return np.zeros(len(vectors), dtype=np.int64), unit_rows(vectors.mean(axis=0, keepdims=True))
    threads = set_threads()
    # Each k-means iteration is a short parallel region: on a small problem the threads' start-up and
    # waiting cost more than the work (about 10x slower on a busy 2-core machine), so it runs on one thread.
    if min(len(vectors), k * p.kmeans_points_per_centroid) * k * vectors.shape[1] < _SERIAL_KMEANS_WORK:
        faiss.omp_set_num_threads(1)
    try:
        kmeans = faiss.Kmeans(vectors.shape[1], k, niter=p.kmeans_iterations, seed=seed, spherical=True,
                              min_points_per_centroid=1, max_points_per_centroid=p.kmeans_points_per_centroid)
        kmeans.train(vectors)
    finally:
        faiss.omp_set_num_threads(threads)
    _, assignment = kmeans.index.search(vectors, 1)
    return assignment[:, 0].astype(np.int64), kmeans.centroids


def property_effect_sizes(inside: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Cohen's d per column (``inside`` minus ``rest``, pooled SD), ignoring NaN; NaN where undefined."""
    inside, rest = np.asarray(inside, dtype=np.float64), np.asarray(rest, dtype=np.float64)
    n_in, n_rest = np.isfinite(inside).sum(axis=0), np.isfinite(rest).sum(axis=0)
    effect = np.full(inside.shape[1], np.nan)
    ok = (n_in >= 2) & (n_rest >= 2)
    if not ok.any():
        return effect
    mean_in, mean_rest = np.nanmean(inside[:, ok], axis=0), np.nanmean(rest[:, ok], axis=0)
    var_in, var_rest = np.nanvar(inside[:, ok], axis=0, ddof=1), np.nanvar(rest[:, ok], axis=0, ddof=1)
    pooled = np.sqrt(((n_in[ok] - 1) * var_in + (n_rest[ok] - 1) * var_rest) / (n_in[ok] + n_rest[ok] - 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        effect[ok] = np.where(pooled > 0, (mean_in - mean_rest) / pooled, np.nan)
    return effect


def diversity_findings(
    sample_ids: Sequence[str] | np.ndarray,
    embeddings: np.ndarray,
    labels: Sequence[Any] | np.ndarray | None,
    *,
    splits: Sequence[str | None] | np.ndarray | None = None,
    properties: np.ndarray | None = None,
    property_columns: Sequence[str] | None = None,
    train_split: str = DEFAULT_TRAIN_SPLIT,
    contexts: int | None = None,
    seed: int = 0,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    k: int = DEFAULT_K,
    params: DiversityParams | None = None,
) -> list[Finding]:
    """Class diversity and split coverage (rules in the module docstring); returns ``[diversity, coverage]``.

    ``embeddings`` (n, d) are aligned with ``sample_ids``; all-zero rows take no part. ``labels`` use
    ``None`` for unlabeled samples; ``splits`` name each sample's split (``train_split`` is the one that
    must cover the others). ``properties`` (n, p) with ``property_columns`` describe what is distinctive
    about a dominated context. ``contexts`` fixes the number of k-means contexts (default
    :func:`context_count`); ``seed`` makes the clustering repeatable. ``neighbours`` reuses a kNN graph
    ``(similarities, indices)`` over all rows from :func:`curato.neighbors.knn`; without it one with
    ``k`` neighbours is built. ``params`` holds every threshold (default :class:`DiversityParams`).
    """
    params = params or DiversityParams()
    ids = np.asarray(sample_ids, dtype=object)
    n = len(ids)
    vectors = unit_rows(embeddings)
    if len(vectors) != n:
        raise InputError(f"embeddings have {len(vectors)} rows but there are {n} samples")
    usable = np.einsum("ij,ij->i", vectors, vectors) > 0  # all-zero rows (no embedding) take no part
    class_codes, class_names = (encode_values(labels, name="labels", n=n) if labels is not None
                                else (np.full(n, -1), []))
    split_codes, split_names = (encode_values(splits, name="splits", n=n) if splits is not None
                                else (np.full(n, -1), []))
    class_codes = np.where(usable, class_codes, -1)
    columns = _check_properties(properties, property_columns, n)
    properties = None if properties is None else np.asarray(properties, dtype=np.float64)
    if contexts is not None and contexts < 1:
        raise InputError(f"diversity: contexts must be at least 1, not {contexts}")
    graph = _graph(vectors, usable, neighbours, k)
    diversity = _diversity_finding(ids, vectors, usable, class_codes, class_names, properties, columns, graph,
                                   contexts, seed, params)
    coverage = _coverage_finding(ids, vectors, usable, class_codes, class_names, split_codes, split_names,
                                 train_split, graph, splits is not None, params)
    return [diversity, coverage]


def nearest_in_group(
    vectors: np.ndarray, wanted: np.ndarray, groups: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray], *,
    search_missing: bool = True, params: DiversityParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each row ``i`` with ``wanted[i] >= 0``, the most similar other row ``j`` with ``groups[j] == wanted[i]``.

    ``neighbours`` is a kNN graph over all rows; rows whose graph lists no member of the wanted group
    are searched again against that group alone (unless ``search_missing`` is False). Returns
    ``(similarity, index)`` per row: NaN and -1 where nothing was wanted, nothing was found, or the
    group has no other member. A search of more than ``params.exact_search_pairs`` query x group pairs uses an
    IVF index instead of brute force.
    """
    exact_pairs = (params or DiversityParams()).exact_search_pairs
    n = len(vectors)
    similarity, index = np.full(n, np.nan), np.full(n, -1, dtype=np.int64)
    queries = np.flatnonzero(wanted >= 0)
    if queries.size == 0:
        return similarity, index
    sims, idx = neighbours
    candidates = idx[queries]
    valid = candidates >= 0
    matches = valid & (groups[np.where(valid, candidates, 0)] == wanted[queries, None])
    matches &= candidates != queries[:, None]
    found = matches.any(axis=1)
    if found.any():
        first = matches[found].argmax(axis=1)  # the graph lists neighbours best first
        hit = queries[found]
        similarity[hit] = sims[hit, first]
        index[hit] = candidates[found, first]
    missing = queries[~found] if search_missing else queries[:0]
    for code in np.unique(wanted[missing]):
        asking = missing[wanted[missing] == code]
        pool = np.flatnonzero(groups == code)
        width = min(2, pool.size)
        if width == 0:
            continue
        exact = EXACT_LIMIT if asking.size * pool.size > exact_pairs else pool.size
        found_sims, local = knn(vectors[pool], width, queries=vectors[asking], exact_limit=max(exact, 1))
        rows = pool[local]
        other = rows != asking[:, None]  # a query searching its own group finds itself first
        has_other = other.any(axis=1)
        pick = other.argmax(axis=1)
        chosen = asking[has_other]
        similarity[chosen] = found_sims[has_other, pick[has_other]]
        index[chosen] = rows[has_other, pick[has_other]]
    return similarity, index


def _check_properties(properties: np.ndarray | None, columns: Sequence[str] | None, n: int) -> list[str]:
    if properties is None:
        return []
    shape = np.shape(properties)
    if len(shape) != 2 or shape[0] != n:
        raise InputError(f"properties must have shape (n_samples={n}, n_properties), not {shape}")
    names = [str(c) for c in columns] if columns is not None else [f"property_{j}" for j in range(shape[1])]
    if len(names) != shape[1]:
        raise InputError(f"property_columns has {len(names)} names but properties have {shape[1]} columns")
    return names


def _graph(vectors: np.ndarray, usable: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray] | None,
           k: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(vectors)
    if neighbours is not None:
        sims, idx = (np.asarray(a) for a in neighbours)
        if sims.shape != idx.shape or sims.ndim != 2 or len(idx) != n:
            raise InputError("neighbours must be knn() output (similarities, indices) over all rows of embeddings")
        return sims, idx
    if k < 1:
        raise InputError(f"diversity: k must be at least 1, not {k}")
    rows = np.flatnonzero(usable)
    sims = np.full((n, 0), np.nan, dtype=np.float32)
    idx = np.full((n, 0), -1, dtype=np.int64)
    if rows.size > 1:
        found_sims, local = knn(vectors[rows], k)
        sims = np.full((n, local.shape[1]), np.nan, dtype=np.float32)
        idx = np.full((n, local.shape[1]), -1, dtype=np.int64)
        sims[rows], idx[rows] = found_sims, rows[local]
    return sims, idx


def _group_sums(codes: np.ndarray, groups: int, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the rows of each group (codes in 0..groups-1; others ignored) and the group sizes."""
    rows = np.flatnonzero((codes >= 0) & (codes < groups))
    indicator = sparse.csr_matrix((np.ones(rows.size, dtype=np.float32), (codes[rows], rows)),
                                  shape=(groups, len(vectors)))
    sums = np.asarray(indicator @ vectors, dtype=np.float64)
    return sums, np.bincount(codes[rows], minlength=groups).astype(np.float64)


def _ratio_to_median(values: np.ndarray) -> np.ndarray:
    centre = float(np.median(values))
    return values / centre if centre > 0 else np.ones_like(values)


def _diversity_finding(
    ids: np.ndarray, vectors: np.ndarray, usable: np.ndarray, codes: np.ndarray, names: list[Any],
    properties: np.ndarray | None, columns: list[str], graph: tuple[np.ndarray, np.ndarray], contexts: int | None,
    seed: int, params: DiversityParams,
) -> Finding:
    n = len(ids)
    flagged, scores = np.zeros(n, dtype=bool), np.zeros(n)
    rows = np.flatnonzero(usable)
    sizes = np.bincount(codes[codes >= 0], minlength=len(names))
    compared = np.flatnonzero(sizes >= params.min_class_size)
    if compared.size == 0 or rows.size < params.samples_per_context:
        reason = "no labels" if not names else f"no class has {params.min_class_size} or more embedded samples"
        return Finding(check="diversity", severity="none", message=f"{reason}: class diversity not checked",
                       sample_ids=ids, flagged=flagged, scores=scores, summary={"classes": 0, "contexts": 0})

    k = min(contexts or context_count(rows.size, compared.size, params), rows.size)
    local, _ = spherical_kmeans(vectors if rows.size == n else vectors[rows], k, seed=seed,
                                params=params)  # no copy when all count
    context = np.full(n, -1, dtype=np.int64)
    context[rows] = local
    labeled = np.flatnonzero(codes >= 0)
    histogram = np.bincount(codes[labeled] * k + context[labeled], minlength=len(names) * k).reshape(len(names), k)

    sums, _ = _group_sums(codes, len(names), vectors)
    nearest, _ = nearest_in_group(vectors, np.where(np.isin(codes, compared), codes, -1), codes, graph,
                                  search_missing=graph[0].shape[1] == 0, params=params)
    if graph[0].shape[1]:  # no sample of the class among the graph's neighbours: at least as far as the last one
        nearest = np.where(np.isnan(nearest), graph[0][:, -1], nearest)
    table = []
    rng = np.random.default_rng(seed)
    for code in compared:
        members = np.flatnonzero(codes == code)
        nn = nearest[members]
        sample = (members if members.size <= params.looks_sample
                  else np.sort(rng.choice(members, params.looks_sample, replace=False)))
        table.append({
            "class": names[code], "samples": int(sizes[code]),
            "contexts": effective_number(histogram[code]),
            "looks": distinct_subclusters(vectors[sample], seed=seed, params=params),
            "spread": float(1.0 - np.linalg.norm(sums[code]) / sizes[code]),
            "nn_distance": float(np.median(1.0 - nn[np.isfinite(nn)])) if np.isfinite(nn).any() else None,
        })
    ranked = ("contexts", "spread", "looks")
    ratios = {m: _ratio_to_median(np.array([row[m] for row in table])) for m in ranked}
    diversity = np.exp(np.mean([np.log(np.maximum(ratios[m], 1e-6)) for m in ranked], axis=0))
    z = robust_z(np.log(diversity))
    comparable = compared.size >= params.min_classes_compared
    groups: list[list[str]] = []
    reasons: dict[int, dict[str, Any]] = {}
    for i, (code, row) in enumerate(zip(compared, table, strict=True)):
        row.update({f"{m}_ratio": float(ratios[m][i]) for m in ratios})
        row.update(diversity=float(diversity[i]), z=float(z[i]) if np.isfinite(z[i]) else None,
                   low_diversity=bool(comparable and diversity[i] <= params.low_diversity))
        order = np.argsort(-histogram[code], kind="stable")
        cover = np.cumsum(histogram[code][order]) / sizes[code]
        dominant = order[: int(np.searchsorted(cover, params.dominant_share)) + 1]
        row["dominant_contexts"] = [int(c) for c in dominant]
        if row["low_diversity"]:
            members = np.flatnonzero((codes == code) & np.isin(context, dominant))
            _flag(members, 1.0 - diversity[i], flagged, scores, reasons, {
                "reason": "low_diversity_class", "note": f"class {names[code]} is seen in few contexts "
                f"(diversity {diversity[i]:.2f} of the median class)"})
            groups += [ids[np.flatnonzero((codes == code) & (context == c))[:params.examples]].tolist()
                       for c in dominant]

    dominated = _dominated_contexts(ids, codes, names, context, histogram, sizes, usable, properties, columns,
                                    params)
    distinctive = [entry for entry in dominated if entry["trait"] and entry["trait"]["distinctive"]]
    for entry in distinctive:
        trait = entry["trait"]
        members = np.flatnonzero((codes == names.index(entry["class"])) & (context == entry["context"]))
        score = float(z_score_to_unit(np.array([abs(trait["effect_vs_others"])]), params.distinctive_effect)[0])
        _flag(members, score, flagged, scores, reasons, {
            "reason": "distinctive_context", "note": f"context {entry['context']} is {entry['purity']:.0%} "
            f"{entry['class']} and holds {entry['class_share']:.0%} of it; its {trait['property']} is "
            f"{'higher' if trait['effect_size'] > 0 else 'lower'} than in the rest of the class and the data "
            f"(d = {trait['effect_size']:.1f} and {trait['effect_vs_others']:.1f})"})
        groups.append(entry["examples"])

    details = {str(ids[r]): {"label": names[codes[r]], "context": int(context[r]), **reasons[r]}
               for r in np.flatnonzero(flagged)}
    table.sort(key=lambda row: row["diversity"])
    severity = _diversity_severity(table if comparable else [], distinctive, params)
    return Finding(
        check="diversity", severity=severity,
        message=_diversity_message(table, comparable, distinctive, dominated, bool(columns), params),
        sample_ids=ids, flagged=flagged, scores=scores,
        summary={"contexts": k, "classes": len(table), "low_diversity_classes": sum(r["low_diversity"] for r in table),
                 "least_diverse": str(table[0]["class"]), "min_diversity": round(table[0]["diversity"], 4),
                 "dominated_contexts": len(dominated), "distinctive_contexts": len(distinctive)},
        evidence={"classes": _rounded(table), "dominated_contexts": _rounded(dominated),
                  "groups": groups[:params.max_groups]},
        details=details,
    )


def _flag(members: np.ndarray, score: float, flagged: np.ndarray, scores: np.ndarray,
          reasons: dict[int, dict[str, Any]], reason: dict[str, Any]) -> None:
    """Flag ``members``; where a sample is flagged twice, the stronger reason (higher score) is kept."""
    stronger = members[score > scores[members]]
    flagged[members] = True
    scores[stronger] = score
    for row in stronger.tolist():
        reasons[row] = reason
    for row in members.tolist():
        reasons.setdefault(row, reason)


def _dominated_contexts(
    ids: np.ndarray, codes: np.ndarray, names: list[Any], context: np.ndarray, histogram: np.ndarray,
    sizes: np.ndarray, usable: np.ndarray, properties: np.ndarray | None, columns: list[str], params: DiversityParams,
) -> list[dict[str, Any]]:
    """Contexts where one class is at least ``dominance`` of the labeled members and that hold a large share of that
    class (at least ``min_class_share``, at most ``1 - min_share_elsewhere``)."""
    labeled_in_context = histogram.sum(axis=0)
    top_class = histogram.argmax(axis=0)
    purity = np.divide(histogram.max(axis=0), labeled_in_context, out=np.zeros(histogram.shape[1]),
                       where=labeled_in_context > 0)
    class_share = np.divide(histogram.max(axis=0), sizes[top_class], out=np.zeros(histogram.shape[1]),
                            where=sizes[top_class] > 0)
    chosen = np.flatnonzero((purity >= params.dominance) & (class_share >= params.min_class_share)
                            & (class_share <= 1.0 - params.min_share_elsewhere)
                            & (sizes[top_class] >= params.min_class_size))
    entries = []
    for c in chosen[np.argsort(-class_share[chosen], kind="stable")]:
        code = top_class[c]
        inside = (codes == code) & (context == c)
        rest = (codes == code) & (context != c) & (context >= 0)
        trait = None
        if properties is not None and columns:
            trait = _trait(properties, columns, inside, rest, usable & (context != c), params)
        entries.append({"context": int(c), "class": names[code], "size": int(np.sum(context == c)),
                        "purity": float(purity[c]), "class_share": float(class_share[c]), "trait": trait,
                        "examples": ids[np.flatnonzero(inside)[:params.examples]].tolist()})
    return entries


def _trait(properties: np.ndarray, columns: list[str], inside: np.ndarray, rest: np.ndarray,
           outside: np.ndarray, params: DiversityParams) -> dict[str, Any] | None:
    """The property that sets a context's members apart from the rest of their class (and from the data).

    Among properties that differ from the rest of the class by a large effect (|d| >= ``large_effect``) and from all
    samples outside the context in the same direction, the one most different from the latter; without
    such a property, the one most different from the rest of the class (then not distinctive).
    """
    versus_class = property_effect_sizes(properties[inside], properties[rest])
    if not np.isfinite(versus_class).any():
        return None
    versus_others = property_effect_sizes(properties[inside], properties[outside])
    candidate = (np.abs(versus_class) >= params.large_effect) & (np.sign(versus_class) == np.sign(versus_others))
    if candidate.any():
        best = int(np.nanargmax(np.where(candidate, np.abs(versus_others), -np.inf)))
    else:
        best = int(np.nanargmax(np.abs(versus_class)))
    distinctive = bool(candidate[best] and abs(versus_others[best]) >= params.distinctive_effect)
    return {"property": columns[best], "effect_size": float(versus_class[best]),
            "effect_vs_others": float(versus_others[best]) if np.isfinite(versus_others[best]) else None,
            "mean_inside": float(np.nanmean(properties[inside, best])),
            "mean_rest": float(np.nanmean(properties[rest, best])), "distinctive": distinctive}


def _diversity_severity(table: list[dict[str, Any]], distinctive: list[dict[str, Any]], params: DiversityParams) -> str:
    lowest = min((row["diversity"] for row in table), default=1.0)
    if lowest <= params.very_low_diversity:
        return "high"
    if lowest <= params.low_diversity:
        return "medium"
    return "low" if distinctive else "none"


def _diversity_message(table: list[dict[str, Any]], comparable: bool, distinctive: list[dict[str, Any]],
                       dominated: list[dict[str, Any]], has_properties: bool, params: DiversityParams) -> str:
    parts = []
    low = [row for row in table if row["low_diversity"]]
    if low:
        median_contexts = float(np.median([row["contexts"] for row in table]))
        median_spread = float(np.median([row["spread"] for row in table]))
        described = ", ".join(f"{row['class']!s} ({row['contexts']:.1f} contexts, spread {row['spread']:.3f}; "
                              f"diversity {row['diversity']:.2f})" for row in low[:3])
        parts.append(f"{len(low)} class(es) seen in few contexts compared with the others: {described} vs a median "
                     f"class of {median_contexts:.1f} contexts and spread {median_spread:.3f}; a model may learn "
                     "their narrow look rather than the object: add varied examples")
    elif comparable:
        parts.append(f"every class is seen in varied contexts (least diverse: {table[0]['class']!s}, "
                     f"{table[0]['diversity']:.2f} of the median class)")
    else:
        parts.append(f"fewer than {params.min_classes_compared} classes with {params.min_class_size}+ samples: "
                     "diversity is relative to the other classes, so it is not judged")
    if distinctive:
        first = distinctive[0]
        trait = first["trait"]
        parts.append(f"{len(distinctive)} context(s) hold mostly one class and stand out by an image property, e.g. "
                     f"{first['class_share']:.0%} of {first['class']!s} where {trait['property']} is "
                     f"{'higher' if trait['effect_size'] > 0 else 'lower'} than in the rest of the class and the "
                     f"data (d = {trait['effect_size']:.1f} and {trait['effect_vs_others']:.1f}): check that the "
                     "label cannot be read from it")
    elif dominated and not has_properties:
        parts.append(f"{len(dominated)} context(s) hold mostly one class; without image properties what sets "
                     "them apart is not measured")
    return "; ".join(parts)


def _coverage_finding(
    ids: np.ndarray, vectors: np.ndarray, usable: np.ndarray, class_codes: np.ndarray, class_names: list[Any],
    split_codes: np.ndarray, split_names: list[Any], train_split: str, graph: tuple[np.ndarray, np.ndarray],
    has_splits: bool, params: DiversityParams,
) -> Finding:
    n = len(ids)
    flagged, scores = np.zeros(n, dtype=bool), np.zeros(n)

    def not_checked(reason: str) -> Finding:
        return Finding(check="coverage", severity="none", message=f"{reason}: coverage not checked", sample_ids=ids,
                       flagged=flagged, scores=scores, summary={"train_split": train_split, "uncovered": 0})

    if not has_splits:
        return not_checked("no split information")
    train_code = split_names.index(train_split) if train_split in split_names else -1
    is_train = usable & (split_codes == train_code) & (train_code >= 0)
    others = usable & ~is_train & (split_codes >= 0)
    if is_train.sum() < 2:
        return not_checked(f"fewer than 2 samples in the {train_split!r} split")
    if not others.any():
        return not_checked(f"no split besides {train_split!r}")

    wanted = np.where(usable & (split_codes >= 0), 0, -1)
    similarity, nearest = nearest_in_group(vectors, wanted, np.where(is_train, 0, -1), graph, params=params)
    distance = 1.0 - similarity
    threshold = float(np.quantile(distance[is_train & np.isfinite(distance)], params.coverage_quantile))
    uncovered = others & (distance > threshold)
    flagged[:] = uncovered
    scores[others] = z_score_to_unit(distance[others], max(threshold, 1e-12))
    details = {}
    for row in np.flatnonzero(uncovered):
        details[str(ids[row])] = {
            "split": split_names[split_codes[row]],
            "label": class_names[class_codes[row]] if class_codes[row] >= 0 else None,
            "nearest_train": str(ids[nearest[row]]), "distance": round(float(distance[row]), 6),
            "note": f"nearest training sample at distance {distance[row]:.3f} (train p99 {threshold:.3f})"}

    by_split = _shares(split_codes, split_names, others, uncovered)
    by_class = _shares(class_codes, class_names, others, uncovered)
    share = float(uncovered.sum() / others.sum())
    severity = severity_from_share(share, low=params.coverage_low_share, medium=params.coverage_medium_share,
                                   high=params.coverage_high_share)
    for row in by_class:
        if row["samples"] >= params.min_class_size:
            level = severity_from_share(row["share"], low=params.class_coverage_low_share,
                                        medium=params.class_coverage_medium_share,
                                        high=params.class_coverage_high_share)
            severity = max(severity, level, key=SEVERITIES.index)
    worst = max((row for row in by_class if row["samples"] >= params.min_class_size), key=lambda r: r["share"],
                default=None)
    expected = 1.0 - params.coverage_quantile
    if uncovered.any() and severity == "none":
        # As many as chance leaves beyond the quantile (or a few more, below every cut-off): the training split
        # covers the others. Flagging them would show samples under a "none" severity, so none are flagged.
        message = (f"the {train_split!r} split covers the others: {int(uncovered.sum())} of {int(others.sum())} "
                   f"samples outside it ({share:.1%}) are farther from every training sample than "
                   f"{params.coverage_quantile:.0%} of training samples are from their nearest neighbour, where "
                   f"about {expected:.0%} is expected by chance; none flagged")
        flagged[:] = False
        details = {}
    elif uncovered.any():
        message = (f"{int(uncovered.sum())} of {int(others.sum())} samples outside {train_split!r} ({share:.1%}) are "
                   f"farther from every training sample than {params.coverage_quantile:.0%} of training samples are "
                   f"from their nearest neighbour (about {expected:.0%} expected)")
        if worst is not None and worst["uncovered"]:
            message += f"; most in class {worst['name']!s} ({worst['share']:.0%} of its {worst['samples']})"
        message += ": the model is evaluated on cases its training data does not show; add such training samples"
    else:
        message = f"the {train_split!r} split covers every other sample"
    train_distance = distance[is_train & np.isfinite(distance)]
    other_distance = distance[others & np.isfinite(distance)]
    return Finding(
        check="coverage", severity=severity, message=message, sample_ids=ids, flagged=flagged, scores=scores,
        summary={"train_split": train_split, "threshold": round(threshold, 6), "quantile": params.coverage_quantile,
                 "checked": int(others.sum()), "uncovered": int(uncovered.sum()), "uncovered_share": round(share, 6)},
        evidence={"by_split": by_split, "by_class": by_class,
                  "train_nn_distance_percentiles": _percentiles(train_distance),
                  "nearest_train_distance_percentiles": _percentiles(other_distance)},
        details=details,
    )


def _shares(codes: np.ndarray, names: list[Any], checked: np.ndarray, uncovered: np.ndarray) -> list[dict[str, Any]]:
    """Samples checked and uncovered per code (split or class), worst share first."""
    rows = np.flatnonzero(checked & (codes >= 0))
    total = np.bincount(codes[rows], minlength=len(names))
    missed = np.bincount(codes[rows], weights=uncovered[rows].astype(float), minlength=len(names))
    table = [{"name": names[c], "samples": int(total[c]), "uncovered": int(missed[c]),
              "share": round(float(missed[c] / total[c]), 6)} for c in np.flatnonzero(total)]
    return sorted(table, key=lambda row: -row["share"])


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {f"p{q}": round(float(np.percentile(values, q)), 6) for q in (1, 50, 90, 99)}


def _rounded(value: Any) -> Any:
    """Floats rounded to 4 significant decimals for the JSON evidence."""
    if isinstance(value, dict):
        return {key: _rounded(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value
