"""The pixels' say: registering grey pictures onto each other, for rules 4-6 and the veto on rules 2 and 3.

Each sample is compared with its nearest embedding neighbours and its nearest thumbnail neighbours (found by
Fourier magnitudes, which a shift or a one-pixel crop leaves nearly unchanged). A compared pair is registered
on the 24 px grey thumbnails over a grid of scales and shifts
(:func:`curato.features.thumbnails.registered_similarity`), refined continuously where the grid comes close
(:func:`~curato.features.thumbnails.refined_similarity`), and measured as ``t = 1 - correlation``. Registration
is not symmetric, so a pair listed from both ends counts its better direction. Next to its own ``t`` each pair
carries ``other``: the smallest ``t`` from either end to anything else it was compared with, the yardstick of
the rules' ratio tests. This module also measures what rules 5 and 6 look at: the share of the registration
residual that survives a blur, and ``t`` again on finer pictures (``second_look``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from curato.checks.duplicates import rules
from curato.checks.duplicates.candidates import Graph
from curato.checks.duplicates.params import DuplicateParams
from curato.errors import InputError
from curato.features.properties import GREY_SIDE
from curato.features.thumbnails import (
    REGISTRATION_MARGIN,
    fourier_descriptors,
    refined_similarity,
    registered_similarity,
    residual_low_share,
)
from curato.neighbors import knn

_GATHER_BLOCK = 16_384  # rows whose neighbours' embeddings are gathered at once


@dataclass
class Comparisons:
    """Registered pairs, one entry per (sample, compared neighbour): sample indices ``first`` and ``second``,
    registered distance ``t`` (better direction), ``other`` (smallest ``t`` from either end to anything else
    compared; ``inf`` where there is none) and the embedding distance ``d``."""

    first: np.ndarray
    second: np.ndarray
    t: np.ndarray
    other: np.ndarray
    distance: np.ndarray


def compare_neighbours(grey: np.ndarray, graph: Graph, params: DuplicateParams,
                       scale: float | None = None) -> Comparisons:
    """Register every sample with its ``registered_ranks`` nearest embedding and ``thumbnail_ranks`` nearest
    thumbnail neighbours (both with a stored thumbnail; a partner listed twice is compared once).

    With ``scale`` (the rules' ``D``), only the entries whose ``t`` can change a decision of rules 4-6 are
    registered (:func:`_deciding_entries`); the others keep ``t = inf`` -- every rule turns them down either way.
    """
    rows = graph.rows
    ranks = min(params.registered_ranks, graph.idx.shape[1])
    # Thumbnail neighbours are searched by Fourier magnitudes; only candidates come from it -- every candidate
    # is then registered at full resolution.
    _, extra = knn(fourier_descriptors(grey[rows]), params.thumbnail_ranks)
    neighbour = np.concatenate([graph.idx[:, :ranks], rows[extra]], axis=1)
    extra_sims = np.empty(extra.shape, dtype=np.float32)
    for start in range(0, rows.size, _GATHER_BLOCK):  # bounded memory: one block of gathered rows at a time
        block = slice(start, start + _GATHER_BLOCK)
        own = graph.vectors[rows[block]]
        for column in range(extra.shape[1]):
            extra_sims[block, column] = np.einsum("nd,nd->n", own, graph.vectors[rows[extra[block, column]]])
    sims = np.concatenate([graph.sims[:, :ranks], extra_sims], axis=1)
    ranks = neighbour.shape[1]
    pictured = has_picture(grey)
    repeated = ((neighbour[:, :, None] == neighbour[:, None, :]) & np.tri(ranks, k=-1, dtype=bool)[None]).any(axis=2)
    valid = (np.isfinite(sims[:, :ranks]) & (neighbour >= 0) & ~repeated & pictured[rows, None]
             & pictured[neighbour])
    local, rank = np.nonzero(valid)
    partner = neighbour[local, rank]
    distance = 1.0 - sims[local, rank]
    position = np.full(grey.shape[0], -1, dtype=np.int64)
    position[rows] = np.arange(rows.size)
    # A copy shifted or cropped one way registers well in one direction only: a pair listed from both ends
    # counts the better of its two directions, in its own test and in its neighbours' ratio tests.
    at = position[partner]
    back = (at[:, None] >= 0) & (neighbour[np.maximum(at, 0)] == rows[local, None])
    entry = np.full((rows.size, ranks), -1, dtype=np.int64)
    entry[local, rank] = np.arange(local.size)
    reverse = np.where(back.any(axis=1), entry[np.maximum(at, 0), back.argmax(axis=1)], -1)
    one_way = np.full(local.size, np.inf)  # t of each entry in its own direction
    registered = np.zeros(local.size, dtype=bool)

    def register(chosen: np.ndarray) -> None:
        chosen = chosen[~registered[chosen]]  # each entry once
        if chosen.size == 0:
            return
        registered[chosen] = True
        coarse, placement, peak = registered_similarity(grey, rows[local[chosen]], partner[chosen],
                                                        return_peak=True)
        # The grid leaves up to half a thumbnail pixel of misregistration, which costs textured pictures much of
        # their correlation; every pair the grid finds close enough to matter is refined continuously.
        close = np.flatnonzero((1.0 - coarse <= params.refine_below) & (1.0 - peak <= params.refine_predicted))
        coarse[close] = refined_similarity(grey, rows[local[chosen[close]]], partner[chosen[close]],
                                           start=(coarse[close], placement[close]))
        one_way[chosen] = 1.0 - coarse

    def better_direction() -> np.ndarray:
        return np.minimum(one_way, np.where(reverse >= 0, one_way[np.maximum(reverse, 0)], np.inf))

    if scale is None:
        register(np.arange(local.size))
    else:
        _deciding_entries(register, better_direction, local, at, reverse, distance, scale, params)
    t = np.full((rows.size, ranks), np.inf)
    t[local, rank] = better_direction()
    other = _other_registered(t, neighbour, rows, position, local, rank)
    return Comparisons(rows[local], partner, t[local, rank], other, distance)


def _deciding_entries(register: Callable[[np.ndarray], None], better_direction: Callable[[], np.ndarray],
                      local: np.ndarray, at: np.ndarray, reverse: np.ndarray, distance: np.ndarray, scale: float,
                      params: DuplicateParams) -> None:
    """Register just the entries whose ``t`` rules 4-6 can read, with results equal to registering all of them.

    An entry can be accepted (or examined by rules 5 and 6) only within :func:`.rules.registration_reach` and
    with :func:`.rules.registration_may_pass`; its ratio tests read ``t`` of every entry listed by either of
    its two samples. So: first the entries within reach (and their reverse entries, for the better
    direction), which settles which entries may pass; then every entry of those entries' samples. An entry
    left out is beyond reach and lists neither sample of an entry that may pass: its own rules fail on ``d``,
    and no ratio test that can succeed reads it.
    """
    def with_reverse(chosen: np.ndarray) -> np.ndarray:
        return np.union1d(chosen, reverse[chosen][reverse[chosen] >= 0])

    reach = rules.registration_reach(distance, scale, params)
    register(with_reverse(np.flatnonzero(reach)))
    deciding = reach & rules.registration_may_pass(better_direction(), distance, scale, params)
    samples = np.union1d(local[deciding], at[deciding][at[deciding] >= 0])
    register(with_reverse(np.flatnonzero(np.isin(local, samples))))


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


def has_picture(grey: np.ndarray) -> np.ndarray:
    """Rows with a stored thumbnail (an all-zero row has none)."""
    return grey.reshape(grey.shape[0], -1).any(axis=1)


def better_direction_distance(grey: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Refined registered distance ``t`` of each pair in the better of its two directions."""
    both = refined_similarity(grey, np.r_[first, second], np.r_[second, first])
    return 1.0 - np.maximum(both[:first.size], both[first.size:])


def residual_shares(grey: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Registered in the better of the two directions, the share of each pair's residual that survives a blur of
    one thumbnail pixel (:func:`curato.features.thumbnails.residual_low_share`): small for fine noise
    (re-compression, resampling), large for coarse structure (another object)."""
    both, placement = refined_similarity(grey, np.r_[first, second], np.r_[second, first], return_params=True)
    m = first.size
    forward = both[:m] >= both[m:]
    placement = np.where(forward[:, None], placement[:m], placement[m:])
    return residual_low_share(grey, np.where(forward, first, second), np.where(forward, second, first), placement)


def second_look_distances(second_look: Callable[[np.ndarray], np.ndarray], first: np.ndarray, second: np.ndarray,
                          block_size: int) -> np.ndarray:
    """``t`` of each pair registered again on the finer pictures ``second_look(rows)`` returns (better direction),
    loading the pictures of ``block_size`` pairs at a time."""
    # Each unordered pair once (a pair listed from both ends recurs).
    pairs, which = np.unique(np.sort(np.stack([first, second], axis=1), axis=1), axis=0, return_inverse=True)
    distance = np.empty(len(pairs))
    smallest = REGISTRATION_MARGIN * 2 + 2
    for start in range(0, len(pairs), block_size):  # bounded memory: one block of pictures at a time
        block = pairs[start:start + block_size]
        wanted, inverse = np.unique(block, return_inverse=True)
        pictures = np.asarray(second_look(wanted), dtype=np.float32)
        if pictures.ndim != 3 or pictures.shape[0] != wanted.size or pictures.shape[1] != pictures.shape[2] \
                or pictures.shape[1] < smallest:
            raise InputError(f"second_look must return ({wanted.size}, side, side) grey pictures with side >= "
                             f"{smallest}, got shape {pictures.shape}")
        low, high = inverse.reshape(block.shape).T
        distance[start:start + len(block)] = better_direction_distance(pictures, low, high)
    return distance[which.reshape(-1)]


def second_look_side(sizes: np.ndarray, params: DuplicateParams | None = None) -> int | None:
    """The side of rule 6's pictures for images of these ``(width, height)`` sizes (0 = unknown): the median
    shorter side, at most ``params.second_look_largest_side``; ``None`` where that is no finer than the
    thumbnail."""
    params = params or DuplicateParams()
    sizes = np.asarray(sizes)
    shorter = sizes.min(axis=1) if sizes.ndim == 2 and sizes.size else np.zeros(0)
    shorter = shorter[shorter > 0]
    if shorter.size == 0:
        return None
    side = int(min(np.median(shorter), params.second_look_largest_side))
    return side if side > GREY_SIDE else None
