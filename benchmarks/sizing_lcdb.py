# Run from the repository root (the lcdb 0.1.0 source archive, 68 MB, is fetched once into .bench/lcdb with
# `pip download lcdb==0.1.0 --no-deps --no-binary :all:` and read without installing it). Optional, for dataeval:
#   python3 -m venv .bench/dataeval-venv && .bench/dataeval-venv/bin/pip install -c constraints.txt torch==2.13.0 \
#       && .bench/dataeval-venv/bin/pip install -c constraints.txt dataeval==1.1.4
# Then:
#   .venv/bin/python benchmarks/sizing_lcdb.py --split even          # the tuning curves (even OpenML ids)
#   .venv/bin/python benchmarks/sizing_lcdb.py --split odd           # the held-out curves, reported once
#   .venv/bin/python benchmarks/sizing_lcdb.py --split even --fit-prior src/curato/sizing/lcdb_prior.json
#       # re-learns the shipped prior from ALL even-id curves (never the odd ones)
# curato's own backtest takes ~8 s a curve; its results are cached in .bench/sizing_lcdb-curato.json (--refresh).
"""Sizing forecasts judged on real learning curves: LCDB (Mohr et al. 2022, ``lcdb`` 0.1.0, MIT licence).

Curves: accuracy on the outer test set (``score_test``), outer seed 0, inner seeds 0-4 as the seeds (each a
different training subset), learners LogisticRegression, SVC_linear, MLP, LDA, kNN, RandomForest, Ridge, curves
whose largest training size is >= 2,048 rows; ``--curves`` of them drawn with a fixed seed (300, as in issue 24),
then split by the parity of the OpenML dataset id (``--split``). Every method sees only the sizes <= 25% of the
largest and predicts the metric at the largest size (with a 90% interval) and the labels needed to reach the value
measured there (truth: the largest size):

* curato (current): ``curato.sizing.forecast.backtest`` (families weighted by held-back error, bootstrap);
* power law: ``acc = c - a n^-b`` by least squares on the mean curve (no interval);
* no gain: the last fitted mean, flat (labels needed: reached today);
* dataeval 1.1.4 ``Sufficiency`` (one power law), run in its own virtualenv, skipped with a reason when absent;
* slope prior (``curato.sizing.prior``): the slope at the top of the curve, shrunk by its noise, decaying with
  the rate learned on even-id LCDB curves, and the learned calibration of its intervals.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".bench" / "lcdb"
ARCHIVE = "lcdb-0.1.0.tar.gz"
CSV = "lcdb-0.1.0/lcdb/database-accuracy.csv"
DATASETS = "lcdb-0.1.0/lcdb/datasets.csv"
LEARNERS = {
    "sklearn.linear_model.LogisticRegression": "LogisticRegression",
    "SVC_linear": "SVC_linear",
    "sklearn.neural_network.MLPClassifier": "MLP",
    "sklearn.discriminant_analysis.LinearDiscriminantAnalysis": "LDA",
    "sklearn.neighbors.KNeighborsClassifier": "kNN",
    "sklearn.ensemble.RandomForestClassifier": "RandomForest",
    "sklearn.linear_model.RidgeClassifier": "Ridge",
}
MIN_LARGEST = 2048
INNER_SEEDS = 5
FRACTION = 0.25
CURVES = 300
SAMPLE_SEED = 0
TOLERANCE = 0.25  # labels needed within +-25% of the truth
GAINING = 0.03  # curves gaining >= 3 points from the last fitted size to the largest


def fetch_archive(cache: Path = CACHE) -> Path:
    """The lcdb 0.1.0 source archive, downloaded once with pip (not installed)."""
    path = cache / ARCHIVE
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "lcdb==0.1.0", "--no-deps", "--no-binary", ":all:",
                        "-d", str(cache)], check=True)
    return path


def load_curves(archive: Path) -> list[dict[str, Any]]:
    """Every selected LCDB curve: ``openmlid``, ``learner``, ``sizes``, ``values`` (per size, the inner seeds'
    test accuracies), ``test_rows``, ``classes``."""
    import pandas as pd

    with tarfile.open(archive) as tar:
        table = pd.read_csv(tar.extractfile(CSV), usecols=["openmlid", "learner", "size_train", "size_test",
                                                           "outer_seed", "inner_seed", "score_test"])
        meta = pd.read_csv(tar.extractfile(DATASETS), usecols=["openmlid", "NumberOfClasses"])
    classes = dict(zip(meta.openmlid, meta.NumberOfClasses, strict=True))
    table = table[(table.outer_seed == 0) & (table.inner_seed < INNER_SEEDS) & table.learner.isin(list(LEARNERS))]
    table = table.dropna(subset=["score_test"])
    curves = []
    for (openmlid, learner), rows in table.groupby(["openmlid", "learner"], sort=True):
        if rows.size_train.max() < MIN_LARGEST:
            continue
        by_size = rows.groupby("size_train").score_test.apply(lambda s: s.to_numpy(dtype=np.float64))
        curves.append({"openmlid": int(openmlid), "learner": LEARNERS[learner],
                       "sizes": [int(s) for s in by_size.index], "values": [v.tolist() for v in by_size],
                       "test_rows": int(rows.size_test.max()), "classes": int(classes.get(openmlid, 2) or 2)})
    return curves


def select(curves: list[dict[str, Any]], *, count: int = CURVES, split: str = "all") -> list[dict[str, Any]]:
    """``count`` curves drawn with a fixed seed (all when fewer), then those of ``split`` (even / odd ids)."""
    rng = np.random.default_rng(SAMPLE_SEED)
    chosen = sorted(rng.choice(len(curves), size=min(count, len(curves)), replace=False).tolist())
    picked = [curves[i] for i in chosen]
    return [c for c in picked if split == "all" or (c["openmlid"] % 2 == 0) == (split == "even")]


def key(curve: dict[str, Any]) -> str:
    return f"{curve['openmlid']}/{curve['learner']}"


def fitted_part(curve: dict[str, Any]) -> tuple[np.ndarray, list[np.ndarray], int, float]:
    """The sizes <= 25% of the largest with their values, the largest size and the mean measured there."""
    sizes = np.array(curve["sizes"], dtype=np.float64)
    keep = sizes <= sizes[-1] * FRACTION + 1e-9
    values = [np.array(curve["values"][i]) for i in np.flatnonzero(keep)]
    return sizes[keep], values, int(sizes[-1]), float(np.mean(curve["values"][-1]))


def chance_of(curve: dict[str, Any]) -> float:
    return 1.0 - 1.0 / max(curve["classes"], 2)


def curato_result(curve: dict[str, Any]) -> dict[str, Any]:
    """curato's current backtest on one curve (fit <= 25%, predict the largest)."""
    from curato.sizing.forecast import backtest

    sizes = np.array(curve["sizes"], dtype=np.float64)
    values = [np.array(v) for v in curve["values"]]
    started = time.perf_counter()
    result = backtest(sizes, values, fraction=FRACTION, chance=chance_of(curve), seed=0,
                      eval_class_counts=[curve["test_rows"]])
    needed = result["samples_needed_predicted"]
    return {"predicted": result["predicted"], "interval": result["interval"],
            "needed": needed, "flagged": bool(result["samples_needed_within_noise"]),
            "seconds": time.perf_counter() - started}


def curato_results(curves: list[dict[str, Any]], *, path: Path, refresh: bool, workers: int,
                   limit: int | None = None) -> dict[str, Any]:
    """curato's backtest per curve, cached in ``path`` (it is the slow one); with ``limit``, computed for at most
    that many of ``curves`` (in their order) beyond those cached."""
    cached = {} if refresh or not path.exists() else json.loads(path.read_text())
    # the held-out (odd-id) curves first: they are the ones reported
    todo = sorted((c for c in curves if key(c) not in cached), key=lambda c: c["openmlid"] % 2 == 0)[:limit]
    if todo:
        print(f"curato backtest on {len(todo)} curves ({workers} processes; cached in {path})", file=sys.stderr)
        with ProcessPoolExecutor(workers) as pool:
            for done, (curve, result) in enumerate(zip(todo, pool.map(curato_result, todo), strict=True), start=1):
                cached[key(curve)] = result
                if done % 10 == 0 or done == len(todo):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(cached))
                    print(f"  {done}/{len(todo)}", file=sys.stderr)
    return cached


def power_law_fit(sizes: np.ndarray, means: np.ndarray) -> tuple[float, float, float] | None:
    """``acc = c - a n^-b`` by least squares on the mean curve: ``(c, log a, b)``, None if the fit fails."""
    from scipy.optimize import least_squares

    def residual(p: np.ndarray) -> np.ndarray:
        return p[0] - np.exp(p[1] - p[2] * np.log(sizes)) - means

    start = np.array([min(1.0, means[-1] + 0.01),
                      math.log(max(means[-1] - means[0], 1e-3)) + 0.5 * math.log(sizes[0]), 0.5])
    try:
        fit = least_squares(residual, start, bounds=([0.0, -30.0, 0.0], [1.0, 30.0, 5.0]), max_nfev=500)
    except ValueError:
        return None
    return float(fit.x[0]), float(fit.x[1]), float(fit.x[2])


def prior_result(curve: dict[str, Any], prior: Any) -> dict[str, Any]:
    """The slope prior's backtest on one curve (fit <= 25%, predict the largest), as ``forecast`` computes it."""
    from curato.sizing.forecast import GRID_POINTS, HORIZON, evaluation_sd, labels_needed
    from curato.sizing.prior import pinned_down, prior_curves

    sizes, values, largest, measured = fitted_part(curve)
    grid = np.geomspace(sizes[0], sizes[-1] * HORIZON, GRID_POINTS)
    eval_sd = float(evaluation_sd(float(np.mean(values[-1])), [curve["test_rows"]]))
    central, low, high = prior_curves(prior, sizes, values, np.append(grid, largest), eval_sd=eval_sd)
    predicted, interval = float(central[-1]), [float(low[-1]), float(high[-1])]
    central, low, high = central[:-1], low[:-1], high[:-1]
    needed = labels_needed(grid, central, measured)
    crossings = [labels_needed(grid, high, measured), labels_needed(grid, low, measured)]
    return {"predicted": predicted, "interval": interval, "needed": None if not math.isfinite(needed) else needed,
            "flagged": not pinned_down(crossings, today=float(sizes[-1]), pin_span=prior.pin_span),
            "crossings": crossings}


def baseline_results(curve: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Power law and no gain on one curve (no intervals; labels needed where each reaches the measured value)."""
    sizes, values, largest, measured = fitted_part(curve)
    means = np.array([float(np.mean(v)) for v in values])
    params = power_law_fit(sizes, means)
    if params is None:
        power, needed = float(means[-1]), None
    else:
        c, log_a, b = params
        power = float(min(1.0, c - math.exp(log_a - b * math.log(largest))))
        needed = None if c <= measured or b <= 0 else float(
            max(sizes[0], math.exp((log_a - math.log(c - measured)) / b)))
    flat_needed = float(np.flatnonzero(means >= measured)[0]) if means.max() >= measured else None
    flat_needed = None if flat_needed is None else float(sizes[int(flat_needed)])
    return {"power law": {"predicted": power, "interval": None, "needed": needed, "flagged": False},
            "no gain": {"predicted": float(means[-1]), "interval": None, "needed": flat_needed, "flagged": False}}


def fit_prior(curves: list[dict[str, Any]], *, window: int = 4) -> Any:
    """Learn the slope prior from ``curves`` (even OpenML ids only: the caller checks): the gain's constants by
    minimising median + 0.2 x mean absolute error at the largest size, the interval's noise terms by Gaussian
    likelihood and its z from the 5th/95th percentiles of the standardised errors, and ``pin_span`` as the widest
    labels-needed interval (log size) whose curves still land within +-25% at least 60% of the time."""
    from scipy.optimize import minimize

    from curato.sizing.forecast import evaluation_sd
    from curato.sizing.prior import SlopePrior, curve_top, prior_gain, shrunk_slope

    if any(c["openmlid"] % 2 for c in curves):
        sys.exit("--fit-prior learns from even OpenML ids only (the odd ones are held out)")
    tops, truth, distance, eval_sds = [], [], [], []
    for curve in curves:
        sizes, values, largest, measured = fitted_part(curve)
        tops.append(curve_top(sizes, values, window=window))
        truth.append(measured)
        distance.append(math.log(largest / sizes[-1]))
        eval_sds.append(float(evaluation_sd(float(np.mean(values[-1])), [curve["test_rows"]])))
    truth_a, distance_a = np.array(truth), np.array(distance)

    def make(p: Sequence[float], **extra: float) -> SlopePrior:
        shrink, decay, scale, curvature, headroom = np.abs(p)
        base = {"eval_factor": 1.0, "seed_factor": 1.0, "drift_sd": 0.0, "slope_sd": 0.0, "z_low": -1.645,
                "z_high": 1.645, "pin_span": 1.0}
        return SlopePrior(window, float(shrink), float(decay), float(scale), float(curvature), float(headroom),
                          **{**base, **extra}, source=f"LCDB 0.1.0, {len(curves)} curves of even OpenML ids")

    def errors(prior: SlopePrior) -> np.ndarray:
        return np.array([t.level + float(prior_gain(prior, t, u)) for t, u in zip(tops, distance_a, strict=True)]) \
            - truth_a

    def loss(p: Sequence[float]) -> float:
        e = np.abs(errors(make(p)))
        return float(np.median(e) + 0.2 * np.mean(e))

    starts = ([3.0, 0.9, 0.9, 0.3, 0.5], [1.0, 0.3, 0.6, 0.1, 0.8], [8.0, 1.5, 1.0, 0.5, 0.3])
    best = min((minimize(loss, x0, method="Nelder-Mead", options={"maxiter": 1500, "xatol": 1e-3, "fatol": 1e-6})
                for x0 in starts), key=lambda r: r.fun)
    gain_prior = make(best.x)
    e = errors(gain_prior)
    slopes = np.array([shrunk_slope(gain_prior, t) for t in tops])
    seeds = np.array([t.seed_sd for t in tops])
    evals = np.array(eval_sds)

    def sd_of(q: Sequence[float]) -> np.ndarray:  # curato.sizing.prior.prior_sd over all curves at once
        c, k, a, b = np.abs(q)
        return np.sqrt((c * evals) ** 2 + (k * seeds) ** 2 + (a * distance_a) ** 2 + (b * slopes * distance_a) ** 2
                       + 1e-10)

    def nll(q: Sequence[float]) -> float:
        sd = sd_of(q)
        return float(np.mean(np.log(sd) + 0.5 * (e / sd) ** 2))

    q = np.abs(minimize(nll, [0.5, 0.5, 0.005, 0.3], method="Nelder-Mead", options={"maxiter": 3000}).x)
    z = e / sd_of(q)
    z_low, z_high = (float(v) for v in np.quantile(z, [0.05, 0.95]))
    interval_prior = make(best.x, eval_factor=float(q[0]), seed_factor=float(q[1]), drift_sd=float(q[2]),
                          slope_sd=float(q[3]), z_low=z_low, z_high=z_high)
    # pin_span: from the labels-needed intervals of the curves themselves
    spans, within = [], []
    for curve in curves:
        result = prior_result(curve, interval_prior)
        low, high = result["crossings"]
        clear = low > fitted_part(curve)[0][-1]  # the target lies above today's band (pinned_down's first test)
        spans.append(math.log(high / low) if clear and math.isfinite(high) else math.inf)
        within.append(result["needed"] is not None and abs(result["needed"] / curve["sizes"][-1] - 1) <= TOLERANCE)
    spans_a, within_a = np.array(spans), np.array(within)
    pin_span = 0.0
    for candidate in np.sort(spans_a[np.isfinite(spans_a)]):
        chosen = spans_a <= candidate
        if chosen.sum() >= 10 and within_a[chosen].mean() >= 0.6:
            pin_span = float(candidate)
    return make(best.x, eval_factor=float(q[0]), seed_factor=float(q[1]), drift_sd=float(q[2]),
                slope_sd=float(q[3]), z_low=z_low, z_high=z_high, pin_span=pin_span)


DATAEVAL_CHILD = """
import json, sys
import numpy as np
from dataeval.performance._output import SufficiencyOutput
out = []
for case in json.load(open(sys.argv[1])):
    try:
        result = SufficiencyOutput(steps=np.array(case["steps"]), measures={"metric": np.array(case["measures"])})
        projected = result.project(case["predict_at"]).to_dict(as_series=False)["metric"][0]
        needed = result.inv_project({"metric": [case["target"]]}).to_dict(as_series=False)["metric"][0]
        out.append({"predicted": float(projected), "needed": None if needed is None or needed < 0 else float(needed)})
    except Exception as error:  # one curve dataeval cannot fit must not sink the others
        out.append({"predicted": None, "needed": None, "error": str(error)})
json.dump(out, open(sys.argv[2], "w"))
"""


def dataeval_results(curves: list[dict[str, Any]], python: Path, *, path: Path, chunk: int = 10,
                     limit: int | None = None) -> tuple[dict[str, Any], str | None]:
    """dataeval 1.1.4 ``Sufficiency`` projections (its own virtualenv; about a minute a curve on 2 busy cores),
    cached in ``path``, or the reason it was skipped; ``limit``: as for ``curato_results``."""
    cached = json.loads(path.read_text()) if path.exists() else {}
    todo = sorted((c for c in curves if key(c) not in cached), key=lambda c: c["openmlid"] % 2 == 0)[:limit]
    if todo and not python.exists():
        return {}, f"{python} missing (see the commands at the top of this file)"
    if todo:
        check = subprocess.run([str(python), "-c", "import dataeval"], capture_output=True, text=True)
        if check.returncode != 0:
            return {}, f"dataeval does not import in {python}: {check.stderr.strip().splitlines()[-1:]}"
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        for curve, entry in zip(part, _dataeval_chunk(part, python), strict=True):
            cached[key(curve)] = entry
        path.write_text(json.dumps(cached))
        print(f"  dataeval {min(start + chunk, len(todo))}/{len(todo)}", file=sys.stderr, flush=True)
    results = {}
    for curve in curves:
        entry = cached.get(key(curve))
        if entry and entry["predicted"] is not None and math.isfinite(entry["predicted"]):
            results[key(curve)] = {"predicted": entry["predicted"], "interval": None, "needed": entry["needed"],
                                   "flagged": False}
    return results, None


def _dataeval_chunk(curves: list[dict[str, Any]], python: Path) -> list[dict[str, Any]]:
    import tempfile

    cases = []
    for curve in curves:
        sizes, values, largest, measured = fitted_part(curve)
        seeds = min(len(v) for v in values)
        cases.append({"steps": sizes.tolist(), "predict_at": largest, "target": measured,
                      "measures": np.array([v[:seeds] for v in values]).T.tolist()})
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "cases.json", Path(folder) / "out.json"
        source.write_text(json.dumps(cases))
        subprocess.run([str(python), "-c", DATAEVAL_CHILD, str(source), str(target)], check=True)
        return json.loads(target.read_text())


def summary(curves: list[dict[str, Any]], results: dict[str, Any]) -> dict[str, Any]:
    """One method's figures over ``curves`` (those it answered)."""
    rows = [(c, results[key(c)]) for c in curves if key(c) in results]
    if not rows:
        return {"curves": 0}
    errors = np.array([r["predicted"] - fitted_part(c)[3] for c, r in rows]) * 100
    gains = np.array([fitted_part(c)[3] - float(np.mean(fitted_part(c)[1][-1])) for c, _ in rows])
    covered = [r["interval"][0] <= fitted_part(c)[3] <= r["interval"][1] for c, r in rows if r["interval"]]
    within = np.array([r["needed"] is not None and abs(r["needed"] / c["sizes"][-1] - 1) <= TOLERANCE
                       for c, r in rows])
    flagged = np.array([bool(r["flagged"]) for _, r in rows])
    ratios = [r["needed"] / c["sizes"][-1] for c, r in rows if r["needed"] is not None]
    gaining = np.abs(errors[gains >= GAINING])
    return {"curves": len(rows), "median": float(np.median(np.abs(errors))), "mean": float(np.mean(np.abs(errors))),
            "within_1_5": float(np.mean(np.abs(errors) <= 1.5)), "gaining": int(gaining.size),
            "gaining_median": float(np.median(gaining)) if gaining.size else None,
            "signed": float(np.mean(errors)), "coverage": float(np.mean(covered)) if covered else None,
            "labels_within": float(np.mean(within)), "flagged": float(np.mean(flagged)),
            "labels_within_unflagged": float(np.mean(within[~flagged])) if (~flagged).any() else None,
            "median_ratio": float(np.median(ratios)) if ratios else None}


def _cell(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def table(title: str, curves: list[dict[str, Any]], methods: dict[str, dict[str, Any]]) -> str:
    """A markdown table of every method over ``curves``."""
    lines = [f"{title} ({len(curves)} curves)", "",
             "| method | curves | median abs. error (pts) | mean | within 1.5 pts | gaining >= 3 pts: n, median |"
             " signed mean | 90% interval covers | labels within +-25% (all) | flagged cannot be pinned down |"
             " within +-25% of the others | median ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, results in methods.items():
        s = summary(curves, results)
        if not s["curves"]:
            continue
        lines.append(f"| {name} | {s['curves']} | {s['median']:.2f} | {s['mean']:.2f} | {s['within_1_5']:.0%} | "
                     f"{s['gaining']}, {_cell(s['gaining_median'], '.2f')} | {s['signed']:+.2f} | "
                     f"{_cell(s['coverage'], '.0%')} | {s['labels_within']:.0%} | {s['flagged']:.0%} | "
                     f"{_cell(s['labels_within_unflagged'], '.0%')} | {_cell(s['median_ratio'], '.2f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("even", "odd", "all"), default="even",
                        help="OpenML id parity: even = tuning, odd = held out (report once)")
    parser.add_argument("--curves", type=int, default=CURVES, help="curves drawn (fixed seed) before the split")
    parser.add_argument("--workers", type=int, default=2, help="processes for curato's backtest")
    parser.add_argument("--refresh", action="store_true", help="recompute curato's cached backtests")
    parser.add_argument("--skip-curato", action="store_true", help="leave curato's current method out (slow)")
    parser.add_argument("--curato-limit", type=int, help="compute curato's backtest for at most this many more "
                                                         "curves (the others' are read from the cache or left out)")
    parser.add_argument("--skip-dataeval", action="store_true", help="leave dataeval out (minutes)")
    parser.add_argument("--dataeval-limit", type=int, help="run dataeval on at most this many more curves")
    parser.add_argument("--dataeval-python", type=Path, default=REPO / ".bench" / "dataeval-venv" / "bin" / "python")
    parser.add_argument("--fit-prior", type=Path, help="learn the slope prior from ALL even-id curves, write it here")
    parser.add_argument("--json", type=Path, help="write the per-curve results here")
    args = parser.parse_args(argv)

    from curato.sizing.prior import load_prior

    started = time.perf_counter()
    every = load_curves(fetch_archive())
    print(f"LCDB: {len(every)} curves qualify ({len(LEARNERS)} learners, largest size >= {MIN_LARGEST:,}, outer seed "
          f"0, inner seeds 0-{INNER_SEEDS - 1})", flush=True)
    if args.fit_prior:
        even = [c for c in every if c["openmlid"] % 2 == 0]
        prior = fit_prior(even)
        args.fit_prior.write_text(prior.to_json())
        print(f"slope prior learned on {len(even)} even-id curves -> {args.fit_prior}:\n{prior.to_json()}")
    prior = load_prior(args.fit_prior) if args.fit_prior else load_prior()
    curves = select(every, count=args.curves, split=args.split)
    methods: dict[str, dict[str, Any]] = {}
    if not args.skip_curato:
        cached = curato_results(curves, path=REPO / ".bench" / "sizing_lcdb-curato.json", refresh=args.refresh,
                                workers=args.workers, limit=args.curato_limit)
        methods["curato (current)"] = {key(c): cached[key(c)] for c in curves if key(c) in cached}
    baselines = {key(c): baseline_results(c) for c in curves}
    methods["power law"] = {k: v["power law"] for k, v in baselines.items()}
    methods["no gain"] = {k: v["no gain"] for k, v in baselines.items()}
    dataeval, reason = ({}, "--skip-dataeval") if args.skip_dataeval else dataeval_results(
        curves, args.dataeval_python, path=REPO / ".bench" / "sizing_lcdb-dataeval.json", limit=args.dataeval_limit)
    if reason:
        print(f"dataeval skipped: {reason}")
    else:
        methods["dataeval Sufficiency"] = dataeval
    methods["slope prior (new)"] = {key(c): prior_result(c, prior) for c in curves}
    role = {"even": "tuning (even OpenML ids)", "odd": "HELD OUT (odd OpenML ids)", "all": "all ids"}[args.split]
    print(table(f"## All learners, {role}", curves, methods))
    for slow in ("curato (current)", "dataeval Sufficiency"):
        answered = [c for c in curves if key(c) in methods.get(slow, {})]
        if 0 < len(answered) < len(curves):
            print()
            print(table(f"## The curves {slow} was run on, {role}", answered, methods))
    for learner in LEARNERS.values():
        chosen = [c for c in curves if c["learner"] == learner]
        if chosen:
            print()
            print(table(f"### {learner}, {role}", chosen, methods))
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "curves": [key(c) for c in curves],
                                         "methods": methods}, default=float))
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
