"""Every threshold of the duplicate checks, as one frozen dataclass (defaults = the tuned values).

Distances: ``d`` is the cosine distance between L2-normalised embeddings and ``D`` the dataset's distance scale
(median nearest-neighbour distance); ``t = 1 - correlation`` of two registered grey pictures. Why each default is
what it is: docs/benchmarks.md, "Near duplicates: how the rules were tuned".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from curato.arrays import check_field
from curato.errors import InputError


@dataclass(frozen=True)
class DuplicateParams:
    """Thresholds of :func:`curato.checks.duplicates.duplicate_findings`; invalid values raise ``InputError``."""

    # The scale D
    zero_distance: float = 1e-6  # nearest-neighbour distances at or below this are copies, left out of D's median
    # embedding_alone (rule 1)
    alone_ratio: float = 0.2  # accept at d <= alone_ratio x D
    # phash_confirmed (rule 2)
    phash_confirm_bits: int = 2  # perceptual hashes within this many of 64 bits ...
    phash_confirm_ratio: float = 0.7  # ... and d <= phash_confirm_ratio x D
    # distinct_pair (rule 3)
    distinct_ratio: float = 1.5  # d <= distinct_ratio x D ...
    distinct_gap: float = 0.5  # ... and d <= distinct_gap x either end's distance to its next nearest other sample
    distinct_max_bits: int = 16  # ... and the hashes differ by at most this many bits (unrelated: ~32)
    # The registration veto on rules 2 and 3
    veto_above: float = 0.03  # drop a rule 2/3 pair whose refined registration is worse than t = veto_above
    # Which pairs are registered (rules 4-6)
    registered_ranks: int = 3  # each sample's nearest embedding neighbours compared ...
    thumbnail_ranks: int = 3  # ... and nearest thumbnail (Fourier-magnitude) neighbours
    refine_below: float = 0.4  # grid placements within t <= refine_below ...
    refine_predicted: float = 0.1  # ... whose parabola-predicted peak is within this are refined continuously
    # registered, registered_tight, registered_loose (rule 4); ``other`` = t from either end to anything else
    registered_ratio: float = 3.0  # rules 4-6 consider pairs within d <= registered_ratio x D
    registered_max: float = 0.02  # registered: t <= registered_max ...
    registered_gap: float = 0.25  # ... and t <= registered_gap x other
    registered_tight: float = 0.003  # registered_tight: t <= registered_tight ...
    registered_tight_gap: float = 0.35  # ... and t <= registered_tight_gap x other ...
    registered_wide_ratio: float = 4.0  # ... within d <= registered_wide_ratio x D
    registered_loose: float = 0.08  # registered_loose: t <= registered_loose ...
    registered_loose_gap: float = 0.1  # ... and t <= registered_loose_gap x other
    # fine_residual (rule 5)
    structure_max: float = 0.04  # pairs rule 4 turns down within t <= structure_max ...
    structure_gap: float = 0.5  # ... and t <= structure_gap x other ...
    structure_max_share: float = 0.12  # ... accepted when at most this share of the residual survives a blur
    # second_look (rule 6)
    second_look_max: float = 0.04  # pairs still turned down within t <= second_look_max and t <= other ...
    second_look_gap: float = 0.1  # ... accepted at a finer t <= second_look_gap x other
    second_look_largest_side: int = 64  # the finer pictures' side is at most this many pixels
    second_look_block: int = 8192  # pairs whose finer pictures are held in memory at once
    # phash_only (no embeddings)
    phash_only_bits: int = 2  # perceptual hashes within this many bits
    # Texts (rules normalised_text and text_shingles; the picture rules never apply to texts)
    text_shingle_size: int = 5  # character n-grams of the normalised text
    text_jaccard: float = 0.6  # text_shingles: Jaccard of the shingle sets at least this ...
    text_min_similarity: float = 0.8  # ... and embedding cosine similarity at least this
    text_word_edits: int = 1  # text_word_edit: at most this many words replaced, inserted or deleted ...
    text_word_edit_min_words: int = 6  # ... in texts of at least this many words ...
    text_word_edit_similarity: float = 0.5  # ... and embedding cosine similarity at least this
    # The findings
    max_listed_members: int = 1_000  # members (and accepted pairs) listed per group
    exact_medium_share: float = 0.01  # exact_duplicates: redundant share for medium severity (any copy: low)
    exact_high_share: float = 0.05  # ... and for high
    near_medium_share: float = 0.02  # near_duplicates: redundant share for medium severity (any copy: low)
    near_high_share: float = 0.10  # ... and for high
    conflict_medium_share: float = 0.001  # conflicting_duplicates: flagged share for medium severity (any: low)
    conflict_high_share: float = 0.01  # ... and for high

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check_field("duplicates", self, field.name, **_LIMITS[field.name])
        for medium, high in (("exact_medium_share", "exact_high_share"), ("near_medium_share", "near_high_share"),
                             ("conflict_medium_share", "conflict_high_share")):
            if getattr(self, high) < getattr(self, medium):
                raise InputError(f"duplicates.{high}: must be >= {medium} ({getattr(self, medium)}), "
                                 f"got {getattr(self, high)!r}")


_POSITIVE = {"low": 0.0, "strict": True}
_NON_NEGATIVE = {"low": 0.0}
_SHARE = {"low": 0.0, "high": 1.0}
_BITS = {"integer": True, "low": 0, "high": 64}
_COUNT = {"integer": True, "low": 1}
_LIMITS = {
    "zero_distance": _NON_NEGATIVE,
    "alone_ratio": _POSITIVE, "phash_confirm_bits": _BITS, "phash_confirm_ratio": _POSITIVE,
    "distinct_ratio": _POSITIVE, "distinct_gap": _POSITIVE, "distinct_max_bits": _BITS,
    "veto_above": _NON_NEGATIVE,
    "registered_ranks": _COUNT, "thumbnail_ranks": _COUNT, "refine_below": _NON_NEGATIVE,
    "refine_predicted": _NON_NEGATIVE,
    "registered_ratio": _POSITIVE, "registered_max": _NON_NEGATIVE, "registered_gap": _POSITIVE,
    "registered_tight": _NON_NEGATIVE, "registered_tight_gap": _POSITIVE, "registered_wide_ratio": _POSITIVE,
    "registered_loose": _NON_NEGATIVE, "registered_loose_gap": _POSITIVE,
    "structure_max": _NON_NEGATIVE, "structure_gap": _POSITIVE, "structure_max_share": _SHARE,
    "second_look_max": _NON_NEGATIVE, "second_look_gap": _POSITIVE, "second_look_largest_side": _COUNT,
    "second_look_block": _COUNT,
    "phash_only_bits": _BITS,
    "text_shingle_size": _COUNT, "text_jaccard": _SHARE, "text_min_similarity": {"low": -1.0, "high": 1.0},
    "text_word_edits": {"integer": True, "low": 0}, "text_word_edit_min_words": _COUNT,
    "text_word_edit_similarity": {"low": -1.0, "high": 1.0},
    "max_listed_members": _COUNT,
    "exact_medium_share": _SHARE, "exact_high_share": _SHARE, "near_medium_share": _SHARE,
    "near_high_share": _SHARE, "conflict_medium_share": _SHARE, "conflict_high_share": _SHARE,
}
