"""Nearest neighbours of embedding vectors with faiss: cosine similarity via inner product.

Every function here works on L2-normalised float32 rows (they are normalised on the way in when
they are not), so an inner product is a cosine similarity in [-1, 1] and ``1 - similarity`` is the
cosine distance.

Index choice, by database size ``n``:

* ``n <= exact_limit`` (default :data:`EXACT_LIMIT` = 10,000): ``IndexFlatIP``, exact. Its cost is
  ``n * m * d`` multiply-adds (BLAS); on two cores 10k x 10k x 512 takes 1-2 s, 50k would take ~45 s.
* above it: an inverted file (IVF). faiss trains a spherical k-means coarse quantizer with
  ``nlist`` lists (a power of two near ``n / 200``, 16..16384) on a random sample of 16 rows per
  list (10 iterations) and assigns every row to its nearest list; each query is compared with the
  rows of the ``nprobe`` lists nearest to its own list's centroid (``nprobe`` such that about 2,048
  candidates are scanned, at least 4), plus the rows of its own second-nearest list when that is not
  among them (so a near-identical twin just across a list border is not missed). The work per query
  is constant, so the kNN graph is linear in ``n``: 200k x 512 takes well under a minute on two
  cores instead of ~15 minutes brute force. Every planted near-duplicate pair of the synthetic
  benchmark (``benchmarks/audit_scale.py``) is found at 50k and 200k; ordinary neighbours are
  approximate (in noisy 512-d Gaussian data about half of the exact 10 nearest are returned, their
  mean similarity within ~0.02), which is what the outlier scores need.

Queries are processed in blocks of at most 2,048 x 16,384 similarities, so memory stays bounded
(beyond the ``m x k`` result) even when one list is huge. faiss and BLAS use every CPU this process
may use (affinity mask and cgroup quota); the IVF lists are searched on that many threads, each with a
one-thread BLAS (the per-list products are small: a multi-threaded BLAS spends more CPU waiting for its
threads than it gains, measured 2.3x the CPU seconds on 70k x 1280 on a busy machine).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from curato.errors import InputError
from curato.system import available_cpus, require_memory

EXACT_LIMIT = 10_000
QUERY_BLOCK = 2_048
CANDIDATE_BLOCK = 16_384
_KMEANS_ITERATIONS = 10
_TRAIN_POINTS_PER_LIST = 16
_TARGET_LIST_SIZE = 200
_TARGET_CANDIDATES = 2_048
_NORM_TOLERANCE = 1e-3


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as C-contiguous float32 rows of unit length (all-zero rows stay zero).

    Returns the input itself when it already is (no copy), so callers may pass large arrays freely.
    Raises InputError for anything but a finite 2-D numeric array.
    """
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[1] == 0:
        raise InputError(f"embeddings must be a 2-D array (n, d) with d >= 1, not shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"embeddings must be numeric, not {array.dtype}")
    if not (array.dtype == np.float32 and array.flags.c_contiguous):
        require_memory(2 * array.shape[0] * array.shape[1] * 4,
                       f"a float32 copy of {array.shape[0]:,} x {array.shape[1]} embeddings",
                       "pass C-contiguous float32 rows (np.load(..., mmap_mode='r') of a float32 .npy reads them "
                       "as they are) or audit fewer rows")
    array = np.ascontiguousarray(array, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", array, array))
    if not np.all(np.isfinite(norms)):
        raise InputError("embeddings contain NaN or infinite values")
    nonzero = norms > 0
    if np.all(np.abs(norms[nonzero] - 1.0) <= _NORM_TOLERANCE):
        return array
    require_memory(array.nbytes, f"normalising {array.shape[0]:,} x {array.shape[1]} embeddings",
                   "store them L2-normalised (then they are read as they are) or audit fewer rows")
    scale = np.where(nonzero, 1.0 / np.where(nonzero, norms, 1.0), 0.0).astype(np.float32)
    return array * scale[:, None]


def ivf_parameters(n: int) -> tuple[int, int]:
    """``(nlist, nprobe)`` for the IVF search over ``n`` vectors (see the module docstring)."""
    nlist = 1 << max(0, round(math.log2(max(n, 1) / _TARGET_LIST_SIZE)))
    nlist = int(np.clip(nlist, 16, 16_384))
    list_size = max(1, n // nlist)
    nprobe = int(np.clip(_TARGET_CANDIDATES // list_size, 4, nlist))
    return nlist, nprobe


def set_threads() -> int:
    """Let faiss use every CPU this process may use; returns that number."""
    threads = available_cpus()
    faiss.omp_set_num_threads(threads)
    return threads


def knn(
    vectors: np.ndarray,
    k: int,
    *,
    queries: np.ndarray | None = None,
    exclude_self: bool = True,
    exact_limit: int = EXACT_LIMIT,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar rows of ``vectors`` for each query row.

    ``queries`` defaults to ``vectors`` itself; then ``exclude_self`` drops each row's own match (when
    exact duplicates tie with it and push it out of the list, the last neighbour is dropped
    instead, so every row still gets ``k`` others). ``k`` is capped at the number of available
    neighbours. Up to ``exact_limit`` database rows the search is exact (``IndexFlatIP``), above it
    IVF (``nlist`` / ``nprobe`` override :func:`ivf_parameters`). Returns ``(similarities, indices)``,
    both ``(m, k)``: float32 cosine similarities, best first, and int64 row indices into ``vectors``.
    """
    if k < 1:
        raise InputError(f"k must be at least 1, not {k}")
    database = unit_rows(vectors)
    n = database.shape[0]
    self_search = queries is None
    query_rows = database if self_search else unit_rows(queries)
    if query_rows.shape[1] != database.shape[1]:
        raise InputError(f"queries have {query_rows.shape[1]} dimensions, the vectors {database.shape[1]}")
    drop_self = self_search and exclude_self
    k = min(k, n - 1 if drop_self else n)
    m = query_rows.shape[0]
    if k < 1 or m == 0:
        return np.empty((m, max(k, 0)), dtype=np.float32), np.empty((m, max(k, 0)), dtype=np.int64)
    threads = set_threads()
    search_k = k + 1 if drop_self else k
    exact = n <= exact_limit
    if not exact:
        default_nlist, default_nprobe = ivf_parameters(n)
        nlist = int(min(nlist or default_nlist, n))
        nprobe = int(min(nprobe or default_nprobe, nlist))
    require_memory(knn_memory(n, m, search_k, threads, lists=None if exact else (nlist, nprobe)),
                   f"the {k}-nearest-neighbour search over {n:,} rows",
                   "audit fewer rows at a time or use a machine with more memory")
    if exact:
        sims, idx = _exact_knn(database, query_rows, search_k)
    else:
        sims, idx = _ivf_knn(database, query_rows, search_k, nlist=nlist, nprobe=nprobe, seed=seed)
    if drop_self:
        sims, idx = _without_self(sims, idx, np.arange(m))
    return sims, idx


def knn_memory(n: int, m: int, k: int, threads: int, *, lists: tuple[int, int] | None = None) -> int:
    """Bytes :func:`knn` allocates besides its input: the (m, k) results (similarities and indices, a second copy
    while a row's own match is dropped) and, for IVF (``lists`` = (nlist, nprobe)), the lists' bookkeeping (a few
    int64 per row) and each thread's block of similarities with its top-k selection -- a list's queries against
    the rows of the lists it probes (rows spread evenly; the exact search lets faiss block its products)."""
    results = 2 * m * k * (4 + 8)
    if lists is None:
        return results
    nlist, nprobe = lists
    per_list = -(-max(n, m) // max(nlist, 1))
    blocks = threads * 3 * min(QUERY_BLOCK, per_list) * min(CANDIDATE_BLOCK, nprobe * per_list) * 4
    return results + 6 * 8 * (n + m) + blocks


def _exact_knn(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force with ``IndexFlatIP``, queries in blocks (faiss blocks the BLAS products itself)."""
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database)
    sims = np.empty((queries.shape[0], k), dtype=np.float32)
    idx = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], CANDIDATE_BLOCK):
        stop = start + CANDIDATE_BLOCK
        sims[start:stop], idx[start:stop] = index.search(queries[start:stop], k)
    return sims, idx


def _ivf_knn(
    database: np.ndarray, queries: np.ndarray, k: int, *, nlist: int, nprobe: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inverted-file search, one list at a time.

    faiss trains the coarse quantizer (spherical k-means on a sample) and assigns rows to lists.
    Instead of probing lists query by query -- which streams every probed list from memory once per
    query and is memory-bound (~2 GMAC/s here) -- all queries of a list are searched together
    against the union of the ``nprobe`` lists nearest to that list's centroid with one matrix
    product, which runs at BLAS speed (~30-50 GMAC/s on two cores).
    """
    n, dim = database.shape
    rng = np.random.default_rng(seed)
    sample_size = min(n, _TRAIN_POINTS_PER_LIST * nlist)
    sample = database[np.sort(rng.choice(n, size=sample_size, replace=False))] if sample_size < n else database
    # 16 rows per list are enough to place centroids for routing; min_points_per_centroid is lowered to match
    # so that faiss does not warn about the small sample.
    kmeans = faiss.Kmeans(dim, nlist, niter=_KMEANS_ITERATIONS, spherical=True, seed=seed,
                          min_points_per_centroid=1, max_points_per_centroid=_TRAIN_POINTS_PER_LIST)
    kmeans.train(sample)
    db_lists = _nearest_lists(kmeans.index, database)
    query_lists = db_lists if queries is database else _nearest_lists(kmeans.index, queries)
    db_list, query_list, second_list = db_lists[:, 0], query_lists[:, 0], query_lists[:, 1]
    _, probes = kmeans.index.search(kmeans.centroids, nprobe)
    # A list always probes itself, even where faiss returns a tied centroid first.
    own = np.arange(nlist)
    has_own = (probes == own[:, None]).any(axis=1)
    probes[~has_own, -1] = own[~has_own]

    db_order, db_starts = _group(db_list, nlist)
    q_order, q_starts = _group(query_list, nlist)
    sims = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    idx = np.full((queries.shape[0], k), -1, dtype=np.int64)
    def search_list(cell: int) -> None:
        members = q_order[q_starts[cell]:q_starts[cell + 1]]
        candidates = np.concatenate([db_order[db_starts[p]:db_starts[p + 1]] for p in probes[cell] if p >= 0])
        sims[members], idx[members] = _block_top_k(queries, members, database, candidates, k)

    _each_on_threads(search_list, np.flatnonzero(np.diff(q_starts)))
    # A query near the border of its list may have its near-identical twin just across it, in a list its own
    # list's probe set misses. Its second-nearest list is that neighbour list, so search it too (about one list
    # per query: a few percent of the main pass).
    missed = np.flatnonzero((second_list >= 0) & ~(probes[query_list] == second_list[:, None]).any(axis=1))
    if missed.size:
        extra_order, extra_starts = _group(second_list[missed], nlist)

        def search_second(cell: int) -> None:
            members = missed[extra_order[extra_starts[cell]:extra_starts[cell + 1]]]
            candidates = db_order[db_starts[cell]:db_starts[cell + 1]]
            more_sims, more_idx = _block_top_k(queries, members, database, candidates, k)
            sims[members], idx[members] = _merge_top_k(sims[members], idx[members], more_sims, more_idx, k)

        _each_on_threads(search_second, np.flatnonzero(np.diff(extra_starts)))
    short = np.flatnonzero((idx < 0).any(axis=1))
    if short.size:
        # Probed lists held fewer than k rows (tiny or very uneven lists): search those queries exhaustively.
        sims[short], idx[short] = _block_top_k(queries, short, database, np.arange(n), k)
    return sims, idx


def _each_on_threads(work: Callable[[int], None], items: Sequence[int] | np.ndarray) -> None:
    """``work(item)`` for every item, on as many threads as this process may use, BLAS held to one thread each.

    The items write disjoint rows of the results; NumPy and BLAS release the GIL in the products.
    """
    workers = max(1, min(available_cpus(), len(items)))
    with threadpool_limits(limits=1, user_api="blas"):
        if workers == 1:
            for item in items:
                work(int(item))
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, (int(item) for item in items)))


def _merge_top_k(
    sims: np.ndarray, idx: np.ndarray, more_sims: np.ndarray, more_idx: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of two candidate lists per row, each index once, best first."""
    all_sims = np.concatenate([sims, more_sims], axis=1)
    all_idx = np.concatenate([idx, more_idx], axis=1)
    by_index = np.argsort(all_idx, axis=1, kind="stable")
    sorted_idx = np.take_along_axis(all_idx, by_index, axis=1)
    repeated = np.zeros(sorted_idx.shape, dtype=bool)
    repeated[:, 1:] = (sorted_idx[:, 1:] == sorted_idx[:, :-1]) & (sorted_idx[:, 1:] >= 0)
    sorted_sims = np.take_along_axis(all_sims, by_index, axis=1)
    sorted_sims[repeated] = -np.inf
    best = np.argsort(-sorted_sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sorted_sims, best, axis=1), np.take_along_axis(sorted_idx, best, axis=1)


def _nearest_lists(quantizer: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """The two nearest centroids of each row (the second is -1 with a single list), in bounded blocks."""
    out = np.empty((rows.shape[0], 2), dtype=np.int64)
    for start in range(0, rows.shape[0], CANDIDATE_BLOCK):
        found = quantizer.search(rows[start:start + CANDIDATE_BLOCK], min(2, quantizer.ntotal))[1]
        out[start:start + found.shape[0], :found.shape[1]] = found
        if found.shape[1] < 2:
            out[start:start + found.shape[0], 1] = -1
    return out


def _group(assignment: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices sorted by group and the start offset of every group (length ``groups + 1``)."""
    order = np.argsort(assignment, kind="stable")
    starts = np.zeros(groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(assignment, minlength=groups), out=starts[1:])
    return order, starts


def _block_top_k(
    queries: np.ndarray, query_index: np.ndarray, database: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner products of the chosen queries among the chosen database rows.

    Blocks of at most QUERY_BLOCK x CANDIDATE_BLOCK similarities (128 MB) are formed at a time, so a
    huge list (many identical rows) cannot exhaust memory. Missing entries (fewer than k candidates)
    are -1 with similarity -inf.
    """
    best_sims = np.full((query_index.size, k), -np.inf, dtype=np.float32)
    best_idx = np.full((query_index.size, k), -1, dtype=np.int64)
    for q_start in range(0, query_index.size, QUERY_BLOCK):
        rows = slice(q_start, q_start + QUERY_BLOCK)
        block = queries[query_index[rows]]
        for c_start in range(0, candidates.size, CANDIDATE_BLOCK):
            chunk = candidates[c_start:c_start + CANDIDATE_BLOCK]
            sims = block @ database[chunk].T
            if chunk.size > k:
                top = np.argpartition(sims, -k, axis=1)[:, -k:]
                sims, chunk_idx = np.take_along_axis(sims, top, axis=1), chunk[top]
            else:
                chunk_idx = np.broadcast_to(chunk, sims.shape)
            merged_sims = np.concatenate([best_sims[rows], sims], axis=1)
            merged_idx = np.concatenate([best_idx[rows], chunk_idx], axis=1)
            keep = np.argpartition(merged_sims, -k, axis=1)[:, -k:]
            best_sims[rows] = np.take_along_axis(merged_sims, keep, axis=1)
            best_idx[rows] = np.take_along_axis(merged_idx, keep, axis=1)
    order = np.argsort(-best_sims, axis=1, kind="stable")
    return np.take_along_axis(best_sims, order, axis=1), np.take_along_axis(best_idx, order, axis=1)


def _without_self(sims: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop one column per row: the row's own index, or the last column when it is absent."""
    is_self = idx == rows[:, None]
    # A row can only match itself once; where ties with exact duplicates pushed it out, drop the last entry.
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = ~is_self
    width = idx.shape[1] - 1
    return sims[keep].reshape(-1, width), idx[keep].reshape(-1, width)


def pairs_above(
    vectors: np.ndarray | None,
    threshold: float,
    k: int = 10,
    *,
    exact_limit: int = EXACT_LIMIT,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    row_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(i, j)`` with ``i < j`` and cosine similarity ``>= threshold``.

    The candidates come from each row's ``k`` nearest neighbours, so a group larger than ``k + 1``
    is still found as long as its members are chained by neighbour links. Pass ``neighbours``, the
    output of :func:`knn`, to reuse a graph already computed (``vectors`` is then not read); its
    row ``r`` describes sample ``row_ids[r]`` (default ``r``), its indices are sample indices.
    Returns ``(pairs, similarities)``: an int64 ``(p, 2)`` array sorted by ``(i, j)`` without
    repeats, and the float32 similarities.
    """
    if neighbours is None:
        if vectors is None:
            raise InputError("pairs_above needs vectors or neighbours")
        neighbours = knn(vectors, k, exact_limit=exact_limit)
    sims, idx = neighbours
    owners = np.arange(idx.shape[0]) if row_ids is None else np.asarray(row_ids, dtype=np.int64)
    rows = np.broadcast_to(owners[:, None], idx.shape)
    keep = (sims >= threshold) & (idx >= 0)
    first, second, values = rows[keep], idx[keep], sims[keep]
    distinct = first != second
    first, second, values = first[distinct], second[distinct], values[distinct]
    low, high = np.minimum(first, second), np.maximum(first, second)
    if low.size == 0:
        return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.float32)
    # A pair seen from both ends appears twice; keep one copy, with the larger similarity (equal up to float
    # rounding for an exact search).
    order = np.lexsort((-values, high, low))
    low, high, values = low[order], high[order], values[order]
    first_of_pair = np.ones(low.size, dtype=bool)
    first_of_pair[1:] = (low[1:] != low[:-1]) | (high[1:] != high[:-1])
    pairs = np.stack([low[first_of_pair], high[first_of_pair]], axis=1).astype(np.int64)
    return pairs, values[first_of_pair].astype(np.float32)
