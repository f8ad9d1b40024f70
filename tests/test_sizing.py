"""Sizing: curve families and their selection, nested subsets, the forecast and backtest on real data
(scikit-learn digits), augmentation, ``curato size`` end to end with JSON (also ``--backtest`` on 1,000
Fashion-MNIST images), resumption and bad input. The CLI runs in-process (typer's CliRunner)."""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import replace
from functools import partial
from importlib import resources
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from jinja2 import Environment, PackageLoader
from PIL import Image
from sklearn.datasets import load_digits

from curato.arrays import stratified_folds, stratified_subsample
from curato.commands.results import SizeResult
from curato.commands.size import load_hook, run_size
from curato.errors import InputError
from curato.ingest.readers import FASHION_MNIST_CLASSES
from curato.models.oof import OOF_SETTINGS_VERSION
from curato.sizing import (
    CurveFolds,
    FamilyFit,
    backtest,
    curve_sizes,
    curve_values,
    fit_curve,
    forecast,
    head_scorer,
    hook_scorer,
    labels_needed,
    labels_worth,
    measure_curve,
    nested_subset,
    select_fits,
)
from curato.sizing.curves import FAMILIES
from curato.sizing.forecast import evaluation_sd, extrapolation_scale, noisy_curves, plateau_noise, seed_sd
from curato.sizing.measure import curve_components, train_and_score_head
from curato.sizing.meta import (
    ANCHOR_EPS,
    STEP,
    anchored_gains,
    curve_features,
    load_meta,
    meta_curves,
    meta_not_pinned_reason,
    meta_pinned,
    pin_failures,
    pin_features,
    predict_quantiles,
    slope_at,
)
from curato.sizing.prior import curve_top, load_prior, pinned_down, prior_curves
from curato.sizing.strategies import augment_image
from curato.workspace import Workspace
from tests.conftest import photo, run

SIZES = np.geomspace(40, 5120, 8)
CHANCE = 0.9
SCHEMA = json.loads(resources.files("curato").joinpath("schemas/size.schema.json").read_text())
LCDB = json.loads((Path(__file__).parent / "data" / "lcdb_curves.json").read_text())  # an excerpt, MIT licence


def test_power_law_and_m4_recover_known_parameters():
    error = 0.04 + 3.0 * SIZES ** -0.45
    fit = fit_curve("power_law", SIZES, 1 - error, chance=CHANCE)
    assert fit.params[1] == pytest.approx(0.45, abs=1e-3) and fit.params[2] == pytest.approx(0.04, abs=1e-3)
    assert fit.ceiling == pytest.approx(0.96, abs=1e-3)
    # m4 with alpha = 1: (e - 0.03) / (0.9 - e) = 4 n^-0.5, solved for e in closed form.
    scale = 4.0 * SIZES ** -0.5
    m4_error = (0.03 + scale * CHANCE) / (1 + scale)
    fit = fit_curve("m4", SIZES, 1 - m4_error, chance=CHANCE)
    assert fit.params[0] == pytest.approx(0.03, abs=5e-3) and fit.params[3] == pytest.approx(1.0, abs=0.2)
    assert np.abs(fit.metric(SIZES) - (1 - m4_error)).max() < 1e-3


def test_piecewise_arctan_and_logarithmic_reproduce_their_own_curves():
    for family, params in {"piecewise_power_law": np.array([np.log(0.1), 0.4, 0.3, np.log(500)]),
                           "arctan": np.array([0.97, np.log(0.004), 0.5]),
                           "logarithmic": np.array([0.3, 0.07, 20.0])}.items():
        truth = 1 - FAMILIES[family].error(params, SIZES, CHANCE)
        fit = fit_curve(family, SIZES, truth, chance=CHANCE)
        assert np.abs(fit.metric(SIZES) - truth).max() < 2e-3, family
    # The piecewise curve stays monotone below its break (the quadratic is held flat).
    far_left = np.geomspace(1, 500, 50)
    assert np.all(np.diff(FAMILIES["piecewise_power_law"].error(np.array([np.log(0.1), 0.4, 0.3, np.log(500)]),
                                                                 far_left, CHANCE)) <= 1e-12)


def test_selection_weights_the_generating_family_over_an_unbounded_one():
    rng = np.random.default_rng(0)
    sizes = np.geomspace(50, 12800, 10)
    metric = 1 - (0.08 + 2.0 * sizes ** -0.5) + rng.normal(0, 0.001, len(sizes))
    fits = select_fits(sizes, metric, chance=CHANCE)
    weight = {entry.family: entry.weight for entry in fits}
    assert abs(sum(weight.values()) - 1) < 1e-9
    assert weight["power_law"] + weight["m4"] > 0.6
    assert weight["logarithmic"] < 0.1  # no ceiling: it overshoots the held-back sizes
    assert fits[0].family in ("power_law", "m4")


def test_nested_subsets_are_nested_and_stratified():
    labels = np.repeat(np.arange(4), [400, 200, 100, 100])
    sizes = curve_sizes(len(labels), 4, n_sizes=6)
    assert sizes[0] == 20 and sizes[-1] == 800 and np.all(np.diff(sizes) > 0)
    for seed in (0, 1):
        previous = None
        for size in sizes:
            subset = nested_subset(labels, int(size), seed=seed)
            assert len(subset) == size
            counts = np.bincount(labels[subset], minlength=4)
            assert np.all(np.abs(counts - size * np.array([0.5, 0.25, 0.125, 0.125])) <= 1)
            if previous is not None:
                assert set(previous) <= set(subset)
            previous = subset
    assert not np.array_equal(nested_subset(labels, 100, seed=0), nested_subset(labels, 100, seed=1))


def test_stratified_folds_deal_every_class_evenly():
    labels = np.repeat(np.arange(4), [403, 200, 101, 3])
    fold = stratified_folds(labels, 5, seed=7)
    assert fold.shape == labels.shape and set(fold.tolist()) == set(range(5))
    counts = np.array([np.bincount(fold[labels == c], minlength=5) for c in range(4)])
    assert np.all(counts.max(axis=1) - counts.min(axis=1) <= 1)  # floor or ceil of each class's fifth
    assert np.array_equal(fold, stratified_folds(labels, 5, seed=7))
    assert not np.array_equal(fold, stratified_folds(labels, 5, seed=8))
    with pytest.raises(InputError, match="need at least 2"):
        stratified_folds(labels, 1)


def test_cross_fitted_curve_scores_every_row_once_per_size_and_never_its_own_training_rows():
    y = load_digits().target.astype(np.int64)[:500]
    ids = [f"img{i:04d}" for i in range(len(y))]
    folds = CurveFolds.cross_fitted(np.arange(len(y)), y, seed=3)
    assert folds.rotating and folds.pool_size == min(len(p) for p in folds.pools) and 395 <= folds.pool_size <= 400
    calls: list[tuple[list[str], list[str]]] = []

    def recipe(train_ids: list[str], eval_ids: list[str]) -> float:
        calls.append((train_ids, eval_ids))
        return len(train_ids) / 1000

    sizes = [50, 200, folds.pool_size]
    points = measure_curve(y, folds, sizes, range(5), hook_scorer(recipe, ids, folds))
    assert sorted(points) == [(size, seed) for size in sizes for seed in range(5)]  # every seed at the full pool too
    for train_ids, eval_ids in calls:
        assert not set(train_ids) & set(eval_ids)
    for size in sizes:
        scored = [eval_ids for train_ids, eval_ids in calls if len(train_ids) == size]
        assert sorted(itertools.chain.from_iterable(scored)) == ids  # the five seeds score each row exactly once
    assert np.array_equal(folds.evaluated(range(5)), np.arange(len(y)))
    fixed = CurveFolds.fixed(np.arange(400), np.arange(400, 500))
    assert not fixed.rotating and len(measure_curve(y, fixed, [50, 400], range(3), lambda s, seed: {"n": len(s)})) == 4


def test_backtest_error_is_predicted_minus_measured():
    sizes = 40.0 * 2 ** np.arange(9)
    truth = 1 - (0.05 + 2.5 * sizes ** -0.5)
    values = [np.array([v - 0.002, v + 0.002]) for v in truth]
    result = backtest(sizes, values, chance=CHANCE, n_bootstrap=20)
    assert result["fit_up_to"] == 2560 and result["predict_at"] == 10240
    assert result["measured"] == pytest.approx(truth[-1])
    assert result["error"] == pytest.approx(result["predicted"] - result["measured"])
    assert abs(result["error"]) < 0.005
    assert result["samples_needed_ratio"] == pytest.approx(1.0, abs=0.25)


def test_evaluation_noise_follows_the_binomial_and_counts_small_classes():
    balanced = np.full(10, 100)
    assert evaluation_sd(0.9, balanced) == pytest.approx(np.sqrt(0.9 * 0.1 / 1000))
    # Balanced accuracy on balanced classes is a mean of binomial recalls: the same spread as accuracy.
    assert evaluation_sd(0.9, balanced, kind="balanced_accuracy") == pytest.approx(evaluation_sd(0.9, balanced))
    skewed = np.array([910, 10, 10, 10, 10, 10, 10, 10, 10, 10])  # same 1,000 rows, nine tiny classes
    assert evaluation_sd(0.9, skewed, kind="balanced_accuracy") > 2.5 * evaluation_sd(0.9, skewed)
    assert evaluation_sd(0.9, None) == 0.0 and evaluation_sd(1.0, balanced) == 0.0


def synthetic_curve(rng: np.random.Generator, eval_rows: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A power-law learning curve measured as a real one is: 5 seeds per size whose spread shrinks as 1/sqrt(n),
    one run at the largest size, every value scored on ``eval_rows`` evaluation rows (binomial noise; the same
    rows for the whole curve, so each model's score also carries a shared offset of the evaluation set)."""
    sizes = np.append(np.round(np.geomspace(50, 1600, 7)), 6400.0)
    truth = 1 - (0.06 + 2.0 * sizes ** -0.5)
    shared = rng.normal(0, 0.5)
    values = []
    for i, (size, value) in enumerate(zip(sizes, truth, strict=True)):
        seeds = 1 if i == len(sizes) - 1 else 5
        model = value + rng.normal(0, 0.2 / np.sqrt(size), seeds)
        scored = rng.binomial(eval_rows, np.clip(model, 0, 1)) / eval_rows
        values.append(np.clip(scored + shared * np.sqrt(value * (1 - value) / eval_rows), 0, 1))
    return sizes, values


def test_interval_widens_as_the_evaluation_set_shrinks():
    grid = np.geomspace(100, 100_000, 50)
    replicates = 0.95 - 2.0 * grid[None] ** -0.5 + np.random.default_rng(0).normal(0, 0.002, (30, 1))
    widths = []
    for rows in (None, 20_000, 2_000, 200):
        curves = noisy_curves(replicates, grid, last_measured=1000, extrapolation=0.004, seed_spread=0.003,
                              class_counts=None if rows is None else np.full(10, rows // 10))
        low, high = np.percentile(curves, [5, 95], axis=0)
        widths.append(high - low)
    for narrower, wider in itertools.pairwise(widths):
        assert np.all(wider >= narrower - 1e-3) and np.mean(wider - narrower) > 0
    # 200 rows: the binomial alone is +-2.5 points at 0.93, so the band is at least that wide everywhere.
    assert np.all(widths[-1] > 2 * 1.645 * np.sqrt(0.93 * 0.07 / 200) - 2e-3)
    # Beyond the measured sizes the extrapolation term makes the band grow with the distance.
    assert widths[0][-1] > 2 * widths[0][np.searchsorted(grid, 1000)]


@pytest.mark.slow
def test_interval_covers_a_noisy_curve_at_about_its_nominal_rate():
    covered, widths = [], []
    for seed in range(5):
        sizes, values = synthetic_curve(np.random.default_rng(100 + seed), 400)
        result = backtest(sizes, values, chance=CHANCE, n_bootstrap=10, eval_class_counts=np.full(10, 40))
        covered.append(result["covered"])
        widths.append(result["interval"][1] - result["interval"][0])
        binomial = np.sqrt(result["measured"] * (1 - result["measured"]) / 400)
        assert result["uncertainty"]["evaluation_rows"] == 400
        assert widths[-1] > 2 * 1.645 * binomial  # at least the evaluation set's own noise
    assert sum(covered) >= 4  # nominal 90% of 5: 4.5
    assert np.median(widths) < 0.08  # ... and still useful: under 8 points on a curve at ~0.9


def test_plateau_noise_flags_a_target_the_curve_cannot_resolve():
    grid = np.geomspace(100, 1e6, 400)
    central = 0.9 - 0.5 * grid ** -0.5  # flat top: 0.885 at 1,000, 0.8995 at 1e6
    counts = np.full(10, 45)  # 450 evaluation rows: +-2.4 points (90%) at 0.89
    for target, inside in ((0.80, False), (0.885, True), (0.899, True)):
        needed = labels_needed(grid, central, target)
        noise, within = plateau_noise(grid, central, target=target, needed=needed, last_measured=1000,
                                      seed_spread=0.004, class_counts=counts)
        assert within == inside, target
        assert noise > 1.645 * np.sqrt(target * (1 - target) / 450)
    # A 100x larger evaluation set resolves 0.885: ten times its labels lift the curve by more than the noise.
    noise, within = plateau_noise(grid, central, target=0.885, needed=labels_needed(grid, central, 0.885),
                                  last_measured=1000, seed_spread=0.0, class_counts=counts * 100)
    assert not within and noise < 0.005


def test_extrapolation_scale_recovers_errors_that_grow_with_distance():
    sizes = np.geomspace(50, 3200, 10)
    distance = {cut: np.log(sizes[cut:] / sizes[cut - 1]) for cut in range(4, 10)}
    # Two families whose held-back errors grow as 0.01 and 0.03 per unit of log distance; weights 3:1.
    fits = [FamilyFit("power_law", None, 0.01, 0, weight=0.75, cut_errors={c: 0.01 * h for c, h in distance.items()}),
            FamilyFit("m4", None, 0.03, 0, weight=0.25, cut_errors={c: 0.03 * h for c, h in distance.items()})]
    assert extrapolation_scale(fits, sizes) == pytest.approx(0.75 * 0.01 + 0.25 * 0.03)
    # Errors of both signs that cancel in the weighted forecast carry no extrapolation error.
    fits[1].cut_errors = {c: -0.03 * h for c, h in distance.items()}
    fits[1].weight = fits[0].weight = 0.5
    fits[0].cut_errors = {c: 0.03 * h for c, h in distance.items()}
    assert extrapolation_scale(fits, sizes) == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def digits_curve() -> tuple[np.ndarray, list[np.ndarray], int]:
    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    held = stratified_subsample(y, 450, seed=102)
    pool = np.setdiff1d(np.arange(len(y)), held)
    sizes = sorted({*np.round(np.geomspace(50, len(pool) / 4, 6)).astype(int).tolist(), len(pool)})
    folds = CurveFolds.fixed(pool, held)
    points = measure_curve(y, folds, sizes, [0, 1, 2], head_scorer(x, y, folds, n_classes=10))
    measured_sizes, values = curve_values(points, "accuracy")
    return measured_sizes, values, len(pool)


def test_head_scorer_width_fixed_or_growing():
    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    held = stratified_subsample(y, 450, seed=102)
    pool = np.setdiff1d(np.arange(len(y)), held)
    subset = nested_subset(y[pool], 160, seed=0)
    folds = CurveFolds.fixed(pool, held)
    fixed = head_scorer(x, y, folds, n_classes=10)(subset, 0)
    grows = head_scorer(x, y, folds, n_classes=10, width_grows=True)(subset, 0)
    # 160 rows: the growing head has pca_components(160) = 10 whitened dimensions, the fixed one the pool's
    # curve_components (84, so all 64 of digits' axes); the same rows score differently, and each matches the
    # head called directly.
    assert grows == train_and_score_head(x, y, pool[subset], held, n_classes=10, seed=0, components=None)
    assert fixed == train_and_score_head(x, y, pool[subset], held, n_classes=10, seed=0,
                                         components=curve_components(len(pool)))
    assert fixed["accuracy"] != grows["accuracy"]
    with pytest.raises(InputError, match="not both"):
        head_scorer(x, y, folds, n_classes=10, components=8, width_grows=True)


def test_digits_forecast_from_a_quarter_is_within_a_few_points(digits_curve):
    sizes, values, n_pool = digits_curve
    assert len(values[-1]) == 1 and all(len(v) == 3 for v in values[:-1])  # one seed at the full pool
    result = backtest(sizes, values, chance=CHANCE, n_bootstrap=30, eval_class_counts=np.full(10, 45))
    assert result["predict_at"] == n_pool and result["fit_up_to"] <= n_pool / 4
    assert abs(result["error"]) < 0.04
    low, high = result["interval"]
    assert low < result["predicted"] < high
    # 450 evaluation images: the interval is at least as wide as the binomial noise of one accuracy on them.
    assert high - low > 2 * 1.645 * np.sqrt(result["measured"] * (1 - result["measured"]) / 450)
    assert result["uncertainty"]["evaluation_rows"] == 450 and result["uncertainty"]["seed_sd"] > 0
    # Without the evaluation, seed and extrapolation terms: same fits and point forecast, a narrower interval
    # from the bootstrap replicates alone.
    bare = backtest(sizes, values, chance=CHANCE, n_bootstrap=30, eval_class_counts=np.full(10, 45),
                    interval_noise=False)
    assert bare["predicted"] == result["predicted"] and bare["fits"] == result["fits"]
    assert bare["interval"][1] - bare["interval"][0] < high - low


@pytest.mark.slow
def test_forecast_answers_and_warnings(digits_curve):
    sizes, values, n_pool = digits_curve
    answers = forecast(sizes, values, target=0.97, chance=CHANCE, n_bootstrap=15, per_class_multiple=10)
    predictions = [entry["metric"] for entry in answers["predictions"]]
    assert predictions == sorted(predictions) and predictions[0] >= np.mean(values[-1]) - 0.01
    assert answers["samples_needed"]["total"] is not None and answers["samples_needed"]["total"] > n_pool
    low, high = answers["samples_needed"]["interval"]
    assert low <= answers["samples_needed"]["total"] and (high is None or high >= answers["samples_needed"]["total"])
    assert answers["marginal"]["gain"] > 0 and answers["marginal"]["labels"] == 10_000
    unreachable = forecast(sizes, values, target=1.0, chance=CHANCE, n_bootstrap=0)
    assert unreachable["samples_needed"]["total"] is None and unreachable["warnings"]
    means = np.array([np.mean(v) for v in values])
    fits = select_fits(sizes, means, chance=CHANCE)
    # A strategy that scores what the baseline scores at a size is worth nothing there; a better one is worth more.
    assert labels_worth(sizes, means, fits, size=int(sizes[4]), value=float(means[4])) == pytest.approx(0, abs=1)
    assert labels_worth(sizes, means, fits, size=int(sizes[4]), value=float(means[6])) > sizes[6] - sizes[4] - 1


def test_augment_image_keeps_shape_and_changes_pixels():
    image = photo("astronaut")[::4, ::4]
    rng = np.random.default_rng(0)
    copies = [augment_image(image, rng) for _ in range(4)]
    assert all(c.shape == image.shape and c.dtype == np.uint8 for c in copies)
    assert all(np.abs(c.astype(int) - image).mean() > 1 for c in copies)


@pytest.fixture()
def sizing_workspace(tmp_path, image_folder):
    ws = tmp_path / "ws"
    assert run("ingest", image_folder, "-w", ws).returncode == 0
    return ws


@pytest.mark.slow
def test_cli_writes_valid_json_and_report(sizing_workspace, tmp_path):
    out = tmp_path / "size.json"
    result = run("size", "-w", sizing_workspace, "--target", "0.99", "--embedder", "classic", "--sizes", "6",
                 "--pseudo-labels", "--bootstrap", "10", "--json", out)
    assert result.returncode == 0, result.stderr
    assert "labelled samples for accuracy 0.99" in result.stdout
    assert result.stdout.index("accuracy today (62 labelled") < result.stdout.index("labelled samples for")
    document = json.loads(out.read_text())
    jsonschema.validate(document, SCHEMA)
    assert document["today"]["measured"] and document["today"]["metric"] == document["curve"][-1]["mean"]
    assert document["model"] == f"softmax-head-v{OOF_SETTINGS_VERSION}-pca{curve_components(62)}"
    assert all(len(point["values"]) == 5 for point in document["curve"][:-1])  # five seeds by default
    assert document["evaluation"] == {"kind": "split", "split": "test", "n": 18}
    assert document["n_train"] == 62 and document["curve"][-1]["size"] == 62
    assert abs(sum(f["weight"] for f in document["fits"]) - 1) < 1e-6
    assert document["strategies"][0]["strategy"] == "pseudo-labels"
    report = run("audit", "-w", sizing_workspace, "--checks", "imbalance", "--report", tmp_path / "r.html")
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "r.html").read_text()
    assert 'id="sizing"' in html and "line-chart" in html
    section = html[html.index('id="sizing"'):]
    section = section[:section.index("</section>")]
    # the report states a number of labels only where the forecast does
    assert ("about <b>" in section) == (document["samples_needed"]["status"] == "estimated")


@pytest.fixture(scope="module")
def fashion_workspace(tmp_path_factory, fashion_mnist) -> Path:
    """A workspace of 800 training + 200 test Fashion-MNIST images (80 + 20 per class), ingested from PNGs."""
    images, labels = fashion_mnist
    root = tmp_path_factory.mktemp("fashion") / "folder"
    for split, start, per_class in (("train", 0, 80), ("test", 1500, 20)):
        for klass in range(10):
            folder = root / split / FASHION_MNIST_CLASSES[klass].replace("/", "-")
            folder.mkdir(parents=True)
            for index in np.flatnonzero(labels[start:] == klass)[:per_class] + start:
                Image.fromarray(images[index]).save(folder / f"{index:05d}.png")
    workspace = root.parent / "ws"
    assert run("ingest", root, "-w", workspace).returncode == 0
    return workspace


@pytest.mark.slow
def test_cli_backtest_reports_predicted_minus_measured_at_the_full_pool(fashion_workspace, tmp_path):
    out = tmp_path / "size.json"
    result = run("size", "-w", fashion_workspace, "--target", "0.8", "--embedder", "classic", "--backtest",
                 "--seeds", "2", "--sizes", "5", "--bootstrap", "10", "--json", out)
    assert result.returncode == 0, result.stderr
    assert "backtest: " in result.stdout
    document = json.loads(out.read_text())
    jsonschema.validate(document, SCHEMA)
    assert document["n_train"] == 800 and document["evaluation"]["n"] == 200
    test = document["backtest"]
    curve = {point["size"]: point["mean"] for point in document["curve"]}
    assert test["predict_at"] == 800 and test["fit_up_to"] <= 200
    assert len([size for size in curve if size <= 200]) >= 4  # the extra sizes measured for the backtest
    assert test["measured"] == pytest.approx(curve[800])
    assert test["error"] == pytest.approx(test["predicted"] - test["measured"], abs=1e-12)
    assert 0.4 < test["measured"] < 0.95 and abs(test["error"]) < 0.1  # a real curve, forecast to a few points
    low, high = test["interval"]
    assert low <= test["predicted"] <= high and test["covered"] == (low <= test["measured"] <= high)
    if test["samples_needed_predicted"] is not None:
        assert test["samples_needed_ratio"] == pytest.approx(test["samples_needed_predicted"] / 800)


@pytest.mark.slow
def test_without_an_evaluation_split_the_curve_is_cross_fitted(fashion_workspace, tmp_path):
    # Only the 800 training images, no test split: five stratified folds of 160, seed s scored on fold s.
    workspace = tmp_path / "ws"
    assert run("ingest", fashion_workspace.parent / "folder" / "train", "-w", workspace).returncode == 0
    out = tmp_path / "size.json"
    result = run("size", "-w", workspace, "--target", "0.8", "--embedder", "classic", "--sizes", "5",
                 "--bootstrap", "10", "--json", out)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    jsonschema.validate(document, SCHEMA)
    evaluation = document["evaluation"]
    assert evaluation["kind"] == "cross-fitted" and evaluation["folds"] == 5 and evaluation["n"] == 800
    assert document["n_train"] == 640 and document["curve"][-1]["size"] == 640
    assert all(len(point["values"]) == 5 for point in document["curve"])  # five folds at the full pool as well
    assert document["uncertainty"]["evaluation_rows"] == 800
    assert 0.4 < document["curve"][-1]["mean"] < 0.95  # a real curve (chance 0.1)
    rerun = run("size", "-w", workspace, "--target", "0.8", "--embedder", "classic", "--sizes", "5",
                "--bootstrap", "10", "--seeds", "3", "--json", out)
    assert rerun.returncode == 0, rerun.stderr
    fewer = json.loads(out.read_text())
    assert fewer["evaluation"]["n"] == 480  # three seeds: three of the five folds scored
    assert [point["values"][:3] for point in fewer["curve"]] == [point["values"][:3] for point in document["curve"]]
    report = run("audit", "-w", workspace, "--checks", "imbalance", "--report", tmp_path / "r.html")
    assert report.returncode == 0, report.stderr
    assert "evaluated on 480 samples (cross-fitted: 5 folds" in (tmp_path / "r.html").read_text()


def test_the_curve_head_keeps_one_width_at_every_size():
    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    evaluation = np.arange(1500, 1797)
    small = stratified_subsample(y[:1500], 160, seed=0)
    width = curve_components(1500)
    assert width == 93  # one dimension per 16 pool rows, not per 16 training rows (which would give 10)
    default = train_and_score_head(x, y, small, evaluation, n_classes=10)
    fixed = train_and_score_head(x, y, small, evaluation, n_classes=10, components=width)
    same = train_and_score_head(x, y, small, evaluation, n_classes=10, components=160 // 16)
    assert same == default and fixed != default
    assert fixed["accuracy"] > 0.7  # a working head (chance: 0.1)
    with pytest.raises(InputError, match="components must be at least 1"):
        train_and_score_head(x, y, small, evaluation, n_classes=10, components=0)


def test_hook_run_resumes_after_interruption(sizing_workspace):
    workspace = Workspace.open(sizing_workspace)
    calls: list[int] = []

    def flaky(train_ids: list[str], eval_ids: list[str]) -> float:
        calls.append(len(train_ids))
        if len(calls) == 5:
            raise KeyboardInterrupt
        return min(1.0, 0.4 + 0.1 * np.log(len(train_ids)))

    def steady(train_ids: list[str], eval_ids: list[str]) -> float:
        calls.append(len(train_ids))
        return min(1.0, 0.4 + 0.1 * np.log(len(train_ids)))

    steady.__qualname__ = flaky.__qualname__  # the same recipe, resumed
    with pytest.raises(KeyboardInterrupt):
        run_size(workspace, target=0.9, train_and_score=flaky, seeds=2, n_sizes=5, n_bootstrap=0)
    assert workspace.catalog.runs("size")[-1]["status"] == "interrupted"
    calls.clear()
    document = run_size(workspace, target=0.9, train_and_score=steady, seeds=2, n_sizes=5, n_bootstrap=0)
    planned = 2 * (len(document["curve"]) - 1) + 1
    assert len(calls) == planned - 4  # the four points stored before the interruption are not recomputed
    assert document["metric"] == "custom" and document["per_class"] is None


def test_bad_input_gives_one_clear_line(sizing_workspace, tmp_path):
    result = run("size", "-w", sizing_workspace, "--embedder", "classic", "--target", "1.5")
    assert result.returncode == 2 and "--target 1.5: must lie in (0, 1]" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    workspace = Workspace.open(sizing_workspace)
    with pytest.raises(InputError, match="--metric 'top5': use one of accuracy"):
        run_size(workspace, target=0.9, metric="top5")
    with pytest.raises(InputError, match="cannot import 'nowhere_module'"):
        load_hook("nowhere_module:fn")
    with pytest.raises(InputError, match="too few"):
        curve_sizes(30, 10)


@pytest.mark.slow
def test_backtest_interval_wholly_past_the_horizon_does_not_cover_the_actual_size() -> None:
    # A curve flat on the fitted quarter that jumps at the end: the forecast never reaches the measured value.
    sizes = np.array([50, 80, 125, 200, 320, 500, 800, 1300, 2000, 8000])
    rng = np.random.default_rng(0)
    values = [np.full(3, 0.60) + rng.normal(0, 0.002, 3) for _ in sizes[:-1]] + [np.full(3, 0.95)]
    result = backtest(sizes, values, chance=0.9, n_bootstrap=30)
    assert result["samples_needed_predicted"] is None
    assert result["samples_needed_interval"] is not None and result["samples_needed_interval"][0] is None
    assert result["samples_needed_covered"] is False


def _lcdb_quarter(curve: dict) -> tuple[np.ndarray, list[np.ndarray], int, float]:
    """An LCDB curve's sizes up to 25% of its largest with their seeds' values, the largest and its mean."""
    sizes = np.array(curve["sizes"], dtype=np.float64)
    keep = np.flatnonzero(sizes <= sizes[-1] / 4)
    measured = float(np.mean(curve["values"][-1]))
    return sizes[keep], [np.array(curve["values"][i]) for i in keep], int(sizes[-1]), measured


def _assert_forecasts_six_held_out_curves(forecaster) -> None:
    """Six LCDB curves of held-out (odd) OpenML ids, forecast from a quarter of the largest size by
    ``forecaster(curve, sizes, values, at) -> (central, low, high)``: three still gain 3-8 points from 25% to
    100%, three are flat."""
    errors, no_gain_errors, covered = [], [], 0
    for curve in LCDB["curves"]:
        sizes, values, largest, measured = _lcdb_quarter(curve)
        central, low, high = forecaster(curve, sizes, values, np.array([sizes[-1], largest]))
        errors.append(central[-1] - measured)
        no_gain_errors.append(float(np.mean(values[-1])) - measured)
        covered += int(low[-1] <= measured <= high[-1])
        assert low[-1] <= central[-1] <= high[-1]
    gaining = np.array(no_gain_errors) <= -0.03
    assert gaining.sum() == 3
    # where the curve still climbs, the forecast gains and lands closer than "no further gain"
    assert np.all(np.abs(np.array(errors)[gaining]) < np.abs(np.array(no_gain_errors)[gaining]))
    # where it is flat, it stays within 1.5 points
    assert np.all(np.abs(np.array(errors)[~gaining]) <= 0.015)
    assert covered >= 5  # nominal 90% of 6


def test_slope_prior_forecasts_real_lcdb_curves_from_a_quarter():
    prior = load_prior()
    assert "even OpenML ids" in prior.source  # learned on the tuning curves only

    def forecaster(curve, sizes, values, at):
        eval_sd = float(evaluation_sd(float(np.mean(values[-1])), [curve["test_rows"]]))
        return prior_curves(prior, sizes, values, at, eval_sd=eval_sd)

    _assert_forecasts_six_held_out_curves(forecaster)


def test_labels_needed_is_pinned_down_only_clear_of_todays_noise_and_narrow():
    assert pinned_down([200.0, 300.0], today=100.0, pin_span=1.0)
    assert not pinned_down([80.0, 300.0], today=100.0, pin_span=1.0)  # the target is inside today's band
    assert not pinned_down([200.0, float("inf")], today=100.0, pin_span=1.0)  # the band never reaches it
    assert not pinned_down([200.0, 2000.0], today=100.0, pin_span=1.0)  # 10x wide: inside the plateau's noise


def test_prior_forecast_on_a_plateau_says_cannot_be_pinned_down():
    curve = next(c for c in LCDB["curves"] if c["openmlid"] == 1053)  # LDA: flat from 25% to 100% (0.8105)
    sizes, values, _, _ = _lcdb_quarter(curve)
    quick = {"chance": 0.5, "n_bootstrap": 0, "method": "prior", "fit_families": False}
    result = forecast(sizes, values, target=0.815, eval_class_counts=[curve["test_rows"]], **quick)
    assert result["method"] == "prior" and result["today"]["measured"]
    assert result["today"]["metric"] == pytest.approx(float(np.mean(values[-1])))
    needed = result["samples_needed"]
    assert needed["status"] == "cannot be pinned down" and not needed["pinned_down"]
    assert any("cannot be pinned down" in w for w in result["warnings"])
    reached = forecast(sizes, values, target=0.5, **quick)["samples_needed"]
    assert reached["status"] == "reached"
    never = forecast(sizes, values, target=0.99, **quick)["samples_needed"]
    assert never["status"] == "not reached" and never["total"] is None
    with pytest.raises(InputError, match="--method"):
        forecast(sizes, values, target=0.9, chance=0.5, method="psychic")


def test_meta_model_forecasts_real_lcdb_curves_from_a_quarter():
    model = load_meta()
    assert "even OpenML ids" in model.source  # learned on the tuning curves only
    _assert_forecasts_six_held_out_curves(lambda curve, sizes, values, at: meta_curves(model, sizes, values, at))


def test_meta_model_gain_rises_with_the_labels_and_with_the_slope():
    model = load_meta()
    curve = LCDB["curves"][0]
    sizes, values, _, _ = _lcdb_quarter(curve)
    distance = np.linspace(0.0, 4.0, 41)
    rows, _ = curve_features(sizes, values, distance)
    low, central, high = predict_quantiles(model, rows)
    assert np.all(np.diff(central) >= -1e-12) and np.all(np.diff(low) >= -1e-12)  # monotone in the distance
    assert np.all(low <= central + 1e-12) and np.all(central <= high + 1e-12)
    # the same curve tilted upwards at its top forecasts a larger gain 4x ahead
    tilted = [v + 0.02 * np.log(s / sizes[0]) for s, v in zip(sizes, values, strict=True)]
    steep, _ = curve_features(sizes, tilted, [np.log(4.0)])
    flat, _ = curve_features(sizes, values, [np.log(4.0)])
    assert predict_quantiles(model, steep)[1, 0] > predict_quantiles(model, flat)[1, 0]


def test_meta_gain_is_read_at_the_grid_steps_it_learned_and_interpolated_between_them():
    model = load_meta()
    sizes, values, _, _ = steep_meta_curve()  # a steep curve: its gain moves a lot between grid steps
    distance = np.linspace(0.0, 8 * STEP, 801)
    low, gain, high, _ = anchored_gains(model, sizes, values, distance)
    # the trees read directly are a staircase (a whole step's gain just past today; flat, then a jump, between
    # grid steps); read at the steps and interpolated, the gain starts at 0 and moves by small increments
    rows, _ = curve_features(sizes, values, distance)
    raw = predict_quantiles(model, rows)[1]
    assert gain[0] == 0.0 and raw[1] != 0.0 and gain[-1] > 0.02
    assert np.abs(np.diff(gain)).max() < np.abs(np.diff(raw)).max()
    # at each grid step the trees' own value (read just inside the step, where the rows they learned from sit) ...
    k = np.arange(1, 9)
    anchors = predict_quantiles(model, curve_features(sizes, values, k * STEP - ANCHOR_EPS)[0])[1]
    on_steps = np.isclose(distance / STEP, np.round(distance / STEP)) & (distance > 0)
    assert np.allclose(gain[on_steps], anchors, rtol=0, atol=1e-9)
    # ... and halfway between two steps the mean of the two (linear in log size), from 0 at today's size
    halfway = (np.append(0.0, k[:-1]) + 0.5) * STEP
    expected = (np.append(0.0, anchors[:-1]) + anchors) / 2
    assert np.allclose(anchored_gains(model, sizes, values, halfway)[1], expected, rtol=0, atol=1e-9)
    assert np.all(low <= gain + 1e-12) and np.all(gain <= high + 1e-12)


def test_meta_model_file_that_is_not_one_is_a_clear_input_error(tmp_path):
    bad = tmp_path / "meta.npz"
    bad.write_text("not an npz")
    with pytest.raises(InputError, match="not a sizing meta-model"):
        load_meta(bad)


def test_meta_forecast_answers_from_the_learned_curve_and_band():
    curve = next(c for c in LCDB["curves"] if c["openmlid"] == 1053)  # LDA: flat from 25% to 100% (0.8105)
    sizes, values, _, _ = _lcdb_quarter(curve)
    quick = {"chance": 0.5, "n_bootstrap": 0, "method": "meta", "fit_families": False}
    result = forecast(sizes, values, target=0.815, eval_class_counts=[curve["test_rows"]], **quick)
    assert result["method"] == "meta" and result["fits"] == []
    grid = result["grid"]
    assert np.all(np.array(grid["low"]) <= np.array(grid["metric"]) + 1e-12)
    assert np.all(np.array(grid["metric"]) <= np.array(grid["high"]) + 1e-12)
    beyond = np.array(grid["size"]) > sizes[-1]
    assert np.all(np.diff(np.array(grid["metric"])[beyond]) >= -1e-12)  # more labels never forecast less
    assert result["samples_needed"]["status"] == "cannot be pinned down"
    assert forecast(sizes, values, target=0.5, **quick)["samples_needed"]["status"] == "reached"
    assert forecast(sizes, values, target=0.99, **quick)["samples_needed"]["status"] == "not reached"


@pytest.mark.parametrize("method", ["meta", "prior"])
def test_learned_forecasts_never_answer_fewer_labels_than_a_curve_that_dipped_below_the_target(method):
    # measured on 800 labels: 0.70; the curve was above the target at 100 -- no way back to it with fewer labels
    sizes = np.array([100.0, 200.0, 400.0, 800.0])
    rng = np.random.default_rng(0)
    values = [mean + rng.normal(0, 0.005, 5) for mean in (0.92, 0.85, 0.8, 0.7)]
    needed = forecast(sizes, values, target=0.9, chance=0.5, method=method, n_bootstrap=0,
                      fit_families=False)["samples_needed"]
    assert needed["total"] is None or needed["total"] > 800
    assert needed["status"] != "reached"
    assert needed["interval"] is None or all(edge is None or edge > 800 for edge in needed["interval"])


def test_a_damaged_meta_model_file_is_a_one_line_input_error(tmp_path):
    damaged = tmp_path / "lcdb_meta.npz"
    damaged.write_bytes(b"PK\x03\x04 not a zip archive")
    with pytest.raises(InputError, match="not a sizing meta-model") as error:
        load_meta(damaged)
    assert "\n" not in str(error.value)


def test_meta_labels_needed_rule_states_a_number_only_near_today_on_a_climbing_forecast():
    model = replace(load_meta(), pin_near=0.2, pin_reach=0.6, pin_slope=0.01, pin_rise=1.645, pin_clear=True)
    grid = np.geomspace(100.0, 100_000.0, 600)
    climbing = np.clip(0.5 + 0.03 * np.log(grid / 100.0), 0.0, 1.0)  # 0.0086 from 75% of an answer to it
    flat = np.full(len(grid), 0.8)
    pinned = partial(meta_pinned, model, grid, upper_crossing=1100.0, today=1000.0, seed_se=0.002)
    assert pinned(climbing, needed=1500.0)
    assert not pinned(climbing, needed=1100.0)  # too near
    assert not pinned(climbing, needed=2000.0)  # too far
    assert not pinned(climbing, needed=1500.0, upper_crossing=900.0)  # in today's band
    assert meta_pinned(replace(model, pin_clear=False), grid, climbing, needed=1500.0, upper_crossing=900.0,
                       today=1000.0, seed_se=0.002)  # a rule that does not ask for it
    assert not pinned(flat, needed=1500.0)  # flat there
    assert not pinned(climbing, needed=float("inf"))
    # the rise over the last quarter of labels, 0.0086, is 3.0 noise units of 0.002 but 1.5 of 0.004
    assert not pinned(climbing, needed=1500.0, seed_se=0.004)
    assert meta_not_pinned_reason(model, grid, climbing, needed=1500.0, upper_crossing=1100.0, today=1000.0,
                                  seed_se=0.004) == "inside_plateau_noise"


def steep_meta_curve() -> tuple[np.ndarray, list[np.ndarray], float, dict]:
    """A steadily climbing curve (5 seeds on a sqrt(2) grid), today's mean and quick meta-forecast options."""
    rng = np.random.default_rng(0)
    sizes = np.array([16 * 2 ** (i / 2) for i in range(12)])
    values = [0.4 + 0.06 * np.log(n / 16) + rng.normal(0, 0.004, 5) for n in sizes]
    today = float(np.mean(values[-1]))
    return sizes, values, today, {"chance": 0.5, "n_bootstrap": 0, "method": "meta", "fit_families": False}


def test_meta_forecast_states_labels_needed_for_a_near_target_on_a_steep_curve():
    sizes, values, today, quick = steep_meta_curve()
    near_result = forecast(sizes, values, target=today + 0.01, **quick)
    near = near_result["samples_needed"]
    assert near["status"] == "estimated" and near["pinned_down"] and near["stated"]
    assert near["not_pinned_reason"] is None
    # a stated number carries no "cannot be pinned down" warning (its band's lower edge may run past the horizon)
    assert not any("cannot be pinned down" in w for w in near_result["warnings"])
    # the straight line reaches it at 855 labels; the meta-model, which learned that curves bend, asks for more
    assert sizes[-1] * 1.2 <= near["total"] <= sizes[-1] * 1.8
    far_result = forecast(sizes, values, target=today + 0.04, **quick)
    far = far_result["samples_needed"]
    # the central crossing is kept in total, but not stated: it lies beyond the multiples of today's labels where
    # the rule's numbers held up on the tuning curves
    assert far["status"] == "cannot be pinned down" and far["total"] is not None and not far["stated"]
    assert far["total"] > sizes[-1] * 3 and far["not_pinned_reason"] == "outside_validated_range"
    grid = np.array(far_result["grid"]["size"])
    _, within = plateau_noise(grid, np.array(far_result["grid"]["metric"]), target=today + 0.04,
                              needed=float(far["total"]), last_measured=float(sizes[-1]),
                              seed_spread=seed_sd(values), class_counts=None)
    assert far["within_noise"] == within  # plateau_noise's answer, not overwritten by the rule
    warning = next(w for w in far_result["warnings"] if "cannot be pinned down" in w)
    model = load_meta()
    assert f"outside {np.exp(model.pin_near):.2f}-{np.exp(model.pin_reach):.2f}x" in warning
    for needed in (near, far):
        jsonschema.validate({**needed, "per_class": None}, SCHEMA["properties"]["samples_needed"])


def test_report_and_result_state_labels_needed_only_when_pinned_down():
    sizes, values, today, quick = steep_meta_curve()
    templates = Environment(loader=PackageLoader("curato", "report/templates"), autoescape=True)
    answer = templates.get_template("size_answer.html").module.labels_needed_answer
    shown = {}
    for name, target in (("near", today + 0.01), ("far", today + 0.04), ("reached", 0.5), ("never", 0.999)):
        document = {**forecast(sizes, values, target=target, **quick), "n_train": int(sizes[-1])}
        needed = document["samples_needed"]
        shown[name] = (str(answer(document)), SizeResult(document).samples_needed, needed)
    words, number, needed = shown["near"]
    assert number == needed["total"] and f"about <b>{needed['total']:,}</b>" in words
    words, number, needed = shown["far"]
    assert needed["total"] is not None and number is None  # the central crossing exists, but is not stated
    assert "cannot be pinned down" in words and f"{needed['total']:,}" not in words and "about" not in words
    assert "90% interval" in words
    assert shown["reached"][1] is None and "already reached" in shown["reached"][0]
    assert shown["never"][1] is None and "not reached" in shown["never"][0]


def test_the_vectorised_labels_needed_rule_equals_meta_pinned():
    model = replace(load_meta(), pin_near=0.2, pin_reach=0.6, pin_slope=0.01)
    grid = np.geomspace(100.0, 100_000.0, 600)
    rng = np.random.default_rng(1)
    central = np.clip(0.5 + np.cumsum(rng.uniform(0, 0.004, len(grid))), 0.0, 1.0)
    needed = np.where(rng.random(400) < 0.1, np.inf, np.exp(rng.uniform(np.log(900), np.log(3000), 400)))
    upper = np.exp(rng.uniform(np.log(800), np.log(1500), 400))
    features = [pin_features(grid, central, needed=n, upper_crossing=u, today=1000.0, seed_se=0.001)
                for n, u in zip(needed, upper, strict=True)]
    columns = (np.array(column) for column in zip(*features, strict=True))
    failed = pin_failures(*columns, near=model.pin_near, far=model.pin_reach, climb=model.pin_slope,
                          least_rise=model.pin_rise, need_clear=model.pin_clear)
    mask = ~np.logical_or.reduce(list(failed.values()))
    one_by_one = [meta_pinned(model, grid, central, needed=n, upper_crossing=u, today=1000.0, seed_se=0.001)
                  for n, u in zip(needed, upper, strict=True)]
    assert mask.tolist() == one_by_one and 0 < mask.sum() < len(mask)


def test_a_meta_model_file_from_before_the_labels_needed_rule_states_no_number(tmp_path):
    shipped = load_meta()
    old = tmp_path / "old.npz"
    with np.load(resources.files("curato.sizing") / "lcdb_meta.npz") as raw:
        np.savez_compressed(old, **{k: raw[k] for k in raw.files if k != "calibration"},
                            calibration=np.array([shipped.interval_scale, 0.0]))
    model = load_meta(old)
    assert model.interval_scale == shipped.interval_scale and model.pin_reach < model.pin_near
    # a file from before the rise test keeps its three tests and asks for today's band, with no rise test
    third = tmp_path / "third.npz"
    with np.load(resources.files("curato.sizing") / "lcdb_meta.npz") as raw:
        np.savez_compressed(third, **{k: raw[k] for k in raw.files if k != "calibration"},
                            calibration=np.array([shipped.interval_scale, 0.2, 0.6, 0.015]))
    model = load_meta(third)
    assert (model.pin_near, model.pin_reach, model.pin_slope, model.pin_rise, model.pin_clear) == (0.2, 0.6, 0.015,
                                                                                                    0.0, True)


RISE_RULE = {"pin_rise": 1.645}  # a rule with the rise test (the shipped one, re-chosen on the even ids, has none)


def test_meta_states_no_number_where_the_forecast_climbs_within_the_seeds_noise(monkeypatch):
    # the same climbing curve (0.06 per unit of log size) measured with quiet and with noisy seeds, under a rule
    # that asks the forecast to climb 1.645 noise units over the last quarter of labels
    monkeypatch.setattr(sys.modules["curato.sizing.forecast"], "load_meta", lambda: replace(load_meta(), **RISE_RULE))
    sizes = np.array([16 * 2 ** (i / 2) for i in range(12)])
    answers = {}
    for spread in (0.01, 0.02):
        rng = np.random.default_rng(0)
        values = [0.4 + 0.06 * np.log(n / 16) + rng.normal(0, spread, 5) for n in sizes]
        target = float(np.mean(values[-1])) + 0.01
        answers[spread] = forecast(sizes, values, target=target, chance=0.5, n_bootstrap=0, method="meta",
                                   fit_families=False)
    assert answers[0.01]["samples_needed"]["status"] == "estimated"
    noisy = answers[0.02]["samples_needed"]
    assert noisy["status"] == "cannot be pinned down" and noisy["not_pinned_reason"] == "inside_plateau_noise"
    warning = next(w for w in answers[0.02]["warnings"] if "cannot be pinned down" in w)
    assert "the seeds' noise" in warning and f"{noisy['total']:,} samples" in warning
    assert "1.645x the seeds' noise" in warning and "run more seeds (--seeds)" in warning


@pytest.mark.parametrize("rule", [{}, RISE_RULE])
def test_without_measurable_seed_noise_meta_states_no_number(monkeypatch, rule):
    # the noisy curve of the test above, measured with one seed, and with five seeds that agree exactly: the
    # seeds' noise cannot be measured, so no number is stated, whether the rule has a rise test (then the five
    # noisy seeds refuse too) or not (the shipped rule: then they state one)
    monkeypatch.setattr(sys.modules["curato.sizing.forecast"], "load_meta", lambda: replace(load_meta(), **rule))
    sizes = np.array([16 * 2 ** (i / 2) for i in range(12)])
    rng = np.random.default_rng(0)
    noisy = [0.4 + 0.06 * np.log(n / 16) + rng.normal(0, 0.02, 5) for n in sizes]
    target = float(np.mean(noisy[-1])) + 0.01
    quick = {"target": target, "chance": 0.5, "n_bootstrap": 0, "method": "meta", "fit_families": False}
    five = forecast(sizes, noisy, **quick)["samples_needed"]["status"]
    assert five == ("cannot be pinned down" if rule else "estimated")
    for values in ([v[:1] for v in noisy], [np.full(5, v[0]) for v in noisy]):
        result = forecast(sizes, values, **quick)
        needed = result["samples_needed"]
        assert needed["status"] == "cannot be pinned down" and needed["total"] is not None
        assert needed["not_pinned_reason"] == "inside_plateau_noise"
        warning = next(w for w in result["warnings"] if "cannot be pinned down" in w)
        assert "cannot be measured" in warning and "run more seeds (--seeds)" in warning


def test_the_rise_and_slope_are_read_on_the_forecast_side_of_today():
    # the learned curve steps at today's size (1000 labels) from the measured means' 0.70 to the forecast's 0.72,
    # then climbs 0.01 per unit of log size: the step is no climb
    grid = np.geomspace(100.0, 100_000.0, 600)
    central = np.where(grid <= 1000.0, 0.70, 0.72 + 0.01 * np.log(grid / 1000.0))
    _, reach, slope, rise = pin_features(grid, central, needed=1100.0, upper_crossing=1050.0, today=1000.0,
                                         seed_se=0.001)
    assert reach == pytest.approx(np.log(1.1))
    assert slope == pytest.approx(0.01, abs=1e-4)  # not (0.72 - 0.70) / 0.5 across the join
    # from today's forecast (0.75 x 1100 lies before today; the grid's first point beyond today, 0.4% past it)
    # to the answer: 0.01 x log(1.1) over sqrt(2) x 0.001, not the 0.02 step (14 noise units) on top
    assert rise == pytest.approx(0.01 * np.log(1.1) / (np.sqrt(2) * 0.001), rel=0.05)
    assert slope_at(grid, central, 1100.0) > 0.03  # read across the join, the step counts
    # far from today both read the forecast alone
    _, _, far_slope, far_rise = pin_features(grid, central, needed=3000.0, upper_crossing=1050.0, today=1000.0,
                                             seed_se=0.001)
    assert far_slope == pytest.approx(0.01, abs=1e-4)
    assert far_rise == pytest.approx(0.01 * np.log(1 / 0.75) / (np.sqrt(2) * 0.001), rel=0.02)


def test_the_top_seed_noise_divides_each_size_by_its_own_seed_count():
    # the largest size has one seed: the seeds' variance and their counts come from the same 3 sizes before it
    sizes = np.array([100.0, 200.0, 400.0, 800.0, 1600.0])
    values = [np.array([0.5, 0.52, 0.54, 0.56, 0.58]) + 0.05 * i for i in range(4)] + [np.array([0.8])]
    top = curve_top(sizes, values, window=4)
    assert top.seed_sd == pytest.approx(np.sqrt(np.var(values[0], ddof=1) / 5))
    assert curve_top(sizes, [v[:1] for v in values], window=4).seed_sd == 0.0
