"""Where duplicate pairs come from: content-hash groups, the embedding kNN graph and its scale, hash neighbours.

Nothing here decides whether a pair is a near duplicate (that is :mod:`.rules`); it finds the pairs worth
asking about and the numbers the rules read: each candidate's cosine distance ``d``, the dataset's scale ``D``
(the median distance to the nearest neighbour, exact copies left out) and the ratio of ``d`` to either end's
distance to its next nearest other sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from curato.arrays import check_length
from curato.errors import InputError
from curato.neighbors import knn, pairs_above, set_threads, unit_rows

_HASH_BLOCK = 65_536  # hashes searched at once


@dataclass
class NearPairs:
    """Accepted near-duplicate pairs (row indices, first < second) with their similarity and the scale D; per
    pair the rule that accepted it (an index into :data:`.rules.RULES`) and the distances measured on the way
    (``measures``: name -> one value per pair, NaN where not measured)."""

    first: np.ndarray
    second: np.ndarray
    similarity: np.ndarray
    scale: float | None
    rule: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    measures: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> NearPairs:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), None)

    def concat(self, other: NearPairs) -> NearPairs:
        """These pairs followed by ``other``'s (a measure one side lacks is NaN there; the scale is this one's,
        else the other's)."""
        m, o = self.first.size, other.first.size
        names = sorted(set(self.measures) | set(other.measures))
        measures = {name: np.r_[self.measures.get(name, np.full(m, np.nan)),
                                other.measures.get(name, np.full(o, np.nan))] for name in names}
        return NearPairs(np.r_[self.first, other.first].astype(np.int64),
                         np.r_[self.second, other.second].astype(np.int64),
                         np.r_[self.similarity, other.similarity].astype(float),
                         self.scale if self.scale is not None else other.scale,
                         np.r_[self.rule, other.rule].astype(np.int64), measures)

    def select(self, keep: np.ndarray) -> NearPairs:
        """The pairs where ``keep`` is true."""
        return NearPairs(self.first[keep], self.second[keep], self.similarity[keep], self.scale, self.rule[keep],
                         {name: values[keep] for name, values in self.measures.items()})


def exact_pairs(
    content_hashes: Sequence[str | None] | np.ndarray | None, usable: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Edges linking every member of a content-hash group to its first member, and the groups themselves."""
    empty = np.empty(0, dtype=np.int64)
    if content_hashes is None:
        return empty, empty, []
    check_length("content_hashes", content_hashes, n)
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


@dataclass
class Graph:
    """The embedding kNN graph over the usable rows: unit ``vectors`` (all rows), the ``rows`` it describes, and
    per row its neighbours' similarities ``sims`` and sample indices ``idx`` (best first)."""

    vectors: np.ndarray
    rows: np.ndarray
    sims: np.ndarray
    idx: np.ndarray


def embedding_graph(embeddings: np.ndarray, usable: np.ndarray, k: int,
                    neighbours: tuple[np.ndarray, np.ndarray] | None, exact_limit: int) -> Graph | None:
    """The kNN graph of the usable, non-zero embeddings (``neighbours`` reused when given); None under 2 rows."""
    vectors = unit_rows(embeddings)
    check_length("embeddings", vectors, len(usable))
    rows = np.flatnonzero(usable & (np.abs(vectors).max(axis=1) > 0))
    if rows.size < 2:
        return None
    if neighbours is None:
        sims, local = knn(vectors[rows], max(2, k), exact_limit=exact_limit)
        return Graph(vectors, rows, sims, rows[local])
    sims, idx = (np.asarray(a) for a in neighbours)
    if sims.shape != idx.shape or sims.shape[0] != len(usable) or sims.shape[1] < 2:
        raise InputError("neighbours must be knn() output over all rows of embeddings, with k >= 2")
    sims, idx = sims[rows], idx[rows]
    # Neighbours that are excluded samples must not take part.
    sims = np.where(usable[idx], sims, -np.inf).astype(np.float32)
    return Graph(vectors, rows, sims, idx)


def distance_scale(graph: Graph, zero_distance: float) -> float:
    """D: the median distance to the nearest neighbour, leaving out rows whose nearest is a copy (<= zero)."""
    nearest = 1.0 - graph.sims[:, 0]
    spread = nearest[nearest > zero_distance]
    return float(np.median(spread)) if spread.size else 1.0


@dataclass
class Candidates:
    """Graph pairs ``a < b`` within a distance: their similarity, distance ``d`` and ``gap`` (``d`` over the
    smaller of either end's distance to its nearest sample other than the partner)."""

    a: np.ndarray
    b: np.ndarray
    similarity: np.ndarray  # float32, as the graph holds it
    distance: np.ndarray
    gap: np.ndarray


def candidate_pairs(graph: Graph, widest: float, n: int, zero_distance: float) -> Candidates:
    """Every graph pair within cosine distance ``widest``, with the numbers the embedding rules read."""
    pairs, pair_sims = pairs_above(graph.vectors, 1.0 - widest, neighbours=(graph.sims, graph.idx),
                                   row_ids=graph.rows)
    a, b = pairs[:, 0], pairs[:, 1]
    distance = 1.0 - pair_sims.astype(np.float64)
    position = np.full(n, -1, dtype=np.int64)
    position[graph.rows] = np.arange(graph.rows.size)
    if a.size:
        nearest_other = np.minimum(next_other(graph.sims, graph.idx, position[a], b),
                                   next_other(graph.sims, graph.idx, position[b], a))
        gap = distance / np.maximum(nearest_other, zero_distance)
    else:
        gap = np.empty(0)
    return Candidates(a, b, pair_sims, distance, gap)


def next_other(sims: np.ndarray, idx: np.ndarray, at: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Distance from the sample at kNN row ``at`` to its nearest neighbour other than ``partner``.

    When the partner is not the first neighbour, that is the first one; otherwise the second.
    """
    first_is_partner = idx[at, 0] == partner
    return np.where(first_is_partner, 1.0 - sims[at, 1], 1.0 - sims[at, 0]).astype(np.float64)


def hash_neighbour_pairs(hashes: np.ndarray, usable: np.ndarray, k: int) -> np.ndarray:
    """Pairs ``(i, j)``, ``i < j``, sorted, of each usable hash and its ``k`` nearest hashes (faiss binary index)."""
    rows = np.flatnonzero(usable)
    if rows.size < 2:
        return np.empty((0, 2), dtype=np.int64)
    set_threads()
    # faiss reads a 64-bit code as 8 bytes; little-endian order keeps Hamming distances intact.
    codes = np.ascontiguousarray(hashes[rows].astype("<u8")).view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    search_k = min(k + 1, rows.size)
    first, second = [], []
    for start in range(0, rows.size, _HASH_BLOCK):
        _, local = index.search(codes[start:start + _HASH_BLOCK], search_k)
        query = np.broadcast_to(np.arange(start, start + local.shape[0])[:, None], local.shape)
        keep = (local != query) & (local >= 0)
        first.append(query[keep])
        second.append(local[keep])
    a, b = rows[np.concatenate(first)], rows[np.concatenate(second)]
    low, high = np.minimum(a, b), np.maximum(a, b)
    return np.unique(np.stack([low, high], axis=1), axis=0) if low.size else np.empty((0, 2), dtype=np.int64)
