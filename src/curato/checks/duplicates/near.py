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
    known_hash: np.ndarray,
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
        return NearPairs(a[accept], b[accept], np.clip(found.similarity[accept], 0.0, 1.0).astype(float), scale,
                         np.full(int(accept.sum()), rules.rule_code("fixed_threshold")),
                         {"distance": distance[accept]})

    # An unknown hash (never computed) is no value: a pair with one takes no part in the hash tests.
    hashed = known_hash[a] & known_hash[b]
    bits = None if hashes is None else np.where(hashed, hamming_distance(hashes[a], hashes[b]), 0)
    alone = rules.embedding_alone(distance, scale, params)
    confirmed = (np.zeros(a.size, dtype=bool) if bits is None
                 else rules.phash_confirmed(distance, bits, scale, params) & hashed)
    distinct = rules.distinct_pair(distance, found.gap, None, scale, params)
    if bits is not None:
        distinct &= ~hashed | (bits <= params.distinct_max_bits)
    accept = alone | confirmed | distinct
    rule = _first_rule((alone, "embedding_alone"), (confirmed, "phash_confirmed"), (distinct, "distinct_pair"))
    measures = {"distance": distance, "gap": found.gap, "registered_distance": np.full(a.size, np.nan)}
    if bits is not None:
        measures["phash_bits"] = np.where(hashed, bits, np.nan).astype(np.float64)
    if grey is None:
        return NearPairs(a[accept], b[accept], np.clip(found.similarity[accept], 0.0, 1.0).astype(float), scale,
                         rule[accept], {name: values[accept] for name, values in measures.items()})

    # Rules 2 and 3 are overruled when the registered thumbnails say "different pictures".
    checked = np.flatnonzero(accept & ~alone)
    pictured = has_picture(grey)
    checked = checked[pictured[a[checked]] & pictured[b[checked]]]
    if checked.size:
        t = better_direction_distance(grey, a[checked], b[checked])
        measures["registered_distance"][checked] = t
        accept[checked[rules.registration_veto(t, params)]] = False
    registered = _registered_pairs(grey, graph, scale, second_look, params)
    # One entry per unordered pair: the first rule (of RULES) that accepted it, with what that rule measured.
    a, b = np.r_[a[accept], registered.first], np.r_[b[accept], registered.second]
    rule = np.r_[rule[accept], registered.rule]
    kept, added = int(accept.sum()), registered.first.size
    values = {name: np.r_[measures[name][accept] if name in measures else np.full(kept, np.nan),
                          registered.measures.get(name, np.full(added, np.nan))]
              for name in sorted(set(measures) | set(registered.measures))}
    low, high = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((rule, high, low))
    low, high = low[order], high[order]
    head = np.ones(low.size, dtype=bool)
    head[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
    chosen = order[head]
    first, second = low[head], high[head]
    similarity = np.sum(graph.vectors[first] * graph.vectors[second], axis=1)
    return NearPairs(first, second, np.clip(similarity, 0.0, 1.0).astype(float), scale, rule[chosen],
                     {name: column[chosen] for name, column in values.items()})


def _first_rule(*tried: tuple[np.ndarray, str]) -> np.ndarray:
    """Per pair, the code of the first rule whose mask accepts it (-1 where none does)."""
    rule = np.full(tried[0][0].size, -1, dtype=np.int64)
    for accepted, name in reversed(tried):
        rule[accepted] = rules.rule_code(name)
    return rule


def _registered_pairs(grey: np.ndarray, graph: Graph, scale: float,
                      second_look: Callable[[np.ndarray], np.ndarray] | None,
                      params: DuplicateParams) -> NearPairs:
    """Rules 4-6 over every sample's compared neighbours: the accepted entries (a pair compared from both ends may
    appear twice), with their rule and distances (similarity and scale are not filled in)."""
    compared = compare_neighbours(grey, graph, params, scale)
    t, other, distance = compared.t, compared.other, compared.distance
    close = rules.registered(t, other, distance, scale, params)
    tight = rules.registered_tight(t, other, distance, scale, params)
    loose = rules.registered_loose(t, other, distance, scale, params)
    accept = close | tight | loose
    rule = _first_rule((close, "registered"), (tight, "registered_tight"), (loose, "registered_loose"))
    measures = {"distance": distance, "registered_distance": t, "other_registered_distance": other,
                "residual_low_share": np.full(t.size, np.nan), "second_look_distance": np.full(t.size, np.nan)}
    unsure = np.flatnonzero(~accept & rules.fine_residual_candidates(t, other, distance, scale, params))
    if unsure.size:
        share = residual_shares(grey, compared.first[unsure], compared.second[unsure])
        measures["residual_low_share"][unsure] = share
        accept[unsure] = rules.fine_residual(share, params)
        rule[unsure[accept[unsure]]] = rules.rule_code("fine_residual")
    if second_look is not None:
        doubtful = np.flatnonzero(~accept & rules.second_look_candidates(t, other, distance, scale, params))
        if doubtful.size:
            finer = second_look_distances(second_look, compared.first[doubtful], compared.second[doubtful],
                                          params.second_look_block)
            measures["second_look_distance"][doubtful] = finer
            accept[doubtful] = rules.second_look(finer, other[doubtful], params)
            rule[doubtful[accept[doubtful]]] = rules.rule_code("second_look")
    return NearPairs(compared.first[accept], compared.second[accept], np.empty(0), scale, rule[accept],
                     {name: values[accept] for name, values in measures.items()})


def near_pairs_from_phashes(hashes: np.ndarray, usable: np.ndarray, k: int, params: DuplicateParams) -> NearPairs:
    """Without embeddings: pairs among each hash's ``k`` nearest hashes that :func:`.rules.phash_only` accepts
    (``usable`` must leave out the rows whose hash is unknown)."""
    pairs = hash_neighbour_pairs(hashes, usable, k)
    bits = hamming_distance(hashes[pairs[:, 0]], hashes[pairs[:, 1]])
    keep = rules.phash_only(bits, params)
    return NearPairs(pairs[keep, 0], pairs[keep, 1], 1.0 - bits[keep] / 64.0, None,
                     np.full(int(keep.sum()), rules.rule_code("phash_only")),
                     {"phash_bits": bits[keep].astype(np.float64)})
