"""Duplicates among texts, on real text: Debian's ``fortunes`` package (fortune cookies, one file per category =
the label), with planted exact copies, near copies (case, punctuation, whitespace, one word changed) and label
flips. Also: an unknown perceptual hash (texts have none; the catalog's NULL becomes 0) pairs nothing, and the
checks that read image properties ignore rows without them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from curato.checks.duplicates import duplicate_findings
from curato.checks.duplicates.text import normalise_text
from curato.features.thumbnails import THUMBNAIL_COLUMNS

FORTUNES = Path("/usr/share/games/fortunes")
CATEGORIES = ("computers", "science", "politics", "food", "law", "love", "sports", "work", "medicine", "education")


def _fortunes() -> tuple[list[str], list[str]]:
    """The fortunes of :data:`CATEGORIES` (40-400 characters), the file as label; the collection's own variants
    of one saying (two texts sharing 30% of their words or more) are left out but the first, so that the only
    duplicates are the planted ones."""
    from scipy.sparse import csr_matrix

    texts, labels, seen = [], [], set()
    for category in CATEGORIES:
        raw = (FORTUNES / category).read_text(encoding="utf-8", errors="replace")
        for item in raw.split("\n%\n"):
            item = item.strip()
            key = normalise_text(item)
            if 40 <= len(item) <= 400 and key and key not in seen:
                seen.add(key)
                texts.append(item)
                labels.append(category)
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for row, text in enumerate(texts):
        for word in set(normalise_text(text).split()):
            rows.append(row)
            cols.append(vocabulary.setdefault(word, len(vocabulary)))
    words = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(texts), len(vocabulary)))
    shared = (words @ words.T).tocoo()
    sizes = np.asarray(words.sum(axis=1)).ravel()
    jaccard = shared.data / (sizes[shared.row] + sizes[shared.col] - shared.data)
    later = np.unique(shared.col[(shared.row < shared.col) & (jaccard >= 0.3)])
    keep = np.setdiff1d(np.arange(len(texts)), later)
    return [texts[i] for i in keep], [labels[i] for i in keep]


def _edit(text: str, kind: str, rng: np.random.Generator, vocabulary: list[str]) -> str:
    if kind == "case":
        return text.upper() if rng.random() < 0.5 else text.lower()
    if kind == "punctuation":
        return re.sub(r"[.,;:!?\"'-]", "", text) + "!"
    if kind == "whitespace":
        return "  " + re.sub(r"\s+", lambda m: " " * int(rng.integers(1, 4)) if rng.random() < 0.5 else "\n", text)
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long_words:
        return text + " indeed"
    at = int(rng.choice(long_words))
    replacement = words[at]
    while replacement.lower() == words[at].lower():
        replacement = str(rng.choice(vocabulary))
    words[at] = replacement
    return " ".join(words)


def fortune_dataset(n: int = 1500, seed: int = 0, copies: float = 0.1, flips: float = 0.3) -> dict[str, object]:
    """``n`` distinct fortunes plus ``copies x n`` planted copies (exact, or with one or two edits), a share
    ``flips`` of them relabelled: ids, texts, labels and the planted pairs (original row, copy row)."""
    all_texts, all_labels = _fortunes()
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(all_texts), size=min(n, len(all_texts)), replace=False))
    texts = [all_texts[i] for i in chosen]
    labels = [all_labels[i] for i in chosen]
    vocabulary = sorted({w for t in texts for w in t.split() if w.isalpha() and len(w) >= 4})
    kinds = ["exact", "case", "punctuation", "whitespace", "word", "word"]
    planted, flipped, how = [], [], []
    for source in rng.choice(len(texts), size=int(copies * len(texts)), replace=False).tolist():
        kind = kinds[len(planted) % len(kinds)]
        copy = texts[source] if kind == "exact" else _edit(texts[source], kind, rng, vocabulary)
        if kind != "exact" and rng.random() < 0.3:
            copy = _edit(copy, str(rng.choice(["case", "punctuation", "whitespace"])), rng, vocabulary)
        label = labels[source]
        if rng.random() < flips:
            label = str(rng.choice([c for c in CATEGORIES if c != label]))
            flipped.append(len(texts))
        planted.append((source, len(texts)))
        how.append(kind)
        texts.append(copy)
        labels.append(label)
    ids = np.array([f"t{i:05d}" for i in range(len(texts))], dtype=object)
    return {"ids": ids, "texts": np.array(texts, dtype=object), "labels": np.array(labels, dtype=object),
            "planted": np.array(planted, dtype=np.int64), "flipped": np.array(flipped, dtype=np.int64), "how": how}


def require_fortunes() -> None:
    """The real texts are a test dependency (scripts/install-system.sh installs them): missing is a failure."""
    if not (FORTUNES / "computers").exists():
        pytest.fail("Debian's fortunes package is missing: run `make system-test` (apt-get install fortunes)")


def tfidf_embeddings(texts: np.ndarray, dim: int = 128) -> np.ndarray:
    """A cheap real text embedding (word TF-IDF, SVD to ``dim``), so that the test needs no model download."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    counts = TfidfVectorizer(sublinear_tf=True).fit_transform([str(t) for t in texts])
    return TruncatedSVD(dim, random_state=0).fit_transform(counts).astype(np.float32)


def pairs_of(findings: dict[str, object]) -> set[tuple[str, str]]:
    """Every pair of samples in one group of exact_duplicates or near_duplicates."""
    from itertools import combinations

    found = set()
    for name in ("exact_duplicates", "near_duplicates"):
        for detail in findings[name].details.values():  # the evidence lists only the largest 200 groups
            found.update(combinations(sorted(detail["members"]), 2))
    return found


@pytest.fixture(scope="module")
def fortunes() -> dict[str, object]:
    require_fortunes()
    data = fortune_dataset(n=1500, seed=1)
    data["embeddings"] = tfidf_embeddings(data["texts"])
    return data


def audit_texts(data: dict[str, object], **extra: object) -> dict[str, object]:
    n = len(data["ids"])
    findings = duplicate_findings(
        data["ids"], embeddings=data["embeddings"], texts=data["texts"], labels=data["labels"],
        # what the catalog gives texts: no perceptual hash (0), no thumbnail (zero rows), a hash of the bytes
        phashes=np.zeros(n, np.uint64), phash_known=np.zeros(n, bool),
        thumbnails=np.zeros((n, THUMBNAIL_COLUMNS), np.uint8),
        content_hashes=np.array([f"h{hash(t)}" for t in data["texts"]], dtype=object), **extra)
    return {finding.check: finding for finding in findings}


def test_planted_text_copies_are_found_and_nothing_else(fortunes: dict[str, object]) -> None:
    findings = audit_texts(fortunes)
    ids, planted = fortunes["ids"], fortunes["planted"]
    truth = {tuple(sorted((ids[a], ids[b]))) for a, b in planted}
    found = pairs_of(findings)
    recall = len(truth & found) / len(truth)
    precision = len(truth & found) / len(found)
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)
    near = findings["near_duplicates"]
    assert "near-identical texts" in near.message and "picture" not in near.message
    assert "after normalising case" in findings["exact_duplicates"].message
    rules = {row["rule"] for group in near.evidence["pairs"] for row in group}
    assert rules <= {"text_shingles", "text_word_edit", "normalised_text"}, rules
    assert not {"phash_confirmed", "distinct_pair", "embedding_alone"} & set(near.evidence["pairs_by_rule"])
    # every group is small: planted copies come in pairs, never hundreds of unrelated texts
    assert max(len(g) for g in near.evidence["groups"]) <= 3


def test_conflicting_text_duplicates_are_real_duplicates_with_flipped_labels(fortunes: dict[str, object]) -> None:
    findings = audit_texts(fortunes)
    conflict = findings["conflicting_duplicates"]
    ids = fortunes["ids"]
    flagged = set(np.asarray(conflict.sample_ids)[conflict.flagged])
    copies = {ids[b] for b in fortunes["flipped"]}
    sources = {ids[a] for a, b in fortunes["planted"] if b in set(fortunes["flipped"].tolist())}
    assert flagged <= copies | sources
    assert len(flagged & copies) >= 0.95 * len(copies)


def test_normalisation() -> None:
    assert normalise_text("  Hello,\tWORLD!! ") == normalise_text("hello world") == "hello world"
    assert normalise_text("ﬁne Straße") == "fine strasse"


def test_unknown_phash_never_pairs_texts(fortunes: dict[str, object]) -> None:
    """The bug: texts' missing phash became 0 and two zeros read as identical pictures. Distinct fortunes, no
    copies planted, every phash 0 and unknown: no group at all -- with or without the rows marked as text."""
    n = 400
    texts = fortunes["texts"][:n]
    embeddings = fortunes["embeddings"][:n]
    ids = fortunes["ids"][:n]
    for marked in (texts, None):
        findings = {f.check: f for f in duplicate_findings(
            ids, embeddings=embeddings, texts=marked, phashes=np.zeros(n, np.uint64), phash_known=np.zeros(n, bool),
            labels=fortunes["labels"][:n])}
        assert "phash_confirmed" not in findings["near_duplicates"].evidence["pairs_by_rule"]
        assert findings["near_duplicates"].count <= 4, findings["near_duplicates"].evidence["groups"]
        assert findings["conflicting_duplicates"].count <= 4
    # without embeddings the hashes alone decide: unknown ones pair nothing (known zeros still would)
    unknown = duplicate_findings(ids, phashes=np.zeros(n, np.uint64), phash_known=np.zeros(n, bool))
    assert unknown[1].count == 0
    default = duplicate_findings(ids, phashes=np.zeros(n, np.uint64))
    assert default[1].count == 0  # phash_known defaults to "non-zero": a 0 is treated as not computed
    known = duplicate_findings(ids, phashes=np.zeros(n, np.uint64), phash_known=np.ones(n, bool))
    assert known[1].count == n


def test_image_quality_ignores_rows_without_properties() -> None:
    """Rows whose image properties are unknown (NaN: texts, unreadable files) are never flagged or scored."""
    from curato.checks.data import AuditData
    from curato.checks.registry import run_checks
    from curato.features.properties import PROPERTY_COLUMNS, image_features
    from curato.sample_data import photo_crops

    images = list(photo_crops(60, seed=0))
    properties, _, _ = image_features(images)
    rows = np.vstack([properties.astype(np.float64), np.full((20, properties.shape[1]), np.nan)])
    n = rows.shape[0]
    data = AuditData(sample_ids=np.array([f"s{i}" for i in range(n)], dtype=object), labels=np.full(n, None))
    data.properties, data.property_columns = rows, list(PROPERTY_COLUMNS)
    for finding in run_checks(data, ["image_quality"]):
        assert len(finding.sample_ids) == len(images)
        assert not set(np.asarray(finding.sample_ids)[finding.flagged]) & {f"s{i}" for i in range(len(images), n)}


def test_find_issues_takes_texts() -> None:
    from curato.api import find_issues

    texts = ["The quick brown fox jumps over the lazy dog near the river bank.",
             "the quick brown fox jumps over the lazy dog, near the river  bank!",
             "An entirely different sentence about interest rates and central banks.",
             "Cats sleep most of the day and hunt at night in the garden."] * 1
    result = find_issues(labels=["a", "b", "a", "b"], features=tfidf_embeddings(np.array(texts * 3), 3)[:4],
                         texts=texts, checks=["duplicates"])
    by = {f.check: f for f in result.findings}
    assert by["exact_duplicates"].count == 2 and by["conflicting_duplicates"].count == 2
    assert by["exact_duplicates"].details["0"]["rule"] == "normalised_text"


def test_load_samples_marks_text_rows_without_phash(tmp_path: Path) -> None:
    """A text workspace: the catalog's NULL phash is an unknown (has_phash False), the texts come with the rows,
    and the duplicates check groups the two spellings of one review as a normalised_text copy -- nothing else."""
    from curato.checks.registry import run_checks
    from curato.commands.ingest import ingest
    from curato.commands.rows import load_samples
    from curato.workspace import Workspace

    path = tmp_path / "reviews.csv"
    path.write_text('id,text,label\n1,"Great phone, love it!",pos\n2,great phone love it,neg\n'
                    '3,awful battery and a dim screen,neg\n4,"arrived late, box damaged",neg\n')
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, path)
    data = load_samples(ws)
    assert data.has_phash.tolist() == [False] * 4 and (data.phashes == 0).all()
    assert data.texts.tolist()[0] == "Great phone, love it!"
    data.embeddings = tfidf_embeddings(data.texts, 3)
    data.has_embedding = np.ones(4, dtype=bool)
    by = {f.check: f for f in run_checks(data, ["duplicates"])}
    assert by["exact_duplicates"].count == 2 and by["near_duplicates"].count == 0
    assert by["conflicting_duplicates"].count == 2


def test_outliers_and_duplicates_leave_rows_without_embeddings_out(fortunes: dict[str, object]) -> None:
    """Rows whose embedding is unknown (zero rows, has_embedding False) are in no outlier or duplicate finding."""
    from curato.checks.data import AuditData
    from curato.checks.registry import run_checks

    n = 600
    embeddings = fortunes["embeddings"][:n].copy()
    known = np.ones(n, dtype=bool)
    known[::7] = False
    embeddings[~known] = 0.0
    data = AuditData(sample_ids=fortunes["ids"][:n], labels=fortunes["labels"][:n])
    data.embeddings, data.has_embedding, data.texts = embeddings, known, fortunes["texts"][:n]
    unknown_ids = set(fortunes["ids"][:n][~known])
    for finding in run_checks(data, ["outliers", "duplicates"]):
        assert not unknown_ids & set(np.asarray(finding.sample_ids).tolist()), finding.check
