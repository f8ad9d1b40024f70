# Run from the repository root. Once: a separate virtualenv for modAL (the reference implementation):
#   python3 -m venv .bench/modal-venv && .bench/modal-venv/bin/pip install -c constraints.txt torch==2.13.0 \
#       scikit-learn numpy scipy && .bench/modal-venv/bin/pip install --no-deps modAL-python==0.4.2.1
# Then, in two invocations of < 10 min each on 2 cores (finished (strategy, seed, round) results are cached
# under .bench/active_learning/, so the second invocation reports every strategy run so far):
#   .venv/bin/python benchmarks/active_learning.py --strategies random margin entropy auto --modal
#   .venv/bin/python benchmarks/active_learning.py --strategies typiclust probcover badge coreset cluster-margin \
#       --ceiling --routing-draws 20 --json .bench/active_learning.json
# Rules are chosen on the development split (disjoint pool and test rows), 10 seeds:
#   .venv/bin/python benchmarks/active_learning.py --split dev --strategies random margin auto --seeds 10 11 12 \
#       13 14 15 16 17 18 19
"""Label efficiency of curato's query strategies on Fashion-MNIST embeddings, and auto-label routing.

Data: EfficientNet-Lite0-112 embeddings (``.bench/fmnist-*-efficientnet-lite0-112.npy``). The pool is a
stratified ``--pool`` (20,000) of the 60k training images; accuracy is measured on a stratified ``--test``
(5,000) of the t10k test images (never selectable). Known labels are the oracle.

Loop (:func:`curato.active.simulate.simulate_active_learning`): labels after each round 100, 200, 400, 800,
1,600, 3,200, 5,000; head = curato's active-learning head (``curato.active.heads.head_probabilities``:
standardise, whitened PCA of at least 64 dimensions, L2 softmax regression) on the labelled rows, the same for
every strategy, which also ranks by it; seeds 0..9 (3 seeds moved the per-budget ratios by 0.1-0.3).
Strategies that need a head take the first 100 at random (the same draw as ``random``). Diversity strategies
work on ``diversity_features`` (64-d PCA of the unit embeddings).

``--split dev``: a pool of 20,000 training images outside the reported pool and the 5,000 test images outside
the reported test rows, for choosing rules (docs/internals/active-tuning.md) without touching the reported split.

Label efficiency at budget b = b / (labels the strategy needs to reach random's accuracy at b),
log-linear interpolation between rounds, on seed-mean curves (``summarize_curves``).

Routing: with random's final 5,000 labels as the human-labelled calibration set (out-of-fold, temperature
scaling), the pool's other 15,000 rows are auto-labelled at requested precision 0.98 and 0.99; the
measured precision uses their true labels.

``--routing-draws N``: the same routing with N uniform draws of the final budget's labels from the pool as the
calibration set instead (more draws than seeds: how often a draw falls below the requested precision).

Ceiling (``--ceiling``): the evaluation head fitted on all 20,000 pool labels at the width and L2 penalty it has
at each budget; the accuracy a labelled set of that size chosen perfectly could roughly reach with this learner.

modAL reference (``--modal``): modAL 0.4.2.1's ``ActiveLearner`` with ``margin_sampling`` and an sklearn
``LogisticRegression(C=0.05)`` on a fixed 64-d whitened PCA of the embeddings, run by ``.bench/modal-venv``
on the same pool, test rows, seeds, first random batch and schedule; curato's ``margin`` runs the same loop
with exactly that learner (``head=``), so the accuracy curves must match and the times compare the loops.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from curato.active import heads as head_module
from curato.active import strategies as strategy_module
from curato.active.simulate import simulate_active_learning, simulate_routing, summarize_curves
from curato.active.strategies import diversity_features, select_batch
from curato.arrays import stratified_subsample
from curato.commands.active import _append_checkpoint, _read_checkpoint
from curato.imageio import read_idx
from curato.models.oof import fit_predict_probabilities, whitened_pca

FASHION = Path("/usr/share/datasets/fashion-mnist")
EMBEDDINGS = {"train": Path(".bench/fmnist-train-efficientnet-lite0-112.npy"),
              "t10k": Path(".bench/fmnist-t10k-efficientnet-lite0-112.npy")}
CACHE = Path(".bench/active_learning")
SCHEDULE = [100, 200, 400, 800, 1600, 3200, 5000]
MODAL_PYTHON = Path(".bench/modal-venv/bin/python")
LR_C = 0.05
DEVELOPMENT_SEED = 5

MODAL_SCRIPT = r'''
import json, sys, time
import numpy as np
from sklearn.linear_model import LogisticRegression
from modAL.models import ActiveLearner
from modAL.uncertainty import margin_sampling

data = np.load(sys.argv[1])
x, y, test, schedule = data["x"], data["y"], data["test"], data["schedule"].tolist()
out = {}
for seed, initial in zip(data["seeds"].tolist(), data["initial"]):
    started = time.perf_counter()
    pool = np.flatnonzero(~test)
    remaining = np.setdiff1d(pool, initial)
    learner = ActiveLearner(estimator=LogisticRegression(C=float(data["C"]), max_iter=1000),
                            query_strategy=margin_sampling, X_training=x[initial], y_training=y[initial])
    accuracy = [float(learner.score(x[test], y[test]))]
    labelled = len(initial)
    for target in schedule[1:]:
        query, _ = learner.query(x[remaining], n_instances=int(target - labelled))
        picked = remaining[query]
        learner.teach(x[picked], y[picked])
        remaining = np.setdiff1d(remaining, picked)
        labelled = target
        accuracy.append(float(learner.score(x[test], y[test])))
    out[str(seed)] = {"accuracy": accuracy, "seconds": time.perf_counter() - started}
print(json.dumps(out))
'''


def load(split: str, size: int, *, development: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A stratified ``size`` of ``split``'s embeddings and labels (row order of the IDX file).

    ``development``: a stratified ``size`` of the rows *outside* the reported stratified ``size`` instead (all of
    them when fewer remain), so rules tuned there are reported on rows they never saw."""
    labels = read_idx(FASHION / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    rows = stratified_subsample(labels, size, seed=0)
    if development:
        rest = np.setdiff1d(np.arange(len(labels)), rows)
        rows = rest if size >= len(rest) else rest[stratified_subsample(labels[rest], size, seed=DEVELOPMENT_SEED)]
    return np.asarray(np.load(EMBEDDINGS[split], mmap_mode="r")[rows], dtype=np.float32), labels[rows]


def strategy_constants(*, auto: bool) -> dict[str, Any]:
    """The module constants of curato.active.strategies and .heads (``auto``: only AUTO_*, else all others):
    cache keys."""
    return {f"{module.__name__}.{name}": getattr(module, name) for module in (strategy_module, head_module)
            for name in dir(module)
            if name.isupper() and isinstance(getattr(module, name), int | float | str)
            and name.startswith("AUTO_") == auto}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=["random", "margin", "entropy", "auto"])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--test", type=int, default=5_000)
    parser.add_argument("--modal", action="store_true", help="also run modAL's margin sampling (reference)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also fit the evaluation head on the whole pool at each budget's width and penalty")
    parser.add_argument("--split", choices=("report", "dev"), default="report",
                        help="dev: pool and test rows disjoint from the reported ones (for choosing rules)")
    parser.add_argument("--rule", nargs="+", default=[], metavar="NAME=VALUE",
                        help="override constants of curato.active.strategies for this run, e.g. "
                             "AUTO_SWITCH_PER_CLASS=10 AUTO_WARM_STRATEGY=cluster-margin CLUSTER_MARGIN_POOL_FACTOR=2 "
                             "(rule variants; cached apart)")
    parser.add_argument("--schedule", type=int, nargs="+", default=SCHEDULE, metavar="LABELS",
                        help="labels after each round (default: 100 200 400 800 1600 3200 5000)")
    parser.add_argument("--routing-draws", type=int, default=0, metavar="N",
                        help="also route with N uniform draws of the final budget's labels as calibration sets")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    schedule = args.schedule
    if np.any(np.diff(schedule) <= 0) or schedule[0] < 1:
        parser.error("--schedule: labels must be positive and strictly increasing")
    tunable = strategy_constants(auto=True) | strategy_constants(auto=False)
    for assignment in args.rule:
        name, _, value = assignment.partition("=")
        if f"{strategy_module.__name__}.{name}" not in tunable or not value:
            parser.error(f"--rule {assignment}: expected NAME=VALUE with a constant of curato.active.strategies")
        setattr(strategy_module, name, type(getattr(strategy_module, name))(value))

    development = args.split == "dev"
    pool_x, pool_y = load("train", args.pool, development=development)
    test_x, test_y = load("t10k", args.test, development=development)
    x = np.concatenate([pool_x, test_x])
    y = np.concatenate([pool_y, test_y])
    test = np.concatenate([np.zeros(len(pool_y), bool), np.ones(len(test_y), bool)])
    started = time.perf_counter()
    features = diversity_features(x)
    print(f"{args.split} split: pool {len(pool_y)} (train), test {len(test_y)} (t10k); diversity features "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    # Results are cached per strategy under a digest of the data, the schedule and the strategy constants
    # (auto's own rule constants only for auto, so changing the rule re-runs auto alone).
    base = {"pool": args.pool, "test": args.test, "schedule": schedule, "constants": strategy_constants(auto=False),
            **({"split": "dev"} if development else {})}
    digests = {False: _digest(base), True: _digest({**base, "auto": strategy_constants(auto=True)})}
    CACHE.mkdir(parents=True, exist_ok=True)
    checkpoint = CACHE / "records.jsonl"

    def cached() -> dict[tuple[str, int, int], dict[str, Any]]:
        found = {key: r for key, r in _read_checkpoint(checkpoint, digests[False]).items() if key[0] != "auto"}
        found.update({key: r for key, r in _read_checkpoint(checkpoint, digests[True]).items() if key[0] == "auto"})
        return found

    completed = cached()
    wanted = list(dict.fromkeys(["random", *args.strategies]))

    class Lines:
        def stage(self, description: str, total: int) -> None:
            self.total, self.done, self.started = total, 0, time.perf_counter()

        def advance(self, amount: int = 1) -> None:
            self.done += amount
            print(f"  {self.done}/{self.total} rounds, {time.perf_counter() - self.started:.0f} s", file=sys.stderr)

    simulate_active_learning(x, y, test=test, strategies=wanted, schedule=schedule, seeds=args.seeds,
                             features=features, n_classes=10, completed=completed,
                             on_result=lambda record: _append_checkpoint(
                                 checkpoint, digests[record["strategy"] == "auto"], record),
                             progress=Lines())
    every = cached()
    names = sorted({key[0] for key in every if all((key[0], s, r) in every for s in args.seeds
                                                    for r in range(len(schedule)))},
                   key=lambda name: (name != "random", name))
    records = [every[(name, seed, r)] for name in names for seed in args.seeds for r in range(len(schedule))]
    curves = summarize_curves(records, strategies=names, schedule=schedule, seeds=args.seeds)
    select_seconds = {name: float(np.mean([sum(r["select_seconds"] for r in records
                                              if r["strategy"] == name and r["seed"] == s) for s in args.seeds]))
                      for name in names}
    print_curves(curves, select_seconds, schedule)

    routing = []
    for seed in args.seeds:
        labeled = np.zeros(len(y), bool)
        for r in range(len(schedule)):
            labeled[np.asarray(every[("random", seed, r)]["picked"])] = True
        routing += simulate_routing(x, y, labeled, ~test, precisions=[0.98, 0.99], n_classes=10, seed=seed)
    print_routing(routing)
    draws = route_random_draws(x, y, test, args.routing_draws, schedule[-1]) if args.routing_draws else None

    ceiling = head_ceiling(x, y, test, schedule) if args.ceiling else None
    modal = run_modal(x, y, test, args.seeds, schedule) if args.modal else None
    if args.json:
        args.json.write_text(json.dumps({"pool": args.pool, "test": args.test, "schedule": schedule,
                                         "seeds": args.seeds, "curves": curves, "select_seconds": select_seconds,
                                         "routing": routing, "routing_draws": draws, "modal": modal,
                                         "ceiling": ceiling}, indent=1))
    return 0


def head_ceiling(x: np.ndarray, y: np.ndarray, test: np.ndarray, schedule: list[int]) -> list[dict[str, Any]]:
    """Test accuracy of the evaluation head trained on every pool row, at the whitened-PCA width it has at each
    budget and with the L2 penalty of that many rows (the penalty is ``||W||^2 / (2 C n)``: row weights
    ``budget / pool`` keep it): what a perfectly chosen labelled set of that size could roughly reach."""
    pool = ~test
    out = []
    print("\nevaluation head on the whole pool, at each budget's width and penalty (test accuracy):")
    for budget in schedule:
        width = head_module.head_components(budget)
        probs = fit_predict_probabilities(x, np.where(pool, y, -1), pool * (budget / pool.sum()), n_classes=10,
                                          components=width)
        accuracy = float(np.mean(probs[test].argmax(axis=1) == y[test]))
        out.append({"labels": budget, "components": width, "accuracy": accuracy})
        print(f"  {budget:>6} labels ({width:>3} dims): {accuracy:.3f}")
    return out


def route_random_draws(x: np.ndarray, y: np.ndarray, test: np.ndarray, draws: int,
                       labels: int) -> list[dict[str, Any]]:
    """Routing with ``draws`` uniform draws of ``labels`` pool rows (generator seeds 1000, 1001, ...) as the
    human-labelled calibration set: how often the measured precision falls below the requested one."""
    pool = np.flatnonzero(~test)
    out = []
    for draw in range(draws):
        labeled = np.zeros(len(y), bool)
        labeled[np.random.default_rng(1_000 + draw).choice(pool, labels, replace=False)] = True
        out += simulate_routing(x, y, labeled, ~test, precisions=[0.98, 0.99], n_classes=10, seed=draw)
    print(f"\nauto-label routing with {draws} uniform draws of {labels} labels as calibration sets:")
    for precision in (0.98, 0.99):
        results = [r for r in out if r["requested_precision"] == precision]
        measured = [r["measured_precision"] for r in results if r["measured_precision"] is not None]
        below = sum(m < precision for m in measured)
        shares = [r["share_auto_labelled"] for r in results]
        print(f"  requested {precision:.2f}: below it in {below} of {len(results)} draws, lowest measured "
              f"{min(measured) if measured else float('nan'):.4f}; share auto-labelled mean {np.mean(shares):.1%} "
              f"(lowest {min(shares):.1%}, {sum(s == 0 for s in shares)} draws none)")
        for result in results:
            if result["measured_precision"] is not None and result["measured_precision"] < precision:
                print(f"   draw {result['seed']}: measured {result['measured_precision']:.4f}")
                print_classes_below(result)
    return out


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def run_modal(x: np.ndarray, y: np.ndarray, test: np.ndarray, seeds: list[int], schedule: list[int]) -> dict[str, Any]:
    """modAL margin sampling vs curato margin with the same LogisticRegression on the same features."""
    from sklearn.linear_model import LogisticRegression

    features = whitened_pca(x, 64, np.random.default_rng(0))
    initial = np.stack([select_batch("random", budget=schedule[0], labeled=test, seed=seed * 1_000).indices
                        for seed in seeds])

    def logistic(mask: np.ndarray, seed: int) -> np.ndarray:
        model = LogisticRegression(C=LR_C, max_iter=1000).fit(features[mask], y[mask])
        return model.predict_proba(features)

    curato = {}
    for seed in seeds:
        started = time.perf_counter()
        records = simulate_active_learning(features, y, test=test, strategies=["margin"], schedule=schedule,
                                           seeds=[seed], n_classes=10, head=logistic)
        curato[str(seed)] = {"accuracy": [r["accuracy"] for r in records], "seconds": time.perf_counter() - started}
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data.npz"
        np.savez(data, x=features, y=y, test=test, schedule=np.array(schedule), seeds=np.array(seeds),
                 initial=initial, C=LR_C)
        script = Path(folder) / "modal_run.py"
        script.write_text(MODAL_SCRIPT)
        done = subprocess.run([str(MODAL_PYTHON), str(script), str(data)], capture_output=True, text=True, check=True)
    modal = json.loads(done.stdout.strip().splitlines()[-1])
    print("\nmargin sampling, same learner (LogisticRegression C=0.05 on 64-d whitened PCA), same first batch:")
    print(f"  {'labels':>8} " + " ".join(f"{n:>6}" for n in schedule) + "   seconds/seed")
    for name, result in (("curato", curato), ("modAL", modal)):
        mean = np.mean([result[str(s)]["accuracy"] for s in seeds], axis=0)
        seconds = np.mean([result[str(s)]["seconds"] for s in seeds])
        print(f"  {name:>8} " + " ".join(f"{a:6.3f}" for a in mean) + f"   {seconds:8.1f}")
    gap = np.max(np.abs(np.array([curato[str(s)]["accuracy"] for s in seeds])
                        - np.array([modal[str(s)]["accuracy"] for s in seeds])))
    print(f"  largest per-seed accuracy difference: {gap:.4f}")
    return {"curato": curato, "modal": modal, "max_abs_difference": float(gap)}


def print_curves(curves: dict[str, dict[str, Any]], select_seconds: dict[str, float], schedule: list[int]) -> None:
    print("\ntest accuracy (mean of seeds ± half the min..max band) after each round, labels:")
    print(f"  {'strategy':<16}" + "".join(f"{n:>15}" for n in schedule) + "     AUC  select s/seed")
    for name, curve in curves.items():
        cells = "".join(f"{a:>9.3f}±{(hi - lo) / 2:.3f}"
                        for a, lo, hi in zip(curve["accuracy"], curve["low"], curve["high"], strict=True))
        print(f"  {name:<16}{cells}   {curve['auc']:.3f}  {select_seconds[name]:8.1f}")
    print("\nlabel efficiency vs random (labels random needs / labels the strategy needs for random's accuracy):")
    print(f"  {'strategy':<16}" + "".join(f"{n:>8}" for n in schedule) + "   labels to reach random's final")
    for name, curve in curves.items():
        cells = "".join(f"{'>' if e['status'] == 'at_least' else ''}{e['efficiency']:.2f}".rjust(8)
                        if e["efficiency"] is not None else "      <1" for e in curve["label_efficiency"])
        needed = curve["labels_to_reach_random_final"]
        print(f"  {name:<16}{cells}   {'not reached' if needed is None else f'{needed:.0f}'}")


def print_routing(routing: list[dict[str, Any]]) -> None:
    print("\nauto-label routing (calibrated on random's 5,000 labels, temperature scaling; pool = the other 15,000):")
    for result in routing:
        measured = result["measured_precision"]
        print(f"  seed {result['seed']} requested {result['requested_precision']:.2f}: auto-labelled "
              f"{result['auto_labelled']:>6} ({result['share_auto_labelled']:.1%}), measured precision "
              f"{'-' if measured is None else f'{measured:.4f}'}, wrong {result['wrong']} "
              f"(expected {result['expected_wrong']:.1f}, bound {result['expected_wrong_bound']:.1f})")
        print_classes_below(result)


def print_classes_below(result: dict[str, Any]) -> None:
    """The classes whose auto-labels fell below the requested precision: thresholds, calibration support, rows."""
    requested = result["requested_precision"]
    for entry in result.get("classes", []):
        if entry["measured_precision"] is None or entry["measured_precision"] >= requested:
            continue
        expected = entry.get("expected_precision")
        print(f"    class {entry['class']}: threshold {entry['threshold']} (calibration rows prove "
              f"{entry.get('calibration_threshold', entry['threshold'])}: {entry.get('calibration_correct')}/"
              f"{entry.get('calibration_accepted')} right, bound {entry.get('precision_lower_bound') or 0:.4f}; "
              f"expected precision {'-' if expected is None else f'{expected:.4f}'}); accepted "
              f"{entry['accepted']}, wrong {entry['wrong']} ({entry['measured_precision']:.4f})")


if __name__ == "__main__":
    raise SystemExit(main())
