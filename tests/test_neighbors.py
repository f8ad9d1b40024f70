"""faiss kNN wrappers: exact and IVF search, self-exclusion, candidate pairs."""

from __future__ import annotations

import numpy as np
import pytest

from curato.errors import InputError
from curato.neighbors import ivf_parameters, knn, pairs_above, unit_rows


def clustered(n: int, dim: int = 64, clusters: int = 8, seed: int = 0) -> np.ndarray:
    """Gaussian clusters around a shared positive mean: cosine geometry like real CNN features."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    points = centres[rng.integers(clusters, size=n)] + rng.normal(scale=0.6, size=(n, dim))
    return (points + 3.0 * np.abs(rng.normal(size=dim))).astype(np.float32)


def brute_force(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def test_exact_search_matches_brute_force_and_excludes_self() -> None:
    vectors = clustered(400)
    sims, idx = knn(vectors, 5)
    expected_sims, expected_idx = brute_force(vectors, 5)
    assert idx.shape == (400, 5) and sims.dtype == np.float32 and idx.dtype == np.int64
    assert not (idx == np.arange(400)[:, None]).any()
    np.testing.assert_allclose(sims, expected_sims, atol=1e-5)
    assert (idx == expected_idx).mean() > 0.99  # ties may swap order
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


def test_exact_duplicates_still_give_k_other_rows() -> None:
    vectors = np.repeat(clustered(3), 20, axis=0)  # groups of 20 identical rows
    sims, idx = knn(vectors, 10)
    assert not (idx == np.arange(60)[:, None]).any()
    np.testing.assert_allclose(sims, 1.0, atol=1e-5)
    assert (idx // 20 == np.arange(60)[:, None] // 20).all()


def test_queries_and_k_capped_at_available_rows() -> None:
    vectors = clustered(50)
    sims, idx = knn(vectors, 3, queries=vectors[:4] * 7.0)  # scale does not matter: cosine
    assert idx.shape == (4, 3)
    assert (idx[:, 0] == np.arange(4)).all() and np.allclose(sims[:, 0], 1.0, atol=1e-5)
    sims, idx = knn(vectors[:4], 10)
    assert idx.shape == (4, 3)


def test_ivf_agrees_with_exact_on_most_neighbours() -> None:
    rng = np.random.default_rng(1)
    vectors = clustered(6_000, seed=1)
    copies = rng.choice(6_000, size=50, replace=False)
    vectors = np.concatenate([vectors, vectors[copies] + rng.normal(scale=1e-3, size=(50, 64)).astype(np.float32)])
    exact_sims, exact_idx = knn(vectors, 10)
    ivf_sims, ivf_idx = knn(vectors, 10, exact_limit=1_000)  # force the IVF path on a small set
    nlist, nprobe = ivf_parameters(len(vectors))
    assert 16 <= nlist <= len(vectors) and 4 <= nprobe <= nlist
    overlap = np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(exact_idx, ivf_idx, strict=True)])
    assert overlap > 0.8
    assert abs(float(exact_sims.mean() - ivf_sims.mean())) < 0.01
    # every planted copy finds its source as nearest neighbour on the IVF path too
    assert (ivf_idx[6_000:, 0] == copies).mean() >= 0.98


def test_pairs_above_gives_unique_ordered_pairs() -> None:
    rng = np.random.default_rng(2)
    vectors = clustered(300, seed=2)
    vectors[10] = vectors[20] + rng.normal(scale=1e-3, size=64)
    vectors[30] = vectors[20] + rng.normal(scale=1e-3, size=64)
    pairs, sims = pairs_above(vectors, 0.9999, k=5)
    assert {tuple(p) for p in pairs.tolist()} == {(10, 20), (10, 30), (20, 30)}
    assert (pairs[:, 0] < pairs[:, 1]).all() and (sims >= 0.9999).all()
    graph = knn(vectors, 5)
    reused, _ = pairs_above(None, 0.9999, neighbours=graph)
    assert np.array_equal(reused, pairs)


def test_unit_rows_validates_and_keeps_zero_rows() -> None:
    vectors = np.array([[3.0, 4.0], [0.0, 0.0]])
    unit = unit_rows(vectors)
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0]])
    already = unit_rows(unit)
    assert already is unit  # no copy when rows are already unit length
    with pytest.raises(InputError, match="NaN"):
        unit_rows(np.array([[np.nan, 1.0]]))
    with pytest.raises(InputError, match="2-D"):
        unit_rows(np.zeros(3))
    with pytest.raises(InputError, match="k must be"):
        knn(vectors, 0)
