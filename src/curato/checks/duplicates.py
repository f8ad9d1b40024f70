"""Duplicates: byte-identical files, near-identical pictures, copies across splits, copies with different labels.

:func:`duplicate_findings` is a pure function over aligned arrays and returns four Findings:

``exact_duplicates``
    Samples whose stored bytes hash identically (``content_hashes``). Every member of a group is flagged.
``near_duplicates``
    Groups of the same picture stored differently (resized, re-compressed, slightly cropped or
    shifted, brightened). Pairs come from the embedding kNN graph (:mod:`curato.neighbors`, cosine)
    and are accepted by the rule below; groups are the connected components of accepted pairs
    together with exact-duplicate pairs (scipy.sparse.csgraph), so a group may chain A~B~C. A group
    whose members are all byte-identical is reported under ``exact_duplicates`` only.
``split_leakage``
    Any group (exact or near) with members in two or more splits: high severity, every member
    listed with its split.
``conflicting_duplicates``
    Any group (exact or near) whose members carry two or more different labels (``None`` = unlabeled
    is ignored).

The near-duplicate rule
-----------------------
Distances are cosine distances ``d = 1 - cos`` between L2-normalised embeddings. Their scale depends
on the embedder and on the data, so the cuts are relative to ``D``, the median over samples of the
distance to the nearest neighbour (samples whose nearest neighbour is at distance ~0, i.e. exact
copies, are left out of the median so that a duplicate-heavy dataset does not shrink its own scale).
A candidate pair is a near duplicate when any of these holds:

1. embeddings alone: ``d <= 0.2 * D``;
2. perceptual hash confirms: Hamming distance ``<= 2`` of 64 bits and ``d <= 0.7 * D``;
3. a distinct pair: ``d <= 1.5 * D``, the two are at most half as far from each other as either is
   from its next nearest other sample (``d <= 0.5 * min(d2_a, d2_b)``), and -- where perceptual
   hashes exist -- they do not contradict (Hamming ``<= 16``; unrelated images differ in ~32 bits);
4. registered thumbnails agree (where the scan's thumbnails are given): each sample's 3 nearest
   embedding neighbours and 3 nearest thumbnail neighbours (faiss over the Fourier magnitudes of the
   grey thumbnails, :func:`curato.features.thumbnails.fourier_descriptors`, which a shift or a one-pixel
   crop leaves nearly unchanged) are compared after registering one 24 px grey thumbnail onto the other:
   a 3-scale x 3-shift grid per axis (:func:`curato.features.thumbnails.registered_similarity`), then,
   for every pair within ``t <= 0.4`` whose grid correlations predict a peak within ``t <= 0.1``
   (parabolas through the best placement and its neighbours), a continuous Gauss-Newton refinement of
   scale and shift per axis (:func:`~curato.features.thumbnails.refined_similarity`; the grid leaves up
   to half a thumbnail pixel of misregistration, which costs a copy cropped by one pixel most of its
   correlation). With ``t = 1 - correlation`` (the better of the two directions where both pictures
   list each other), a pair within ``3 * D`` in the embedding is accepted when ``t <= 0.02`` and ``t``
   is at most 0.25 x the ``t`` from either end to its other compared neighbours; or when ``t <= 0.08``
   and at most 0.1 x the others (a distinctive picture whose copy was cropped and re-compressed:
   nothing else comes close); a pair within ``4 * D`` when ``t <= 0.003`` and at most 0.35 x the
   others (an exact match of the pictures outweighs a drifted embedding, e.g. after a strong
   down-scale).
5. the residual is fine noise (where thumbnails are given): a compared pair rule 4 turns down that is
   still within ``3 * D`` in the embedding, ``t <= 0.04`` and at most 0.5 x the others, is
   accepted when what is left of the difference after registering it (the better direction, both pictures
   centred and scaled to unit length) is fine-grained: at most 12% of the residual's energy survives a
   Gaussian blur of one thumbnail pixel (:func:`curato.features.thumbnails.residual_low_share`).
   Re-compression, resampling and a pixel's crop leave noise from pixel to pixel, which the blur averages
   away; a different product of the same cut leaves coarse differences -- a longer sleeve, another
   collar, a print -- that survive it. Among the pairs rule 4 turned down at ``t <= 0.04`` on the
   benchmark below, copies had a median share of 0.10-0.12, look-alike products 0.28 (their 10th
   percentile 0.195); Fashion-MNIST's look-alikes lie within 1.5-3x of a copy's registered distance,
   which is what the ratio tests of rule 4 cannot resolve.
6. a second look at a finer side (where the caller passes ``second_look``: ``curato audit`` decodes the
   files at their own size, at most 64 px, when that is finer than the 24 px thumbnail --
   :func:`second_look_side`): a compared pair still turned down, within ``3 * D``, ``t <= 0.04`` and no
   farther than the others, is registered again on the finer pictures (its better direction) and accepted
   when that distance is at most 0.1 x the thumbnails' distance to the closest other compared pair (the
   look-alike's thumbnail distance stands in for its finer one: registering the look-alike again as well
   doubled the cost and found 0-2 more copies per seed on the benchmark, at the same precision). The 24 px
   thumbnail resamples a 28 px picture by 6/7, so a copy shifted or cropped by a whole source pixel
   registers only approximately there; at its own size it lines up exactly. On the benchmark below the finer
   registration put the copies among these pairs at a median 0.01-0.22 x their look-alike's distance (pairs
   of different pictures: 1st percentile 0.29); on pictures upsampled to 32 px instead the gain vanished
   (the exact pixel grid is what helps).

Where thumbnails exist they also overrule rules 2 and 3: a pair those rules accept is dropped when
its refined registration, in the better of the two directions, is worse than ``t = 0.03`` (the
embedding or the hash saw two look-alikes, the pixels say different pictures).

A fixed ``near_threshold`` (cosine similarity) replaces all six: pairs with ``cos >= near_threshold``.
Without embeddings, the perceptual hash alone decides: Hamming distance ``<= 2`` (less precise:
simple pictures such as product silhouettes on a plain background share hashes).

How the defaults were chosen (Fashion-MNIST, 12,000 images + 600 planted copies, EfficientNet-Lite0
112 px embeddings; ``benchmarks/near_duplicates.py``): ``D`` is 0.14 there. In the 10-NN graph of the
12,000 original images only 2 distinct pairs are closer than ``0.2 * D``, so rule 1 is nearly free of
false pairs. Resized, re-compressed and brightened copies keep their perceptual hash (median 0 bits,
94% within 2 bits) but can move far in the embedding; only 18 of the 94,000 distinct neighbour pairs
(0.02%) are within 2 bits *and* ``0.7 * D`` -- rule 2. Shifted and cropped copies change the hash (median
10 bits) and move the embedding by about half of ``D``, as far as look-alike products; the ratio test
of rule 3 recovers the ones that stay much closer to their source than to anything else, and rule 4
the ones whose pixels still line up after a small shift or rescale (distinct products of one cut
correlate up to 0.99 as well, hence its own ratio test). The cuts were picked on one planting seed
as the highest recall at >= 0.93 pair precision and checked on a second seed (rule 4's, later, as
the highest smallest recall over seeds 0-2 at >= 0.95 precision on each; rules 5's and 6's, later, as the
most planted pairs added on seeds 0-2 with no pair added that is not the same picture, then checked on seeds
3-4).

Limits: on 28 px Fashion-MNIST (11 planting seeds), with rule 6's second look at 28 px: recall 0.970-0.992
at pair precision 0.956-0.966, 195-200 of 200 planted train/test leaks reported (without rule 6: 0.953-0.987,
191-200; without rules 5 and 6: 0.940-0.965 at 0.955-0.963 on 8 seeds, 187-196; before the refinement:
0.83-0.85 at 0.95; rules 1-3 alone: 0.63-0.66 at 0.94). Rules 5 and 6 were chosen on seeds 0-2; seeds 5-10
were not looked at before their final measurement (8-10 were planted for it). Copies cropped by a pixel stay
the weakest edit (recall 0.91-0.98).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curato.checks.findings import Finding, severity_from_share
from curato.errors import InputError
from curato.features.properties import GREY_SIDE, hamming_distance
from curato.features.thumbnails import (
    REGISTRATION_MARGIN,
    fourier_descriptors,
    grey_thumbnails,
    refined_similarity,
    registered_similarity,
    residual_low_share,
)
from curato.neighbors import EXACT_LIMIT, knn, pairs_above, set_threads, unit_rows

ALONE_RATIO = 0.2
PHASH_CONFIRM_BITS = 2
PHASH_CONFIRM_RATIO = 0.7
DISTINCT_RATIO = 1.5
DISTINCT_GAP = 0.5
DISTINCT_MAX_BITS = 16
REGISTERED_RANKS = 3
THUMBNAIL_RANKS = 3
REGISTERED_RATIO = 3.0
REGISTERED_MAX = 0.02
REGISTERED_GAP = 0.25
REFINE_BELOW = 0.4
REFINE_PREDICTED = 0.1
VETO_ABOVE = 0.03
REGISTERED_TIGHT = 0.003
REGISTERED_TIGHT_GAP = 0.35
REGISTERED_WIDE_RATIO = 4.0
REGISTERED_LOOSE = 0.08
REGISTERED_LOOSE_GAP = 0.1
STRUCTURE_MAX = 0.04
STRUCTURE_GAP = 0.5
STRUCTURE_MAX_SHARE = 0.12
SECOND_LOOK_MAX = 0.04
SECOND_LOOK_GAP = 0.1
SECOND_LOOK_LARGEST_SIDE = 64
SECOND_LOOK_BLOCK = 8192  # pairs whose pictures are held at once (at most 2 x 8192 x 64 x 64 float32: 256 MB)
PHASH_ONLY_BITS = 2
DEFAULT_K = 10
MAX_EVIDENCE_GROUPS = 200
MAX_LISTED_MEMBERS = 1_000
_ZERO_DISTANCE = 1e-6


def duplicate_findings(
    sample_ids: Sequence[str] | np.ndarray,
    *,
    embeddings: np.ndarray | None = None,
    content_hashes: Sequence[str | None] | np.ndarray | None = None,
    phashes: np.ndarray | None = None,
    thumbnails: np.ndarray | None = None,
    splits: Sequence[str | None] | np.ndarray | None = None,
    labels: Sequence[Any] | np.ndarray | None = None,
    near_threshold: float | None = None,
    valid: np.ndarray | None = None,
    k: int = DEFAULT_K,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    exact_limit: int = EXACT_LIMIT,
    max_evidence_groups: int = MAX_EVIDENCE_GROUPS,
    second_look: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[Finding]:
    """Exact duplicates, near duplicates, split leakage and conflicting labels among duplicates.

    Every array is aligned with ``sample_ids``. ``embeddings`` (n, d) drive near-duplicate search
    (all-zero rows are skipped); ``content_hashes`` (``""``/``None`` = unknown) give exact
    duplicates; ``phashes`` (uint64) confirm near duplicates, or find them alone when there are no
    embeddings; ``thumbnails`` (the scan's thumbnail rows, all-zero = none) add rule 4 (registered
    thumbnails); ``splits`` and ``labels`` (``None`` = unknown) feed leakage and conflicts.
    ``near_threshold`` replaces the data-relative rule of the module docstring by a fixed cosine
    similarity cut. ``valid`` (bool) excludes samples, e.g. unreadable files, from every group.
    ``neighbours`` reuses a kNN graph ``(similarities, indices)`` from :func:`curato.neighbors.knn`
    over all rows of ``embeddings`` (k >= 2). ``second_look(rows)`` (with ``thumbnails``) returns the pictures of
    those rows as (m, side, side) grey squares at a finer side than the thumbnail's -- e.g. the images' own size
    through :func:`curato.features.properties.grey_squares` -- for rule 6. Returns Findings for ``exact_duplicates``,
    ``near_duplicates``, ``split_leakage`` and ``conflicting_duplicates``, in that order.
    """
    ids = np.asarray(sample_ids, dtype=object)
    n = len(ids)
    usable = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    _check_length("valid", usable, n)
    if near_threshold is not None and not -1.0 <= near_threshold <= 1.0:
        raise InputError(f"near_threshold is a cosine similarity in [-1, 1], not {near_threshold}")
    hashes = None if phashes is None else np.asarray(phashes, dtype=np.uint64)
    if hashes is not None:
        _check_length("phashes", hashes, n)

    exact_first, exact_second, exact_groups = _exact_pairs(content_hashes, usable, n)
    near = _NearPairs.empty()
    if embeddings is not None:
        grey = None
        if thumbnails is not None:
            _check_length("thumbnails", thumbnails, n)
            grey = grey_thumbnails(thumbnails)
        near = _near_pairs_from_embeddings(embeddings, hashes, usable, near_threshold, k, neighbours, exact_limit,
                                           grey, second_look)
    elif hashes is not None:
        near = _near_pairs_from_phashes(hashes, usable, k)

    if near.first.size and content_hashes is not None:
        # A pair of byte-identical files is an exact duplicate already; it must not make its group "near".
        known = np.array(["" if h is None else str(h) for h in content_hashes], dtype=object)
        same_bytes = (known[near.first] == known[near.second]) & (known[near.first] != "")
        near = _NearPairs(near.first[~same_bytes], near.second[~same_bytes], near.similarity[~same_bytes],
                          near.scale)
    first = np.concatenate([exact_first, near.first])
    second = np.concatenate([exact_second, near.second])
    similarity = np.concatenate([np.ones(exact_first.size), near.similarity])
    graph = coo_matrix((np.ones(first.size, dtype=np.int8), (first, second)), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=False)
    best = np.zeros(n)
    np.maximum.at(best, first, similarity)
    np.maximum.at(best, second, similarity)
    closest_bits = None
    if hashes is not None and near.first.size:
        closest_bits = np.full(n, 64, dtype=np.int64)
        bits = hamming_distance(hashes[near.first], hashes[near.second])
        np.minimum.at(closest_bits, near.first, bits)
        np.minimum.at(closest_bits, near.second, bits)

    groups = _Groups(ids, component, first.size > 0)
    near_group = np.zeros(groups.count, dtype=bool)
    if near.first.size:
        near_group[groups.index_of_component[component[near.first]]] = True
    return [
        _exact_finding(ids, exact_groups, content_hashes, max_evidence_groups),
        _near_finding(ids, groups, near_group, best, closest_bits, near.scale, max_evidence_groups),
        _leakage_finding(ids, groups, splits, best, max_evidence_groups),
        _conflict_finding(ids, groups, labels, best, max_evidence_groups),
    ]


class _NearPairs:
    """Accepted near-duplicate pairs (row indices, i < j) with their similarity and the distance scale D."""

    def __init__(self, first: np.ndarray, second: np.ndarray, similarity: np.ndarray, scale: float | None) -> None:
        self.first, self.second, self.similarity, self.scale = first, second, similarity, scale

    @classmethod
    def empty(cls) -> _NearPairs:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), None)


def _check_length(name: str, values: np.ndarray | Sequence[Any], n: int) -> None:
    if len(values) != n:
        raise InputError(f"{name} has {len(values)} entries but there are {n} samples")


def _exact_pairs(
    content_hashes: Sequence[str | None] | np.ndarray | None, usable: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Edges linking every member of a content-hash group to its first member, and the groups themselves."""
    empty = np.empty(0, dtype=np.int64)
    if content_hashes is None:
        return empty, empty, []
    _check_length("content_hashes", content_hashes, n)
    values = np.array(["" if h is None else str(h) for h in content_hashes], dtype=object)
    rows = np.flatnonzero(usable & (values != ""))
    if rows.size < 2:
        return empty, empty, []
    _, code, counts = np.unique(values[rows].astype(str), return_inverse=True, return_counts=True)
    order = np.argsort(code, kind="stable")
    sorted_rows, sorted_code = rows[order], code[order]
    starts = np.flatnonzero(np.r_[True, sorted_code[1:] != sorted_code[:-1]])
    sizes = counts[sorted_code[starts]]
    head = np.repeat(sorted_rows[starts], sizes)
    is_member = sorted_rows != head
    groups = [sorted_rows[s:s + size] for s, size in zip(starts, sizes, strict=True) if size > 1]
    return head[is_member], sorted_rows[is_member], groups


def second_look_side(sizes: np.ndarray) -> int | None:
    """The side of rule 6's pictures for images of these ``(width, height)`` sizes (0 = unknown): the median
    shorter side, at most ``SECOND_LOOK_LARGEST_SIDE``; ``None`` where that is no finer than the thumbnail."""
    sizes = np.asarray(sizes)
    shorter = sizes.min(axis=1) if sizes.ndim == 2 and sizes.size else np.zeros(0)
    shorter = shorter[shorter > 0]
    if shorter.size == 0:
        return None
    side = int(min(np.median(shorter), SECOND_LOOK_LARGEST_SIDE))
    return side if side > GREY_SIDE else None


def _near_pairs_from_embeddings(
    embeddings: np.ndarray,
    hashes: np.ndarray | None,
    usable: np.ndarray,
    near_threshold: float | None,
    k: int,
    neighbours: tuple[np.ndarray, np.ndarray] | None,
    exact_limit: int,
    grey: np.ndarray | None = None,
    second_look: Callable[[np.ndarray], np.ndarray] | None = None,
) -> _NearPairs:
    """Candidate pairs from the kNN graph, accepted by the rules of the module docstring."""
    vectors = unit_rows(embeddings)
    _check_length("embeddings", vectors, len(usable))
    rows = np.flatnonzero(usable & (np.abs(vectors).max(axis=1) > 0))
    if rows.size < 2:
        return _NearPairs.empty()
    if neighbours is None:
        sims, local = knn(vectors[rows], max(2, k), exact_limit=exact_limit)
        sims, idx = sims, rows[local]
    else:
        sims, idx = (np.asarray(a) for a in neighbours)
        if sims.shape != idx.shape or sims.shape[0] != len(usable) or sims.shape[1] < 2:
            raise InputError("neighbours must be knn() output over all rows of embeddings, with k >= 2")
        sims, idx = sims[rows], idx[rows]
        # Neighbours that are excluded samples must not take part.
        sims = np.where(usable[idx], sims, -np.inf).astype(np.float32)
    nearest = 1.0 - sims[:, 0]
    spread = nearest[nearest > _ZERO_DISTANCE]
    scale = float(np.median(spread)) if spread.size else 1.0
    alone = ALONE_RATIO * scale if near_threshold is None else 1.0 - near_threshold
    widest = alone if near_threshold is not None else max(alone, PHASH_CONFIRM_RATIO * scale, DISTINCT_RATIO * scale)
    pairs, pair_sims = pairs_above(vectors, 1.0 - widest, neighbours=(sims, idx), row_ids=rows)
    if pairs.size == 0:
        return _NearPairs(pairs[:, 0], pairs[:, 1], pair_sims.astype(float), scale)
    a, b = pairs[:, 0], pairs[:, 1]
    distance = 1.0 - pair_sims.astype(np.float64)
    # Distance from each end to its nearest sample other than the partner: the ratio test of rule 3.
    position = np.full(len(usable), -1, dtype=np.int64)
    position[rows] = np.arange(rows.size)
    gap = distance / np.maximum(np.minimum(_next_other(sims, idx, position[a], b),
                                           _next_other(sims, idx, position[b], a)), _ZERO_DISTANCE)
    accept = distance <= alone
    if near_threshold is not None:
        # A fixed threshold is the whole rule: the user asked for exactly this cut.
        return _NearPairs(a[accept], b[accept], np.clip(pair_sims[accept], 0.0, 1.0).astype(float), scale)
    distinct = (distance <= DISTINCT_RATIO * scale) & (gap <= DISTINCT_GAP)
    if hashes is not None:
        bits = hamming_distance(hashes[a], hashes[b])
        accept |= (bits <= PHASH_CONFIRM_BITS) & (distance <= PHASH_CONFIRM_RATIO * scale)
        distinct &= bits <= DISTINCT_MAX_BITS
    accept |= distinct
    if grey is not None:
        # Rules 2 and 3 are overruled when the registered thumbnails say "different pictures".
        checked = np.flatnonzero(accept & (distance > ALONE_RATIO * scale))
        pictured = grey.reshape(grey.shape[0], -1).any(axis=1)
        checked = checked[pictured[a[checked]] & pictured[b[checked]]]
        if checked.size:
            both = refined_similarity(grey, np.r_[a[checked], b[checked]], np.r_[b[checked], a[checked]])
            registered = 1.0 - np.maximum(both[:checked.size], both[checked.size:])
            accept[checked[registered > VETO_ABOVE]] = False
        first, second = _registered_pairs(grey, sims, idx, rows, scale, vectors, second_look)
        a, b = np.r_[a[accept], first], np.r_[b[accept], second]
        low, high = np.minimum(a, b), np.maximum(a, b)
        pairs = np.unique(np.stack([low, high], axis=1), axis=0)
        similarity = np.sum(vectors[pairs[:, 0]] * vectors[pairs[:, 1]], axis=1)
        return _NearPairs(pairs[:, 0], pairs[:, 1], np.clip(similarity, 0.0, 1.0).astype(float), scale)
    return _NearPairs(a[accept], b[accept], np.clip(pair_sims[accept], 0.0, 1.0).astype(float), scale)


def _registered_pairs(grey: np.ndarray, sims: np.ndarray, idx: np.ndarray, rows: np.ndarray, scale: float,
                      vectors: np.ndarray, second_look: Callable[[np.ndarray], np.ndarray] | None = None,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Rule 4: pairs whose registered thumbnails match far better than either matches anything else.

    Each row's ``REGISTERED_RANKS`` nearest embedding neighbours and ``THUMBNAIL_RANKS`` nearest
    thumbnail neighbours are compared through :func:`curato.features.thumbnails.registered_similarity`
    and, where the grid comes close, :func:`~curato.features.thumbnails.refined_similarity` (distance
    ``t = 1 - correlation``; a pair listed from both ends counts its better direction). The cuts are in
    :func:`_registered_accept` (``REGISTERED_MAX`` / ``_GAP``, ``REGISTERED_LOOSE`` / ``_GAP`` within
    ``REGISTERED_RATIO x D`` in the embedding, ``REGISTERED_TIGHT`` / ``_GAP`` within ``REGISTERED_WIDE_RATIO
    x D``), each a ratio test against the smallest ``t`` from either end to its other compared neighbours; rule 5
    (``STRUCTURE_MAX`` / ``_GAP`` / ``_MAX_SHARE``) takes the pairs still within ``t <= 0.04`` and 0.5 x whose
    residual after registration is fine noise (:func:`_fine_residual_accept`). (The thumbnail neighbours, found
    by Fourier magnitudes, catch copies the embedding scattered, and give the ratio test more of the look-alikes
    to compare with.)
    """
    ranks = min(REGISTERED_RANKS, idx.shape[1])
    # Thumbnail neighbours are searched by Fourier magnitudes, which a shift or a one-pixel crop leaves nearly
    # unchanged; only candidates come from it -- every candidate is then registered at full resolution.
    flat = fourier_descriptors(grey[rows])
    _, extra = knn(flat, THUMBNAIL_RANKS)
    neighbour = np.concatenate([idx[:, :ranks], rows[extra]], axis=1)
    extra_sims = np.empty(extra.shape, dtype=np.float32)
    for start in range(0, rows.size, 16_384):  # bounded memory: one block of gathered rows at a time
        block = slice(start, start + 16_384)
        own = vectors[rows[block]]
        for column in range(extra.shape[1]):
            extra_sims[block, column] = np.einsum("nd,nd->n", own, vectors[rows[extra[block, column]]])
    sims = np.concatenate([sims[:, :ranks], extra_sims], axis=1)
    ranks = neighbour.shape[1]
    pictured = grey.reshape(grey.shape[0], -1).any(axis=1)  # an all-zero row: no thumbnail stored
    # A partner listed twice (an embedding and a thumbnail neighbour) is compared once.
    repeated = ((neighbour[:, :, None] == neighbour[:, None, :]) & np.tri(ranks, k=-1, dtype=bool)[None]).any(axis=2)
    valid = (np.isfinite(sims[:, :ranks]) & (neighbour >= 0) & ~repeated & pictured[rows, None]
             & pictured[neighbour])
    local, rank = np.nonzero(valid)
    t = np.full((rows.size, ranks), np.inf)
    coarse, placement, peak = registered_similarity(grey, rows[local], neighbour[local, rank], return_peak=True)
    # The grid leaves up to half a thumbnail pixel of misregistration, which costs textured pictures much of
    # their correlation; every pair the grid finds close enough to matter is refined continuously.
    close = np.flatnonzero((1.0 - coarse <= REFINE_BELOW) & (1.0 - peak <= REFINE_PREDICTED))
    coarse[close] = refined_similarity(grey, rows[local[close]], neighbour[local[close], rank[close]],
                                       start=(coarse[close], placement[close]))
    t[local, rank] = 1.0 - coarse
    position = np.full(grey.shape[0], -1, dtype=np.int64)
    position[rows] = np.arange(rows.size)
    # Registration is not symmetric (the first picture's central window is sought inside the second), so a
    # copy shifted or cropped one way registers well in one direction only: a pair listed from both ends
    # counts the better of its two directions, in its own test and in its neighbours' ratio tests.
    at = position[neighbour[local, rank]]
    back = (at[:, None] >= 0) & (neighbour[np.maximum(at, 0)] == rows[local, None])
    both = np.flatnonzero(back.any(axis=1))
    reverse = t[at[both], back[both].argmax(axis=1)]
    t[local[both], rank[both]] = np.minimum(t[local[both], rank[both]], reverse)
    other = _other_registered(t, neighbour, rows, position, local, rank)
    distance, embedding = t[local, rank], 1.0 - sims[local, rank]
    accept = _registered_accept(distance, other, embedding, scale)
    # Rule 5: a pair that is closer than anything else compared, but not by enough, is accepted when its
    # residual after registration is fine noise rather than another object's coarse structure.
    unsure = np.flatnonzero(~accept & (distance <= STRUCTURE_MAX) & (distance <= STRUCTURE_GAP * other)
                            & (embedding <= REGISTERED_RATIO * scale))
    if unsure.size:
        accept[unsure] = _fine_residual_accept(grey, rows[local[unsure]], neighbour[local[unsure], rank[unsure]])
    if second_look is not None:
        # Rule 6: a pair still closer than anything else compared, but not by enough, is looked at again at a finer
        # side.
        doubtful = np.flatnonzero(~accept & (distance <= SECOND_LOOK_MAX) & (distance <= other)
                                  & (embedding <= REGISTERED_RATIO * scale) & np.isfinite(other))
        if doubtful.size:
            accept[doubtful] = _second_look_accept(
                second_look, rows[local[doubtful]], neighbour[local[doubtful], rank[doubtful]], other[doubtful])
    return rows[local[accept]], neighbour[local, rank][accept]


def _registered_accept(t: np.ndarray, other: np.ndarray, embedding: np.ndarray, scale: float) -> np.ndarray:
    """Which compared pairs rule 4 accepts, given their registered distances ``t``, the smallest ``t`` from
    either end to its other compared samples (:func:`_other_registered`) and their embedding distances:
    close in registration, and far closer to each other than either end is to anything else compared."""
    accept = ((t <= REGISTERED_MAX) & (t <= REGISTERED_GAP * other) & (embedding <= REGISTERED_RATIO * scale))
    accept |= ((t <= REGISTERED_TIGHT) & (t <= REGISTERED_TIGHT_GAP * other)
               & (embedding <= REGISTERED_WIDE_RATIO * scale))
    accept |= ((t <= REGISTERED_LOOSE) & (t <= REGISTERED_LOOSE_GAP * other) & (embedding <= REGISTERED_RATIO * scale))
    return accept


def _other_registered(t: np.ndarray, neighbour: np.ndarray, rows: np.ndarray, position: np.ndarray,
                      local: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Per compared pair ``(local, rank)``: the smallest registered distance from either end to its other
    compared samples (``inf`` where there is none)."""
    partner = neighbour[local, rank]
    own_other = np.where(neighbour[local] == partner[:, None], np.inf, t[local]).min(axis=1)
    at = position[partner]
    known = at >= 0
    their_other = np.full(local.size, np.inf)
    their_other[known] = np.where(neighbour[at[known]] == rows[local[known], None], np.inf, t[at[known]]).min(axis=1)
    return np.minimum(own_other, their_other)


def _fine_residual_accept(grey: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Rule 5's last test: registered in the better of the two directions, is what is left of the pair's
    difference fine noise (re-compression, resampling) rather than coarse structure (another object)?"""
    both, params = refined_similarity(grey, np.r_[first, second], np.r_[second, first], return_params=True)
    m = first.size
    forward = both[:m] >= both[m:]
    params = np.where(forward[:, None], params[:m], params[m:])
    share = residual_low_share(grey, np.where(forward, first, second), np.where(forward, second, first), params)
    return share <= STRUCTURE_MAX_SHARE


def _second_look_accept(second_look: Callable[[np.ndarray], np.ndarray], first: np.ndarray, second: np.ndarray,
                        other: np.ndarray) -> np.ndarray:
    """Rule 6: registered again on finer pictures (``second_look``), in its better direction, is the pair at most
    ``SECOND_LOOK_GAP`` x as far apart as the closest other pair either end was compared with (``other``, the
    thumbnails' distance, standing in for that pair's finer one)?"""
    # Each unordered pair once (a pair listed from both ends recurs).
    pairs, which = np.unique(np.sort(np.stack([first, second], axis=1), axis=1), axis=0, return_inverse=True)
    distance = np.empty(len(pairs))
    smallest = REGISTRATION_MARGIN * 2 + 2
    for start in range(0, len(pairs), SECOND_LOOK_BLOCK):  # bounded memory: one block of pictures at a time
        block = pairs[start:start + SECOND_LOOK_BLOCK]
        wanted, inverse = np.unique(block, return_inverse=True)
        pictures = np.asarray(second_look(wanted), dtype=np.float32)
        if pictures.ndim != 3 or pictures.shape[0] != wanted.size or pictures.shape[1] != pictures.shape[2] \
                or pictures.shape[1] < smallest:
            raise InputError(f"second_look must return ({wanted.size}, side, side) grey pictures with side >= "
                             f"{smallest}, got shape {pictures.shape}")
        low, high = inverse.reshape(block.shape).T
        both = refined_similarity(pictures, np.r_[low, high], np.r_[high, low])
        distance[start:start + len(block)] = 1.0 - np.maximum(both[:low.size], both[low.size:])
    return distance[which.reshape(-1)] <= SECOND_LOOK_GAP * other


def _next_other(sims: np.ndarray, idx: np.ndarray, at: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Distance from the sample at kNN row ``at`` to its nearest neighbour other than ``partner``.

    When the partner is not the first neighbour, that is the first one; otherwise the second.
    """
    first_is_partner = idx[at, 0] == partner
    return np.where(first_is_partner, 1.0 - sims[at, 1], 1.0 - sims[at, 0]).astype(np.float64)


def _near_pairs_from_phashes(hashes: np.ndarray, usable: np.ndarray, k: int) -> _NearPairs:
    """Without embeddings: pairs among each hash's k nearest hashes (faiss binary index) within the bit limit."""
    rows = np.flatnonzero(usable)
    if rows.size < 2:
        return _NearPairs.empty()
    set_threads()
    # faiss reads a 64-bit code as 8 bytes; little-endian order keeps Hamming distances intact.
    codes = np.ascontiguousarray(hashes[rows].astype("<u8")).view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    search_k = min(k + 1, rows.size)
    first, second = [], []
    for start in range(0, rows.size, 65_536):
        bits, local = index.search(codes[start:start + 65_536], search_k)
        query = np.broadcast_to(np.arange(start, start + local.shape[0])[:, None], local.shape)
        keep = (bits <= PHASH_ONLY_BITS) & (local != query) & (local >= 0)
        first.append(query[keep])
        second.append(local[keep])
    a, b = rows[np.concatenate(first)], rows[np.concatenate(second)]
    low, high = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(np.stack([low, high], axis=1), axis=0) if low.size else np.empty((0, 2), dtype=np.int64)
    bits = hamming_distance(hashes[pairs[:, 0]], hashes[pairs[:, 1]])
    return _NearPairs(pairs[:, 0], pairs[:, 1], 1.0 - bits / 64.0, None)


class _Groups:
    """Connected components of two or more samples, numbered largest first."""

    def __init__(self, ids: np.ndarray, component: np.ndarray, any_edges: bool) -> None:
        self.ids = ids
        sizes = np.bincount(component)
        grouped = np.flatnonzero(sizes > 1) if any_edges else np.empty(0, dtype=np.int64)
        order = grouped[np.lexsort((grouped, -sizes[grouped]))]
        self.count = order.size
        self.index_of_component = np.full(sizes.size, -1, dtype=np.int64)
        self.index_of_component[order] = np.arange(order.size)
        self.group_of = self.index_of_component[component]
        members = np.flatnonzero(self.group_of >= 0)
        members = members[np.argsort(self.group_of[members], kind="stable")]
        bounds = np.r_[0, np.cumsum(sizes[order])]
        self.members = [members[bounds[g]:bounds[g + 1]] for g in range(self.count)]

    def id_lists(self, chosen: np.ndarray) -> dict[int, list[str]]:
        """Member ids of the chosen groups (capped at MAX_LISTED_MEMBERS each)."""
        return {int(g): [str(s) for s in self.ids[self.members[g][:MAX_LISTED_MEMBERS]]] for g in chosen}


def _member_details(groups: _Groups, chosen: np.ndarray, lists: dict[int, list[str]]) -> dict[str, dict[str, Any]]:
    """Group number, size and members for every member of the chosen groups."""
    details = {}
    for g in chosen:
        size = int(groups.members[g].size)
        base = {"group": int(g), "group_size": size, "members": lists[int(g)]}
        if size > MAX_LISTED_MEMBERS:
            base["members_truncated"] = True
        for row in groups.members[g]:
            details[str(groups.ids[row])] = dict(base)
    return details


def _evidence(lists: dict[int, list[str]], chosen: np.ndarray, cap: int) -> dict[str, Any]:
    """``groups``: member id lists of the largest ``cap`` groups; ``groups_total``: how many there are."""
    return {"groups": [lists[int(g)] for g in chosen[:cap]], "groups_total": int(chosen.size)}


def _flags(n: int, groups: _Groups, chosen: np.ndarray) -> np.ndarray:
    flagged = np.zeros(n, dtype=bool)
    if chosen.size:
        flagged[np.concatenate([groups.members[g] for g in chosen])] = True
    return flagged


def _exact_finding(
    ids: np.ndarray, exact_groups: list[np.ndarray], content_hashes: Any, cap: int
) -> Finding:
    n = len(ids)
    flagged = np.zeros(n, dtype=bool)
    exact_groups = sorted(exact_groups, key=lambda members: (-members.size, members[0]))
    lists = []
    details: dict[str, dict[str, Any]] = {}
    for number, members in enumerate(exact_groups):
        flagged[members] = True
        listed = [str(s) for s in ids[members[:MAX_LISTED_MEMBERS]]]
        lists.append(listed)
        base = {"group": number, "group_size": int(members.size), "members": listed,
                "content_hash": str(content_hashes[members[0]])}
        if members.size > MAX_LISTED_MEMBERS:
            base["members_truncated"] = True
        for row in members:
            details[str(ids[row])] = dict(base)
    redundant = int(flagged.sum()) - len(exact_groups)
    severity = severity_from_share(redundant / max(n, 1), low=1e-12, medium=0.01, high=0.05)
    if content_hashes is None:
        message = "no content hashes: exact duplicates were not checked"
    elif exact_groups:
        message = (f"{redundant} file(s) are byte-identical copies of another file ({len(exact_groups)} group(s)); "
                   "keep one file of each group")
    else:
        message = "no two files are byte-identical"
    return Finding(check="exact_duplicates", severity=severity, message=message, sample_ids=ids, flagged=flagged,
                   scores=flagged.astype(float),
                   summary={"groups": len(exact_groups), "samples": int(flagged.sum()), "redundant": redundant},
                   evidence={"groups": lists[:cap], "groups_total": len(exact_groups)}, details=details)


def _near_finding(
    ids: np.ndarray, groups: _Groups, near_group: np.ndarray, best: np.ndarray, closest_bits: np.ndarray | None,
    scale: float | None, cap: int,
) -> Finding:
    n = len(ids)
    chosen = np.flatnonzero(near_group)
    lists = groups.id_lists(chosen)
    details = _member_details(groups, chosen, lists)
    flagged = _flags(n, groups, chosen)
    for row in np.flatnonzero(flagged):
        extra = details[str(ids[row])]
        extra["similarity"] = round(float(best[row]), 6)
        if closest_bits is not None and closest_bits[row] < 64:
            extra["phash_bits"] = int(closest_bits[row])
    redundant = int(flagged.sum()) - int(chosen.size)
    severity = severity_from_share(redundant / max(n, 1), low=1e-12, medium=0.02, high=0.10)
    if chosen.size:
        message = (f"{int(flagged.sum())} samples form {chosen.size} group(s) of near-identical pictures "
                   f"(resized, re-compressed, slightly cropped or edited copies); {redundant} are redundant")
    else:
        message = "no near-identical pictures found"
    summary: dict[str, Any] = {"groups": int(chosen.size), "samples": int(flagged.sum()), "redundant": redundant}
    if scale is not None:
        summary["distance_scale"] = round(scale, 6)
        summary["rule"] = (f"cosine distance <= {ALONE_RATIO} x {scale:.4f}; or phash <= {PHASH_CONFIRM_BITS} bits "
                           f"and <= {PHASH_CONFIRM_RATIO} x scale; or <= {DISTINCT_RATIO} x scale and at most "
                           f"{DISTINCT_GAP} x the distance to any other neighbour (the last two unless registered "
                           f"thumbnails differ by more than {VETO_ABOVE}); or registered thumbnails within "
                           f"{REGISTERED_MAX} and {REGISTERED_GAP} x their distance to other neighbours, or within "
                           f"{REGISTERED_LOOSE} and {REGISTERED_LOOSE_GAP} x (both up to {REGISTERED_RATIO} x scale), "
                           f"or within {REGISTERED_TIGHT} and {REGISTERED_TIGHT_GAP} x up to {REGISTERED_WIDE_RATIO} "
                           f"x scale; or within {STRUCTURE_MAX} and {STRUCTURE_GAP} x (up to {REGISTERED_RATIO} x "
                           f"scale) with at most {STRUCTURE_MAX_SHARE} of the registration residual surviving a blur; "
                           f"or, looked at again at the images' own size, at most {SECOND_LOOK_GAP} x the "
                           f"thumbnails' distance to the closest other pair")
    return Finding(check="near_duplicates", severity=severity, message=message, sample_ids=ids, flagged=flagged,
                   scores=np.where(flagged, best, 0.0), summary=summary,
                   evidence=_evidence(lists, chosen, cap), details=details)


def _codes(values: Sequence[Any] | np.ndarray, n: int, name: str) -> tuple[np.ndarray, list[Any]]:
    """Integer code per sample (-1 = unknown: None or empty) and the distinct values."""
    _check_length(name, values, n)
    known = [v.item() if isinstance(v, np.generic) else v for v in values]
    distinct: dict[Any, int] = {}
    codes = np.full(n, -1, dtype=np.int64)
    for row, value in enumerate(known):
        if value is None or value == "":
            continue
        codes[row] = distinct.setdefault(value, len(distinct))
    return codes, list(distinct)


def _groups_with_several(groups: _Groups, codes: np.ndarray) -> np.ndarray:
    """Groups whose members carry two or more different known codes."""
    if groups.count == 0:
        return np.empty(0, dtype=np.int64)
    member_rows = np.flatnonzero((groups.group_of >= 0) & (codes >= 0))
    pairs = np.unique(np.stack([groups.group_of[member_rows], codes[member_rows]], axis=1), axis=0)
    distinct = np.bincount(pairs[:, 0], minlength=groups.count) if pairs.size else np.zeros(groups.count, int)
    return np.flatnonzero(distinct >= 2)


class _Spanning:
    """Duplicate groups whose members carry two or more different known values of one column (split or label)."""

    def __init__(self, ids: np.ndarray, groups: _Groups, values: Any, name: str, field: str, best: np.ndarray,
                 cap: int) -> None:
        n = len(ids)
        self.codes, self.names = _codes(values, n, name)
        self.chosen = _groups_with_several(groups, self.codes)
        lists = groups.id_lists(self.chosen)
        self.details = _member_details(groups, self.chosen, lists)
        self.flagged = _flags(n, groups, self.chosen)
        self.evidence = _evidence(lists, self.chosen, cap)
        self.scores = np.where(self.flagged, best, 0.0)
        self.member_values: list[dict[str, Any]] = []
        for g in self.chosen:
            listed = {str(ids[r]): self.value(r) for r in groups.members[g][:MAX_LISTED_MEMBERS]}
            self.member_values.append(listed)
            for row in groups.members[g]:
                self.details[str(ids[row])].update({field: self.value(row), f"member_{field}s": listed,
                                                    "similarity": round(float(best[row]), 6)})

    def value(self, row: int) -> Any:
        return self.names[self.codes[row]] if self.codes[row] >= 0 else None


def _leakage_finding(ids: np.ndarray, groups: _Groups, splits: Any, best: np.ndarray, cap: int) -> Finding:
    n = len(ids)
    if splits is None:
        return Finding(check="split_leakage", severity="none", message="no split information: leakage not checked",
                       sample_ids=ids, flagged=np.zeros(n, bool), scores=np.zeros(n), summary={"groups": 0})
    spanning = _Spanning(ids, groups, splits, "splits", "split", best, cap)
    split_pairs: dict[str, int] = {}
    group_splits = []
    for g in spanning.chosen:
        present = sorted({str(spanning.names[c]) for c in spanning.codes[groups.members[g]] if c >= 0})
        key = "~".join(present)
        split_pairs[key] = split_pairs.get(key, 0) + 1
        group_splits.append(present)
        for row in groups.members[g]:
            spanning.details[str(ids[row])]["splits"] = present
    count = int(spanning.flagged.sum())
    if spanning.chosen.size:
        message = (f"{spanning.chosen.size} group(s) of identical or near-identical samples span several splits "
                   f"({count} samples): evaluation on these copies measures memory, not generalisation; "
                   "keep each group in one split")
    else:
        message = "no duplicate crosses a split boundary"
    spanning.evidence["group_splits"] = group_splits[:cap]
    return Finding(check="split_leakage", severity="high" if spanning.chosen.size else "none", message=message,
                   sample_ids=ids, flagged=spanning.flagged, scores=spanning.scores,
                   summary={"groups": int(spanning.chosen.size), "samples": count, "by_splits": split_pairs},
                   evidence=spanning.evidence, details=spanning.details)


def _conflict_finding(ids: np.ndarray, groups: _Groups, labels: Any, best: np.ndarray, cap: int) -> Finding:
    n = len(ids)
    if labels is None:
        return Finding(check="conflicting_duplicates", severity="none",
                       message="no labels: conflicting duplicates not checked",
                       sample_ids=ids, flagged=np.zeros(n, bool), scores=np.zeros(n), summary={"groups": 0})
    spanning = _Spanning(ids, groups, labels, "labels", "label", best, cap)
    count = int(spanning.flagged.sum())
    severity = "none" if not spanning.chosen.size else severity_from_share(
        count / max(n, 1), low=0.0, medium=0.001, high=0.01)
    if spanning.chosen.size:
        message = (f"{spanning.chosen.size} group(s) of identical or near-identical samples carry different labels "
                   f"({count} samples): at most one label per group can be right")
    else:
        message = "duplicates agree on their labels"
    return Finding(check="conflicting_duplicates", severity=severity, message=message, sample_ids=ids,
                   flagged=spanning.flagged, scores=spanning.scores,
                   summary={"groups": int(spanning.chosen.size), "samples": count},
                   evidence=spanning.evidence, details=spanning.details)
