"""Numeric properties of texts: what a text classifier could learn instead of the meaning.

The text counterpart of :mod:`curato.features.properties`: pure functions over lists of strings, no I/O.
A class whose texts are all longer, shouting, full of links, in another language, damaged by a wrong
encoding or stamped with one source's signature ("ADVERTISEMENT:", "Sent from my phone") can be predicted
from that alone; the ``shortcuts`` check tests these columns like image properties, and the ``image_quality``
check (text rules only on text rows) flags empty, damaged and odd texts.

Per text (:data:`TEXT_PROPERTY_COLUMNS`, computed at ingest and stored like image properties; NaN = unknown,
e.g. a share of an empty text):

=====================  ==================================================================================
chars                  characters (Unicode code points)
words                  word tokens (runs of letters, digits or underscores)
mean_word_length       characters per word token
punctuation_share      share of the non-space characters that are punctuation (Unicode category P*)
uppercase_share        share of the letters that are upper case (casing: ~0.03 in plain prose, 1 when
                       shouting); NaN without letters
digit_share            share of the non-space characters that are digits
url_share              share of the characters inside web addresses (``http(s)://...``, ``www....``)
email_share            share of the characters inside e-mail addresses
html_share             share of the characters inside HTML/XML tags (``<b>``, ``</p>``) and entities (``&amp;``)
emoji_share            share of the characters that are emoji or pictographs (and their joiners/selectors)
encoding_damage        marks of a wrong decoding: U+FFFD, C1 control characters and mojibake sequences
                       (UTF-8 read as Latin-1/Windows-1252: "Ã©", "â€™"); ftfy's badness measure when
                       ftfy is installed (the ``text`` extra), the larger of the two counts
language               index into :data:`LANGUAGES` of the language whose function words the text uses
                       most (a stop-word profile: offline, no model); NaN when no language is clear
=====================  ==================================================================================

Per collection (:func:`boilerplate_columns`, computed when the samples are loaded, since they depend on
which texts are in the workspace): ``boilerplate_prefix`` / ``boilerplate_suffix``, the code of the opening or
closing phrase a text shares with many others of the collection (a source's signature), categories named in
the returned lists ("" = none).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import cache

import numpy as np

TEXT_PROPERTY_COLUMNS: tuple[str, ...] = (
    "chars",
    "words",
    "mean_word_length",
    "punctuation_share",
    "uppercase_share",
    "digit_share",
    "url_share",
    "email_share",
    "html_share",
    "emoji_share",
    "encoding_damage",
    "language",
)
BOILERPLATE_COLUMNS: tuple[str, ...] = ("boilerplate_prefix", "boilerplate_suffix")
# Every text column, stored and derived: what the checks recognise as text properties.
TEXT_COLUMNS = frozenset(TEXT_PROPERTY_COLUMNS) | frozenset(BOILERPLATE_COLUMNS)
# Columns whose values are category codes (names in the categories the loader attaches).
TEXT_CATEGORICAL = frozenset({"language", *BOILERPLATE_COLUMNS})
TEXT_PROPERTIES_VERSION = 1
TEXT_PROPERTIES = "text-properties"  # the feature set ingest stores them in (like image "properties")

# Function words per language, written for this profile: the most frequent articles, pronouns, prepositions
# and conjunctions; a word several languages use ("de", "la") is listed under each and splits its vote.
LANGUAGES: tuple[str, ...] = ("english", "german", "french", "spanish", "italian", "portuguese", "dutch")
_FUNCTION_WORDS = {
    "english": "the and of to is that it was for you with on as are this be at have not they but from or his by we "
               "which she he what there their an if would will all can my your been has when who were one",
    "german": "der und die das ist nicht sie ich es zu mit sich dem den auf ein eine für von auch wird werden sind "
              "oder wenn aber nach bei noch wie einen kann über nur dass durch",
    "french": "de la que en un le les et est des du une pour qui pas dans sur au avec ce il sont ne plus par vous "
              "nous mais ou être cette elle aux ont leur peut été",
    "spanish": "de la que en un no el los las y es del por una para con se su al lo como más pero sus este esta son "
               "cuando muy sin sobre también fue hay está puede desde hasta ya otro todos donde",
    "italian": "la un il di che è e gli della per non una sono con del le lo si da alla nel ha come anche questo più "
               "ma dei nella essere può delle stato questa tutti ogni",
    "portuguese": "de que um o os as e é do da em uma para com não dos das no na por se mais ao ser está foi são "
                  "pode também isso nos ou seu sua você pelo pela já ainda",
    "dutch": "het een en van is dat op te zijn niet met voor die er aan ook als bij maar wordt kan worden naar dan "
             "nog deze kunnen uit hebben dit je uw geen wat",
}
_STOP_WORDS = {language: frozenset(words.split(" ")) for language, words in _FUNCTION_WORDS.items()}
# A word several languages share splits its vote among them.
_WORD_LANGUAGES: dict[str, list[int]] = {}
for _index, _language in enumerate(LANGUAGES):
    for _word in _STOP_WORDS[_language]:
        _WORD_LANGUAGES.setdefault(_word, []).append(_index)
_VOTES = {word: [(index, 1.0 / len(indices)) for index in indices] for word, indices in _WORD_LANGUAGES.items()}
MIN_LANGUAGE_VOTES = 2  # function words a text needs before a language is named
LANGUAGE_MARGIN = 2.0  # ... and the winner needs this many times the runner-up's votes

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s")
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[^\W\d_]")


@cache
def _class_of(prefix: str) -> re.Pattern[str]:
    """A character class of the Basic Multilingual Plane's characters whose Unicode category starts with ``prefix``
    (counting with a regex is several times faster than testing characters one by one; built on first use)."""
    members = "".join(re.escape(chr(code)) for code in range(0x10000)
                      if unicodedata.category(chr(code)).startswith(prefix))
    return re.compile(f"[{members}]")

_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_HTML = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>|<!--.*?-->"
                   r"|&(?:[A-Za-z]{2,8}|#\d{1,6}|#x[0-9A-Fa-f]{1,6});", re.DOTALL)
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F\u200D\U0001F1E6-\U0001F1FF]")
# UTF-8 bytes read as Latin-1 or Windows-1252: a lead byte (Ã, Â, â, Ð, Ñ, ...) followed by what was a
# continuation byte (0x80-0xBF), which those code pages show as these characters.
_CONTINUATION = "\u0080-\u00bf€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_MOJIBAKE = re.compile(f"[ÂÃÄÅÆÇÐÑØÙâãäåæçèéêëìíîïðñ][{_CONTINUATION}]")
_BROKEN = re.compile("[\ufffd\u0080-\u009f]")


def text_properties(texts: Sequence[str | None]) -> np.ndarray:
    """Per-text properties: float64 array (n, len(TEXT_PROPERTY_COLUMNS)), see the module docstring.

    ``None`` (not a text) gives a NaN row. Shares of texts without the characters they divide by are NaN.
    """
    out = np.full((len(texts), len(TEXT_PROPERTY_COLUMNS)), np.nan)
    for row, text in enumerate(texts):
        if text is not None:
            out[row] = _one_text(str(text))
    return out


def _one_text(text: str) -> list[float]:
    chars = len(text)
    words = _WORD.findall(text)
    visible = chars - len(_SPACE.findall(text))
    letters = len(_LETTER.findall(text))
    punctuation = len(_class_of("P").findall(text))
    uppercase = len(_class_of("Lu").findall(text))
    digits = len(_DIGIT.findall(text))

    def share(part: float, whole: int) -> float:
        return part / whole if whole else float("nan")

    def covered(pattern: re.Pattern[str]) -> int:
        return sum(match.end() - match.start() for match in pattern.finditer(text))

    return [
        float(chars), float(len(words)), share(sum(map(len, words)), len(words)),
        share(punctuation, visible), share(uppercase, letters), share(digits, visible),
        share(covered(_URL), chars), share(covered(_EMAIL), chars), share(covered(_HTML), chars),
        share(len(_EMOJI.findall(text)), chars), float(encoding_damage(text)), language_code(words),
    ]


def encoding_damage(text: str) -> int:
    """Marks of a wrong decoding in ``text``: replacement characters, C1 controls and mojibake pairs (the larger
    of this rule set and ftfy's badness, when ftfy is installed)."""
    marks = len(_BROKEN.findall(text)) + len(_MOJIBAKE.findall(text))
    try:
        from ftfy.badness import badness
    except ImportError:  # the ``text`` extra is not installed: the rule set alone
        return marks
    return max(marks, int(badness(text)))


def language_code(words: Sequence[str]) -> float:
    """Index into :data:`LANGUAGES` of the language with most distinct function words in ``words``, NaN when none
    reaches :data:`MIN_LANGUAGE_VOTES` or the runner-up has more than 1 / :data:`LANGUAGE_MARGIN` of its votes."""
    votes = [0.0] * len(LANGUAGES)
    for word in {w.lower() for w in words}:  # distinct words: a variable "y" repeated is no Spanish
        for index, weight in _VOTES.get(word, ()):
            votes[index] += weight
    best = max(range(len(votes)), key=votes.__getitem__)
    runner_up = max((v for i, v in enumerate(votes) if i != best), default=0.0)
    if votes[best] < MIN_LANGUAGE_VOTES or votes[best] < LANGUAGE_MARGIN * runner_up:
        return float("nan")
    return float(best)


def text_property_table(texts: Sequence[str | None], stored: np.ndarray | None = None
                        ) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """Every text column for a collection: (n, columns) values, column names, category names per categorical column.

    ``stored``: the per-text rows ingest stored (NaN rows where missing; those are computed here); the
    boilerplate columns are always computed over ``texts`` (None rows are not texts and stay NaN).
    """
    values = np.full((len(texts), len(TEXT_PROPERTY_COLUMNS)), np.nan) if stored is None else np.array(
        stored, dtype=np.float64)
    missing = [i for i, text in enumerate(texts) if text is not None and not np.isfinite(values[i, 0])]
    if missing:
        values[missing] = text_properties([texts[i] for i in missing])
    codes, prefixes, suffixes = boilerplate_columns(texts)
    categories = {"language": list(LANGUAGES), "boilerplate_prefix": prefixes, "boilerplate_suffix": suffixes}
    return np.concatenate([values, codes], axis=1), [*TEXT_PROPERTY_COLUMNS, *BOILERPLATE_COLUMNS], categories


def boilerplate_columns(
    texts: Sequence[str | None], *, min_share: float = 0.01, min_count: int = 5, max_words: int = 8,
    min_chars: int = 8, keep_ratio: float = 0.5, max_phrases: int = 30,
) -> tuple[np.ndarray, list[str], list[str]]:
    """The opening and closing phrase each text shares with many others: ((n, 2) codes, prefix names, suffix names).

    A phrase is the first (last) 1..``max_words`` whitespace-separated words, as written. A text's phrase is
    the longest one that at least ``max(min_count, min_share x texts)`` texts share, that keeps ``keep_ratio``
    of the texts of the phrase one word shorter (so "ADVERTISEMENT:" is not split by the word that follows it),
    and has ``min_chars`` characters or more (common first words such as "The" are no signature). Only the
    ``max_phrases`` most frequent phrases are kept. Code 0 (name "") is "no shared phrase"; ``None`` texts get NaN.
    """
    n = len(texts)
    codes = np.full((n, 2), np.nan)
    known = [i for i, text in enumerate(texts) if text is not None]
    threshold = max(min_count, int(np.ceil(min_share * len(known))))
    names: list[list[str]] = []
    for side in (0, 1):
        chains = []
        for i in known:
            words = str(texts[i]).split()
            words = words[:max_words] if side == 0 else words[::-1][:max_words]
            chains.append([" ".join(words[:k] if side == 0 else words[:k][::-1]) for k in range(1, len(words) + 1)])
        counts = Counter(phrase for chain in chains for phrase in chain)
        chosen = [_phrase_of(chain, counts, threshold, keep_ratio, min_chars) for chain in chains]
        frequent = [phrase for phrase, _ in Counter(p for p in chosen if p).most_common(max_phrases)]
        side_names = ["", *sorted(frequent)]
        lookup = {phrase: code for code, phrase in enumerate(side_names)}
        for i, phrase in zip(known, chosen, strict=True):
            codes[i, side] = lookup.get(phrase, 0)
        names.append(side_names)
    return codes, names[0], names[1]


def _phrase_of(chain: list[str], counts: Counter[str], threshold: int, keep_ratio: float, min_chars: int) -> str:
    """The longest phrase of a text's chain (shortest first) that qualifies, or "" (see boilerplate_columns)."""
    best = ""
    previous = None
    for phrase in chain:
        count = counts[phrase]
        if count < threshold or (previous is not None and count < keep_ratio * previous):
            break
        if len(phrase) >= min_chars:
            best = phrase
        previous = count
    return best
