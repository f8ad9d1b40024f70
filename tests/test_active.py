"""Active learning and auto-labelling: query strategies against their definitions, routing precision, and
``curato select`` / ``route`` / ``simulate`` end to end, on scikit-learn's digits and real Fashion-MNIST."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image
from scipy.special import softmax
from sklearn.datasets import load_digits

from curato.active import strategies as strategy_module
from curato.active.heads import (
    HEAD_MIN_COMPONENTS,
    bootstrap_ensemble_probabilities,
    cross_fitted_probabilities,
    head_components,
    head_probabilities,
    mc_dropout_probabilities,
)
from curato.active.routing import class_thresholds, fit_calibration, route_auto_labels
from curato.active.simulate import label_schedule, simulate_active_learning, summarize_curves
from curato.active.strategies import (
    AUTO_COLD_STRATEGY,
    AUTO_DIVERSE_STRATEGY,
    AUTO_SWITCH_PER_CLASS,
    AUTO_WARM_STRATEGY,
    UHERDING_BANDWIDTH,
    UHERDING_NEIGHBOURS,
    auto_strategy,
    available_strategies,
    diversity_features,
    k_center_greedy,
    kmeans_assign,
    margin_scores,
    pool_clusters,
    pool_neighbours,
    select_batch,
)
from curato.commands.active import SIMULATE_CHECKPOINT, run_route, run_select, run_simulate
from curato.commands.rows import embedded_rows
from curato.errors import InputError
from curato.ingest.readers import FASHION_MNIST_CLASSES
from curato.models.oof import fit_predict_probabilities, pca_components
from curato.workspace import Workspace
from tests.conftest import InterruptAfter, run


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """Digits with 60 random rows labelled, and every input a strategy may need."""
    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    labeled = np.zeros(len(y), dtype=bool)
    labeled[np.random.default_rng(0).choice(len(y), 60, replace=False)] = True
    return {"x": x, "y": y, "labeled": labeled, "features": diversity_features(x),
            "probs": head_probabilities(x, y, labeled, n_classes=10),
            "ensemble": bootstrap_ensemble_probabilities(x, y, labeled, n_classes=10),
            "mc": mc_dropout_probabilities(x, y, labeled, n_classes=10, samples=10)}


@pytest.mark.parametrize("strategy", available_strategies())
def test_every_strategy_picks_distinct_unlabelled_rows_of_the_budget_size(digits, strategy):
    selection = select_batch(strategy, budget=25, labeled=digits["labeled"], pred_probs=digits["probs"],
                             ensemble_probs=digits["mc"] if strategy == "bald" else digits["ensemble"],
                             features=digits["features"], n_classes=10, seed=3,
                             selectable=np.arange(len(digits["y"])) >= 200)  # e.g. test rows in a simulation
    assert selection.indices.shape == (25,) and len(np.unique(selection.indices)) == 25
    assert not digits["labeled"][selection.indices].any() and selection.indices.min() >= 200
    assert selection.indices.min() >= 0 and selection.indices.max() < len(digits["y"])
    assert len(selection.reasons) == 25 and all(selection.reasons) and np.isfinite(selection.scores).all()


def test_uncertainty_strategies_pick_what_the_definitions_say(digits):
    probs, labeled = digits["probs"], digits["labeled"]
    unlabeled = np.flatnonzero(~labeled)
    ordered = np.sort(probs, axis=1)
    brute_margin = ordered[:, -1] - ordered[:, -2]
    picked = select_batch("margin", budget=30, labeled=labeled, pred_probs=probs).indices
    worst = np.sort(brute_margin[unlabeled])[29]
    assert np.all(brute_margin[picked] <= worst + 1e-12)
    np.testing.assert_allclose(margin_scores(probs), 1 - brute_margin)
    picked = select_batch("least-confidence", budget=30, labeled=labeled, pred_probs=probs).indices
    assert np.all(ordered[picked, -1] <= np.sort(ordered[unlabeled, -1])[29] + 1e-12)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(axis=1)
    picked = select_batch("entropy", budget=30, labeled=labeled, pred_probs=probs).indices
    assert np.all(entropy[picked] >= np.sort(entropy[unlabeled])[::-1][29] - 1e-9)
    # The class-balanced variant spreads over the predicted classes; plain margin need not.
    balanced = select_batch("margin-balanced", budget=30, labeled=labeled, pred_probs=probs).indices
    counts = np.bincount(probs[balanced].argmax(axis=1), minlength=10)
    assert counts.max() - counts[counts > 0].min() <= 1 and (counts > 0).sum() >= 9
    # Ensemble disagreement: rows where every head votes alike have vote entropy 0 and are not picked first.
    votes = digits["ensemble"].argmax(axis=2)
    unanimous = (votes == votes[0]).all(axis=0)
    picked = select_batch("vote-entropy", budget=20, labeled=labeled, ensemble_probs=digits["ensemble"]).indices
    assert (~unanimous[unlabeled]).sum() >= 20 and not unanimous[picked].any()


def test_k_center_greedy_matches_a_slow_reference(digits):
    features = digits["features"][:300]
    centers = np.zeros(300, dtype=bool)
    centers[[5, 50, 150]] = True
    picks, distances = k_center_greedy(features, centers, 15, rng=np.random.default_rng(0))
    chosen = list(np.flatnonzero(centers))
    expected = []
    for _ in range(15):
        gaps = [min(float(np.sum((features[i].astype(np.float64) - features[c]) ** 2)) for c in chosen)
                for i in range(300)]
        best = int(np.argmax(gaps))
        expected.append(best)
        chosen.append(best)
    assert picks.tolist() == expected
    assert np.all(np.diff(distances) <= 1e-4)  # the farthest-first distances never grow


def test_uncertainty_herding_is_the_plain_greedy_of_uncertainty_weighted_coverage(digits):
    n, budget = 400, 12
    features, labeled, probs = digits["features"][:n], digits["labeled"][:n], digits["probs"][:n]
    for head in (probs, None):
        picked = select_batch("uncertainty-herding", budget=budget, labeled=labeled, pred_probs=head,
                              features=features, n_classes=10, seed=0).indices
        # Reference: the truncated kernel as a dense matrix, every gain recomputed at every step.
        k = min(UHERDING_NEIGHBOURS, n - 1)
        sims, idx = pool_neighbours(features, k, seed=0)
        distance = np.sqrt(np.maximum(2.0 - 2.0 * sims.astype(np.float64), 0.0))
        share = int(np.clip(n // (labeled.sum() + budget), 1, k))
        bandwidth = UHERDING_BANDWIDTH * np.median(distance[:, share - 1])
        kernel = np.zeros((n, n))
        kernel[np.repeat(np.arange(n), k), idx.ravel()] = np.exp(-distance.ravel() ** 2 / (2 * bandwidth ** 2))
        kernel[np.arange(n), np.arange(n)] = 1.0
        weight = np.ones(n) if head is None else margin_scores(probs)
        coverage = kernel[labeled].max(axis=0)
        taken = labeled.copy()
        expected = []
        for _ in range(budget):
            gains = (weight[None, :] * np.maximum(kernel - coverage[None, :], 0.0)).sum(axis=1)
            gains[taken] = -np.inf
            best = int(np.argmax(gains))
            expected.append(best)
            taken[best] = True
            coverage = np.maximum(coverage, kernel[best])
        assert picked.tolist() == expected


def test_diverse_and_cold_start_strategies_cover_more_classes_than_random_at_a_tiny_budget(digits):
    y, features = digits["y"], digits["features"]
    nothing = np.zeros(len(y), dtype=bool)

    def classes_covered(strategy: str, seed: int, **inputs) -> int:
        picks = select_batch(strategy, budget=10, labeled=nothing, features=features, n_classes=10, seed=seed,
                             **inputs).indices
        return len(np.unique(y[picks]))

    seeds = range(5)
    random = np.mean([classes_covered("random", s) for s in seeds])
    typiclust = np.mean([classes_covered("typiclust", s) for s in seeds])
    probcover = np.mean([classes_covered("probcover", s) for s in seeds])
    herding = np.mean([classes_covered("uncertainty-herding", s) for s in seeds])
    assert typiclust >= random + 1 and probcover >= random + 0.5 and herding >= random + 1, (
        random, typiclust, probcover, herding)
    # BADGE with a head trained on one example of each of two classes spreads the batch out more than plain
    # margin sampling (which piles into the few regions the head is unsure about), about as much as random.
    two = np.zeros(len(y), dtype=bool)
    two[[np.flatnonzero(y == 0)[0], np.flatnonzero(y == 1)[0]]] = True
    probs = head_probabilities(digits["x"], y, two, n_classes=10)
    badge = np.mean([classes_covered("badge", s, pred_probs=probs) for s in seeds])
    margin = np.mean([classes_covered("margin", s, pred_probs=probs) for s in seeds])
    assert badge > margin and badge >= random - 1, (badge, margin, random)


def test_pool_clusters_are_reused_per_feature_matrix_and_seed_and_never_stale(digits):
    features = digits["features"]
    first = pool_clusters(features, 12, seed=4)
    assert pool_clusters(features, 12, seed=4) is first  # the second call reuses the first one's k-means
    assert np.array_equal(first, kmeans_assign(features, 12, seed=4)) and not first.flags.writeable
    assert np.array_equal(pool_clusters(features, 13, seed=4), kmeans_assign(features, 13, seed=4))
    edited = features.copy()
    edited[:, 0] = -edited[:, 0]  # same shape, other contents: must not hit the cached entry
    assert np.array_equal(pool_clusters(edited, 12, seed=4), kmeans_assign(edited, 12, seed=4))
    # typiclust's picks depend on the cluster structure's seed, not on the draw's seed alone
    nothing = np.zeros(len(digits["y"]), dtype=bool)
    picks = [select_batch("typiclust", budget=10, labeled=nothing, features=features, seed=seed,
                          structure_seed=7).indices for seed in (0, 1)]
    assert np.array_equal(picks[0], picks[1])


def test_auto_switches_from_cold_start_to_uncertainty_to_diversity_at_the_per_class_thresholds(digits, monkeypatch):
    y, features, probs = digits["y"], digits["features"], digits["probs"]
    order = np.random.default_rng(1).permutation(len(y))
    # the default rule has no uncertainty-only phase: straight from cold start to uncertainty with diversity
    assert auto_strategy(AUTO_SWITCH_PER_CLASS * 10 - 1, 10) == AUTO_COLD_STRATEGY
    assert auto_strategy(AUTO_SWITCH_PER_CLASS * 10, 10) == AUTO_DIVERSE_STRATEGY == auto_strategy(10_000, 10)
    # with the thresholds apart (a rule variant), the middle phase appears between them
    switch, diverse = 5, 15
    monkeypatch.setattr(strategy_module, "AUTO_SWITCH_PER_CLASS", switch)
    monkeypatch.setattr(strategy_module, "AUTO_DIVERSE_PER_CLASS", diverse)
    assert AUTO_WARM_STRATEGY != AUTO_DIVERSE_STRATEGY
    for labelled_count, expected in ((switch * 10 - 1, AUTO_COLD_STRATEGY), (switch * 10, AUTO_WARM_STRATEGY),
                                     (diverse * 10 - 1, AUTO_WARM_STRATEGY), (diverse * 10, AUTO_DIVERSE_STRATEGY)):
        labeled = np.zeros(len(y), dtype=bool)
        labeled[order[:labelled_count]] = True
        selection = select_batch("auto", budget=20, labeled=labeled, pred_probs=probs, features=features,
                                 n_classes=10, seed=0)
        assert all(reason.startswith(f"auto -> {expected}:") for reason in selection.reasons)
        assert not labeled[selection.indices].any()
    # without a head, auto stays cold however many rows are labelled
    labeled = np.zeros(len(y), dtype=bool)
    labeled[order[:500]] = True
    selection = select_batch("auto", budget=5, labeled=labeled, features=features, seed=0)
    assert selection.reasons[0].startswith(f"auto -> {AUTO_COLD_STRATEGY}:")


def test_the_active_learning_head_has_a_width_floor_and_is_what_strategies_rank_by(digits):
    assert head_components(100) == HEAD_MIN_COMPONENTS > pca_components(100)
    assert head_components(10_000) == pca_components(10_000) > HEAD_MIN_COMPONENTS
    # The simulation ranks by and measures that head: replay its second round by hand.
    x, y, features = digits["x"], digits["y"], digits["features"]
    test = np.zeros(len(y), dtype=bool)
    test[np.random.default_rng(3).choice(len(y), 300, replace=False)] = True
    records = simulate_active_learning(x, y, test=test, strategies=["margin"], schedule=[100, 160], seeds=[0],
                                       features=features, n_classes=10)
    labeled = np.zeros(len(y), dtype=bool)
    labeled[records[0]["picked"]] = True
    probs = head_probabilities(x, y, labeled, n_classes=10, seed=0)
    np.testing.assert_allclose(probs, fit_predict_probabilities(x, np.where(labeled, y, -1), labeled.astype(float),
                                                                n_classes=10, components=HEAD_MIN_COMPONENTS))
    assert not np.allclose(probs, fit_predict_probabilities(x, np.where(labeled, y, -1), labeled.astype(float),
                                                            n_classes=10), atol=1e-3)  # the floor matters
    picks = select_batch("margin", budget=60, labeled=labeled, selectable=~test, pred_probs=probs, features=features,
                         n_classes=10, seed=1, structure_seed=0).indices
    assert records[1]["picked"] == picks.tolist()
    labeled[picks] = True
    measured = head_probabilities(x, y, labeled, n_classes=10, seed=0)
    assert records[1]["accuracy"] == pytest.approx(np.mean(measured[test].argmax(axis=1) == y[test]))


def test_bad_strategy_inputs_are_one_clear_line(digits):
    labeled = digits["labeled"]
    with pytest.raises(InputError, match="'nonsense' is unknown"):
        select_batch("nonsense", budget=5, labeled=labeled)
    with pytest.raises(InputError, match="only 1737 unlabelled samples"):
        select_batch("random", budget=5000, labeled=labeled)
    with pytest.raises(InputError, match="needs pred_probs"):
        select_batch("margin", budget=5, labeled=labeled)
    with pytest.raises(InputError, match="pred_probs must have shape"):
        select_batch("margin", budget=5, labeled=labeled, pred_probs=digits["probs"][:10])
    with pytest.raises(InputError, match="needs features"):
        select_batch("coreset", budget=5, labeled=labeled)


# -- routing -----------------------------------------------------------------------------------------


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits, axis=1)])
    overconfident = softmax(3.0 * logits, axis=1)
    assert fit_calibration(overconfident, labels, method="temperature").temperature == pytest.approx(3.0, rel=0.1)


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_routing_reaches_the_requested_precision_on_held_out_digits(digits, method):
    x, y = digits["x"], digits["y"]
    rng = np.random.default_rng(1)
    calibration = np.zeros(len(y), dtype=bool)
    calibration[rng.choice(len(y), 1100, replace=False)] = True
    probs = cross_fitted_probabilities(x, y, calibration, n_classes=10)
    held_out = np.flatnonzero(~calibration)
    for precision in (0.9, 0.95):
        routing = route_auto_labels(probs[calibration], y[calibration], probs[held_out], precision=precision,
                                    method=method)
        accepted = routing.accepted
        assert len(accepted) > 0.5 * len(held_out), len(accepted)
        assert np.mean(routing.predicted[accepted] == y[held_out][accepted]) >= precision
        wrong = int(np.sum(routing.predicted[accepted] != y[held_out][accepted]))
        assert routing.expected_wrong <= routing.expected_wrong_bound and wrong <= routing.expected_wrong_bound
        for entry in routing.thresholds:
            if entry["threshold"] is not None:
                assert entry["threshold"] >= entry["calibration_threshold"]
                rows = (routing.predicted == entry["class"]) & (routing.confidence >= entry["threshold"])
                assert rows.sum() == entry["accepted"]
                if entry["accepted"]:
                    assert entry["expected_precision"] == pytest.approx(routing.confidence[rows].mean())
                    assert entry["expected_precision"] >= precision
    # Asking for more than 110 rows per class can prove leaves those classes to people.
    strict = route_auto_labels(probs[calibration], y[calibration], probs[held_out], precision=0.99, method=method)
    assert len(strict.accepted) < len(accepted)
    with pytest.raises(InputError, match=r"--precision 1\.2"):
        route_auto_labels(probs[calibration], y[calibration], probs[held_out], precision=1.2)


def test_routing_raises_a_threshold_the_model_itself_does_not_trust():
    """A class whose calibration rows are all right at confidences the calibrated model calls ~0.9 passes the
    Clopper-Pearson test, but the pool rows at those confidences are expected to be 10% wrong: the threshold is
    raised to where the model's own estimate reaches the requested precision, and the rows below are left."""
    rng = np.random.default_rng(0)

    def rows(n: int, top: np.ndarray, klass: int) -> np.ndarray:
        probs = np.full((n, 2), 0.0)
        probs[:, klass], probs[:, 1 - klass] = top, 1.0 - top
        return probs

    # class 0: 600 calibration rows at 0.9, every one right; class 1: 3,000 rows at 0.9, 10% wrong, so the
    # fitted temperature keeps 0.9 meaning 0.9 overall. Pool: class 0 at 0.9 and at 0.9999.
    calibration = np.vstack([rows(600, np.full(600, 0.9), 0), rows(3000, np.full(3000, 0.9), 1)])
    labels = np.r_[np.zeros(600, int), np.where(rng.random(3000) < 0.1, 0, 1)]
    pool = np.vstack([rows(500, np.full(500, 0.9), 0), rows(500, np.full(500, 0.9999), 0)])
    routing = route_auto_labels(calibration, labels, pool, precision=0.99)
    class0 = routing.thresholds[0]
    assert class0["calibration_accepted"] == 600 and class0["precision_lower_bound"] >= 0.99
    assert class0["calibration_threshold"] < 0.9 < class0["threshold"]
    assert np.array_equal(routing.accepted, np.arange(500, 1000))
    assert class0["expected_precision"] >= 0.99 and routing.thresholds[1]["threshold"] is None
    # Proven at the grid's top (70,000 calibration rows, all right) but expected below the request there:
    # the class is left to people.
    top = class_thresholds(np.full(70_000, 0.99999), np.zeros(70_000, int), np.zeros(70_000, int),
                           precision=0.99995, n_classes=1, pool_confidence=np.full(10, 0.99992),
                           pool_predicted=np.zeros(10, int))
    assert top[0]["calibration_threshold"] is not None and top[0]["threshold"] is None


# -- simulation curves -----------------------------------------------------------------------------


def test_label_schedule_and_efficiency():
    assert label_schedule(800, 4) == [100, 200, 400, 800]
    assert label_schedule(5000, 7, start=100)[0] == 100 and label_schedule(5000, 7, start=100)[-1] == 5000
    with pytest.raises(InputError, match="--rounds 50"):
        label_schedule(10, 50)
    schedule = [100, 200, 400]
    records = [{"strategy": name, "seed": 0, "round": r, "accuracy": acc}
               for name, accs in {"random": [0.5, 0.6, 0.7], "better": [0.5, 0.7, 0.8]}.items()
               for r, acc in enumerate(accs)]
    curves = summarize_curves(records, strategies=["random", "better"], schedule=schedule, seeds=[0])
    efficiency = curves["better"]["label_efficiency"]
    assert efficiency[0]["efficiency"] == pytest.approx(1.0)
    assert efficiency[1]["efficiency"] == pytest.approx(200 / 141.42, rel=1e-3)  # 0.6 halfway (log) to 200
    assert efficiency[2]["efficiency"] == pytest.approx(2.0)  # random's 0.7 at 400 is reached at 200
    assert curves["better"]["labels_to_reach_random_final"] == pytest.approx(200)
    assert curves["random"]["auc"] == pytest.approx(0.6) and curves["better"]["auc"] > curves["random"]["auc"]


# -- the commands ----------------------------------------------------------------------------------


def _manifest(root: Path, fashion_mnist, classes: tuple[int, ...], per_class: int, labelled: int,
              test_per_class: int = 0) -> Path:
    """Real Fashion-MNIST PNGs and a manifest; the first ``labelled`` train rows per class carry their label."""
    images, labels = fashion_mnist
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for klass in classes:
        members = np.flatnonzero(labels == klass)
        for position, index in enumerate(members[:per_class + test_per_class]):
            Image.fromarray(images[index]).save(root / f"{index:05d}.png")
            split = "test" if position >= per_class else "train"
            label = FASHION_MNIST_CLASSES[klass] if position < labelled or split == "test" else ""
            rows.append({"id": f"img{index:05d}", "path": f"{index:05d}.png", "label": label, "split": split})
    path = root / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _embedded_workspace(root: Path, manifest: Path) -> Path:
    """Ingest the manifest and embed it with ``classic`` (in-process: the commands are tested elsewhere)."""
    from curato.commands.embed import compute_embeddings
    from curato.commands.ingest import ingest

    workspace = Workspace.create(root)
    ingest(workspace, manifest)
    compute_embeddings(workspace, "classic")
    return root


def _schema(name: str) -> dict:
    return json.loads(resources.files("curato").joinpath(f"schemas/{name}.schema.json").read_text())


@pytest.mark.slow
def test_select_and_route_commands(tmp_path, fashion_mnist):
    manifest = _manifest(tmp_path / "data", fashion_mnist, (1, 7, 8), per_class=150, labelled=100)
    workspace = _embedded_workspace(tmp_path / "ws", manifest)
    out = tmp_path / "batch.csv"
    result = run("select", "-w", workspace, "--budget", "12", "--strategy", "margin", "--out", out,
                 "--embedder", "classic")
    assert result.returncode == 0, result.stderr
    with out.open() as handle:
        batch = list(csv.DictReader(handle))
    assert len(batch) == 12 and [int(row["rank"]) for row in batch] == list(range(1, 13))
    assert set(batch[0]) >= {"sample_id", "rank", "score", "reason", "predicted_label", "confidence"}
    opened = Workspace.open(workspace)
    labels = opened.catalog.current_labels()
    assert not any(row["sample_id"] in labels for row in batch)
    queued = opened.catalog.queued()
    assert [entry["sample_id"] for entry in queued] == [row["sample_id"] for row in batch]
    assert all(entry["reason"] and entry["strategy"] == "margin" for entry in queued)
    jsonschema.validate(json.loads((workspace / "reports" / "select-latest.json").read_text()), _schema("select"))
    # A second batch (JSON) skips what is already queued.
    second = run_select(opened, budget=10, strategy="auto", embedder="classic", out=tmp_path / "batch.json")
    assert not {row["sample_id"] for row in second["batch"]} & {row["sample_id"] for row in batch}
    # 100 labels in each of 3 classes: auto is past its uncertainty phase, and the batch's confidences are the
    # active-learning head's (at least HEAD_MIN_COMPONENTS wide), not the narrower out-of-fold width's
    assert all(row["reason"].startswith(f"auto -> {AUTO_DIVERSE_STRATEGY}:") for row in second["batch"])
    rows = embedded_rows(opened, "classic")
    codes = rows.codes
    position = {sid: i for i, sid in enumerate(rows.ids.tolist())}
    picked = [position[row["sample_id"]] for row in second["batch"]]
    head = head_probabilities(rows.embeddings, codes, codes >= 0, n_classes=3, seed=0)
    narrow = head_probabilities(rows.embeddings, codes, codes >= 0, n_classes=3, seed=0,
                                components=pca_components(int((codes >= 0).sum())))
    confidences = np.array([row["confidence"] for row in second["batch"]])
    np.testing.assert_allclose(confidences, head[picked].max(axis=1), atol=2e-6)
    assert not np.allclose(confidences, narrow[picked].max(axis=1), atol=1e-4)
    assert json.loads((tmp_path / "batch.json").read_text())["batch"] == second["batch"]

    routed = tmp_path / "route.json"
    result = run("route", "-w", workspace, "--precision", "0.9", "--embedder", "classic", "--json", routed)
    assert result.returncode == 0, result.stderr
    assert "expected wrong auto-labels" in result.stdout
    document = json.loads(routed.read_text())
    jsonschema.validate(document, _schema("route"))
    assert document["auto_labelled"] > 0
    truth = {f"img{i:05d}": FASHION_MNIST_CLASSES[int(label)] for i, label in enumerate(fashion_mnist[1])}
    right = np.mean([truth[row["sample_id"]] == row["label"] for row in document["labels"]])
    assert right >= 0.9
    after = Workspace.open(workspace).catalog.current_labels()
    assert len(after) == len(labels) + document["auto_labelled"]
    from curato.commands.info import write_report

    html = write_report(Workspace.open(workspace), [], tmp_path / "report.html").read_text()
    section = html[html.index('<section id="route"'):]
    assert "Expected wrong auto-labels" in section[:section.index("</section>")]
    result = run("route", "-w", workspace, "--undo", str(document["run_id"]))
    assert result.returncode == 0 and f"removed {document['auto_labelled']} model labels" in result.stdout
    assert Workspace.open(workspace).catalog.current_labels() == labels
    rebuilt = (workspace / "reports" / "report.html").read_text()  # the workspace report follows the undo
    section = rebuilt[rebuilt.index('<section id="route"'):]
    assert "(undone)" in section[:section.index("</section>")]
    with pytest.raises(InputError, match="--budget must be at least 1"):
        run_select(opened, budget=0, embedder="classic")
    with pytest.raises(InputError, match="--calibration 'platt'"):
        run_route(opened, precision=0.9, calibration="platt")
    with pytest.raises(InputError, match="--out"):
        run_select(opened, budget=3, out=tmp_path / "batch.txt")


@pytest.mark.slow
def test_simulate_command_writes_valid_json_and_resumes(tmp_path, fashion_mnist):
    manifest = _manifest(tmp_path / "data", fashion_mnist, (0, 1, 2, 7, 8), per_class=80, labelled=80,
                         test_per_class=20)
    workspace = _embedded_workspace(tmp_path / "ws", manifest)
    opened = Workspace.open(workspace)
    options = {"strategies": ["random", "margin", "auto"], "budget": 80, "rounds": 3, "seeds": [0, 1],
               "embedder": "classic", "precisions": [0.9]}
    with pytest.raises(KeyboardInterrupt):
        run_simulate(opened, progress=InterruptAfter("simulate", 4), **options)
    checkpoint = workspace / "reports" / SIMULATE_CHECKPOINT
    assert len(checkpoint.read_text().splitlines()) == 4
    with checkpoint.open("a") as handle:
        handle.write('{"digest": "torn')  # a crash mid-line is ignored
    out = tmp_path / "simulate.json"
    result = run("simulate", "-w", workspace, "--strategies", "random,margin,auto", "--budget", "80", "--rounds",
                 "3", "--seeds", "2", "--precision", "0.9", "--embedder", "classic", "--json", out)
    assert result.returncode == 0, result.stderr
    assert len(checkpoint.read_text().splitlines()) == 3 * 2 * 3 + 1  # four kept, the torn line, fourteen new
    document = json.loads(out.read_text())
    jsonschema.validate(document, _schema("simulate"))
    assert document["test_set"].startswith("split 'test'") and document["n_test"] == 100
    assert document["settings"]["schedule"] == [20, 40, 80]
    for curve in document["strategies"].values():
        assert len(curve["accuracy"]) == 3 and curve["accuracy"][-1] > 0.6
        assert all(lo <= acc <= hi for lo, acc, hi in zip(curve["low"], curve["accuracy"], curve["high"], strict=True))
    assert all(entry["efficiency"] == pytest.approx(1.0) or entry["random_accuracy"] == pytest.approx(
        max(document["strategies"]["random"]["accuracy"][:index + 1]))
        for index, entry in enumerate(document["strategies"]["random"]["label_efficiency"]))
    assert len(document["routing"]["results"]) == 2
    for entry in document["routing"]["results"]:
        # The per-class rows add up to the routing's totals.
        assert len(entry["classes"]) == len(document["classes"])  # indices into the document's class list
        assert sum(c["accepted"] for c in entry["classes"]) == entry["auto_labelled"]
        assert sum(c["wrong"] for c in entry["classes"]) == entry["wrong"]
        assert all(c["threshold"] is not None or c["accepted"] == 0 for c in entry["classes"])
    from curato.commands.info import write_report

    html = write_report(Workspace.open(workspace), [], tmp_path / "report.html").read_text()
    section = html[html.index('<section id="simulate"'):]
    assert "<svg" in section[:section.index("</section>")] and "auto" in section
    failed = run("simulate", "-w", workspace, "--strategies", "random,bogus", "--budget", "80")
    assert failed.returncode == 2 and "bogus" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    with pytest.raises(InputError, match="--budget 5000"):
        run_simulate(opened, strategies=["random"], budget=5000, rounds=2, embedder="classic")
