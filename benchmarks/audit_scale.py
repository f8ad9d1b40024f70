# Run from the repository root (~25-40 min at both sizes, almost all of it cleanlab at 200k):
#   .venv/bin/python benchmarks/audit_scale.py --sizes 50000,200000            (add --json for JSON output)
# Needs cleanlab in its own virtualenv (not a curato dependency):
#   python3 -m venv .bench/cleanlab-venv
#   .bench/cleanlab-venv/bin/pip install "cleanlab[datalab]==2.9.0" -c constraints.txt
"""curato's label + near-duplicate + outlier checks against cleanlab Datalab at 50k and 200k samples.

Data (synthetic, 512-d, seed 0): 10 classes as anisotropic Gaussian clusters in a 32-d latent space,
mapped into 512-d by a random orthonormal map, on top of a shared positive mean vector (so cosine
similarities look like those of real CNN features: ~0.5 between unrelated samples) plus isotropic
noise in all 512 dimensions. Class centres are close enough that classes overlap (out-of-fold
accuracy ~0.95). Planted issues:

* near duplicates: 1% of the samples are copies of other (random, non-outlier) samples plus noise
  of 5-30% of the typical nearest-neighbour (Euclidean) distance; truth = every copy and every copied
  sample;
* outliers: 1% of the samples are far from all clusters: half in the latent space at 1.5-3x the
  class radius in directions orthogonal to every class centre, half off the class subspace (random
  512-d directions); truth = those;
* label noise: 5% of the other samples get a uniformly random different label; truth = those.
  Outliers carry random labels and are left out of the label scores for both tools.

Both tools get the same features and the same out-of-fold ``pred_probs``
(``curato.models.oof.out_of_fold_probabilities``, 5 folds; its time is reported separately).
Each tool runs in its own subprocess; wall time covers the checks only (not loading the arrays),
peak memory is the subprocess's maximum resident set size (``os.wait4`` rusage), loading included.

* curato: ``find_label_issues(labels, pred_probs).is_issue``; one kNN graph (k=10,
  ``curato.neighbors.knn``, IVF above 10k rows) shared by ``duplicate_findings`` (flagged
  ``near_duplicates``) and ``outlier_findings`` (flagged ``outliers``).
* cleanlab 2.9.0: ``Datalab(data={"label": labels}, label_name="label").find_issues(features=X,
  pred_probs=P, issue_types={"label": {}, "near_duplicate": {}, "outlier": {}})``, defaults, and its
  ``is_label_issue`` / ``is_near_duplicate_issue`` / ``is_outlier_issue`` columns.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench" / "audit_scale"
CLEANLAB_PYTHON = ROOT / ".bench" / "cleanlab-venv" / "bin" / "python"
DIM, LATENT, CLASSES = 512, 32, 10
DUPLICATE_SHARE, OUTLIER_SHARE, NOISE_SHARE = 0.01, 0.01, 0.05
CENTRE_SCALE, NOISE_SCALE = 1.0, 0.35


def make_dataset(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The synthetic embeddings, given and true labels, and the planted truth masks (see the docstring)."""
    rng = np.random.default_rng(seed)
    basis, mean, centres, spreads, noise_sd = class_geometry(rng, DIM)

    n_out, n_dup = int(n * OUTLIER_SHARE), int(n * DUPLICATE_SHARE)
    n_base = n - n_out - n_dup
    true_labels = rng.integers(CLASSES, size=n_base)
    latent = centres[true_labels] + rng.normal(size=(n_base, LATENT)) * spreads[true_labels]
    base = mean + (latent @ basis).astype(np.float32)
    base += rng.normal(scale=noise_sd, size=(n_base, DIM)).astype(np.float32)

    # Outliers: half far out in the latent space in directions away from every class centre (the part of a
    # random direction orthogonal to the centres' span), half off the class subspace altogether.
    outliers = outlier_rows(rng, n_out, centres=centres, basis=basis, mean=mean, noise_sd=noise_sd,
                            typical=base[:1000])

    # Near duplicates: noise of 1-10% of the typical nearest-neighbour distance (measured on a sample).
    sources = rng.choice(n_base, size=n_dup, replace=False)
    typical_nn = _typical_nn_distance(base, rng)
    step = rng.uniform(0.05, 0.30, size=(n_dup, 1)) * typical_nn / np.sqrt(DIM)
    copies = base[sources] + (rng.normal(size=(n_dup, DIM)) * step).astype(np.float32)

    features = np.concatenate([base, copies, outliers]).astype(np.float32)
    truth_labels, labels, is_noisy, is_duplicate, is_outlier = planted_truth(rng, true_labels, sources, n_out)
    order = rng.permutation(n)  # no tool may rely on the planted rows being at the end
    return {"features": features[order], "labels": labels[order].astype(np.int64),
            "true_labels": truth_labels[order], "is_noisy": is_noisy[order],
            "is_duplicate": is_duplicate[order], "is_outlier": is_outlier[order]}


def class_geometry(rng: np.random.Generator, dim: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """The recipe's space: (basis LATENT x dim with orthonormal rows, mean, class centres, per-class spreads in the
    latent space, noise standard deviation per embedding dimension)."""
    basis, _ = np.linalg.qr(rng.normal(size=(dim, LATENT)))
    basis = basis.T.astype(np.float32)
    mean = np.abs(rng.normal(size=dim)).astype(np.float32)
    mean *= 7.0 / np.linalg.norm(mean)
    centres = rng.normal(size=(CLASSES, LATENT)) * CENTRE_SCALE / np.sqrt(2)
    spreads = rng.uniform(0.6, 1.4, size=(CLASSES, LATENT))
    return basis, mean, centres, spreads, NOISE_SCALE * np.sqrt(LATENT / dim)


def planted_truth(rng: np.random.Generator, true_labels: np.ndarray, sources: np.ndarray, n_out: int
                  ) -> tuple[np.ndarray, ...]:
    """Labels and truth masks of the rows base + copies (of ``sources``) + ``n_out`` outliers, in that order:
    (true labels, given labels with NOISE_SHARE of the non-outliers flipped, is_noisy, is_duplicate, is_outlier)."""
    n_base, n_dup = len(true_labels), len(sources)
    n = n_base + n_dup + n_out
    truth_labels = np.concatenate([true_labels, true_labels[sources], rng.integers(CLASSES, size=n_out)])
    is_outlier = np.zeros(n, dtype=bool)
    is_outlier[n_base + n_dup:] = True
    is_duplicate = np.zeros(n, dtype=bool)
    is_duplicate[sources] = True
    is_duplicate[n_base:n_base + n_dup] = True
    labels = truth_labels.copy()
    candidates = np.flatnonzero(~is_outlier)
    noisy = rng.choice(candidates, size=int(NOISE_SHARE * candidates.size), replace=False)
    labels[noisy] = (labels[noisy] + rng.integers(1, CLASSES, size=noisy.size)) % CLASSES
    is_noisy = np.zeros(n, dtype=bool)
    is_noisy[noisy] = True
    return truth_labels, labels, is_noisy, is_duplicate, is_outlier


def outlier_rows(rng: np.random.Generator, n_out: int, *, centres: np.ndarray, basis: np.ndarray, mean: np.ndarray,
                 noise_sd: float, typical: np.ndarray) -> np.ndarray:
    """(n_out, dim) float32 outliers: half far out in the latent space away from every class centre, half off
    the class subspace at the distance from the mean that ``typical`` rows have."""
    dim = basis.shape[1]
    radius = np.linalg.norm(centres, axis=1).mean() + np.sqrt(LATENT)
    half = n_out // 2
    centre_basis, _ = np.linalg.qr(centres.T)
    direction = rng.normal(size=(half, LATENT))
    direction -= (direction @ centre_basis) @ centre_basis.T
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    far_latent = direction * radius * rng.uniform(1.5, 3.0, size=(half, 1))
    far = mean + (far_latent @ basis).astype(np.float32) + rng.normal(scale=noise_sd, size=(half, dim))
    off = rng.normal(size=(n_out - half, dim))
    off *= np.linalg.norm(typical - mean, axis=1).mean() / np.linalg.norm(off, axis=1, keepdims=True)
    return np.concatenate([far, mean + off]).astype(np.float32)


def _typical_nn_distance(vectors: np.ndarray, rng: np.random.Generator, sample: int = 2000) -> float:
    """Median Euclidean nearest-neighbour distance of a sample within the first 20,000 rows (a scale only)."""
    pool = vectors[:20_000]
    pick = pool[rng.choice(len(pool), size=min(sample, len(pool)), replace=False)]
    squared = (pick**2).sum(1)[:, None] + (pool**2).sum(1)[None, :] - 2 * pick @ pool.T
    squared[squared < 1e-6] = np.inf  # itself
    return float(np.median(np.sqrt(np.maximum(squared.min(axis=1), 0))) * np.sqrt(len(pool) / len(vectors)))


def scores(flags: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Precision, recall and F1 of boolean flags against the truth (within ``mask``)."""
    if mask is not None:
        flags, truth = flags[mask], truth[mask]
    tp = int((flags & truth).sum())
    precision = tp / max(int(flags.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "flagged": int(flags.sum())}


# ---------------------------------------------------------------- workers (run in their own processes)

def worker_oof(data_path: Path, out_path: Path) -> dict[str, Any]:
    from curato.models.oof import out_of_fold_probabilities

    data = np.load(data_path)
    start = time.perf_counter()
    probs = out_of_fold_probabilities(data["features"], data["labels"], n_folds=5, seed=0)
    elapsed = time.perf_counter() - start
    np.save(out_path, probs.astype(np.float32))
    accuracy = float((probs.argmax(1) == data["true_labels"]).mean())
    return {"seconds": elapsed, "accuracy_vs_true_labels": accuracy}


def worker_curato(data_path: Path, probs_path: Path, out_path: Path) -> dict[str, Any]:
    from curato.checks.duplicates import duplicate_findings
    from curato.checks.label_issues import find_label_issues
    from curato.checks.outliers import outlier_findings
    from curato.neighbors import knn

    data = np.load(data_path)
    features, labels = data["features"], data["labels"]
    probs = np.load(probs_path)
    ids = np.array([f"s{i}" for i in range(len(labels))], dtype=object)
    times = {}
    start = time.perf_counter()
    label_flags = find_label_issues(labels, probs).is_issue
    times["label"] = time.perf_counter() - start
    mark = time.perf_counter()
    graph = knn(features, 10)
    times["knn"] = time.perf_counter() - mark
    mark = time.perf_counter()
    duplicates = {f.check: f for f in duplicate_findings(ids, embeddings=features, labels=labels.astype(object),
                                                         neighbours=graph)}
    times["near_duplicate"] = time.perf_counter() - mark
    mark = time.perf_counter()
    outliers = {f.check: f for f in outlier_findings(ids, features, labels.astype(object), neighbours=graph)}
    times["outlier"] = time.perf_counter() - mark
    elapsed = time.perf_counter() - start
    np.savez(out_path, label=label_flags, near_duplicate=duplicates["near_duplicates"].flagged,
             outlier=outliers["outliers"].flagged)
    return {"seconds": elapsed, "parts": {k: round(v, 2) for k, v in times.items()}}


def worker_cleanlab(data_path: Path, probs_path: Path, out_path: Path) -> dict[str, Any]:
    from cleanlab import Datalab

    data = np.load(data_path)
    probs = np.load(probs_path)
    start = time.perf_counter()
    lab = Datalab(data={"label": data["labels"]}, label_name="label", verbosity=0)
    lab.find_issues(features=data["features"], pred_probs=probs,
                    issue_types={"label": {}, "near_duplicate": {}, "outlier": {}})
    elapsed = time.perf_counter() - start
    np.savez(out_path, label=lab.get_issues("label")["is_label_issue"].to_numpy(),
             near_duplicate=lab.get_issues("near_duplicate")["is_near_duplicate_issue"].to_numpy(),
             outlier=lab.get_issues("outlier")["is_outlier_issue"].to_numpy())
    return {"seconds": elapsed}


WORKERS = {"oof": worker_oof, "curato": worker_curato, "cleanlab": worker_cleanlab}


def run_worker(python: Path, name: str, *paths: Path) -> dict[str, Any]:
    """Run one worker in a fresh process; its own peak RSS comes from os.wait4."""
    info_path = CACHE / f"{name}-info.json"
    command = [str(python), str(Path(__file__).resolve()), "--worker", name, *map(str, paths), str(info_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")} if name != "cleanlab" else dict(os.environ)
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"worker {name} failed with exit status {os.waitstatus_to_exitcode(status)}")
    info = json.loads(info_path.read_text())
    info["peak_rss_gb"] = round(usage.ru_maxrss / 1024**2, 3)  # ru_maxrss is in KiB on Linux
    info["seconds"] = round(info["seconds"], 2)
    return info


def run_size(n: int) -> dict[str, Any]:
    """Generate (cached), compute pred_probs, run both tools, score them."""
    CACHE.mkdir(parents=True, exist_ok=True)
    data_path = CACHE / f"data-{n}.npz"
    if not data_path.exists():
        np.savez(data_path, **make_dataset(n))
    data = np.load(data_path)
    probs_path = CACHE / f"pred_probs-{n}.npy"
    oof = run_worker(Path(sys.executable), "oof", data_path, probs_path)
    results: dict[str, Any] = {"n": n, "oof": oof}
    usable = ~data["is_outlier"]
    for tool, python in (("curato", Path(sys.executable)), ("cleanlab", CLEANLAB_PYTHON)):
        out_path = CACHE / f"{tool}-{n}.npz"
        info = run_worker(python, tool, data_path, probs_path, out_path)
        flags = np.load(out_path)
        info["label"] = scores(flags["label"].astype(bool), data["is_noisy"], usable)
        info["near_duplicate"] = scores(flags["near_duplicate"].astype(bool), data["is_duplicate"])
        info["outlier"] = scores(flags["outlier"].astype(bool), data["is_outlier"])
        results[tool] = info
        print(f"[n={n}] {tool}: {info['seconds']} s, {info['peak_rss_gb']} GB", file=sys.stderr, flush=True)
    results["speedup"] = round(results["cleanlab"]["seconds"] / results["curato"]["seconds"], 1)
    return results


def print_table(runs: list[dict[str, Any]]) -> None:
    print(f"{'N':>7} {'tool':9} {'time s':>8} {'peak GB':>8} {'label F1 (P/R)':>20} {'near-dup F1 (P/R)':>20} "
          f"{'outlier F1 (P/R)':>20}")
    for run in runs:
        for tool in ("curato", "cleanlab"):
            r = run[tool]
            cells = [f"{r[k]['f1']:.3f} ({r[k]['precision']:.2f}/{r[k]['recall']:.2f})"
                     for k in ("label", "near_duplicate", "outlier")]
            print(f"{run['n']:>7} {tool:9} {r['seconds']:>8.1f} {r['peak_rss_gb']:>8.2f} "
                  + " ".join(f"{c:>20}" for c in cells))
        print(f"{'':>7} speed-up {run['speedup']}x; shared out-of-fold pred_probs: {run['oof']['seconds']} s, "
              f"{run['oof']['peak_rss_gb']} GB (accuracy vs true labels {run['oof']['accuracy_vs_true_labels']:.3f}); "
              f"curato parts {run['curato']['parts']}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        name, *paths, info_path = sys.argv[2:]
        info = WORKERS[name](*map(Path, paths))
        Path(info_path).write_text(json.dumps(info))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50000,200000", help="comma-separated sample counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    if not CLEANLAB_PYTHON.exists():
        raise SystemExit(f"{CLEANLAB_PYTHON} is missing: create the cleanlab virtualenv (see the top of this file)")
    runs = [run_size(int(size)) for size in args.sizes.split(",")]
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"runs": runs, "load_average": load}, indent=2))
    else:
        print_table(runs)
        print(f"load average at the end (other processes share the 2 cores): {load}")


if __name__ == "__main__":
    main()
