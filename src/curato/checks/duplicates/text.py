"""Text-native duplicates: exact after normalisation, near by character shingles confirmed by the embedding.

Texts have no perceptual hash and no thumbnail, so none of the picture rules applies to them. Two texts are
exact duplicates (rule ``normalised_text``) when they are equal after :func:`normalise_text` (Unicode NFKC,
casefold, punctuation stripped, whitespace collapsed). Near duplicates (rule ``text_shingles``) are pairs of
the embedding kNN graph within cosine similarity ``text_min_similarity`` whose normalised texts share at
least ``text_jaccard`` of their character ``text_shingle_size``-grams (exact Jaccard on the candidate pairs):
case, punctuation, whitespace or a few characters changed; or (rule ``text_word_edit``) they differ by at most
``text_word_edits`` words replaced, inserted or deleted. The embedding proposes, the characters decide.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from curato.checks.duplicates import rules
from curato.checks.duplicates.candidates import NearPairs, candidate_pairs, embedding_graph
from curato.checks.duplicates.params import DuplicateParams


def normalise_text(text: str) -> str:
    """NFKC, casefolded, punctuation (Unicode category P*) and symbols dropped, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if ch.isspace() else ch for ch in folded if unicodedata.category(ch)[0] not in "PS")
    return " ".join(kept.split())


def text_rows(texts: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray:
    """Rows that hold a text (``None`` = not a text)."""
    if texts is None:
        return np.zeros(n, dtype=bool)
    return np.array([isinstance(t, str) for t in texts], dtype=bool)


def normalised_keys(texts: Sequence[Any] | np.ndarray, is_text: np.ndarray) -> np.ndarray:
    """Per row a key equal for texts equal after normalisation ("" where no text, or nothing left of it)."""
    keys = np.full(len(is_text), "", dtype=object)
    for row in np.flatnonzero(is_text):
        normal = normalise_text(texts[row])
        if normal:
            keys[row] = "text:" + hashlib.sha1(normal.encode("utf-8")).hexdigest()
    return keys


def shingles(normal: str, size: int) -> set[str]:
    """The character ``size``-grams of a normalised text (the whole text when shorter)."""
    if len(normal) <= size:
        return {normal} if normal else set()
    return {normal[i:i + size] for i in range(len(normal) - size + 1)}


def shingle_jaccard(texts: Sequence[Any] | np.ndarray, first: np.ndarray, second: np.ndarray,
                    size: int) -> np.ndarray:
    """Exact Jaccard similarity of the character shingles of each pair's normalised texts."""
    cache: dict[int, set[str]] = {}

    def of(row: int) -> set[str]:
        if row not in cache:
            cache[row] = shingles(normalise_text(texts[row]), size)
        return cache[row]

    out = np.zeros(first.size)
    for i, (a, b) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        sa, sb = of(a), of(b)
        union = len(sa | sb)
        out[i] = len(sa & sb) / union if union else 0.0
    return out


def word_edits(texts: Sequence[Any] | np.ndarray, first: np.ndarray, second: np.ndarray,
               most: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pair the word-level edit distance of the normalised texts (``most + 1`` where it exceeds ``most``)
    and the shorter text's word count."""
    edits = np.full(first.size, most + 1, dtype=np.int64)
    words = np.zeros(first.size, dtype=np.int64)
    for i, (a, b) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        wa, wb = normalise_text(texts[a]).split(), normalise_text(texts[b]).split()
        words[i] = min(len(wa), len(wb))
        edits[i] = _bounded_edits(wa, wb, most)
    return edits, words


def _bounded_edits(a: list[str], b: list[str], most: int) -> int:
    """Levenshtein distance of two word lists, or ``most + 1`` once it is certainly larger (banded)."""
    if abs(len(a) - len(b)) > most:
        return most + 1
    previous = list(range(len(b) + 1))
    for i, word in enumerate(a, start=1):
        current = [i] + [most + 1] * len(b)
        for j in range(max(1, i - most), min(len(b), i + most) + 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != b[j - 1]))
        if min(current) > most:
            return most + 1
        previous = current
    return min(previous[len(b)], most + 1)


def near_text_pairs(embeddings: np.ndarray, texts: Sequence[Any] | np.ndarray, usable: np.ndarray, k: int,
                    neighbours: tuple[np.ndarray, np.ndarray] | None, exact_limit: int,
                    params: DuplicateParams) -> NearPairs:
    """Rule ``text_shingles`` over the kNN pairs of the usable text rows (see the module docstring)."""
    n = len(usable)
    graph = embedding_graph(embeddings, usable, k, neighbours, exact_limit)
    if graph is None:
        return NearPairs.empty()
    widest = 1.0 - min(params.text_min_similarity, params.text_word_edit_similarity)
    found = candidate_pairs(graph, widest, n, params.zero_distance)
    if found.a.size == 0:
        return NearPairs.empty()
    jaccard = shingle_jaccard(texts, found.a, found.b, params.text_shingle_size)
    shingled = rules.text_shingles(jaccard, found.distance, params)
    edits, words = word_edits(texts, found.a, found.b, params.text_word_edits)
    edited = rules.text_word_edit(edits, words, found.distance, params) & ~shingled
    accept = shingled | edited
    rule = np.where(shingled, rules.rule_code("text_shingles"), rules.rule_code("text_word_edit"))
    return NearPairs(found.a[accept], found.b[accept], np.clip(found.similarity[accept], 0.0, 1.0).astype(float),
                     None, rule[accept],
                     {"distance": found.distance[accept],
                      "shingle_jaccard": np.where(shingled, jaccard, np.nan)[accept],
                      "word_edits": np.where(edited, edits, np.nan)[accept]})
