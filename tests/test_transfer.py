"""Transferability: LogME against its definition, the probes, the ranking, the ``pixels`` embedder and
``curato transfer`` end to end, on real Fashion-MNIST images and scikit-learn's digits."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import numpy as np
import pytest
from PIL import Image
from scipy.linalg import cho_factor, cho_solve
from scipy.stats import ortho_group
from sklearn.datasets import load_digits

from curato.arrays import stratified_subsample
from curato.commands.transfer import run_transfer
from curato.errors import InputError, UnknownEmbedderError
from curato.features.embedders import available_embedders, get_embedder
from curato.models.oof import whitened_pca
from curato.transfer import (
    knn_accuracy,
    linear_probe_accuracy,
    logme_fit,
    logme_score,
    rank_agreement,
    rank_embedders,
)
from curato.workspace import Workspace
from tests.conftest import photo
from tests.test_cli import run

N_FASHION = 1000


@pytest.fixture(scope="module")
def fashion_features(fashion_mnist: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """``classic`` and ``pixels`` vectors of the first 1,000 Fashion-MNIST images, and their labels."""
    images, labels = fashion_mnist
    grey = list(images[:N_FASHION])
    return {"classic": get_embedder("classic").embed(grey), "pixels": get_embedder("pixels").embed(grey),
            "labels": labels[:N_FASHION].astype(np.int64)}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.data.astype(np.float64), data.target.astype(np.int64)


# -- LogME ------------------------------------------------------------------------------------------


def test_logme_is_higher_for_informative_features(fashion_features):
    features, labels = fashion_features["classic"], fashion_features["labels"]
    rng = np.random.default_rng(0)
    real = logme_score(features, labels)
    shuffled = logme_score(features, rng.permutation(labels))
    noise = logme_score(rng.normal(size=features.shape).astype(np.float32), labels)
    assert real > shuffled + 0.1 and real > noise + 0.1
    # Two classes that differ (trousers vs bags) fit better than two the features barely tell apart
    # (pullovers vs coats).
    easy = np.isin(labels, (1, 8))
    hard = np.isin(labels, (2, 4))
    assert logme_score(features[easy], labels[easy]) > logme_score(features[hard], labels[hard]) + 0.1


@pytest.mark.parametrize("rows", [150, 40])  # more rows than the 64 dimensions, then fewer
def test_logme_is_the_maximum_of_the_directly_computed_evidence(digits, rows):
    x, y = digits
    keep = np.flatnonzero(y < 3)[:rows]
    x, y = x[keep], y[keep]
    fit = logme_fit(x, y)
    assert fit.rank <= min(rows, 64) and np.isfinite(fit.evidence).all()
    gram = x @ x.T

    def evidence(target: np.ndarray, log_alpha: float, log_beta: float) -> float:
        # w integrated out: y ~ N(0, C) with C = I / beta + F F^T / alpha, evaluated densely (n x n).
        factor = cho_factor(np.eye(rows) / np.exp(log_beta) + gram / np.exp(log_alpha))
        log_det = 2 * np.log(np.diag(factor[0])).sum()
        return float(-0.5 * target @ cho_solve(factor, target) - 0.5 * log_det - rows / 2 * np.log(2 * np.pi))

    steps = [(da, db) for da in (-1e-3, 0.0, 1e-3) for db in (-1e-3, 0.0, 1e-3) if da or db]
    for klass in range(3):
        target = (y == klass).astype(np.float64)
        log_alpha, log_beta = np.log(fit.alpha[klass]), np.log(fit.beta[klass])
        direct = evidence(target, log_alpha, log_beta)
        assert direct / rows == pytest.approx(fit.evidence[klass], rel=1e-9)
        # Every nearby (alpha, beta) has a lower evidence: the fixed point is a maximum.
        for da, db in steps:
            assert evidence(target, log_alpha + da, log_beta + db) < direct
    assert fit.score == pytest.approx(fit.evidence.mean())


def test_logme_is_unchanged_by_rotation_scale_row_order_and_class_names(digits):
    x, y = digits
    base = logme_score(x, y)
    rotation = ortho_group.rvs(x.shape[1], random_state=0)
    assert logme_score(3.7 * x @ rotation, y) == pytest.approx(base, rel=1e-8)
    order = np.random.default_rng(1).permutation(len(y))
    assert logme_score(x[order], y[order]) == pytest.approx(base, rel=1e-10)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])[::-1]
    assert logme_score(x, names[y]) == pytest.approx(base, rel=1e-10)
    # A per-dimension rescaling changes the prior's shape, so the score moves: the invariances above are
    # the model's, not an insensitive score.
    stretch = np.random.default_rng(2).uniform(0.1, 10.0, x.shape[1])
    assert abs(logme_score(x * stretch, y) - base) > 1e-3


def test_logme_of_features_that_explain_nothing_is_the_no_weights_model(fashion_features):
    # With each class's mean removed, the features are orthogonal to every class indicator (F^T y = 0): the
    # evidence is maximal with all weights at zero (alpha -> infinity), where y ~ N(0, I / beta) and
    # beta = n / ||y||^2, so L / n = (log(n / n_c) - 1 - log(2 pi)) / 2.
    labels = fashion_features["labels"][:300]
    features = fashion_features["classic"][:300].astype(np.float64)
    means = np.stack([features[labels == klass].mean(axis=0) for klass in range(10)])
    fit = logme_fit(features - means[labels], labels)
    counts = np.bincount(labels, minlength=10)
    expected = (np.log(300 / counts) - 1 - np.log(2 * np.pi)) / 2
    assert fit.evidence == pytest.approx(expected, rel=1e-6)
    assert np.all(fit.alpha / fit.beta > 1e6) and fit.iterations < 100  # jumped to the limit, no creeping
    zero = logme_fit(np.zeros((300, 4)), labels)  # no spectrum at all: the same model, trivially
    assert zero.rank == 0 and zero.evidence == pytest.approx(expected, rel=1e-12)
    assert logme_score(fashion_features["classic"][:300], labels) > fit.score + 0.1


def test_logme_rejects_bad_input():
    x = np.ones((4, 3))
    with pytest.raises(InputError, match="at least two"):
        logme_score(x, np.zeros(4))
    with pytest.raises(InputError, match="shape \\(4,\\)"):
        logme_score(x, np.zeros(5))
    with pytest.raises(InputError, match="NaN"):
        logme_score(np.full((4, 3), np.nan), np.array([0, 1, 0, 1]))


# -- probes and ranking ----------------------------------------------------------------------------------


def _loo_knn_by_hand(features: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Dense leave-one-out vote, one sample at a time; a tie goes to the more similar tied class."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    correct = 0
    for row in range(len(labels)):
        neighbours = np.argsort(-similarity[row])[:k]
        votes: dict[int, list[float]] = {}
        for index in neighbours:
            votes.setdefault(int(labels[index]), []).append(float(similarity[row, index]))
        winner = max(votes, key=lambda label: (len(votes[label]), sum(votes[label])))
        correct += winner == labels[row]
    return correct / len(labels)


@pytest.mark.parametrize("name", ["classic", "pixels"])
def test_knn_and_linear_probe_on_fashion_mnist(fashion_features, name):
    features, labels = fashion_features[name], fashion_features["labels"]
    knn = knn_accuracy(features, labels, k=10)
    assert knn.accuracy == pytest.approx(_loo_knn_by_hand(features, labels, 10), abs=0.002)
    linear = linear_probe_accuracy(features, labels, n_folds=5, seed=0)
    for probe in (knn, linear):
        assert 0.7 < probe.accuracy < 0.95  # ten classes: chance is 0.1
        assert probe.balanced_accuracy == pytest.approx(probe.accuracy, abs=0.03)  # classes nearly balanced
    shuffled = np.random.default_rng(0).permutation(labels)
    assert knn_accuracy(features, shuffled).accuracy < 0.2
    assert linear_probe_accuracy(features, shuffled).accuracy < 0.2


def test_rank_embedders_puts_noise_last_and_agrees_with_the_probe(fashion_features):
    labels = fashion_features["labels"]
    noise = np.random.default_rng(0).normal(size=(len(labels), 64)).astype(np.float32)
    sets = {"pixels": fashion_features["pixels"], "noise": noise, "classic": fashion_features["classic"]}
    calls: list[str] = []
    entries = rank_embedders(sets, labels, on_scored=calls.append)
    assert calls == ["pixels", "noise", "classic"]
    assert [entry["rank"] for entry in entries] == [1, 2, 3]
    assert entries[-1]["name"] == "noise" and entries[-1]["rank_linear_probe"] == 3
    assert entries[-1]["rank_knn"] == 3 and entries[-1]["linear_probe_accuracy"] < 0.2
    assert {entry["name"]: entry["dim"] for entry in entries} == {"pixels": 3072, "noise": 64, "classic": 472}
    assert all(set(entry["seconds"]) == {"logme", "knn", "linear_probe"} for entry in entries)
    agreement = rank_agreement(entries)
    assert agreement["kendall_tau"] == pytest.approx(1.0 if agreement["same_order"] else 1 / 3)
    assert agreement["linear_probe_ranking"][-1] == "noise" and agreement["time_ratio"] > 0


def test_rank_agreement_reports_a_reversed_ranking():
    def entry(name, logme, probe):
        return {"name": name, "logme": logme, "linear_probe_accuracy": probe,
                "seconds": {"logme": 1.0, "knn": 1.0, "linear_probe": 4.0}}

    entries = [entry("a", 3.0, 0.5), entry("b", 2.0, 0.6), entry("c", 1.0, 0.7)]
    for key, rank_key in (("logme", "rank"), ("linear_probe_accuracy", "rank_linear_probe")):
        for position, item in enumerate(sorted(entries, key=lambda e, key=key: -e[key]), start=1):
            item[rank_key] = position
    agreement = rank_agreement(entries)
    assert agreement["kendall_tau"] == pytest.approx(-1.0)
    assert not agreement["same_order"] and not agreement["same_best"]
    assert agreement["linear_probe_ranking"] == ["c", "b", "a"] and agreement["time_ratio"] == pytest.approx(4.0)
    assert rank_agreement(entries[:1])["kendall_tau"] is None


def test_whitened_pca_with_fewer_rows_than_dimensions_matches_the_covariance_route(fashion_features):
    # 300 rows of 472-d features take the Gram-matrix route; the same rows stacked twice (same mean,
    # scale and covariance) take the covariance route. Both must give the same whitened axes.
    x = fashion_features["classic"][:300]
    wide = whitened_pca(x, 18, np.random.default_rng(0)).astype(np.float64)
    tall = whitened_pca(np.vstack([x, x]), 18, np.random.default_rng(0)).astype(np.float64)[:300]
    signs = np.sign((wide * tall).sum(axis=0))
    assert np.abs(wide - signs * tall).max() < 1e-3
    assert np.abs(wide.T @ wide / 300 - np.eye(18)).max() < 1e-4


def test_stratified_subsample_keeps_class_shares():
    labels = np.repeat(np.array(["a", "b", "c"]), [500, 300, 37])
    chosen = stratified_subsample(labels, 100, seed=0)
    assert len(chosen) == 100 and len(np.unique(chosen)) == 100 and np.all(np.diff(chosen) > 0)
    counts = {name: int(np.sum(labels[chosen] == name)) for name in "abc"}
    for name, total in (("a", 500), ("b", 300), ("c", 37)):
        assert abs(counts[name] - 100 * total / 837) <= 1
    assert np.array_equal(chosen, stratified_subsample(labels, 100, seed=0))
    assert not np.array_equal(chosen, stratified_subsample(labels, 100, seed=1))
    assert np.array_equal(stratified_subsample(labels, 5000), np.arange(837))


# -- the pixels embedder ---------------------------------------------------------------------------------


def test_pixels_embedder_is_the_box_filtered_image():
    assert "pixels" in available_embedders()
    embedder = get_embedder("pixels")
    assert embedder.dim == 3072 and embedder.settings()["resize"] == "stretch to 32x32, PIL box"
    image = np.ascontiguousarray(photo("chelsea")[100:164, 200:264])  # 64x64: each output pixel is a 2x2 mean
    grey = np.asarray(Image.fromarray(photo("coffee")).convert("L"))
    vectors = embedder.embed([image, grey])
    assert vectors.shape == (2, 3072) and vectors.dtype == np.float32
    assert vectors.min() >= 0.0 and vectors.max() <= 1.0
    block_mean = image.reshape(32, 2, 32, 2, 3).astype(np.float64).mean(axis=(1, 3)) / 255
    assert np.abs(vectors[0] - block_mean.ravel()).max() <= 1 / 255 + 1e-6
    channels = vectors[1].reshape(32, 32, 3)
    assert np.array_equal(channels[..., 0], channels[..., 2])  # grey repeated to RGB
    with pytest.raises(InputError, match="takes no option"):
        get_embedder("pixels", size=64)


# -- the command -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_transfer_command_end_to_end(tmp_path, image_folder):
    workspace = tmp_path / "ws"
    assert run("ingest", image_folder, "-w", workspace).returncode == 0
    out = tmp_path / "transfer.json"
    result = run("transfer", "-w", workspace, "--embedders", "classic,pixels", "--json", out)
    assert result.returncode == 0, result.stderr
    assert "ranked by LogME" in result.stdout and f"json: {out}" in result.stdout
    document = json.loads(out.read_text())
    schema = json.loads(resources.files("curato").joinpath("schemas/transfer.schema.json").read_text())
    jsonschema.validate(document, schema)
    assert document["n_samples"] == 80 and document["n_classes"] == 3
    assert sorted(document["ranking"]) == ["classic", "pixels"]
    assert document["ranking"] == [entry["name"] for entry in document["embedders"]]
    assert all(entry["linear_probe_accuracy"] > 0.8 for entry in document["embedders"])
    latest = workspace / "reports" / "transfer-latest.json"
    assert json.loads(latest.read_text()) == document
    from curato.commands.info import write_report

    html = write_report(Workspace.open(workspace), [], tmp_path / "report.html").read_text()
    section = html[html.index('<section id="transfer"'):]
    section = section[:section.index("</section>")]
    assert "<td>classic</td>" in section and "<td>pixels</td>" in section and "LogME" in section

    subset = run("transfer", "-w", workspace, "--embedders", "pixels,classic", "--max-samples", "30")
    assert subset.returncode == 0, subset.stderr
    smaller = json.loads(latest.read_text())
    jsonschema.validate(smaller, schema)
    assert smaller["n_samples"] == 30 and smaller["n_labeled"] == 80
    embed_runs = Workspace.open(workspace).catalog.runs("embed")
    assert [run["summary"]["computed"] for run in embed_runs] == [80, 80, 0, 0]  # the second time, from the store

    failed = run("transfer", "-w", workspace, "--embedders", "classic,classic")
    assert failed.returncode == 2 and "named more than once" in failed.stderr, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    opened = Workspace.open(workspace)
    with pytest.raises(UnknownEmbedderError, match="unknown embedder 'nonsense'"):
        run_transfer(opened, ["nonsense"])
    with pytest.raises(InputError, match="--max-samples 3: need at least 10"):
        run_transfer(opened, ["classic"], max_samples=3)
    with pytest.raises(InputError, match="--embedders: name at least one"):
        run_transfer(opened, [" ", ""])
