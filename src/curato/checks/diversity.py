"""Diversity and coverage: is every class seen in varied contexts, and does the training split cover the others?

A network learns the simplest rule that fits its training data. When a class is only ever seen in one
context (one background, one pose, one studio), that context is such a rule; and a test or deployment
sample unlike every training sample is a case the model was never shown. :func:`diversity_findings`
is a pure function over embeddings (cosine geometry), labels, splits and, optionally, image properties,
and returns two Findings.

``diversity``
    *Contexts.* The embeddings of the whole dataset are clustered by spherical k-means (faiss, seeded)
    into ``k = clip(round(sqrt(n / 10)), 4 * classes, min(128, n / 10))`` contexts: at least four per
    class, so that a class can spread over several, and at least ten samples per context. For every
    class with at least 10 samples:

    * ``contexts``: the effective number of contexts the class occupies, ``exp(H)`` of its context
      histogram, with the Miller-Madow correction of ``H`` so that a small class is not called narrow
      for being small;
    * ``spread``: the mean cosine distance of its samples to the class centroid (``1 - |mean unit vector|``);
    * ``looks``: k-means inside the class (8 sub-clusters, one per 20 samples at most; a class larger than
      2,048 is measured on a random sample of that many) and the effective
      number of *distinct* sub-clusters: ``exp`` of the entropy of the eigenvalues of the size-weighted
      similarity matrix of the sub-cluster centres, similarity ``exp(-|c_i - c_j|^2 / (2 s^2))`` with
      ``s^2`` the mean squared distance of the class's samples to their own centre (the Vendi score of
      the sub-clusters), after removing from each squared gap the part expected from the centres'
      sampling noise (``s_i^2 / (m_i - 1)`` for a centre of ``m_i`` samples; without it a small class
      looks varied). Centres closer than the samples' own scatter count as one look: one Gaussian blob
      cut in eight scores 1.1, two separate ones 2.1 (the plain entropy of the sizes would give about 8
      for any blob);
    * ``nn_distance``: the median cosine distance to the nearest other sample of the class (from the kNN
      graph; a sample none of whose graph neighbours is of its class counts at the distance of the last
      one, a lower bound that leaves the median exact while such samples lie beyond it). Reported but
      not ranked: it shrinks as a class grows denser, so it would call the largest classes narrow.

    Each ranked measure is divided by its median over the classes, and a class's ``diversity`` is the
    geometric mean of its three ratios: a statement relative to the other classes of the same data,
    not a constant of one embedder (a robust z-score of ``log diversity`` is reported too). A class is
    *low-diversity* at ``diversity <= 0.5`` (medium severity; ``<= 0.25`` high); its members in its
    dominant contexts (the fewest contexts that hold half of the class) are flagged with score
    ``1 - diversity``. At least 3 classes are needed for a comparison.

    How the cut was chosen: on Fashion-MNIST (70k, EfficientNet-Lite0 112 px) the least diverse class
    (trousers or ankle boots, depending on the seed) scores 0.68-0.79 and nothing is flagged; on the
    2,000-image test set with ``classic`` embeddings the bags cut down to their tightest of five
    k-means clusters score 0.34-0.40 over four seeds while the next class stays at >= 0.62. k-means places its centres
    differently per seed, so a class's ``contexts`` varies by about 14% between seeds (measured on the
    70k set); ``spread`` does not, and ``looks`` little.

    *Dominated contexts.* A context where one class makes up >= 90% of the labeled members and that holds
    >= 25% of that class (while >= 10% of the class lies elsewhere: a class entirely in one context is
    the low-diversity case) is where the class may be recognised by its surroundings. With image
    properties, its trait is described by effect sizes (Cohen's d, pooled SD) of the context's members
    against the rest of the same class and against all samples outside the context: among properties
    with ``|d| >= 0.8`` (a large effect) against the rest of the class and the same sign against the
    others, the one most different from the others (else the one most different from the rest of the
    class). The context is *distinctive* -- the label could be read from that property -- when its
    ``|d|`` against the others is >= 3; its members of that class are flagged with score
    ``1 - 0.5 ** (|d| / 3)`` and the severity is at least low. The cut of 3 is set where real data does
    not reach: every context of one class differs in *some* property from the rest of its class (contexts
    are clusters of appearance, and properties measure appearance), so ``|d| >= 0.8`` alone flags
    ordinary variation. On Fashion-MNIST (70k, EfficientNet-Lite0 embeddings, 84 contexts, two seeds)
    no context reaches 2.8 against the others; a white 2-px frame drawn on 60% of one class's images
    reaches 6.5-6.8 (classic embeddings, three seeds). Without properties dominated contexts are listed
    in the evidence only.

``coverage``
    For every sample outside the training split, the cosine distance to its nearest *training* sample,
    compared with the distribution of training samples' distances to their nearest other training
    sample: beyond that distribution's 99th percentile the sample is *uncovered* (about 1% are, when
    the splits are drawn from the same distribution). Score ``1 - 0.5 ** (d / p99)``: 0.5 at the cut.
    Severity: from the uncovered share of all non-train samples (>= 3% low, >= 10% medium, >= 25%
    high: three, ten and 25 times the chance rate) or of one class with at least 10 non-train samples
    (>= 10% low, >= 25% medium, >= 50% high), whichever is worse. Without a training split or without
    any other split the finding has severity none and says why.

Nearest neighbours come from a shared kNN graph (``neighbours``, as :func:`curato.neighbors.knn`
returns it; built here when not given): a row whose graph neighbours include a sample of the wanted
group (same class; the training split) takes the nearest of them, the others are searched again
against that group only, so every distance is to the nearest member of the group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np
from scipy import sparse

from curato.arrays import encode_values
from curato.checks.findings import SEVERITIES, Finding, severity_from_share
from curato.checks.outliers import robust_z, z_score_to_unit
from curato.errors import InputError
from curato.neighbors import EXACT_LIMIT, knn, set_threads, unit_rows

DEFAULT_TRAIN_SPLIT = "train"
DEFAULT_K = 10  # neighbours of the graph built when none is given
MIN_CLASS_SIZE = 10
MIN_CLASSES_COMPARED = 3
SAMPLES_PER_CONTEXT = 10
CONTEXTS_PER_CLASS = 4
MAX_CONTEXTS = 128
SUBCLUSTERS = 8
SAMPLES_PER_SUBCLUSTER = 20
LOOKS_SAMPLE = 2_048  # the looks of a larger class are measured on a random sample of this many
KMEANS_ITERATIONS = 10
# faiss trains k-means on a random sample of this many rows per centroid: enough to place centroids, and
# the training cost stays bounded whatever n (at most 64 x 128 = 8,192 rows); all rows are then assigned.
KMEANS_POINTS_PER_CENTROID = 64
LOW_DIVERSITY = 0.5
VERY_LOW_DIVERSITY = 0.25
DOMINANT_SHARE = 0.5
DOMINANCE = 0.9
MIN_CLASS_SHARE = 0.25
MIN_SHARE_ELSEWHERE = 0.1
LARGE_EFFECT = 0.8
DISTINCTIVE_EFFECT = 3.0
COVERAGE_QUANTILE = 0.99
COVERAGE_SHARES = (0.03, 0.10, 0.25)
CLASS_COVERAGE_SHARES = (0.10, 0.25, 0.50)
EXAMPLES = 8
MAX_GROUPS = 12
# A group search below this many query x database pairs is done exactly (brute force), above it with IVF.
_EXACT_PAIRS = 50_000_000
# k-means training below this many multiply-adds per iteration runs on one thread (see spherical_kmeans)
_SERIAL_KMEANS_WORK = 100_000_000


def context_count(n: int, n_classes: int) -> int:
    """Number of k-means contexts for ``n`` samples of ``n_classes`` classes (see the module docstring)."""
    wanted = max(round(np.sqrt(n / SAMPLES_PER_CONTEXT)), CONTEXTS_PER_CLASS * max(n_classes, 1))
    return int(max(1, min(wanted, MAX_CONTEXTS, n // SAMPLES_PER_CONTEXT)))


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


def distinct_subclusters(vectors: np.ndarray, *, max_clusters: int = SUBCLUSTERS, seed: int = 0) -> float:
    """Effective number of distinct looks among the rows of ``vectors`` (one class); see the module docstring."""
    vectors = unit_rows(vectors)
    clusters = min(max_clusters, len(vectors) // SAMPLES_PER_SUBCLUSTER)
    if clusters < 2:
        return 1.0
    assignment, _ = spherical_kmeans(vectors, clusters, seed=seed)
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


def spherical_kmeans(vectors: np.ndarray, k: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster unit rows into ``k`` groups by cosine (faiss, seeded); returns ``(assignment, centroids)``."""
    vectors = unit_rows(vectors)
    k = int(min(k, len(vectors)))
    if k <= 1:
        return np.zeros(len(vectors), dtype=np.int64), unit_rows(vectors.mean(axis=0, keepdims=True))
    threads = set_threads()
    # Each k-means iteration is a short parallel region: on a small problem the threads' start-up and
    # waiting cost more than the work (about 10x slower on a busy 2-core machine), so it runs on one thread.
    if min(len(vectors), k * KMEANS_POINTS_PER_CENTROID) * k * vectors.shape[1] < _SERIAL_KMEANS_WORK:
        faiss.omp_set_num_threads(1)
    try:
        kmeans = faiss.Kmeans(vectors.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed, spherical=True,
                              min_points_per_centroid=1, max_points_per_centroid=KMEANS_POINTS_PER_CENTROID)
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
) -> list[Finding]:
    """Class diversity and split coverage (rules in the module docstring); returns ``[diversity, coverage]``.

    ``embeddings`` (n, d) are aligned with ``sample_ids``; all-zero rows take no part. ``labels`` use
    ``None`` for unlabeled samples; ``splits`` name each sample's split (``train_split`` is the one that
    must cover the others). ``properties`` (n, p) with ``property_columns`` describe what is distinctive
    about a dominated context. ``contexts`` fixes the number of k-means contexts (default
    :func:`context_count`); ``seed`` makes the clustering repeatable. ``neighbours`` reuses a kNN graph
    ``(similarities, indices)`` over all rows from :func:`curato.neighbors.knn`; without it one with
    ``k`` neighbours is built.
    """
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
                                   contexts, seed)
    coverage = _coverage_finding(ids, vectors, usable, class_codes, class_names, split_codes, split_names,
                                 train_split, graph, splits is not None)
    return [diversity, coverage]


def nearest_in_group(
    vectors: np.ndarray, wanted: np.ndarray, groups: np.ndarray, neighbours: tuple[np.ndarray, np.ndarray], *,
    search_missing: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """For each row ``i`` with ``wanted[i] >= 0``, the most similar other row ``j`` with ``groups[j] == wanted[i]``.

    ``neighbours`` is a kNN graph over all rows; rows whose graph lists no member of the wanted group
    are searched again against that group alone (unless ``search_missing`` is False). Returns
    ``(similarity, index)`` per row: NaN and -1 where nothing was wanted, nothing was found, or the
    group has no other member.
    """
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
        exact = EXACT_LIMIT if asking.size * pool.size > _EXACT_PAIRS else pool.size
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
    seed: int,
) -> Finding:
    n = len(ids)
    flagged, scores = np.zeros(n, dtype=bool), np.zeros(n)
    rows = np.flatnonzero(usable)
    sizes = np.bincount(codes[codes >= 0], minlength=len(names))
    compared = np.flatnonzero(sizes >= MIN_CLASS_SIZE)
    if compared.size == 0 or rows.size < SAMPLES_PER_CONTEXT:
        reason = "no labels" if not names else f"no class has {MIN_CLASS_SIZE} or more embedded samples"
        return Finding(check="diversity", severity="none", message=f"{reason}: class diversity not checked",
                       sample_ids=ids, flagged=flagged, scores=scores, summary={"classes": 0, "contexts": 0})

    k = min(contexts or context_count(rows.size, compared.size), rows.size)
    local, _ = spherical_kmeans(vectors if rows.size == n else vectors[rows], k, seed=seed)  # no copy when all count
    context = np.full(n, -1, dtype=np.int64)
    context[rows] = local
    labeled = np.flatnonzero(codes >= 0)
    histogram = np.bincount(codes[labeled] * k + context[labeled], minlength=len(names) * k).reshape(len(names), k)

    sums, _ = _group_sums(codes, len(names), vectors)
    nearest, _ = nearest_in_group(vectors, np.where(np.isin(codes, compared), codes, -1), codes, graph,
                                  search_missing=graph[0].shape[1] == 0)
    if graph[0].shape[1]:  # no sample of the class among the graph's neighbours: at least as far as the last one
        nearest = np.where(np.isnan(nearest), graph[0][:, -1], nearest)
    table = []
    rng = np.random.default_rng(seed)
    for code in compared:
        members = np.flatnonzero(codes == code)
        nn = nearest[members]
        sample = members if members.size <= LOOKS_SAMPLE else np.sort(rng.choice(members, LOOKS_SAMPLE, replace=False))
        table.append({
            "class": names[code], "samples": int(sizes[code]),
            "contexts": effective_number(histogram[code]),
            "looks": distinct_subclusters(vectors[sample], seed=seed),
            "spread": float(1.0 - np.linalg.norm(sums[code]) / sizes[code]),
            "nn_distance": float(np.median(1.0 - nn[np.isfinite(nn)])) if np.isfinite(nn).any() else None,
        })
    ranked = ("contexts", "spread", "looks")
    ratios = {m: _ratio_to_median(np.array([row[m] for row in table])) for m in ranked}
    diversity = np.exp(np.mean([np.log(np.maximum(ratios[m], 1e-6)) for m in ranked], axis=0))
    z = robust_z(np.log(diversity))
    comparable = compared.size >= MIN_CLASSES_COMPARED
    groups: list[list[str]] = []
    reasons: dict[int, dict[str, Any]] = {}
    for i, (code, row) in enumerate(zip(compared, table, strict=True)):
        row.update({f"{m}_ratio": float(ratios[m][i]) for m in ratios})
        row.update(diversity=float(diversity[i]), z=float(z[i]) if np.isfinite(z[i]) else None,
                   low_diversity=bool(comparable and diversity[i] <= LOW_DIVERSITY))
        order = np.argsort(-histogram[code], kind="stable")
        cover = np.cumsum(histogram[code][order]) / sizes[code]
        dominant = order[: int(np.searchsorted(cover, DOMINANT_SHARE)) + 1]
        row["dominant_contexts"] = [int(c) for c in dominant]
        if row["low_diversity"]:
            members = np.flatnonzero((codes == code) & np.isin(context, dominant))
            _flag(members, 1.0 - diversity[i], flagged, scores, reasons, {
                "reason": "low_diversity_class", "note": f"class {names[code]} is seen in few contexts "
                f"(diversity {diversity[i]:.2f} of the median class)"})
            groups += [ids[np.flatnonzero((codes == code) & (context == c))[:EXAMPLES]].tolist() for c in dominant]

    dominated = _dominated_contexts(ids, codes, names, context, histogram, sizes, usable, properties, columns)
    distinctive = [entry for entry in dominated if entry["trait"] and entry["trait"]["distinctive"]]
    for entry in distinctive:
        trait = entry["trait"]
        members = np.flatnonzero((codes == names.index(entry["class"])) & (context == entry["context"]))
        score = float(z_score_to_unit(np.array([abs(trait["effect_vs_others"])]), DISTINCTIVE_EFFECT)[0])
        _flag(members, score, flagged, scores, reasons, {
            "reason": "distinctive_context", "note": f"context {entry['context']} is {entry['purity']:.0%} "
            f"{entry['class']} and holds {entry['class_share']:.0%} of it; its {trait['property']} is "
            f"{'higher' if trait['effect_size'] > 0 else 'lower'} than in the rest of the class and the data "
            f"(d = {trait['effect_size']:.1f} and {trait['effect_vs_others']:.1f})"})
        groups.append(entry["examples"])

    details = {str(ids[r]): {"label": names[codes[r]], "context": int(context[r]), **reasons[r]}
               for r in np.flatnonzero(flagged)}
    table.sort(key=lambda row: row["diversity"])
    severity = _diversity_severity(table if comparable else [], distinctive)
    return Finding(
        check="diversity", severity=severity,
        message=_diversity_message(table, comparable, distinctive, dominated, bool(columns)),
        sample_ids=ids, flagged=flagged, scores=scores,
        summary={"contexts": k, "classes": len(table), "low_diversity_classes": sum(r["low_diversity"] for r in table),
                 "least_diverse": str(table[0]["class"]), "min_diversity": round(table[0]["diversity"], 4),
                 "dominated_contexts": len(dominated), "distinctive_contexts": len(distinctive)},
        evidence={"classes": _rounded(table), "dominated_contexts": _rounded(dominated),
                  "groups": groups[:MAX_GROUPS]},
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
    sizes: np.ndarray, usable: np.ndarray, properties: np.ndarray | None, columns: list[str],
) -> list[dict[str, Any]]:
    """Contexts where one class is >= DOMINANCE of the labeled members and that hold a large share of that class."""
    labeled_in_context = histogram.sum(axis=0)
    top_class = histogram.argmax(axis=0)
    purity = np.divide(histogram.max(axis=0), labeled_in_context, out=np.zeros(histogram.shape[1]),
                       where=labeled_in_context > 0)
    class_share = np.divide(histogram.max(axis=0), sizes[top_class], out=np.zeros(histogram.shape[1]),
                            where=sizes[top_class] > 0)
    chosen = np.flatnonzero((purity >= DOMINANCE) & (class_share >= MIN_CLASS_SHARE)
                            & (class_share <= 1.0 - MIN_SHARE_ELSEWHERE) & (sizes[top_class] >= MIN_CLASS_SIZE))
    entries = []
    for c in chosen[np.argsort(-class_share[chosen], kind="stable")]:
        code = top_class[c]
        inside = (codes == code) & (context == c)
        rest = (codes == code) & (context != c) & (context >= 0)
        trait = None
        if properties is not None and columns:
            trait = _trait(properties, columns, inside, rest, usable & (context != c))
        entries.append({"context": int(c), "class": names[code], "size": int(np.sum(context == c)),
                        "purity": float(purity[c]), "class_share": float(class_share[c]), "trait": trait,
                        "examples": ids[np.flatnonzero(inside)[:EXAMPLES]].tolist()})
    return entries


def _trait(properties: np.ndarray, columns: list[str], inside: np.ndarray, rest: np.ndarray,
           outside: np.ndarray) -> dict[str, Any] | None:
    """The property that sets a context's members apart from the rest of their class (and from the data).

    Among properties that differ from the rest of the class by a large effect (|d| >= 0.8) and from all
    samples outside the context in the same direction, the one most different from the latter; without
    such a property, the one most different from the rest of the class (then not distinctive).
    """
    versus_class = property_effect_sizes(properties[inside], properties[rest])
    if not np.isfinite(versus_class).any():
        return None
    versus_others = property_effect_sizes(properties[inside], properties[outside])
    candidate = (np.abs(versus_class) >= LARGE_EFFECT) & (np.sign(versus_class) == np.sign(versus_others))
    if candidate.any():
        best = int(np.nanargmax(np.where(candidate, np.abs(versus_others), -np.inf)))
    else:
        best = int(np.nanargmax(np.abs(versus_class)))
    distinctive = bool(candidate[best] and abs(versus_others[best]) >= DISTINCTIVE_EFFECT)
    return {"property": columns[best], "effect_size": float(versus_class[best]),
            "effect_vs_others": float(versus_others[best]) if np.isfinite(versus_others[best]) else None,
            "mean_inside": float(np.nanmean(properties[inside, best])),
            "mean_rest": float(np.nanmean(properties[rest, best])), "distinctive": distinctive}


def _diversity_severity(table: list[dict[str, Any]], distinctive: list[dict[str, Any]]) -> str:
    lowest = min((row["diversity"] for row in table), default=1.0)
    if lowest <= VERY_LOW_DIVERSITY:
        return "high"
    if lowest <= LOW_DIVERSITY:
        return "medium"
    return "low" if distinctive else "none"


def _diversity_message(table: list[dict[str, Any]], comparable: bool, distinctive: list[dict[str, Any]],
                       dominated: list[dict[str, Any]], has_properties: bool) -> str:
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
        parts.append(f"fewer than {MIN_CLASSES_COMPARED} classes with {MIN_CLASS_SIZE}+ samples: diversity is "
                     "relative to the other classes, so it is not judged")
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
    has_splits: bool,
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
    similarity, nearest = nearest_in_group(vectors, wanted, np.where(is_train, 0, -1), graph)
    distance = 1.0 - similarity
    threshold = float(np.quantile(distance[is_train & np.isfinite(distance)], COVERAGE_QUANTILE))
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
    severity = severity_from_share(share, low=COVERAGE_SHARES[0], medium=COVERAGE_SHARES[1], high=COVERAGE_SHARES[2])
    for row in by_class:
        if row["samples"] >= MIN_CLASS_SIZE:
            level = severity_from_share(row["share"], low=CLASS_COVERAGE_SHARES[0], medium=CLASS_COVERAGE_SHARES[1],
                                        high=CLASS_COVERAGE_SHARES[2])
            severity = max(severity, level, key=SEVERITIES.index)
    worst = max((row for row in by_class if row["samples"] >= MIN_CLASS_SIZE), key=lambda r: r["share"], default=None)
    if uncovered.any():
        message = (f"{int(uncovered.sum())} of {int(others.sum())} samples outside {train_split!r} ({share:.1%}) are "
                   f"farther from every training sample than {COVERAGE_QUANTILE:.0%} of training samples are from "
                   "their nearest neighbour (about 1% expected)")
        if worst is not None and worst["uncovered"]:
            message += f"; most in class {worst['name']!s} ({worst['share']:.0%} of its {worst['samples']})"
        if severity != "none":
            message += ": the model is evaluated on cases its training data does not show; add such training samples"
    else:
        message = f"the {train_split!r} split covers every other sample"
    train_distance = distance[is_train & np.isfinite(distance)]
    other_distance = distance[others & np.isfinite(distance)]
    return Finding(
        check="coverage", severity=severity, message=message, sample_ids=ids, flagged=flagged, scores=scores,
        summary={"train_split": train_split, "threshold": round(threshold, 6), "quantile": COVERAGE_QUANTILE,
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
