"""Rules 4-6 register only the pairs whose registered distance can change a decision: the same decisions as
registering every compared pair."""

from __future__ import annotations

import numpy as np

from curato.checks.duplicates import DuplicateParams, rules
from curato.checks.duplicates.candidates import distance_scale, embedding_graph
from curato.checks.duplicates.registration import compare_neighbours


def test_every_registration_rule_needs_what_the_pruning_keeps() -> None:
    rng = np.random.default_rng(0)
    params, scale = DuplicateParams(), 0.12
    t = rng.uniform(0, 0.12, 200_000)
    other = rng.uniform(0, 0.5, 200_000)
    distance = rng.uniform(0, 6 * scale, 200_000)
    may = rules.registration_may_pass(t, distance, scale, params)
    reach = rules.registration_reach(distance, scale, params)
    assert not (may & ~reach).any()
    for rule in (rules.registered, rules.registered_tight, rules.registered_loose, rules.fine_residual_candidates,
                 rules.second_look_candidates):
        passed = rule(t, other, distance, scale, params)
        assert passed.any() and not (passed & ~may).any(), rule.__name__


def test_pruned_comparisons_decide_like_registering_every_pair(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = fashion_mnist
    pictures = images[:1500].astype(np.float32)
    # Planted copies: shifted by a pixel, and brightened, so that rules 4-6 have pairs to accept.
    pictures = np.concatenate([pictures, np.roll(pictures[:40], 1, axis=2), pictures[40:80] * 0.8 + 20])
    grey = pictures[:, 2:26, 2:26]
    # The raw pixels as embeddings: near for copies, far for most thumbnail-neighbour pairs.
    vectors = pictures.reshape(len(pictures), -1)
    params = DuplicateParams()
    graph = embedding_graph(vectors, np.ones(len(vectors), dtype=bool), 10, None, exact_limit=10_000)
    scale = distance_scale(graph, params.zero_distance)
    full = compare_neighbours(grey, graph, params)
    pruned = compare_neighbours(grey, graph, params, scale)
    assert np.array_equal(full.first, pruned.first) and np.array_equal(full.second, pruned.second)
    skipped = np.isinf(pruned.t) & np.isfinite(full.t)
    assert skipped.any()  # something was left out ...
    for rule in (rules.registered, rules.registered_tight, rules.registered_loose, rules.fine_residual_candidates,
                 rules.second_look_candidates):  # ... and every decision is the same
        before = rule(full.t, full.other, full.distance, scale, params)
        after = rule(pruned.t, pruned.other, pruned.distance, scale, params)
        assert np.array_equal(before, after), rule.__name__
    decided = rules.registration_may_pass(full.t, full.distance, scale, params)
    assert decided.any()
    assert np.allclose(full.t[decided], pruned.t[decided], atol=1e-6)
    assert np.allclose(full.other[decided], pruned.other[decided], atol=1e-6)
