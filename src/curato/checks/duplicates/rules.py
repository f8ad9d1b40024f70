"""The acceptance rules: which candidate pairs are near duplicates, one named function per rule.

Each rule takes the numbers :mod:`.candidates` and :mod:`.registration` measured (arrays aligned per pair)
and the :class:`~.params.DuplicateParams`, and returns a boolean mask of the pairs it accepts. A pair is a
near duplicate when any rule accepts it; it is recorded under the first rule of :data:`RULES` that does.
Distances: ``d`` = cosine distance of the embeddings, ``D`` = the dataset's scale (median nearest-neighbour
distance), ``t`` = 1 - correlation of the registered grey pictures, ``other`` = the smallest ``t`` from either
end of the pair to anything else it was compared with. docs/findings.md lists the rule names; why each cut is
where it is: docs/benchmarks.md, "Near duplicates: how the rules were tuned".
"""

from __future__ import annotations

import numpy as np

from curato.checks.duplicates.params import DuplicateParams

# Every name a pair can be accepted under, in the order they are tried (``identical_bytes``: same content hash;
# ``normalised_text``: texts equal after normalisation; ``text_shingles``: texts sharing most character shingles).
RULES = ("identical_bytes", "embedding_alone", "phash_confirmed", "distinct_pair", "registered",
         "registered_tight", "registered_loose", "fine_residual", "second_look", "fixed_threshold", "phash_only",
         "normalised_text", "text_shingles", "text_word_edit")

_REGISTERED = ("distance", "registered_distance", "other_registered_distance")
# What each rule read, recorded with every pair it accepts: ``distance`` = d; ``gap`` = d over either end's
# distance to its next nearest other sample; ``phash_bits``; ``registered_distance`` = t (for rules 2 and 3: the
# veto's t, where thumbnails exist); ``other_registered_distance`` = other; ``residual_low_share`` (rule 5);
# ``second_look_distance`` = t on the finer pictures (rule 6).
MEASURES: dict[str, tuple[str, ...]] = {
    "identical_bytes": (),
    "embedding_alone": ("distance",),
    "phash_confirmed": ("distance", "phash_bits", "registered_distance"),
    "distinct_pair": ("distance", "gap", "phash_bits", "registered_distance"),
    "registered": _REGISTERED,
    "registered_tight": _REGISTERED,
    "registered_loose": _REGISTERED,
    "fine_residual": (*_REGISTERED, "residual_low_share"),
    "second_look": (*_REGISTERED, "second_look_distance"),
    "fixed_threshold": ("distance",),
    "phash_only": ("phash_bits",),
    "normalised_text": (),
    "text_shingles": ("distance", "shingle_jaccard"),
    "text_word_edit": ("distance", "word_edits"),
}


def rule_code(name: str) -> int:
    """The index of a rule in :data:`RULES` (lower = tried first)."""
    return RULES.index(name)


def embedding_alone(distance: np.ndarray, scale: float, params: DuplicateParams) -> np.ndarray:
    """Rule 1: the embeddings alone, ``d <= alone_ratio x D``.

    So close that distinct pictures almost never get there: in the 10-NN graph of 12,000 Fashion-MNIST
    originals only 2 distinct pairs are closer than 0.2 D. Copies that were barely touched land here.
    """
    return distance <= params.alone_ratio * scale


def phash_confirmed(distance: np.ndarray, bits: np.ndarray, scale: float, params: DuplicateParams) -> np.ndarray:
    """Rule 2: the perceptual hash confirms, Hamming ``<= phash_confirm_bits`` and ``d <= phash_confirm_ratio x D``.

    Resized, re-compressed and brightened copies keep their hash (94% within 2 bits) but may move far in the
    embedding; together the two are rare among distinct neighbours (0.02% of them).
    """
    return (bits <= params.phash_confirm_bits) & (distance <= params.phash_confirm_ratio * scale)


def distinct_pair(distance: np.ndarray, gap: np.ndarray, bits: np.ndarray | None, scale: float,
                  params: DuplicateParams) -> np.ndarray:
    """Rule 3: a mutually distinct pair, ``d <= distinct_ratio x D`` and ``d <= distinct_gap x`` either end's
    distance to its next nearest other sample, and (with hashes) Hamming ``<= distinct_max_bits``.

    Shifted and cropped copies change the hash and move about half of D, as far as look-alike products; the
    ones that stay much closer to their source than to anything else are recovered by the ratio test. The
    bit limit only rules out contradictions (unrelated pictures differ in ~32 bits).
    """
    accept = (distance <= params.distinct_ratio * scale) & (gap <= params.distinct_gap)
    if bits is not None:
        accept &= bits <= params.distinct_max_bits
    return accept


def registration_veto(t: np.ndarray, params: DuplicateParams) -> np.ndarray:
    """Not an acceptance rule: the pairs rules 2 and 3 accepted that the pixels overrule, ``t > veto_above``.

    The embedding or the hash saw two look-alikes; registered thumbnails that still differ say they are
    different pictures.
    """
    return t > params.veto_above


def registered(t: np.ndarray, other: np.ndarray, distance: np.ndarray, scale: float,
               params: DuplicateParams) -> np.ndarray:
    """Rule 4: registered thumbnails agree, ``t <= registered_max`` and ``t <= registered_gap x other``, within
    ``d <= registered_ratio x D``.

    Copies shifted, cropped or rescaled a little line up again after registration. Distinct products of one cut
    correlate up to 0.99 as well, hence the ratio test against everything else compared.
    """
    return ((t <= params.registered_max) & (t <= params.registered_gap * other)
            & (distance <= params.registered_ratio * scale))


def registered_tight(t: np.ndarray, other: np.ndarray, distance: np.ndarray, scale: float,
                     params: DuplicateParams) -> np.ndarray:
    """Rule 4, exact match: ``t <= registered_tight`` and ``t <= registered_tight_gap x other``, within the wider
    ``d <= registered_wide_ratio x D``.

    An exact match of the pictures outweighs an embedding that drifted, e.g. after a strong down-scale.
    """
    return ((t <= params.registered_tight) & (t <= params.registered_tight_gap * other)
            & (distance <= params.registered_wide_ratio * scale))


def registered_loose(t: np.ndarray, other: np.ndarray, distance: np.ndarray, scale: float,
                     params: DuplicateParams) -> np.ndarray:
    """Rule 4, distinctive picture: ``t <= registered_loose`` and ``t <= registered_loose_gap x other``, within
    ``d <= registered_ratio x D``.

    A distinctive picture whose copy was cropped and re-compressed: the match is looser, but nothing else comes
    anywhere close.
    """
    return ((t <= params.registered_loose) & (t <= params.registered_loose_gap * other)
            & (distance <= params.registered_ratio * scale))


def fine_residual_candidates(t: np.ndarray, other: np.ndarray, distance: np.ndarray, scale: float,
                             params: DuplicateParams) -> np.ndarray:
    """The pairs rule 5 examines (among those rule 4 turned down): ``t <= structure_max``, ``t <= structure_gap x
    other``, within ``d <= registered_ratio x D`` -- closer than anything else compared, but not by enough."""
    return ((t <= params.structure_max) & (t <= params.structure_gap * other)
            & (distance <= params.registered_ratio * scale))


def fine_residual(share: np.ndarray, params: DuplicateParams) -> np.ndarray:
    """Rule 5: of a pair :func:`fine_residual_candidates` chose, at most ``structure_max_share`` of the registration
    residual's energy survives a blur of one thumbnail pixel.

    Re-compression, resampling and a pixel's crop leave noise from pixel to pixel, which the blur averages away;
    a different product of the same cut leaves coarse differences (a longer sleeve, another collar, a print)
    that survive it. This separates look-alikes that lie within 1.5-3x of a copy's ``t``, which the ratio tests
    of rule 4 cannot resolve.
    """
    return share <= params.structure_max_share


def second_look_candidates(t: np.ndarray, other: np.ndarray, distance: np.ndarray, scale: float,
                           params: DuplicateParams) -> np.ndarray:
    """The pairs rule 6 examines (among those still turned down): ``t <= second_look_max``, no farther than
    ``other``, within ``d <= registered_ratio x D``, and something else was compared (``other`` finite)."""
    return ((t <= params.second_look_max) & (t <= other) & (distance <= params.registered_ratio * scale)
            & np.isfinite(other))


def second_look(finer_t: np.ndarray, other: np.ndarray, params: DuplicateParams) -> np.ndarray:
    """Rule 6: registered again on finer pictures (the images' own size, at most ``second_look_largest_side``),
    ``finer_t <= second_look_gap x other``, where ``other`` is the thumbnails' distance to the closest look-alike.

    The 24 px thumbnail resamples a 28 px picture by 6/7, so a copy shifted or cropped by a whole source pixel
    registers only approximately there; at its own size it lines up exactly. The look-alike's thumbnail
    distance stands in for its finer one (registering it again doubled the cost for 0-2 more copies per seed).
    """
    return finer_t <= params.second_look_gap * other


def registration_reach(distance: np.ndarray, scale: float, params: DuplicateParams) -> np.ndarray:
    """The embedding distances within which rules 4-6 can accept or examine a pair (every one of them asks for
    ``d <= registered_ratio x D`` or ``d <= registered_wide_ratio x D``): pairs beyond need no registration of
    their own."""
    return (distance <= params.registered_ratio * scale) | (distance <= params.registered_wide_ratio * scale)


def registration_may_pass(t: np.ndarray, distance: np.ndarray, scale: float, params: DuplicateParams) -> np.ndarray:
    """What every one of rules 4-6 (and the choice of the pairs rules 5 and 6 examine) asks of a pair's own ``t``
    and ``d``, whatever ``other`` is: a pair outside it is turned down by all of them, so the registered distances
    of its two ends' other pairs cannot change any decision through it."""
    near = ((t <= params.registered_max) | (t <= params.registered_loose) | (t <= params.structure_max)
            | (t <= params.second_look_max))
    return ((near & (distance <= params.registered_ratio * scale))
            | ((t <= params.registered_tight) & (distance <= params.registered_wide_ratio * scale)))


def fixed_threshold(distance: np.ndarray, threshold: float) -> np.ndarray:
    """With ``near_threshold`` given, the whole rule: cosine similarity ``>= near_threshold``, i.e.
    ``d <= 1 - near_threshold``.

    The caller asked for exactly this cut, so no other rule and no veto applies.
    """
    return distance <= 1.0 - threshold


def phash_only(bits: np.ndarray, params: DuplicateParams) -> np.ndarray:
    """Without embeddings: perceptual hashes within ``phash_only_bits`` bits.

    Less precise than the rules above: simple pictures such as product silhouettes on a plain background share
    hashes.
    """
    return bits <= params.phash_only_bits


def text_shingles(jaccard: np.ndarray, distance: np.ndarray, params: DuplicateParams) -> np.ndarray:
    """Texts only: the normalised texts share ``>= text_jaccard`` of their character shingles and the embeddings
    agree, cosine similarity ``>= text_min_similarity``.

    A changed word, a typo or re-punctuation leaves most character n-grams in place; two different texts on the
    same topic share the embedding's neighbourhood but few n-grams.
    """
    return (jaccard >= params.text_jaccard) & (distance <= 1.0 - params.text_min_similarity)


def text_word_edit(edits: np.ndarray, words: np.ndarray, distance: np.ndarray, params: DuplicateParams) -> np.ndarray:
    """Texts only: at most ``text_word_edits`` words replaced, inserted or deleted (word-level edit distance of
    the normalised texts), both texts at least ``text_word_edit_min_words`` words long, and cosine similarity
    ``>= text_word_edit_similarity``.

    One word changed in a short text moves a third of its character shingles and much of its embedding (on
    fortunes, MiniLM cosine down to 0.6), yet the rest of the sentence is word for word the same.
    """
    return ((edits <= params.text_word_edits) & (words >= params.text_word_edit_min_words)
            & (distance <= 1.0 - params.text_word_edit_similarity))
