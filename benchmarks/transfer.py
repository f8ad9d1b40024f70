# Run from the repository root (embeddings are cached under .bench/transfer/; first run ~1 min to embed):
#   .venv/bin/python benchmarks/transfer.py                      (add --json PATH for machine-readable output)
#   .venv/bin/python benchmarks/transfer.py --seeds 0 1 2 --n 5000 --embedders efficientnet-lite0-112,classic,pixels
"""Does LogME rank backbones the way a linear probe does on Fashion-MNIST, and how much faster is it?

Data: for each seed, ``--n`` images drawn at random (without replacement) from the 60,000 Fashion-MNIST
training images. Each is embedded straight from the IDX arrays with each embedder's ``.embed`` (grey
28x28 arrays, repeated to RGB by the embedder), cached under ``.bench/transfer/``. Default embedders:
``efficientnet-lite0-112`` (ImageNet-pretrained, 1280-d), ``classic`` (colour histogram + HOG + LBP,
472-d) and ``pixels`` (32x32 raw pixels, 3072-d).

Scores come from ``curato.transfer.rank_embedders`` on the same rows and labels: LogME, leave-one-out
10-NN accuracy (cosine) and the 5-fold cross-validated linear probe (``curato.models.oof``: standardise,
whitened PCA to 256 axes, L2 softmax regression), each timed. Printed per seed: the table, both
rankings, Kendall's tau between LogME and linear-probe accuracy, and the time ratio (linear-probe
seconds / LogME seconds, per embedder and in total). LogME and the linear probe both run with one
BLAS thread (``curato.models.oof.BLAS_THREADS``); the kNN probe uses faiss with every core.

``--sklearn-probe`` also times the probe a user would write by hand: ``StandardScaler`` +
``LogisticRegression(max_iter=1000)`` (lbfgs, C=1) in 5 stratified folds (``cross_val_predict``), one BLAS
thread, and prints its accuracy and its time over LogME's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from curato.imageio import read_idx
from curato.transfer import rank_agreement, rank_embedders

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".bench" / "transfer"
FASHION = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_EMBEDDERS = "efficientnet-lite0-112,classic,pixels"
EMBED_CHUNK = 512


def subset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (sorted), images and labels of ``n`` random Fashion-MNIST training images."""
    labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz").astype(np.int64)
    picks = np.sort(np.random.default_rng(seed).choice(len(labels), n, replace=False))
    images = read_idx(FASHION / "train-images-idx3-ubyte.gz")[picks]
    return picks, images, labels[picks]


def embeddings(name: str, picks: np.ndarray, images: np.ndarray, seed: int) -> tuple[np.ndarray, float | None]:
    """Vectors of ``images`` from embedder ``name`` (cached) and the seconds it took (None when cached)."""
    path = CACHE / f"fmnist-train-n{len(picks)}-seed{seed}-{name.replace(':', '_')}.npz"
    if path.exists():
        stored = np.load(path)
        if np.array_equal(stored["picks"], picks):
            return stored["vectors"], None
    from curato.features.embedders import get_embedder

    embedder = get_embedder(name)
    started = time.perf_counter()
    vectors = np.concatenate([np.asarray(embedder.embed(list(images[start:start + EMBED_CHUNK])), np.float32)
                              for start in range(0, len(images), EMBED_CHUNK)])
    seconds = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, picks=picks, vectors=vectors)
    return vectors, seconds


def sklearn_probe(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[float, float]:
    """Accuracy and seconds of a plain scikit-learn 5-fold logistic-regression probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    started = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        predicted = cross_val_predict(model, features, labels, cv=folds)
    return float(np.mean(predicted == labels)), time.perf_counter() - started


def run_seed(names: list[str], n: int, seed: int, with_sklearn: bool = False) -> dict[str, Any]:
    """Embed (or load) and score every embedder on one random subset."""
    picks, images, labels = subset(n, seed)
    features, embed_seconds = {}, {}
    for name in names:
        features[name], embed_seconds[name] = embeddings(name, picks, images, seed)
    load = os.getloadavg()[0]
    entries = rank_embedders(features, labels)
    if with_sklearn:
        for entry in entries:
            accuracy, seconds = sklearn_probe(features[entry["name"]], labels, seed)
            entry["sklearn_probe"] = {"accuracy": accuracy, "seconds": seconds}
    return {"seed": seed, "n": n, "load_average": load, "embed_seconds": embed_seconds, "embedders": entries,
            "ranking": [entry["name"] for entry in entries], "agreement": rank_agreement(entries)}


def print_seed(result: dict[str, Any]) -> None:
    """The table of one seed and its verdict."""
    print(f"\nseed {result['seed']}: {result['n']} Fashion-MNIST train images, 10 classes "
          f"(load average {result['load_average']:.1f} before scoring)")
    print(f"{'embedder':<24}{'dim':>6}{'LogME':>9}{'kNN acc':>9}{'probe acc':>10}{'probe bal':>10} | "
          f"{'LogME s':>8}{'kNN s':>7}{'probe s':>8}{'ratio':>7}")
    for entry in result["embedders"]:
        seconds = entry["seconds"]
        print(f"{entry['name']:<24}{entry['dim']:>6}{entry['logme']:>9.4f}{entry['knn_accuracy']:>9.4f}"
              f"{entry['linear_probe_accuracy']:>10.4f}{entry['linear_probe_balanced_accuracy']:>10.4f} | "
              f"{seconds['logme']:>8.2f}{seconds['knn']:>7.2f}{seconds['linear_probe']:>8.2f}"
              f"{seconds['linear_probe'] / seconds['logme']:>6.1f}x")
    agreement = result["agreement"]
    knn_order = [e["name"] for e in sorted(result["embedders"], key=lambda e: (e["rank_knn"], e["name"]))]
    print(f"ranking by LogME:        {' > '.join(result['ranking'])}")
    print(f"ranking by linear probe: {' > '.join(agreement['linear_probe_ranking'])}")
    print(f"ranking by kNN:          {' > '.join(knn_order)}")
    print(f"LogME agrees with the linear probe: {'yes' if agreement['same_order'] else 'NO'} "
          f"(Kendall tau {agreement['kendall_tau']:.2f}); time ratio (probe s / LogME s, all embedders) "
          f"{agreement['time_ratio']:.1f}x")
    if all("sklearn_probe" in entry for entry in result["embedders"]):
        for entry in result["embedders"]:
            plain = entry["sklearn_probe"]
            ratio = plain["seconds"] / entry["seconds"]["logme"]
            print(f"  sklearn StandardScaler+LogisticRegression 5-fold, {entry['name']}: accuracy "
                  f"{plain['accuracy']:.4f}, {plain['seconds']:.1f} s = {ratio:.0f}x LogME's time")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and the verdict (and write JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="training images per subset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one random subset per seed")
    parser.add_argument("--embedders", default=DEFAULT_EMBEDDERS, help="comma-separated embedder names")
    parser.add_argument("--sklearn-probe", action="store_true",
                        help="also time a plain scikit-learn logistic-regression probe (slow: minutes)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.embedders.split(",") if name.strip()]
    results = []
    for seed in args.seeds:
        result = run_seed(names, args.n, seed, with_sklearn=args.sklearn_probe)
        print_seed(result)
        results.append(result)
    agreeing = sum(result["agreement"]["same_order"] for result in results)
    ratios = [result["agreement"]["time_ratio"] for result in results]
    print(f"\nLogME ranking == linear-probe ranking in {agreeing}/{len(results)} subsets "
          f"({len(names)} embedders each); time ratio {min(ratios):.1f}x-{max(ratios):.1f}x")
    sys.stdout.flush()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"embedders": names, "n": args.n, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
