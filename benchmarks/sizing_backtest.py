# Run from the repository root. Once: a separate virtualenv for dataeval (torch CPU wheel from constraints.txt):
#   python3 -m venv .bench/dataeval-venv && .bench/dataeval-venv/bin/pip install -c constraints.txt torch==2.13.0 \
#       && .bench/dataeval-venv/bin/pip install -c constraints.txt dataeval==1.1.4
# Then (Fashion-MNIST embeddings are read from .bench/fmnist-{train,t10k}-efficientnet-lite0-112.npy, written by
# benchmarks/shortcuts_planted.py / label_issues.py):
#   .venv/bin/python benchmarks/sizing_backtest.py --json .bench/sizing_backtest.json
#   .venv/bin/python benchmarks/sizing_backtest.py --datasets digits --runs 3        # seconds
#   .venv/bin/python benchmarks/sizing_backtest.py --datasets fashion --strategies    # + augmentation, pseudo-labels
#   .venv/bin/python benchmarks/sizing_backtest.py --datasets digits --runs 30 --head-width grows   # the old head
#   .venv/bin/python benchmarks/sizing_backtest.py --datasets fashion --runs 2 --reuse-curves .bench/OLD.json
#       # forecasts again on curves measured by an earlier --json run (Fashion-MNIST's take minutes to measure)
# The tuning curve sets that chose the interval's terms (docs/benchmarks.md, "Intervals (90%)"):
#   .venv/bin/python benchmarks/sizing_backtest.py --datasets digits --runs 20 --first-run 10 \
#       --json .bench/sizing_tuning-digits.json                                 # fold seeds 110-129, seeds 50-149
#   .venv/bin/python benchmarks/sizing_backtest.py --datasets fashion-12k --runs 3 \
#       --json .bench/sizing_tuning-fashion12k.json                             # 3 disjoint 12k pools, minutes each
"""Backtest of ``curato size``'s forecast against dataeval 1.1.4 ``Sufficiency`` on the same measured curves.

For each dataset the training pool's learning curve is measured with curato's cheap head
(``fit_predict_probabilities`` on embeddings with the whitened-PCA width of the whole pool at every size, as
``curato size`` does; nested stratified subsets, ``--seeds`` per size) at the sizes ``curato size`` would use
up to 25% of the pool (``curve_sizes``: log-spaced, the upper half twice as dense), at 50% and at 100%. Both
tools then see ONLY the points <= 25%:

* curato: ``curato.sizing.forecast.backtest`` (five families weighted by held-back extrapolation error,
  bootstrap interval) predicts the metric at 100% and the labels needed to reach the metric measured at 100%;
  ``forecast`` gives the labels needed for the metric measured at 50% (a target reached by 100% whose
  answer is better conditioned: the curve is steeper there);
* dataeval: ``SufficiencyOutput(steps, measures)`` built from the same points (runs = seeds), then
  ``project(N)`` and ``inv_project(target)`` (one power law ``c n^-m + c0``), run by the python of
  ``--dataeval-python`` on a JSON file, so dataeval stays out of curato's virtualenv.

Goals (issue 5): |error at 100%| <= 1.5 points; labels needed within +-25% of the truth (100% for the metric
measured at 100%, 50% for the one measured at 50%); curato's error lower than dataeval's. Datasets:
Fashion-MNIST (60k training pool, evaluated on the 10k test set, EfficientNet-Lite0-112 embeddings) and
scikit-learn digits (raw 8x8 pixels, cross-fitted as ``curato size`` does without an evaluation split: 5
stratified folds, seed ``s`` scored on fold ``s mod 5``; ``--digits-evaluation held-out``: a fixed 25% per run).
``fashion-12k``: run ``r`` forecasts a 12,000-row stratified pool of the 60k training set, disjoint from the pools
of runs ``0 .. r - 1``, from 3k to 12k, on the same 10k test set and embeddings (the tuning curves of
docs/benchmarks.md). Run ``r`` uses seeds ``5r .. 5r + 4`` (``--seeds`` 5) and, on digits, fold (or held-out)
seed ``100 + r``; ``--first-run`` starts past the reported runs. Every run's 90% interval is also printed from the
bootstrap replicates alone (``bootstrap_only_interval``): the intervals before the evaluation, seed and
extrapolation terms.
``--strategies``: augmentation (flips, crops, jitter, re-embedded) and pseudo-labels on Fashion-MNIST at a few
small sizes, priced in labels against the baseline curve, with the measured points.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curato.arrays import stratified_subsample
from curato.imageio import read_idx
from curato.sizing.curves import select_fits
from curato.sizing.forecast import backtest, forecast, labels_worth
from curato.sizing.measure import curve_components, curve_values, head_scorer, measure_curve
from curato.sizing.strategies import augmentation_scores, augmented_images, pseudo_label_scores
from curato.sizing.subsets import CurveFolds, curve_sizes, nested_subset

REPO = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")
TRAIN_EMBEDDINGS = REPO / ".bench" / "fmnist-train-efficientnet-lite0-112.npy"
TEST_EMBEDDINGS = REPO / ".bench" / "fmnist-t10k-efficientnet-lite0-112.npy"
EMBEDDER = "efficientnet-lite0-112"
FRACTION = 0.25
MIDDLE = 0.5
TUNING_POOL = 12_000  # rows per Fashion-MNIST pool of --datasets fashion-12k
POOL_SEED = 300  # pool r of fashion-12k is drawn with seed POOL_SEED + r

DATAEVAL_CHILD = """
import json, sys
import numpy as np
from dataeval.performance._output import SufficiencyOutput
cases = json.load(open(sys.argv[1]))
out = []
for case in cases:
    result = SufficiencyOutput(steps=np.array(case["steps"]), measures={"metric": np.array(case["measures"])})
    projected = result.project(case["predict_at"]).to_dict(as_series=False)["metric"][0]
    needed = result.inv_project({"metric": case["targets"]}).to_dict(as_series=False)["metric"]
    out.append({"predicted": float(projected),
                "samples_needed": [None if n is None or n < 0 else int(n) for n in needed],
                "params": [float(v) for v in result.params["metric"]]})
json.dump(out, open(sys.argv[2], "w"))
"""


def fashion() -> dict[str, Any]:
    """EfficientNet-Lite0-112 embeddings of the 60k training and 10k test images, with labels."""
    if not TRAIN_EMBEDDINGS.exists() or not TEST_EMBEDDINGS.exists():
        sys.exit(f"{TRAIN_EMBEDDINGS} or {TEST_EMBEDDINGS} missing: run benchmarks/label_issues.py first")
    train = np.load(TRAIN_EMBEDDINGS, mmap_mode="r")
    test = np.load(TEST_EMBEDDINGS, mmap_mode="r")
    labels = np.concatenate([read_idx(FASHION / "train-labels-idx1-ubyte.gz"),
                             read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")]).astype(np.int64)
    x = np.concatenate([np.asarray(train, np.float32), np.asarray(test, np.float32)])
    return {"x": x, "y": labels, "folds": CurveFolds.fixed(np.arange(len(train)), np.arange(len(train), len(x)))}


def fashion_pool(run: int, *, pool_size: int = TUNING_POOL) -> dict[str, Any]:
    """``fashion()`` with the training pool cut to ``pool_size`` stratified rows of the 60k, disjoint from the pools
    of runs ``0 .. run - 1`` (each drawn from the rows the earlier ones left, seed ``POOL_SEED + r``); the
    evaluation set stays the 10k test set."""
    data = fashion()
    available = data["folds"].pools[0]
    for earlier in range(run + 1):
        if len(available) < pool_size:
            sys.exit(f"fashion-12k run {run}: only {len(available)} training rows left for a pool of {pool_size:,}")
        chosen = available[stratified_subsample(data["y"][available], pool_size, seed=POOL_SEED + earlier)]
        available = np.setdiff1d(available, chosen)
    return {**data, "folds": CurveFolds.fixed(chosen, data["folds"].evaluations[0])}


def load_run(name: str, run: int, *, evaluation: str = "cross-fitted") -> dict[str, Any]:
    """The data of one run of dataset ``name`` (digits, fashion or fashion-12k); ``evaluation``: digits'."""
    if name == "digits":
        return digits(run, evaluation=evaluation)
    if name == "fashion":
        return fashion()
    if name == "fashion-12k":
        return fashion_pool(run)
    sys.exit(f"--datasets: unknown dataset {name!r} (digits, fashion, fashion-12k)")


def digits(run: int, *, evaluation: str = "cross-fitted") -> dict[str, Any]:
    """scikit-learn digits as raw pixels, as ``curato size`` measures a dataset without an evaluation split:
    cross-fitted over 5 stratified folds (fold assignment seeded by ``100 + run``; seed s scored on fold s mod 5).
    ``evaluation`` "held-out": a fixed stratified 25% (seeded by ``100 + run``) instead, as in the first runs."""
    from sklearn.datasets import load_digits

    data = load_digits()
    y = data.target.astype(np.int64)
    if evaluation == "held-out":
        held = stratified_subsample(y, len(y) // 4, seed=100 + run)
        folds = CurveFolds.fixed(np.setdiff1d(np.arange(len(y)), held), held)
    else:
        folds = CurveFolds.cross_fitted(np.arange(len(y)), y, seed=100 + run)
    return {"x": data.data.astype(np.float32), "y": y, "folds": folds}


def measure(data: dict[str, Any], sizes: list[int], seeds: list[int], *,
            head_width: str = "pool") -> dict[tuple[int, int], dict]:
    """The curve's points; ``head_width`` "pool": the head's width fixed at the pool's (``curato size``),
    "grows": the default head's width, one whitened dimension per 16 training rows (the earlier curve)."""
    x, y, folds = data["x"], data["y"], data["folds"]
    scorer = head_scorer(x, y, folds, n_classes=10, width_grows=head_width == "grows")
    return measure_curve(y, folds, sizes, seeds, scorer)


def run_dataeval(python: str, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """dataeval's ``SufficiencyOutput`` projections of ``cases``, run by ``python`` (dataeval's own virtualenv)."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "cases.json", Path(folder) / "out.json"
        source.write_text(json.dumps(cases))
        subprocess.run([python, "-c", DATAEVAL_CHILD, str(source), str(target)], check=True)
        return json.loads(target.read_text())


def bootstrap_only_interval(sizes: np.ndarray, values: Sequence[np.ndarray], *, seed: int) -> list[float] | None:
    """The backtest's 90% interval at the largest size from the bootstrap replicates alone (subset noise and family
    disagreement), as the intervals were before the evaluation-set, seed and extrapolation terms: ``backtest``
    itself (same fits, same replicates for the same ``seed``) with ``interval_noise=False``."""
    return backtest(sizes, values, fraction=FRACTION, chance=0.9, seed=seed, interval_noise=False)["interval"]


def one_backtest(name: str, run: int, sizes: np.ndarray, values: list[np.ndarray], python: str,
                 eval_counts: np.ndarray, method: str = "families") -> dict[str, Any]:
    """Both tools fitted on the points <= 25% of ``sizes``: the metric at 100%, and the labels needed for the metric
    measured at 100% and at 50% (``sizes`` holds both). ``eval_counts``: evaluation rows per class (the
    evaluation-set noise in curato's intervals); ``method``: curato's forecast (families, the LCDB slope prior or
    the LCDB meta-model); ``python`` "none": dataeval left out (its figures NaN)."""
    started = time.perf_counter()
    ours = backtest(sizes, values, fraction=FRACTION, chance=0.9, seed=run, eval_class_counts=eval_counts,
                    method=method)
    seconds = time.perf_counter() - started
    bootstrap_interval = bootstrap_only_interval(sizes, values, seed=run)
    keep = sizes <= sizes[-1] * FRACTION + 1e-9
    truth = int(sizes[-1])
    middle = int(np.argmin(np.abs(sizes - sizes[-1] * MIDDLE)))
    middle_target = float(np.mean(values[middle]))
    early = forecast(sizes[keep], [values[i] for i in np.flatnonzero(keep)], target=middle_target, chance=0.9,
                     today=int(sizes[keep][-1]), n_bootstrap=0, method=method, fit_families=False)
    # How precise the metric must be for labels needed at 100% to land within +-25%: the measured curve's rise
    # per unit of log size between 50% and 100%, times log(1.25).
    slope = (float(np.mean(values[-1])) - middle_target) / np.log(sizes[-1] / sizes[middle])
    ours_middle = early["samples_needed"]["total"]
    theirs = {"predicted": float("nan"), "samples_needed": [None, None]} if python == "none" else run_dataeval(
        python, [{"steps": sizes[keep].tolist(), "predict_at": truth, "targets": [ours["measured"], middle_target],
                  "measures": np.array([values[i] for i in np.flatnonzero(keep)]).T.tolist()}])[0]
    their_needed, their_middle = theirs["samples_needed"]

    def relative(needed: int | None, actual: int) -> float | None:
        return None if needed is None else needed / actual - 1

    return {"dataset": name, "run": run, "fit_up_to": ours["fit_up_to"], "predict_at": truth,
            "measured": ours["measured"], "curato_predicted": ours["predicted"], "curato_error": ours["error"],
            "curato_interval": ours["interval"], "curato_covered": ours["covered"],
            "curato_interval_width": ours["interval"][1] - ours["interval"][0],
            "curato_uncertainty": ours["uncertainty"],
            "curato_bootstrap_interval": bootstrap_interval,
            "curato_bootstrap_covered": None if bootstrap_interval is None else
            bool(bootstrap_interval[0] <= ours["measured"] <= bootstrap_interval[1]),
            "curato_bootstrap_width": None if bootstrap_interval is None else
            bootstrap_interval[1] - bootstrap_interval[0],
            "curato_needed": ours["samples_needed_predicted"],
            "curato_needed_interval": ours["samples_needed_interval"],
            "curato_needed_covered": ours["samples_needed_covered"],
            "curato_needed_within_noise": ours["samples_needed_within_noise"],
            "curato_needed_stated": ours["samples_needed_pinned_down"],
            "tolerance_25": slope * np.log(1.25),
            "curato_needed_error": relative(ours["samples_needed_predicted"], truth),
            "dataeval_predicted": theirs["predicted"], "dataeval_error": theirs["predicted"] - ours["measured"],
            "dataeval_needed": their_needed, "dataeval_needed_error": relative(their_needed, truth),
            "middle_size": int(sizes[middle]), "middle_measured": middle_target, "curato_middle_needed": ours_middle,
            "curato_middle_needed_error": relative(ours_middle, int(sizes[middle])),
            "dataeval_middle_needed": their_middle,
            "dataeval_middle_needed_error": relative(their_middle, int(sizes[middle])),
            "weights": {f["family"]: round(f["weight"], 3) for f in ours["fits"]}, "curato_seconds": seconds,
            "curve": [{"size": int(s), "mean": float(np.mean(v)), "values": [float(x) for x in v]}
                      for s, v in zip(sizes, values, strict=True)]}


def strategies(data: dict[str, Any], sizes: list[int], seeds: list[int], baseline: tuple[np.ndarray, list]) -> list:
    """Augmentation and pseudo-labels on Fashion-MNIST at small sizes, priced against the baseline curve."""
    from curato.features.embedders import get_embedder

    images = read_idx(FASHION / "train-images-idx3-ubyte.gz")
    embedder = get_embedder(EMBEDDER)
    base_sizes, base_values = baseline
    means = np.array([np.mean(v) for v in base_values])
    fits = select_fits(base_sizes, means, chance=0.9)
    x, y = data["x"], data["y"]
    pool, evaluation = data["folds"].pools[0], data["folds"].evaluations[0]  # Fashion-MNIST: one fixed split
    width = curve_components(len(pool))  # the baseline curve's head width
    rng = np.random.default_rng(0)
    unlabelled_pool = np.sort(rng.choice(pool, size=20_000, replace=False))
    rows_needed = np.unique(np.concatenate([pool[nested_subset(y[pool], max(sizes), seed=s)] for s in seeds]))
    started = time.perf_counter()
    augmented = {}
    for start in range(0, len(rows_needed), 256):
        chunk = rows_needed[start:start + 256]
        grey = [np.repeat(images[row][..., None], 3, axis=2) for row in chunk]
        copies = augmented_images(grey, seed=int(chunk[0]))
        augmented.update(zip(chunk.tolist(), np.asarray(embedder.embed(copies), np.float32), strict=True))
    embed_seconds = time.perf_counter() - started
    out = []
    for size in sizes:
        row: dict[str, Any] = {"size": size}
        for name in ("augmentation", "pseudo-labels"):
            values, extra = [], []
            for seed in seeds:
                train = pool[nested_subset(y[pool], size, seed=seed)]
                if name == "augmentation":
                    scores = augmentation_scores(x, y, train, evaluation, np.stack([augmented[r] for r in train]),
                                                 n_classes=10, seed=seed, components=width)
                else:
                    unlabelled = np.setdiff1d(unlabelled_pool, train)
                    scores = pseudo_label_scores(x, y, train, unlabelled, evaluation, n_classes=10, seed=seed,
                                                 components=width)
                    extra.append((scores["pseudo_labeled"], scores["pseudo_label_accuracy"]))
                values.append(scores["accuracy"])
            value = float(np.mean(values))
            worth = labels_worth(base_sizes, means, fits, size=size, value=value)
            row[name] = {"values": values, "mean": value, "worth_labels": None if not np.isfinite(worth) else
                         round(worth), "worth_ratio": None if not np.isfinite(worth) else (size + worth) / size}
            if extra:
                row[name]["pseudo_labeled"] = [e[0] for e in extra]
                row[name]["pseudo_label_accuracy"] = [e[1] for e in extra]
        index = list(base_sizes).index(size) if size in base_sizes else None
        row["baseline"] = None if index is None else {"values": base_values[index].tolist(),
                                                      "mean": float(means[index])}
        out.append(row)
    return [{"embed_seconds": embed_seconds, "augmented_images": len(rows_needed)}, *out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,fashion", help="comma-separated: digits, fashion (60k pool), "
                                                                     "fashion-12k (disjoint 12k pools)")
    parser.add_argument("--runs", type=int, default=2, help="independent curves per dataset (each with --seeds)")
    parser.add_argument("--first-run", type=int, default=0, help="index of the first run: run r uses seeds "
                                                                  "r*seeds .. (r+1)*seeds-1 (digits: fold seed "
                                                                  "100+r; fashion-12k: the r-th disjoint pool)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sizes", type=int, default=10, help="log-spaced sizes up to 25%% of the pool (the upper "
                                                               "half also gets each step's midpoint)")
    parser.add_argument("--head-width", choices=("pool", "grows"), default="pool",
                        help="pool: the head's width fixed at the pool's (curato size); grows: n // 16 (the old curve)")
    parser.add_argument("--digits-evaluation", choices=("cross-fitted", "held-out"), default="cross-fitted",
                        help="digits: cross-fitted over 5 folds (curato size without an evaluation split) or a fixed "
                             "25%% held out (the first runs)")
    parser.add_argument("--strategies", action="store_true")
    parser.add_argument("--dataeval-python", default=str(REPO / ".bench" / "dataeval-venv" / "bin" / "python"),
                        help='"none": leave dataeval out')
    parser.add_argument("--method", choices=("families", "prior", "meta"), default="families",
                        help="curato's forecast: weighted families, the slope prior or the meta-model learned on "
                             "LCDB (issue 24)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reuse-curves", type=Path, help="take each (dataset, run)'s measured curve from this earlier "
                                                           "--json output instead of measuring it again (same seeds "
                                                           "and sizes; the forecasts are recomputed)")
    args = parser.parse_args(argv)
    if args.first_run < 0:
        parser.error(f"--first-run {args.first_run}: must be 0 or more")
    reused = {} if args.reuse_curves is None else {
        (row["dataset"], row["run"]): row for row in json.loads(args.reuse_curves.read_text())["rows"]}
    rows, strategy_rows = [], None
    for name in args.datasets.split(","):
        for run in range(args.first_run, args.first_run + args.runs):
            data = load_run(name, run, evaluation=args.digits_evaluation)
            n = data["folds"].pool_size
            sizes = sorted({*curve_sizes(int(n * FRACTION), 10, n_sizes=args.sizes).tolist(), round(n * MIDDLE), n})
            seeds = list(range(run * args.seeds, (run + 1) * args.seeds))
            earlier = reused.get((name, run))
            if earlier is not None:
                curve_sizes_ = np.array([point["size"] for point in earlier["curve"]], dtype=np.int64)
                values = [np.array(point["values"]) for point in earlier["curve"]]
                full_seeds = len(seeds) if data["folds"].rotating else 1
                if curve_sizes_.tolist() != sizes or any(len(v) != (full_seeds if s == n else len(seeds))
                                                         for s, v in zip(sizes, values, strict=True)):
                    sys.exit(f"--reuse-curves: {name} run {run} was measured at other sizes or seeds")
                measure_seconds = earlier["measure_seconds"]
            else:
                started = time.perf_counter()
                points = measure(data, sizes, seeds, head_width=args.head_width)
                measure_seconds = time.perf_counter() - started
                curve_sizes_, values = curve_values(points, "accuracy")
            eval_counts = np.bincount(data["y"][data["folds"].evaluated(seeds)], minlength=10)
            row = one_backtest(name, run, curve_sizes_, values, args.dataeval_python, eval_counts, method=args.method)
            row["measure_seconds"] = measure_seconds
            rows.append(row)
            print(_line(row), flush=True)
            if name == "fashion" and args.strategies and run == 0:
                chosen = [s for s in sizes if 90 <= s <= 1000][-3:]
                strategy_rows = strategies(data, chosen, seeds, (curve_sizes_, values))
                for entry in strategy_rows[1:]:
                    print(_strategy_line(entry), flush=True)
                print(f"  augmentation: {strategy_rows[0]['augmented_images']} images augmented and embedded in "
                      f"{strategy_rows[0]['embed_seconds']:.1f} s", flush=True)
    _summary(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "strategies": strategy_rows}, indent=2))
    return 0


def _pct(value: float | None) -> str:
    return "never" if value is None else f"{value:+.0%}"


def _count(value: int | None) -> str:
    return "beyond" if value is None else f"{value:,}"


def _line(row: dict[str, Any]) -> str:
    interval, needed_interval, noise = row["curato_interval"], row["curato_needed_interval"], row["curato_uncertainty"]
    return (f"{row['dataset']:8s} run {row['run']}: fit <= {row['fit_up_to']:,}, predict {row['predict_at']:,}: "
            f"measured {row['measured']:.4f} | curato {row['curato_predicted']:.4f} "
            f"(error {100 * row['curato_error']:+.2f} pts, 90% [{interval[0]:.4f}, {interval[1]:.4f}]"
            f"{' covers' if row['curato_covered'] else ' misses'}, width {100 * row['curato_interval_width']:.2f} "
            f"pts{_bootstrap_part(row)}; sd: evaluation {100 * noise['evaluation_sd_today']:.2f}, "
            f"seed {100 * noise['seed_sd']:.2f}, "
            f"extrapolation {100 * noise['extrapolation_sd_per_log_size']:.2f} per log size; labels needed "
            f"{row['curato_needed']} = {_pct(row['curato_needed_error'])}, 90% [{_count(needed_interval[0])}, "
            f"{_count(needed_interval[1])}]{' covers' if row['curato_needed_covered'] else ' misses'}"
            f"{', target inside the plateau noise' if row['curato_needed_within_noise'] else ''}"
            f"{_stated_part(row)}; +-25% labels = "
            f"+-{100 * row['tolerance_25']:.2f} pts) | dataeval {row['dataeval_predicted']:.4f} "
            f"(error {100 * row['dataeval_error']:+.2f} pts; labels needed {row['dataeval_needed']} "
            f"= {_pct(row['dataeval_needed_error'])}) | target {row['middle_measured']:.4f} measured at "
            f"{row['middle_size']:,}: labels needed curato {row['curato_middle_needed']} "
            f"= {_pct(row['curato_middle_needed_error'])}, dataeval {row['dataeval_middle_needed']} "
            f"= {_pct(row['dataeval_middle_needed_error'])} | weights {row['weights']} | "
            f"measure {row['measure_seconds']:.0f} s, fit {row['curato_seconds']:.1f} s")


def _stated_part(row: dict[str, Any]) -> str:
    """Whether ``curato size`` states that labels-needed answer as a number or says it "cannot be pinned down" (the
    line shows the central answer either way; empty for rows of an earlier --json without it)."""
    stated = row.get("curato_needed_stated")
    return "" if stated is None else ", stated" if stated else ", not stated: cannot be pinned down"


def _bootstrap_part(row: dict[str, Any]) -> str:
    """The bootstrap-only interval of one run, for ``_line`` (empty for rows of an earlier --json without it)."""
    interval = row.get("curato_bootstrap_interval")
    if interval is None:
        return ""
    return (f"; bootstrap only [{interval[0]:.4f}, {interval[1]:.4f}]"
            f"{' covers' if row['curato_bootstrap_covered'] else ' misses'}, width "
            f"{100 * row['curato_bootstrap_width']:.2f} pts")


def _interval_summary(group: list[dict[str, Any]]) -> str:
    """The columns of docs/benchmarks.md's "Intervals (90%)" table for a set of runs: 90% intervals covering
    (with the forecast errors of the runs they miss), their mean (median) width, the same for the bootstrap
    replicates alone, labels-needed intervals covering, and targets inside the plateau noise."""
    runs = len(group)
    widths = np.array([row["curato_interval_width"] for row in group]) * 100
    misses = ", ".join(f"{100 * row['curato_error']:+.2f} pts (run {row['run']})" for row in group
                       if not row["curato_covered"])
    needed_covers = sum(bool(row["curato_needed_covered"]) for row in group)
    noisy = sum(bool(row["curato_needed_within_noise"]) for row in group)
    tolerance = np.median([row["tolerance_25"] for row in group]) * 100
    text = (f"90% interval covers {sum(bool(row['curato_covered']) for row in group)}/{runs}"
            f"{f' (misses {misses})' if misses else ''}, width mean {np.mean(widths):.2f} pts "
            f"(median {np.median(widths):.2f})")
    bootstrap = [row for row in group if row.get("curato_bootstrap_interval") is not None]
    if bootstrap:
        bootstrap_widths = np.array([row["curato_bootstrap_width"] for row in bootstrap]) * 100
        text += (f"; bootstrap only: covers {sum(bool(row['curato_bootstrap_covered']) for row in bootstrap)}/"
                 f"{len(bootstrap)}, width mean {np.mean(bootstrap_widths):.2f} pts (median "
                 f"{np.median(bootstrap_widths):.2f})")
    return (f"{text}; labels-needed interval covers {needed_covers}/{runs}, target inside the plateau noise "
            f"{noisy}/{runs}; +-25% labels = +-{tolerance:.2f} pts (median)")


def _strategy_line(entry: dict[str, Any]) -> str:
    base = entry["baseline"]
    parts = [f"  size {entry['size']:,}: baseline {base['mean']:.4f} {np.round(base['values'], 4).tolist()}"]
    for name in ("augmentation", "pseudo-labels"):
        value = entry[name]
        worth, ratio = value["worth_labels"], value["worth_ratio"]
        priced = "beyond the curve" if worth is None else f"{worth:+,} labels (x{ratio:.2f} the labels)"
        parts.append(f"{name} {value['mean']:.4f} {np.round(value['values'], 4).tolist()} = worth {priced}")
    return "; ".join(parts)


def _summary(rows: list[dict[str, Any]]) -> None:
    for name in sorted({row["dataset"] for row in rows}):
        group = [row for row in rows if row["dataset"] == name]
        print(f"{name} ({len(group)} runs, runs {group[0]['run']}-{group[-1]['run']}):")
        for tool in ("curato", "dataeval"):
            errors = np.array([row[f"{tool}_error"] for row in group]) * 100
            parts = [f"  {tool:8s} error at 100%: mean |e| {np.mean(np.abs(errors)):.2f} pts (mean "
                     f"{np.mean(errors):+.2f}), {np.sum(np.abs(errors) <= 1.5)}/{len(group)} runs within 1.5 pts"]
            if tool == "curato":
                parts.append(_interval_summary(group))
            for key, label in (("needed_error", "100%"), ("middle_needed_error", "50%")):
                found = [abs(row[f"{tool}_{key}"]) for row in group if row[f"{tool}_{key}"] is not None]
                inside = sum(value <= 0.25 for value in found)
                median = f"median |error| {np.median(found):.0%}" if found else "never reached"
                parts.append(f"labels needed for the metric at {label}: {median}, {inside}/{len(group)} within 25%"
                             f"{'' if len(found) == len(group) else f' ({len(group) - len(found)} never)'}")
            print("; ".join(parts))


if __name__ == "__main__":
    raise SystemExit(main())
