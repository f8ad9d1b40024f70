"""The ``minilm`` text embedder's ONNX runtimes (onnxruntime, OpenVINO), length-sorted batching and graph
cache, and the text path of ``curato embed``, on real sentences with the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from curato.commands.embed import compute_embeddings
from curato.commands.ingest import ingest
from curato.features.embedders import get_embedder
from curato.features.embedders import text as text_module
from curato.workspace import Workspace

pytestmark = pytest.mark.slow  # loads (and exports) a real transformer

# Real sentences of very different lengths: news-like, proverbs, a fragment, an empty text, a long one.
SENTENCES = [
    "A cat is sleeping on the sofa.",
    "A kitten naps on the couch.",
    "The central bank raised interest rates again.",
    "Interest rates were increased by the central bank.",
    "",
    "Hi",
    "A journey of a thousand miles begins with a single step.",
    "The quick brown fox jumps over the lazy dog.",
    "Premature optimization is the root of all evil, or at least most of it, in programming.",
    "  Whitespace around a sentence does not change its meaning.  ",
    "The film was long, slow and badly acted; I walked out after an hour and asked for a refund. " * 4,
    "Water boils at 100 degrees Celsius at sea level.",
    "Don't count your chickens before they hatch.",
    "Où est la bibliothèque ?",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def onnx_minilm(cache, monkeypatch):
    monkeypatch.setenv("CURATO_CACHE", str(cache))
    embedder = get_embedder("minilm", runtime="onnxruntime")
    assert embedder.runtime == "onnxruntime"
    return embedder


needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="the openvino runtime is not installed (pip install 'curato[text]')")


@pytest.fixture()
def openvino_minilm(cache, monkeypatch):
    monkeypatch.setenv("CURATO_CACHE", str(cache))
    embedder = get_embedder("minilm")
    assert embedder.runtime == "openvino"  # the default when installed
    return embedder


@pytest.fixture(scope="module")
def eager_vectors() -> np.ndarray:
    return get_embedder("minilm", runtime="torch").embed(SENTENCES)


def test_onnx_vectors_match_eager_sentence_transformers(onnx_minilm, eager_vectors):
    vectors = onnx_minilm.embed(SENTENCES)
    assert onnx_minilm.runtime == "onnxruntime"  # the first-use check passed: no fallback
    assert vectors.shape == (len(SENTENCES), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert cosines(vectors, eager_vectors).min() >= 0.999
    # The torch runtime is sentence-transformers' own encode.
    reference = onnx_minilm._load().encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(eager_vectors, reference, atol=1e-5)


def test_onnx_similar_sentences_are_closer(onnx_minilm):
    vectors = onnx_minilm.embed(SENTENCES[:4])
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3 and similarity[0, 1] > similarity[0, 3] + 0.3
    assert similarity[2, 3] > similarity[2, 1] + 0.3


@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_length_sorting_keeps_input_order(runtime, cache, monkeypatch):
    monkeypatch.setenv("CURATO_CACHE", str(cache))
    embedder = get_embedder("minilm", runtime=runtime)
    # Several batches, each padded differently (OpenVINO: several in flight).
    monkeypatch.setattr(text_module, "TOKEN_BUDGET", 40)
    vectors = embedder.embed(SENTENCES)
    assert embedder.runtime == runtime
    permutation = np.random.default_rng(0).permutation(len(SENTENCES))
    shuffled = embedder.embed([SENTENCES[i] for i in permutation])
    np.testing.assert_allclose(shuffled, vectors[permutation], atol=1e-5)
    alone = np.concatenate([embedder.embed([sentence]) for sentence in SENTENCES])
    np.testing.assert_allclose(alone, vectors, atol=1e-5)  # padding is masked out


def test_token_budget_batches_cover_every_text_once_within_the_budget():
    lengths = [5, 120, 7, 7, 300, 30, 5, 64, 9, 31, 2, 2, 2, 2, 2, 2]
    groups = text_module.token_budget_batches(lengths, budget=64, max_rows=4)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    flat = [lengths[i] for group in groups for i in group]
    assert flat == sorted(lengths)  # shortest first, so each group pads only to its own longest
    for group in groups:
        longest = max(lengths[i] for i in group)
        assert len(group) <= 4
        assert len(group) * longest <= 64 or len(group) == 1  # a text over the budget travels alone
    assert [len(group) for group in groups][:2] == [4, 4]  # the short texts fill whole groups
    assert [4] in groups and [1] in groups  # 300 and 120 tokens: alone
    assert text_module.token_budget_batches([]) == []


FORTUNES = Path("/usr/share/games/fortunes")


def real_texts(count: int) -> list[str]:
    """Fortunes (Debian ``fortunes``, 1-300 words) when installed, else the test sentences."""
    texts: list[str] = []
    for path in sorted(FORTUNES.glob("*")) if FORTUNES.is_dir() else []:
        if path.is_file() and not path.suffix:
            texts += [" ".join(entry.split()) for entry in path.read_text(errors="replace").split("\n%\n")]
    return [text for text in texts if text][:count] or SENTENCES


@needs_openvino
def test_openvino_is_the_default_and_matches_eager_on_real_texts(openvino_minilm):
    texts = SENTENCES + real_texts(80)
    vectors = openvino_minilm.embed(texts)
    assert openvino_minilm.runtime == "openvino"  # the first-use check passed: no fallback
    assert vectors.shape == (len(texts), 384) and vectors.dtype == np.float32
    eager = openvino_minilm._load().encode(texts, normalize_embeddings=True)
    assert cosines(vectors, eager).min() >= 0.999


def test_graph_is_cached_and_a_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATO_CACHE", str(tmp_path / "cache"))
    first = get_embedder("minilm", runtime="onnxruntime")
    path = first.graph_path()
    assert path.parent == tmp_path / "cache" and first.settings()["weights_sha256"][:16] in path.name
    vectors = first.embed(SENTENCES)
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    calls = []
    real_export = text_module.export_onnx
    monkeypatch.setattr(text_module, "export_onnx", lambda model: calls.append(1) or real_export(model))
    np.testing.assert_array_equal(get_embedder("minilm", runtime="onnxruntime").embed(SENTENCES), vectors)
    assert path.stat().st_mtime_ns == stamp and not calls  # loaded, not rebuilt
    path.write_bytes(b"not an onnx graph")
    again = get_embedder("minilm", runtime="onnxruntime")
    np.testing.assert_array_equal(again.embed(SENTENCES), vectors)
    assert again.runtime == "onnxruntime" and calls == [1] and path.stat().st_size > 1_000_000


def test_a_graph_that_disagrees_falls_back_to_eager_with_one_warning(cache, monkeypatch, eager_vectors):
    monkeypatch.setenv("CURATO_CACHE", str(cache))
    monkeypatch.setattr(text_module, "CHECK_COSINE", 1.5)  # no graph can pass
    embedder = get_embedder("minilm")
    with pytest.warns(RuntimeWarning, match="disagrees with PyTorch") as caught:
        vectors = embedder.embed(SENTENCES)
        embedder.embed(SENTENCES[:2])
    assert len(caught) == 1 and embedder.runtime == "torch"
    np.testing.assert_allclose(vectors, eager_vectors, atol=1e-5)


def test_settings_do_not_depend_on_the_runtime(onnx_minilm):
    assert onnx_minilm.settings() == get_embedder("minilm", runtime="torch").settings()


def assert_pipeline_stores_each_text_its_own_vector(embedder, texts: list[str], chunk_size: int, tmp_path) -> None:
    """Ingest ``texts`` as a manifest, embed them through ``curato embed``'s pipeline in chunks, and compare each
    stored vector with the embedder's own output for that text."""
    manifest = tmp_path / "texts.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    workspace = Workspace.create(tmp_path / "ws")
    ingest(workspace, manifest, workers=1)
    features, summary = compute_embeddings(workspace, embedder, chunk_size=chunk_size)
    assert summary.computed == len(texts)
    row = {sample_id: i for i, sample_id in enumerate(features.ids)}
    stored = np.asarray(features.vectors)[[row[f"t{i}"] for i in range(len(texts))]]
    np.testing.assert_allclose(stored, embedder.embed(texts), atol=1e-5)


def test_embed_pipeline_stores_each_text_its_own_vector(onnx_minilm, tmp_path):
    assert_pipeline_stores_each_text_its_own_vector(onnx_minilm, SENTENCES * 3, 16, tmp_path)
