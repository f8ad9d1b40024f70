"""Query strategies: which unlabelled rows should people label next?

Every strategy is a pure function over arrays. :func:`select_batch` validates the inputs and dispatches
by name (the registry: ``register_strategy``, ``available_strategies``, the ``curato.strategies`` entry
points); it returns a :class:`Selection`: row indices in pick order, a score per pick (higher = wanted more,
comparable within one strategy) and a one-line reason per pick.

Inputs (keyword-only, all row-aligned, ``n`` rows):

* ``labeled``: boolean mask of rows that already have a label (never picked again);
* ``pred_probs``: ``(n, k)`` class probabilities of the current head (uncertainty strategies, BADGE);
* ``ensemble_probs``: ``(heads, n, k)`` from a bootstrap ensemble (vote entropy, mean KL) or MC-dropout
  samples (BALD), see :mod:`curato.active.heads`;
* ``features``: ``(n, d)`` vectors for the diversity and cold-start strategies, e.g.
  :func:`diversity_features` of the embeddings.

Strategies (see docs/internals/active-tuning.md for the sources):

* uncertainty: ``least-confidence``, ``margin``, ``entropy``; class-balanced variants
  (``margin-balanced`` ...) deal the picks round-robin over the predicted classes;
* ensemble disagreement: ``vote-entropy``, ``mean-kl``; ``bald`` (mutual information of MC-dropout samples);
* diversity: ``coreset`` (k-center greedy), ``badge`` (k-means++ seeding over gradient embeddings),
  ``cluster-margin`` (lowest-margin pool dealt round-robin over k-means clusters, smallest first);
* cold start: ``typiclust`` (most typical row of the largest uncovered k-means clusters), ``probcover``
  (greedy max coverage of balls whose radius keeps ``PROBCOVER_PURITY`` of balls pure);
* ``uncertainty-herding``: greedy uncertainty-weighted kernel coverage (Bae et al. 2025); without a head, plain
  kernel herding, a cold-start rule;
* ``random``, and ``auto``: the cold-start strategy ``AUTO_COLD_STRATEGY`` while the labelled set is small
  (fewer than ``AUTO_SWITCH_PER_CLASS`` labels per class), then ``AUTO_WARM_STRATEGY`` below
  ``AUTO_DIVERSE_PER_CLASS`` labels per class (by default no such phase: the two are equal), then
  ``AUTO_DIVERSE_STRATEGY``; by default uncertainty herding in every phase, chosen by measurement (see the
  constants).

Strategies that need a head take its probabilities as ``pred_probs``; callers fit the active-learning head
(:func:`curato.active.heads.head_probabilities`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from curato.errors import InputError
from curato.neighbors import knn, set_threads, unit_rows
from curato.plugins import load_entry_points

# Bump when a strategy picks differently for the same input, or the active-learning head changes: resumed
# simulations do not mix rule versions.
STRATEGIES_VERSION = 5
DIVERSITY_DIMENSIONS = 64
PCA_FIT_ROWS = 20_000
KMEANS_ITERATIONS = 15
# k-means clusters and kNN lists depend only on the feature matrix and ``structure_seed`` (not on the labels
# or the round), so the last POOL_CACHE_ENTRIES of them are kept: a selection loop over one pool clusters it
# once per cluster count instead of once per round (benchmarks/active_learning.py: TypiClust's selection
# time per seed 62.6 s -> 12.3 s, docs/benchmarks.md).
POOL_CACHE_ENTRIES = 8
# TypiClust (Hacohen et al. 2022): K = labelled + budget clusters, at most 500; typicality from 20 neighbours;
# clusters smaller than 5 rows come last.
TYPICLUST_MAX_CLUSTERS = 500
TYPICLUST_NEIGHBOURS = 20
TYPICLUST_MIN_CLUSTER = 5
# ProbCover (Yehuda et al. 2022): the ball radius is the largest one that keeps this share of balls pure
# (every row inside belongs to the centre's k-means cluster); balls are read from this many neighbours.
# The paper's 0.95 assumes self-supervised features; on generic embeddings it makes balls so small that the
# greedy cover piles up in the densest class (digits, 10 picks: 6.6 classes at 0.95, 8.8 at 0.8, random 6.8).
PROBCOVER_PURITY = 0.8
PROBCOVER_NEIGHBOURS = 50
# Cluster-margin (Citovsky et al. 2021): the lowest-margin POOL_FACTOR x budget rows, dealt over clusters. The
# paper's 10x spreads the picks over rows the head is already sure of: auto with cluster-margin from 40 labels per
# class (development split, seeds 10-19) reached 1.23 / 1.46 / 1.68 / 1.62 efficiency at 800 / 1,600 / 3,200 /
# 5,000 labels with 10x, 1.26 / 1.54 / 1.85 / 1.70 with 4x, 1.26 / 1.52 / 1.79 / 1.78 with 2x.
CLUSTER_MARGIN_POOL_FACTOR = 4
CLUSTER_MARGIN_MAX_CLUSTERS = 500
CLUSTER_MARGIN_ROWS_PER_CLUSTER = 20
# Uncertainty herding (Bae, Oliveira & Sutherland 2025): greedy maximisation of the uncertainty-weighted kernel
# coverage sum_x U(x) max_{s in labelled + picks} k(x, s), k Gaussian on the diversity features, truncated to each
# row's UHERDING_NEIGHBOURS nearest rows. The bandwidth is the median distance to the m-th nearest row, m = the
# pool rows per labelled-or-picked row (capped by the neighbour lists): the radius a pick must cover.
UHERDING_NEIGHBOURS = 100
UHERDING_BANDWIDTH = 1.0
UHERDING_LAZY = 33  # stale candidates re-scored per lazy-greedy pass
# auto: COLD below AUTO_SWITCH_PER_CLASS labels per class (or without a head), WARM below AUTO_DIVERSE_PER_CLASS (no
# WARM phase when the two are equal, as now), then DIVERSE. Chosen on the development split of
# benchmarks/active_learning.py (--split dev: a 20k pool and 5k test rows disjoint from the reported ones; seeds
# 10-19; each variant: --split dev --rule NAME=VALUE ...). Efficiency vs random at 200 / 400 / 800 / 1,600 / 3,200 /
# 5,000 labels: uncertainty herding throughout (now; without a head it is kernel herding, a cold start: 0.736 at
# 100 labels vs typiclust's 0.712) >2.00 / 1.60 / 1.46 / 1.62 / 1.74 / 1.73; typiclust below 10 per class, then
# uncertainty herding 1.60 / 1.89 / 1.45 / 1.62 / 1.78 / 1.63; typiclust below 20 per class, then uncertainty
# herding 1.47 / 1.41 / 1.52 / 1.64 / 1.83 / 1.76; typiclust below 20 per class, then cluster-margin (the previous
# rule) 1.47 / 1.33 / 1.30 / 1.53 / 1.85 / 1.78. The rule with the highest smallest efficiency over 200..5,000 and
# the highest AUC (0.815) was kept. Earlier rounds are in docs/internals/active-tuning.md.
AUTO_SWITCH_PER_CLASS = 20
AUTO_COLD_STRATEGY = "uncertainty-herding"
AUTO_WARM_STRATEGY = "margin"
AUTO_DIVERSE_PER_CLASS = 20
AUTO_DIVERSE_STRATEGY = "uncertainty-herding"


@dataclass(frozen=True)
class Selection:
    """The rows picked by one strategy, in pick order, with a score and a reason per pick."""

    strategy: str
    indices: np.ndarray
    scores: np.ndarray
    reasons: list[str] = field(default_factory=list)


@dataclass
class StrategyInputs:
    """What a query strategy sees: the budget, which rows are labelled and which may be picked, a generator
    for random draws, and the optional head probabilities / ensemble / diversity features (None when the
    caller has none: a strategy that needs one raises through ``probs`` / ``ensemble`` / ``vectors``)."""

    budget: int
    labeled: np.ndarray
    unlabeled: np.ndarray
    rng: np.random.Generator
    seed: int
    structure_seed: int
    pred_probs: np.ndarray | None
    ensemble_probs: np.ndarray | None
    features: np.ndarray | None
    n_classes: int | None

    def probs(self, strategy: str) -> np.ndarray:
        if self.pred_probs is None:
            raise InputError(f"strategy {strategy!r} needs pred_probs (a head trained on labelled rows); label a "
                             "first batch with a cold-start strategy (typiclust, probcover, random) first")
        return self.pred_probs

    def ensemble(self, strategy: str) -> np.ndarray:
        if self.ensemble_probs is None:
            raise InputError(f"strategy {strategy!r} needs ensemble_probs (heads, n, k) from "
                             "curato.active.heads; pass them or choose another strategy")
        return self.ensemble_probs

    def vectors(self, strategy: str) -> np.ndarray:
        if self.features is None:
            raise InputError(f"strategy {strategy!r} needs features (n, d), e.g. diversity_features(embeddings)")
        return self.features


Picks = tuple[np.ndarray, np.ndarray, list[str]]


def select_batch(strategy: str, *, budget: int, labeled: np.ndarray, pred_probs: np.ndarray | None = None,
                 ensemble_probs: np.ndarray | None = None, features: np.ndarray | None = None,
                 n_classes: int | None = None, seed: int = 0, selectable: np.ndarray | None = None,
                 structure_seed: int | None = None) -> Selection:
    """Pick ``budget`` distinct unlabelled rows with ``strategy`` (a registered name, see ``available_strategies``).

    ``selectable`` (default: every unlabelled row) restricts the picks further, e.g. to keep test rows out of
    a simulation; rows that are neither labelled nor selectable count as neither covered nor pickable.
    ``seed`` drives the random draws and tie-breaks; ``structure_seed`` (default ``seed``) the k-means clusters
    and kNN lists of the features, which are cached per feature matrix: a loop that keeps ``structure_seed``
    fixed over its rounds reuses them.

    Raises ``InputError`` naming the argument at fault: unknown strategy, a budget larger than the
    unlabelled rows, shapes that do not match, or an input the strategy needs but did not get.
    """
    spec = strategy_spec(strategy)
    mask = np.asarray(labeled)
    if mask.ndim != 1 or mask.dtype != bool:
        raise InputError(f"labeled must be a 1-D boolean mask, got {mask.dtype} of shape {mask.shape}")
    n = len(mask)
    allowed = ~mask if selectable is None else np.asarray(selectable, dtype=bool) & ~mask
    if allowed.shape != mask.shape:
        raise InputError(f"selectable must have shape {mask.shape} like labeled, got {allowed.shape}")
    unlabeled = np.flatnonzero(allowed)
    if int(budget) < 1:
        raise InputError(f"--budget must be at least 1, not {budget}")
    if int(budget) > len(unlabeled):
        raise InputError(f"--budget {budget}: only {len(unlabeled)} unlabelled samples are left; lower the budget")
    probs = _checked(pred_probs, "pred_probs", (n, None))
    ensemble = None if ensemble_probs is None else np.asarray(ensemble_probs, dtype=np.float64)
    if ensemble is not None and (ensemble.ndim != 3 or ensemble.shape[1] != n):
        raise InputError(f"ensemble_probs must have shape (heads, {n}, k), got {ensemble.shape}")
    vectors = _checked(features, "features", (n, None))
    if n_classes is None:
        n_classes = probs.shape[1] if probs is not None else ensemble.shape[2] if ensemble is not None else None
    inputs = StrategyInputs(budget=int(budget), labeled=mask, unlabeled=unlabeled, rng=np.random.default_rng(seed),
                     seed=seed, structure_seed=seed if structure_seed is None else int(structure_seed),
                     pred_probs=probs, ensemble_probs=ensemble,
                     features=None if vectors is None else vectors.astype(np.float32), n_classes=n_classes)
    indices, scores, reasons = spec.pick(inputs)
    return Selection(strategy, np.asarray(indices, dtype=np.int64), np.asarray(scores, dtype=np.float64), reasons)


def _checked(array: np.ndarray | None, name: str, shape: tuple[int, int | None]) -> np.ndarray | None:
    if array is None:
        return None
    values = np.asarray(array, dtype=np.float64 if name == "pred_probs" else np.float32)
    if values.ndim != 2 or values.shape[0] != shape[0]:
        raise InputError(f"{name} must have shape ({shape[0]}, ...) like labeled, got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise InputError(f"{name} contains NaN or infinite values")
    return values


# -- scores -----------------------------------------------------------------------------------------


def margin_scores(pred_probs: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)`` per row: 1 when the two likeliest classes tie."""
    top_two = np.partition(pred_probs, -2, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def least_confidence_scores(pred_probs: np.ndarray) -> np.ndarray:
    """``1 - p_top1`` per row."""
    return 1.0 - pred_probs.max(axis=1)


def entropy_scores(pred_probs: np.ndarray) -> np.ndarray:
    """Entropy of the predicted distribution divided by ``log k`` (0..1)."""
    p = np.clip(pred_probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(max(pred_probs.shape[1], 2))


def vote_entropy_scores(ensemble_probs: np.ndarray) -> np.ndarray:
    """Entropy of the heads' top-1 votes divided by ``log k`` (0 when all heads agree)."""
    heads, n, k = ensemble_probs.shape
    votes = ensemble_probs.argmax(axis=2)  # (heads, n)
    counts = np.zeros((n, k))
    np.add.at(counts, (np.broadcast_to(np.arange(n), votes.shape), votes), 1.0)
    return entropy_scores(counts / heads)


def mean_kl_scores(ensemble_probs: np.ndarray) -> np.ndarray:
    """Mean over heads of ``KL(p_head || p_mean)`` (McCallum & Nigam's KL-to-the-mean disagreement)."""
    p = np.clip(ensemble_probs, 1e-12, 1.0)
    mean = p.mean(axis=0)
    return (p * (np.log(p) - np.log(mean)[None])).sum(axis=2).mean(axis=0)


def bald_scores(sampled_probs: np.ndarray) -> np.ndarray:
    """Mutual information between the label and the weights (Houlsby et al. 2011): entropy of the mean
    prediction minus the mean entropy of the samples (MC-dropout passes or ensemble heads), in nats."""
    p = np.clip(sampled_probs, 1e-12, 1.0)
    mean = p.mean(axis=0)
    return -(mean * np.log(mean)).sum(axis=1) + (p * np.log(p)).sum(axis=2).mean(axis=0)


# -- helpers ----------------------------------------------------------------------------------------


def top_scores(candidates: np.ndarray, scores: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """The ``budget`` candidates with the highest scores, best first; ties broken at random."""
    if budget < len(candidates):
        # argpartition keeps this linear for a million rows; the random tie-break only reorders equals.
        cut = np.partition(scores, len(scores) - budget)[len(scores) - budget]
        keep = np.flatnonzero(scores >= cut)
        candidates, scores = candidates[keep], scores[keep]
    order = np.lexsort((rng.random(len(candidates)), -scores))[:budget]
    return candidates[order]


def round_robin(candidates: np.ndarray, groups: np.ndarray, priority: np.ndarray, budget: int,
                group_rank: np.ndarray | None = None) -> np.ndarray:
    """Deal ``budget`` picks over groups: the best of every group (highest ``priority``), then the second
    best, and so on; within one pass groups come in ``group_rank`` order (ascending; default group id)."""
    order = np.lexsort((-priority, groups))
    sorted_groups = groups[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    starts = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    depth = np.arange(len(order)) - starts
    rank = sorted_groups if group_rank is None else group_rank[sorted_groups]
    dealt = np.lexsort((rank, depth))[:budget]
    return candidates[order[dealt]]


def kmeans_assign(features: np.ndarray, n_clusters: int, *, seed: int) -> np.ndarray:
    """faiss k-means cluster id per row (Euclidean, ``KMEANS_ITERATIONS`` iterations)."""
    n_clusters = int(max(1, min(n_clusters, len(features))))
    if n_clusters == 1:
        return np.zeros(len(features), dtype=np.int64)
    set_threads()
    data = np.ascontiguousarray(features, dtype=np.float32)
    kmeans = faiss.Kmeans(data.shape[1], n_clusters, niter=KMEANS_ITERATIONS, seed=seed, min_points_per_centroid=1,
                          max_points_per_centroid=256)
    kmeans.train(data)
    return kmeans.index.search(data, 1)[1][:, 0].astype(np.int64)


_POOL_CACHE: OrderedDict[tuple, tuple[np.ndarray, ...]] = OrderedDict()


def _pool_cached(kind: str, features: np.ndarray, parameters: tuple[int, int],
                 compute: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """``compute()`` once per (kind, feature matrix, parameter); the matrix is keyed by a digest of its bytes,
    so an edited matrix never reuses a stale result."""
    data = np.ascontiguousarray(features, dtype=np.float32)
    key = (kind, data.shape, hashlib.blake2b(data.view(np.uint8), digest_size=16).hexdigest(), parameters)
    if key in _POOL_CACHE:
        _POOL_CACHE.move_to_end(key)
        return _POOL_CACHE[key]
    value = tuple(np.asarray(array) for array in compute())
    for array in value:
        array.setflags(write=False)
    _POOL_CACHE[key] = value
    while len(_POOL_CACHE) > POOL_CACHE_ENTRIES:
        _POOL_CACHE.popitem(last=False)
    return value


def pool_clusters(features: np.ndarray, n_clusters: int, *, seed: int) -> np.ndarray:
    """:func:`kmeans_assign`, cached per feature matrix, cluster count and seed (read-only result)."""
    return _pool_cached("kmeans", features, (n_clusters, seed),
                        lambda: (kmeans_assign(features, n_clusters, seed=seed),))[0]


def pool_neighbours(features: np.ndarray, k: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`curato.neighbors.knn` of every row (similarities, indices), cached per feature matrix, ``k`` and
    seed (read-only results)."""
    sims, idx = _pool_cached("knn", features, (k, seed), lambda: knn(features, k, seed=seed))
    return sims, idx


def diversity_features(embeddings: np.ndarray, *, dimensions: int = DIVERSITY_DIMENSIONS, seed: int = 0) -> np.ndarray:
    """Unit-length embeddings projected on their top ``dimensions`` principal axes (float32): the space
    where the diversity and cold-start strategies measure distances (cheap, and it drops noise axes)."""
    from sklearn.decomposition import PCA

    x = unit_rows(embeddings)
    if x.shape[1] <= dimensions:
        return x - x.mean(axis=0)
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= PCA_FIT_ROWS else x[np.sort(rng.choice(len(x), PCA_FIT_ROWS, replace=False))]
    pca = PCA(n_components=min(dimensions, len(sample)), svd_solver="randomized", random_state=seed).fit(sample)
    return pca.transform(x).astype(np.float32)


def k_center_greedy(features: np.ndarray, centers: np.ndarray, budget: int, *, rng: np.random.Generator,
                    candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Core-set selection (Sener & Savarese 2018): repeatedly pick the row farthest from every centre so far.

    ``centers`` is a boolean mask of rows that are centres already (labelled); with none, the first pick is
    random; ``candidates`` (default: every non-centre) are the rows that may be picked. Returns the picks
    and each pick's squared distance to its nearest earlier centre. One
    ``(n, d) @ (d,)`` product per pick updates every row's distance.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    squared = np.einsum("ij,ij->i", x, x)
    if centers.any():
        set_threads()
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x[centers])
        nearest = index.search(x, 1)[0][:, 0].astype(np.float32)
        nearest[centers] = -1.0
    else:
        nearest = np.full(len(x), np.inf, dtype=np.float32)
    if candidates is not None:
        nearest[~candidates] = -1.0  # never picked: min() keeps them at -1
    pickable = np.flatnonzero(~centers if candidates is None else candidates)
    picks = np.empty(budget, dtype=np.int64)
    distances = np.empty(budget)
    for step in range(budget):
        pick = int(rng.choice(pickable)) if step == 0 and not centers.any() else int(np.argmax(nearest))
        picks[step], distances[step] = pick, nearest[pick]
        to_pick = squared + squared[pick] - 2.0 * (x @ x[pick])
        np.minimum(nearest, np.maximum(to_pick, 0.0), out=nearest)
        nearest[pick] = -1.0
    return picks, distances


# -- strategies -------------------------------------------------------------------------------------


def _random(inputs: StrategyInputs) -> Picks:
    picks = inputs.rng.choice(inputs.unlabeled, size=inputs.budget, replace=False)
    return picks, np.zeros(len(picks)), ["random draw"] * len(picks)


def _uncertainty(score: Callable[[np.ndarray], np.ndarray], what: str, *, balanced: bool = False,
                 name: str = "") -> Callable[[StrategyInputs], Picks]:
    def strategy(inputs: StrategyInputs) -> Picks:
        probs = inputs.probs(name)[inputs.unlabeled]
        scores = score(probs)
        if balanced:
            local = round_robin(np.arange(len(scores)), probs.argmax(axis=1), scores + 1e-9 * inputs.rng.random(
                len(scores)), inputs.budget)
        else:
            local = top_scores(np.arange(len(scores)), scores, inputs.budget, inputs.rng)
        predicted = probs[local].argmax(axis=1)
        suffix = ", classes dealt evenly" if balanced else ""
        shown = 1.0 - scores[local] if what == "margin" else scores[local]
        reasons = [f"{what} {s:.3f} (predicted class {c}){suffix}" for s, c in zip(shown, predicted, strict=True)]
        return inputs.unlabeled[local], scores[local], reasons
    return strategy


def _ensemble(score: Callable[[np.ndarray], np.ndarray], what: str, name: str) -> Callable[[StrategyInputs], Picks]:
    def strategy(inputs: StrategyInputs) -> Picks:
        scores = score(inputs.ensemble(name)[:, inputs.unlabeled])
        local = top_scores(np.arange(len(scores)), scores, inputs.budget, inputs.rng)
        return inputs.unlabeled[local], scores[local], [f"{what} {s:.3f}" for s in scores[local]]
    return strategy


def _coreset(inputs: StrategyInputs) -> Picks:
    candidates = np.zeros(len(inputs.labeled), dtype=bool)
    candidates[inputs.unlabeled] = True
    picks, distances = k_center_greedy(inputs.vectors("coreset"), inputs.labeled, inputs.budget, rng=inputs.rng,
                                       candidates=candidates)
    scores = np.sqrt(np.maximum(distances, 0.0))
    reasons = [("first centre (random)" if not np.isfinite(s) else f"farthest from every labelled sample "
                f"(distance {s:.3f})") for s in scores]
    return picks, np.where(np.isfinite(scores), scores, 0.0), reasons


def _badge(inputs: StrategyInputs) -> Picks:
    """BADGE (Ash et al. 2020): k-means++ seeding over g_i = (p_i - onehot(argmax p_i)) (x) x_i.

    The outer products are never formed: ||g_i - g_j||^2 = |a_i|^2 |x_i|^2 + |a_j|^2 |x_j|^2 - 2 (a_i.a_j)(x_i.x_j).
    """
    probs = inputs.probs("badge")[inputs.unlabeled]
    x = inputs.vectors("badge")[inputs.unlabeled].astype(np.float64)
    a = probs.copy()
    a[np.arange(len(a)), probs.argmax(axis=1)] -= 1.0
    norms = np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", x, x)
    picks = np.empty(inputs.budget, dtype=np.int64)
    scores = np.empty(inputs.budget)
    nearest = np.full(len(a), np.inf)
    chosen = np.zeros(len(a), dtype=bool)
    for step in range(inputs.budget):
        if step == 0:
            pick = int(np.argmax(norms))
            scores[step] = np.sqrt(norms[pick])
        else:
            weights = np.where(chosen, 0.0, nearest)
            total = weights.sum()
            if total <= 0:  # every gradient coincides with a centre: draw among the rest at random
                pick = int(inputs.rng.choice(np.flatnonzero(~chosen)))
            else:
                pick = int(np.searchsorted(np.cumsum(weights), inputs.rng.random() * total, side="right"))
                pick = min(pick, len(a) - 1)
            scores[step] = np.sqrt(max(nearest[pick], 0.0))
        picks[step] = pick
        chosen[pick] = True
        distance = norms + norms[pick] - 2.0 * (a @ a[pick]) * (x @ x[pick])
        np.minimum(nearest, np.maximum(distance, 0.0), out=nearest)
    predicted = probs[picks].argmax(axis=1)
    reasons = [f"gradient embedding {s:.3f} from the batch so far (predicted class {c})"
               for s, c in zip(scores, predicted, strict=True)]
    reasons[0] = f"largest gradient embedding {scores[0]:.3f} (predicted class {predicted[0]})"
    return inputs.unlabeled[picks], scores, reasons


def _typiclust(inputs: StrategyInputs) -> Picks:
    """TypiClust (Hacohen et al. 2022): k-means into labelled + budget clusters (at most 500); the most typical
    row (inverse mean distance to its 20 nearest neighbours) of each cluster without labels, largest first."""
    x = inputs.vectors("typiclust")
    n_clusters = min(TYPICLUST_MAX_CLUSTERS, int(inputs.labeled.sum()) + inputs.budget, len(x))
    clusters = pool_clusters(x, n_clusters, seed=inputs.structure_seed)
    sims, _ = pool_neighbours(x, TYPICLUST_NEIGHBOURS, seed=inputs.structure_seed)
    distances = np.sqrt(np.maximum(2.0 - 2.0 * sims.astype(np.float64), 0.0))
    typicality = 1.0 / (distances.mean(axis=1) + 1e-9)
    sizes = np.bincount(clusters, minlength=n_clusters)
    covered = np.bincount(clusters[inputs.labeled], minlength=n_clusters)
    # Clusters without labels first, then by the labels they hold; large before small; tiny ones last.
    group_rank = np.empty(n_clusters, dtype=np.int64)
    group_rank[np.lexsort((-sizes, covered, sizes < TYPICLUST_MIN_CLUSTER))] = np.arange(n_clusters)
    candidates = inputs.unlabeled
    picks = round_robin(candidates, clusters[candidates], typicality[candidates], inputs.budget, group_rank)
    reasons = [f"most typical unlabelled sample of cluster {c} ({sizes[c]} samples, {covered[c]} labelled)"
               for c in clusters[picks]]
    return picks, typicality[picks], reasons


def _probcover(inputs: StrategyInputs) -> Picks:
    """ProbCover (Yehuda et al. 2022): greedy max coverage of delta-balls on the kNN graph.

    delta is the largest radius at which ``PROBCOVER_PURITY`` of the balls are pure: a row's ball is pure
    while it holds no row of another k-means cluster (k = the number of classes), so the radius is a
    quantile of each row's similarity to its nearest row of another cluster.
    """
    x = inputs.vectors("probcover")
    n = len(x)
    sims, idx = pool_neighbours(x, PROBCOVER_NEIGHBOURS, seed=inputs.structure_seed)
    clusters = pool_clusters(x, inputs.n_classes or 10, seed=inputs.structure_seed)
    foreign = np.where(clusters[idx] != clusters[:, None], sims, -np.inf).max(axis=1)
    # Pure at similarity threshold s when the nearest foreign row is below s; keep PURITY of rows pure.
    threshold = float(np.quantile(np.where(np.isfinite(foreign), foreign, -1.0), PROBCOVER_PURITY)) + 1e-6
    inside = (sims >= threshold) & (idx >= 0)
    source = np.concatenate([np.repeat(np.arange(n), inside.sum(axis=1)), idx[inside], np.arange(n)])
    target = np.concatenate([idx[inside], np.repeat(np.arange(n), inside.sum(axis=1)), np.arange(n)])
    edges = np.unique(source * n + target)
    source, target = edges // n, edges % n
    covered = np.zeros(n, dtype=bool)
    covered[target[inputs.labeled[source]]] = True
    live = ~covered[target]
    source, target = source[live], target[live]
    available = np.zeros(n, dtype=bool)
    available[inputs.unlabeled] = True
    picks, scores, reasons = [], [], []
    for _ in range(inputs.budget):
        degree = np.bincount(source, minlength=n).astype(np.float64)
        degree[~available] = -1.0
        pick = int(np.argmax(degree))
        if degree[pick] <= 0:
            break
        picks.append(pick)
        scores.append(degree[pick])
        reasons.append(f"covers {int(degree[pick])} samples no labelled sample covers (ball radius "
                       f"{np.sqrt(max(2 - 2 * threshold, 0)):.3f})")
        available[pick] = False
        covered[target[source == pick]] = True
        live = ~covered[target]
        source, target = source[live], target[live]
    if len(picks) < inputs.budget:  # every row is covered: the rest at random
        rest = inputs.rng.choice(np.flatnonzero(available), size=inputs.budget - len(picks), replace=False)
        picks.extend(rest.tolist())
        scores.extend([0.0] * len(rest))
        reasons.extend(["every sample is covered; random draw"] * len(rest))
    return np.array(picks, dtype=np.int64), np.array(scores), reasons


def _cluster_margin(inputs: StrategyInputs) -> Picks:
    """Cluster-margin (Citovsky et al. 2021): the lowest-margin ``CLUSTER_MARGIN_POOL_FACTOR x budget`` unlabelled
    rows, dealt round-robin over k-means clusters of all rows, clusters with fewest pool members first."""
    probs = inputs.probs("cluster-margin")
    x = inputs.vectors("cluster-margin")
    n_clusters = min(CLUSTER_MARGIN_MAX_CLUSTERS, max(2, len(x) // CLUSTER_MARGIN_ROWS_PER_CLUSTER))
    clusters = pool_clusters(x, n_clusters, seed=inputs.structure_seed)
    scores = margin_scores(probs[inputs.unlabeled])
    pool_size = min(len(scores), CLUSTER_MARGIN_POOL_FACTOR * inputs.budget)
    pool = top_scores(np.arange(len(scores)), scores, pool_size, inputs.rng)
    candidate_clusters = clusters[inputs.unlabeled[pool]]
    members = np.bincount(candidate_clusters, minlength=n_clusters)
    group_rank = np.empty(n_clusters, dtype=np.int64)
    group_rank[np.lexsort((inputs.rng.random(n_clusters), members))] = np.arange(n_clusters)
    local = round_robin(pool, candidate_clusters, scores[pool], inputs.budget, group_rank)
    reasons = [f"margin {1 - s:.3f}, one of the lowest in cluster {c}" for s, c in zip(
        scores[local], clusters[inputs.unlabeled[local]], strict=True)]
    return inputs.unlabeled[local], scores[local], reasons


def _uncertainty_herding(inputs: StrategyInputs) -> Picks:
    """Uncertainty herding: the pick that adds most uncertainty-weighted kernel coverage, one at a time.

    Coverage of row x is ``max k(x, s)`` over labelled and picked rows s (0 when none is among its neighbours);
    a candidate c gains ``sum over its neighbours x (and itself) of U(x) * max(0, k(x, c) - coverage(x))``, with
    ``U`` the margin score of the head (1 everywhere without a head: plain kernel herding, a cold-start rule).
    The gains only shrink as coverage grows, so a lazy greedy re-scores only the best stale candidates per pick.
    """
    x = inputs.vectors("uncertainty-herding")
    n = len(x)
    k = min(UHERDING_NEIGHBOURS, n - 1)
    sims, neighbours = pool_neighbours(x, k, seed=inputs.structure_seed)
    # n x (k + 1) tables held as float32 / int32 (about 0.8 GB at 1M rows, k = 100); gains are summed in float64.
    distance_sq = np.maximum(2.0 - 2.0 * sims.astype(np.float32), 0.0)
    share = int(np.clip(n // max(int(inputs.labeled.sum()) + inputs.budget, 1), 1, k))
    bandwidth = UHERDING_BANDWIDTH * float(np.median(np.sqrt(distance_sq[:, share - 1])))
    # Each row's neighbourhood includes itself at kernel 1; a missing neighbour (-1) becomes row 0 at kernel 0.
    valid = neighbours >= 0
    idx = np.empty((n, k + 1), dtype=np.int32)
    idx[:, 0] = np.arange(n)
    idx[:, 1:] = np.where(valid, neighbours, 0)
    kernel = np.empty((n, k + 1), dtype=np.float32)
    kernel[:, 0] = 1.0
    np.multiply(distance_sq, np.float32(-1.0 / (2.0 * max(bandwidth, 1e-6) ** 2)), out=distance_sq)
    np.exp(distance_sq, out=kernel[:, 1:])
    kernel[:, 1:][~valid] = 0.0
    del distance_sq, valid
    weight = np.ones(n) if inputs.pred_probs is None else margin_scores(inputs.pred_probs)
    coverage = np.zeros(n)
    labelled_rows = np.flatnonzero(inputs.labeled)
    if labelled_rows.size:
        np.maximum.at(coverage, idx[labelled_rows].ravel(), kernel[labelled_rows].ravel())
    available = np.zeros(n, dtype=bool)
    available[inputs.unlabeled] = True

    def gains(rows: np.ndarray) -> np.ndarray:
        near = idx[rows]
        return (weight[near] * np.maximum(kernel[rows].astype(np.float64) - coverage[near], 0.0)).sum(axis=1)

    stale = np.full(n, -np.inf)
    for start in range(0, inputs.unlabeled.size, 65_536):  # bounded float64 temporaries
        rows = inputs.unlabeled[start:start + 65_536]
        stale[rows] = gains(rows)
    picks, scores = [], []
    for _ in range(inputs.budget):
        while True:
            # The UHERDING_LAZY best stale gains are re-scored; the next stale gain bounds every other candidate's.
            if n > UHERDING_LAZY:
                order = np.argpartition(-stale, UHERDING_LAZY)
                top, bound = order[:UHERDING_LAZY], stale[order[UHERDING_LAZY]]
            else:
                top, bound = np.arange(n), -np.inf
            top = top[available[top]]
            fresh = gains(top)
            stale[top] = fresh
            best = int(top[np.argmax(fresh)])
            if fresh.max() >= bound:
                break
        picks.append(best)
        scores.append(float(stale[best]))
        available[best] = False
        stale[best] = -np.inf
        np.maximum.at(coverage, idx[best], kernel[best])
    picks_array = np.array(picks, dtype=np.int64)
    reasons = [f"adds {s:.2f} uncertainty-weighted coverage (kernel bandwidth {bandwidth:.3f})" for s in scores]
    return picks_array, np.array(scores), reasons


def auto_strategy(n_labeled: int, n_classes: int | None) -> str:
    """The strategy ``auto`` uses: ``AUTO_COLD_STRATEGY`` while there are fewer than ``AUTO_SWITCH_PER_CLASS``
    labels per class (or no head yet), then ``AUTO_WARM_STRATEGY``, from ``AUTO_DIVERSE_PER_CLASS`` per class
    ``AUTO_DIVERSE_STRATEGY`` (by default uncertainty herding throughout)."""
    if n_classes is None or n_labeled < AUTO_SWITCH_PER_CLASS * n_classes:
        return AUTO_COLD_STRATEGY
    if n_labeled < AUTO_DIVERSE_PER_CLASS * n_classes:
        return AUTO_WARM_STRATEGY
    return AUTO_DIVERSE_STRATEGY


def _auto(inputs: StrategyInputs) -> Picks:
    name = auto_strategy(int(inputs.labeled.sum()), inputs.n_classes if inputs.pred_probs is not None else None)
    picks, scores, reasons = strategy_spec(name).pick(inputs)
    return picks, scores, [f"auto -> {name}: {reason}" for reason in reasons]


ENTRY_POINT_GROUP = "curato.strategies"
ENSEMBLE_KINDS = ("bootstrap", "mc-dropout")


@dataclass(frozen=True)
class StrategySpec:
    """A query strategy: its pick function and what the caller must provide for it."""

    name: str
    pick: Callable[[StrategyInputs], Picks]  # -> (row indices in pick order, a score per pick, a reason per pick)
    ensemble: str | None = None  # "bootstrap" or "mc-dropout": the caller passes ensemble_probs built that way
    cold_start: bool = False  # works without a head (no labels yet)
    description: str = ""


_REGISTRY: dict[str, StrategySpec] = {}
_LOADED = False


def register_strategy(name: str, pick: Callable[[StrategyInputs], Picks], *, ensemble: str | None = None,
                      cold_start: bool = False, description: str = "", replace: bool = False) -> StrategySpec:
    """Make ``select_batch(name, ...)``, ``curato select --strategy NAME`` and ``simulate`` use ``pick``."""
    if ensemble is not None and ensemble not in ENSEMBLE_KINDS:
        raise ValueError(f"strategy {name}: ensemble must be one of {ENSEMBLE_KINDS} or None")
    if name in _REGISTRY and not replace and _REGISTRY[name].pick is not pick:
        raise ValueError(f"a strategy named {name!r} is registered already; pass replace=True to override it")
    spec = StrategySpec(name, pick, ensemble, cold_start, description)
    _REGISTRY[name] = spec
    return spec


def unregister_strategy(name: str) -> None:
    """Remove the strategy called ``name`` (e.g. one a notebook registered); unknown names raise ``KeyError``."""
    del _registry()[name]


def _add_loaded(name: str, loaded: Any) -> bool:
    if isinstance(loaded, StrategySpec):
        _REGISTRY[loaded.name] = loaded
        return True
    return False


def _registry() -> dict[str, StrategySpec]:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        load_entry_points(ENTRY_POINT_GROUP, _add_loaded)
    return _REGISTRY


def strategy_spec(name: str) -> StrategySpec:
    """The registered strategy ``name``; unknown names raise ``InputError`` listing the known ones."""
    known = _registry()
    if name not in known:
        raise InputError(f"--strategy {name!r} is unknown; choose one of {', '.join(known)}")
    return known[name]


register_strategy("auto", _auto, cold_start=True)
register_strategy("random", _random, cold_start=True)
register_strategy("least-confidence", _uncertainty(least_confidence_scores, "confidence gap", name="least-confidence"))
register_strategy("margin", _uncertainty(margin_scores, "margin", name="margin"))
register_strategy("entropy", _uncertainty(entropy_scores, "entropy", name="entropy"))
register_strategy("least-confidence-balanced", _uncertainty(least_confidence_scores, "confidence gap", balanced=True,
                                                           name="least-confidence-balanced"))
register_strategy("margin-balanced", _uncertainty(margin_scores, "margin", balanced=True, name="margin-balanced"))
register_strategy("entropy-balanced", _uncertainty(entropy_scores, "entropy", balanced=True, name="entropy-balanced"))
register_strategy("vote-entropy", _ensemble(vote_entropy_scores, "vote entropy of the ensemble", "vote-entropy"),
                  ensemble="bootstrap")
register_strategy("mean-kl", _ensemble(mean_kl_scores, "mean KL of the heads from their consensus", "mean-kl"),
                  ensemble="bootstrap")
register_strategy("bald", _ensemble(bald_scores, "BALD mutual information", "bald"), ensemble="mc-dropout")
register_strategy("coreset", _coreset, cold_start=True)
register_strategy("badge", _badge)
register_strategy("typiclust", _typiclust, cold_start=True)
register_strategy("probcover", _probcover, cold_start=True)
register_strategy("cluster-margin", _cluster_margin)
register_strategy("uncertainty-herding", _uncertainty_herding, cold_start=True)


def available_strategies() -> list[str]:
    """Names accepted by :func:`select_batch`, built-ins first."""
    return list(_registry())
