"""Near-duplicate pairs: candidates from :mod:`.candidates`, measured by :mod:`.registration`, accepted by
:mod:`.rules`.

With embeddings, the kNN graph's pairs within the widest embedding cut are tried by rules 1-3; where thumbnails
exist the registration vetoes rules 2 and 3 when the pixels disagree, and every sample's compared neighbours
are tried by rules 4-6. A fixed ``near_threshold`` replaces all of that. Without embeddings the perceptual
hashes alone decide.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from curato.checks.duplicates import rules
from curato.checks.duplicates.candidates import (
    Graph,
    NearPairs,
    candidate_pairs,
    distance_scale,
    embedding_graph,
    hash_neighbour_pairs,
)
from curato.checks.duplicates.params import DuplicateParams
from curato.checks.duplicates.registration import (
    better_direction_distance,
    compare_neighbours,
    has_picture,
    residual_shares,
    second_look_distances,
)
from curato.features.properties import hamming_distance


def near_pairs_from_embeddings(
    embeddings: np.ndarray,
    hashes: np.ndarray | None,
    usable: np.ndarray,
    near_threshold: float | None,
    k: int,
    neighbours: tuple[np.ndarray, np.ndarray] | None,
    exact_limit: int,
    grey: np.ndarray | None,
    second_look: Callable[[np.ndarray], np.ndarray] | None,
    params: DuplicateParams,
) -> NearPairs:
    """Candidate pairs from the kNN graph, accepted by the rules (see the module docstring)."""
    n = len(usable)
    graph = embedding_graph(embeddings, usable, k, neighbours, exact_limit)
    if graph is None:
        return NearPairs.empty()
    scale = distance_scale(graph, params.zero_distance)
    if near_threshold is not None:
        widest = 1.0 - near_threshold
    else:
        widest = max(params.alone_ratio * scale, params.phash_confirm_ratio * scale, params.distinct_ratio * scale)
    found = candidate_pairs(graph, widest, n, params.zero_distance)
    a, b, distance = found.a, found.b, found.distance
    if a.size == 0:
        return NearPairs(a, b, found.similarity.astype(float), scale)
    if near_threshold is not None:
        accept = rules.fixed_threshold(distance, near_threshold)
        return NearPairs(a[accept], b[accept], np.clip(found.similarity[accept], 0.0, 1.0).astype(float), scale)

    alone = rules.embedding_alone(distance, scale, params)
    bits = None if hashes is None else hamming_distance(hashes[a], hashes[b])
    accept = alone | rules.distinct_pair(distance, found.gap, bits, scale, params)
    if bits is not None:
        accept |= rules.phash_confirmed(distance, bits, scale, params)
    if grey is None:
        return NearPairs(a[accept], b[accept], np.clip(found.similarity[accept], 0.0, 1.0).astype(float), scale)

    # Rules 2 and 3 are overruled when the registered thumbnails say "different pictures".
    checked = np.flatnonzero(accept & ~alone)
    pictured = has_picture(grey)
    checked = checked[pictured[a[checked]] & pictured[b[checked]]]
    if checked.size:
        t = better_direction_distance(grey, a[checked], b[checked])
        accept[checked[rules.registration_veto(t, params)]] = False
    first, second = _registered_pairs(grey, graph, scale, second_look, params)
    a, b = np.r_[a[accept], first], np.r_[b[accept], second]
    low, high = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(np.stack([low, high], axis=1), axis=0)
    similarity = np.sum(graph.vectors[pairs[:, 0]] * graph.vectors[pairs[:, 1]], axis=1)
    return NearPairs(pairs[:, 0], pairs[:, 1], np.clip(similarity, 0.0, 1.0).astype(float), scale)


def _registered_pairs(grey: np.ndarray, graph: Graph, scale: float,
                      second_look: Callable[[np.ndarray], np.ndarray] | None,
                      params: DuplicateParams) -> tuple[np.ndarray, np.ndarray]:
    """Rules 4-6 over every sample's compared neighbours: the accepted entries' sample indices."""
    compared = compare_neighbours(grey, graph, params)
    t, other, distance = compared.t, compared.other, compared.distance
    accept = (rules.registered(t, other, distance, scale, params)
              | rules.registered_tight(t, other, distance, scale, params)
              | rules.registered_loose(t, other, distance, scale, params))
    unsure = np.flatnonzero(~accept & rules.fine_residual_candidates(t, other, distance, scale, params))
    if unsure.size:
        share = residual_shares(grey, compared.first[unsure], compared.second[unsure])
        accept[unsure] = rules.fine_residual(share, params)
    if second_look is not None:
        doubtful = np.flatnonzero(~accept & rules.second_look_candidates(t, other, distance, scale, params))
        if doubtful.size:
            finer = second_look_distances(second_look, compared.first[doubtful], compared.second[doubtful],
                                          params.second_look_block)
            accept[doubtful] = rules.second_look(finer, other[doubtful], params)
    return compared.first[accept], compared.second[accept]


def near_pairs_from_phashes(hashes: np.ndarray, usable: np.ndarray, k: int, params: DuplicateParams) -> NearPairs:
    """Without embeddings: pairs among each hash's ``k`` nearest hashes that :func:`.rules.phash_only` accepts."""
    pairs = hash_neighbour_pairs(hashes, usable, k)
    bits = hamming_distance(hashes[pairs[:, 0]], hashes[pairs[:, 1]])
    keep = rules.phash_only(bits, params)
    return NearPairs(pairs[keep, 0], pairs[keep, 1], 1.0 - bits[keep] / 64.0, None)
