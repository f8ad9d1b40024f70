# Run from the repository root (start small; 1M takes ~20-40 min on 2 shared cores, ~3 GB on disk in .bench/scale):
#   .venv/bin/python benchmarks/scale.py --sizes 10000,100000                  (add --json for JSON output)
#   .venv/bin/python benchmarks/scale.py --sizes 1000000 --skip-recall
"""Every embedding check of ``curato.find_issues`` at 10k, 100k and 1M rows: wall time and peak memory each.

Data (synthetic, ``--dim`` 256 by default, seed 0): the recipe of ``benchmarks/audit_scale.py`` (10 overlapping
anisotropic classes in a 32-d latent space mapped into ``dim`` dimensions on a shared positive mean, isotropic
noise; 1% near copies of random samples, 1% outliers, 5% of the other labels flipped), but generated in
blocks of 50k rows straight into a float32 ``.npy`` file of L2-normalised rows (what embedders store), so
1M x 256 needs ~1 GB and no float64 copy of the whole. The checks read that file memory-mapped.

Stages, each in a fresh process (wall time of the work itself; CPU seconds and peak RSS of the process from
``os.wait4``, loading included: on a shared machine the CPU time is the steadier measure):

* ``oof``: ``out_of_fold_probabilities`` (5 folds) -> the ``pred_probs`` every label-aware check reads;
* ``knn``: the shared k=10 graph (``curato.neighbors.knn``: IVF above 10k rows);
* one stage per check runnable on embeddings + labels + pred_probs (``imbalance``, ``label_issues``,
  ``duplicates``, ``outliers``, ``diversity``; ``unreadable`` is trivial), each building its own graph as an
  audit of that check alone would; ``shortcuts``, ``image_quality`` and ``masks`` need image properties or
  masks and are not part of this benchmark;
* ``audit``: ``find_issues`` with every one of those checks in one process (the graph built once): the number
  that answers "how long does an audit of N embedded samples take, in how much memory".

The per-image stages (``--image-sizes``): synthetic tiny images (32x32 RGB PNGs in 10 class folders: a class
colour, a shape at a random place, pixel noise; 1% exact copies of other files), then ``ingest`` (listing,
reading, decoding, properties, hashes, thumbnails into a fresh workspace) and ``embed`` (the default image
embedder) each in its own process, with items per wall second and per CPU second of the process.

Scores per N: F1 of the planted label noise (``label_issues``), copies (``near_duplicates``) and outliers
(``outliers``) from the full audit, and the growth exponent ``log(t1/t0) / log(n1/n0)`` of each stage's time
between consecutive sizes. ``--recall`` (on by default at 100k): the IVF graph's recall against exact faiss
search (``IndexFlatIP``) on the first 100k rows: recall@10 of all neighbours, and recall of the near-duplicate
pairs (exact-graph pairs within the ``embedding_alone`` cut, cosine distance <= 0.2 x the median nearest-
neighbour distance, plus every planted copy pair).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_scale import CLASSES, LATENT, class_geometry, outlier_rows, planted_truth, scores  # the recipe

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench" / "scale"
DUPLICATE_SHARE, OUTLIER_SHARE, NOISE_SHARE = 0.01, 0.01, 0.05
BLOCK = 50_000
CHECKS = ("imbalance", "label_issues", "duplicates", "outliers", "diversity")
RECALL_SAMPLE = 100_000


def data_dir(n: int, dim: int) -> Path:
    return CACHE / f"n{n}-d{dim}"


def make_dataset(n: int, dim: int, seed: int = 0) -> Path:
    """Write features.npy (float32, unit rows) and meta.npz (labels and planted truth) for ``n`` rows."""
    folder = data_dir(n, dim)
    if (folder / "meta.npz").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    basis, mean, centres, spreads, noise_sd = class_geometry(rng, dim)
    n_out, n_dup = int(n * OUTLIER_SHARE), int(n * DUPLICATE_SHARE)
    n_base = n - n_out - n_dup

    # Rows are written in a random order (no check may rely on the planted rows being at the end): row i of the
    # generated sequence goes to position order[i].
    order = rng.permutation(n)
    features = np.lib.format.open_memmap(folder / "features.tmp.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    true_labels = rng.integers(CLASSES, size=n_base)

    def base_rows(start: int, stop: int, block_rng: np.random.Generator) -> np.ndarray:
        codes = true_labels[start:stop]
        latent = centres[codes] + block_rng.normal(size=(stop - start, LATENT)) * spreads[codes]
        rows = mean + (latent @ basis).astype(np.float32)
        rows += block_rng.standard_normal(size=(stop - start, dim), dtype=np.float32) * np.float32(noise_sd)
        return rows

    # Base rows are generated twice where copied (once for the file, once for the copies), so the RNG of each
    # block is seeded by its position: the same rows come back without holding them all.
    def block_rng(start: int) -> np.random.Generator:
        return np.random.default_rng([seed, start])

    sources = np.sort(rng.choice(n_base, size=n_dup, replace=False))
    typical_nn = None
    copies = np.empty((n_dup, dim), dtype=np.float32)
    for start in range(0, n_base, BLOCK):
        stop = min(start + BLOCK, n_base)
        rows = base_rows(start, stop, block_rng(start))
        if typical_nn is None:
            typical_nn = _typical_nn_distance(rows, rng) * math.sqrt(min(len(rows), 20_000) / n)
        inside = sources[(sources >= start) & (sources < stop)]
        copies[np.searchsorted(sources, inside)] = rows[inside - start]
        features[order[start:stop]] = _unit(rows)
    step = rng.uniform(0.05, 0.30, size=(n_dup, 1)) * typical_nn / np.sqrt(dim)
    copies += (rng.normal(size=(n_dup, dim)) * step).astype(np.float32)
    features[order[n_base:n_base + n_dup]] = _unit(copies)

    typical = base_rows(0, min(1000, n_base), block_rng(0))
    features[order[n_base + n_dup:]] = _unit(outlier_rows(rng, n_out, centres=centres, basis=basis, mean=mean,
                                                          noise_sd=noise_sd, typical=typical))
    features.flush()
    del features
    (folder / "features.tmp.npy").rename(folder / "features.npy")

    truth_labels, labels, is_noisy, is_duplicate, is_outlier = planted_truth(rng, true_labels, sources, n_out)

    def by_position(values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        out[order] = values
        return out

    copy_pairs = np.stack([order[n_base:n_base + n_dup], order[sources]], axis=1)
    np.savez(folder / "meta.npz", labels=by_position(labels).astype(np.int64),
             true_labels=by_position(truth_labels), is_noisy=by_position(is_noisy),
             is_duplicate=by_position(is_duplicate), is_outlier=by_position(is_outlier), copy_pairs=copy_pairs)
    return folder


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


IMAGE_SIDE = 32


def make_images(n: int, seed: int = 0) -> Path:
    """``n`` tiny PNGs under ``.bench/scale/images-n{n}/images/<class>/``; 1% are exact copies of other files."""
    from PIL import Image

    folder = CACHE / f"images-n{n}"
    root = folder / "images"
    if (folder / "done").exists():
        return folder
    rng = np.random.default_rng(seed)
    labels = rng.integers(CLASSES, size=n)
    colours = rng.integers(40, 216, size=(CLASSES, 3))
    copies = rng.random(n) < 0.01
    for label in range(CLASSES):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:IMAGE_SIDE, :IMAGE_SIDE]
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        for index in range(start, stop):
            path = root / str(int(labels[index])) / f"{index:08d}.png"
            if copies[index] and index > 0:
                source = int(rng.integers(index))
                (path.parent / f"{index:08d}.png").write_bytes(
                    (root / str(int(labels[source])) / f"{source:08d}.png").read_bytes())
                continue
            cy, cx, radius = rng.integers(6, 26), rng.integers(6, 26), rng.integers(3, 9)
            pixels = np.full((IMAGE_SIDE, IMAGE_SIDE, 3), 128, dtype=np.int16)
            pixels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = colours[labels[index]]
            pixels += rng.integers(-12, 13, size=pixels.shape, dtype=np.int16)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        print(f"[images-n{n}] wrote {stop:,} images", file=sys.stderr, flush=True)
    (folder / "done").write_text(str(n))
    return folder


def worker_ingest(folder: Path) -> dict[str, Any]:
    import shutil

    from curato.api import Workspace

    shutil.rmtree(folder / "ws", ignore_errors=True)
    workspace = Workspace.create(folder / "ws")
    start = time.perf_counter()
    summary = workspace.ingest(folder / "images")
    return {"seconds": time.perf_counter() - start, "items": summary.samples, "unreadable": summary.unreadable}


def worker_embed(folder: Path) -> dict[str, Any]:
    from curato.api import Workspace

    workspace = Workspace.open(folder / "ws")
    start = time.perf_counter()
    summary = workspace.embed()
    return {"seconds": time.perf_counter() - start, "items": summary.total, "embedder": summary.embedder}


def run_images(n: int, stages: tuple[str, ...] = ("ingest", "embed")) -> dict[str, Any]:
    start = time.perf_counter()
    folder = make_images(n)
    result: dict[str, Any] = {"n": n, "generate_seconds": round(time.perf_counter() - start, 1)}
    for stage in stages:
        info = result[stage] = run_worker(stage, folder)
        if "failed" not in info:
            info["items_per_s"] = round(info["items"] / info["seconds"], 1)
            info["items_per_cpu_s"] = round(info["items"] / info["cpu_seconds"], 1)
    return result


def _typical_nn_distance(vectors: np.ndarray, rng: np.random.Generator, sample: int = 2000) -> float:
    """Median Euclidean nearest-neighbour distance of a sample within the first 20,000 rows (a scale only)."""
    pool = vectors[:20_000]
    pick = pool[rng.choice(len(pool), size=min(sample, len(pool)), replace=False)]
    squared = (pick**2).sum(1)[:, None] + (pool**2).sum(1)[None, :] - 2 * pick @ pool.T
    squared[squared < 1e-6] = np.inf  # itself
    return float(np.median(np.sqrt(np.maximum(squared.min(axis=1), 0))))


# ---------------------------------------------------------------- workers (run in their own processes)

def _load(folder: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return np.load(folder / "features.npy", mmap_mode="r"), dict(np.load(folder / "meta.npz"))


def worker_oof(folder: Path) -> dict[str, Any]:
    from curato.models.oof import out_of_fold_probabilities

    features, meta = _load(folder)
    start = time.perf_counter()
    probs = out_of_fold_probabilities(features, meta["labels"], n_folds=5, seed=0)
    elapsed = time.perf_counter() - start
    np.save(folder / "pred_probs.npy", probs.astype(np.float32))
    return {"seconds": elapsed, "accuracy_vs_true_labels": float((probs.argmax(1) == meta["true_labels"]).mean())}


def worker_knn(folder: Path) -> dict[str, Any]:
    from curato.neighbors import knn

    features, _ = _load(folder)
    start = time.perf_counter()
    knn(features, 10)
    return {"seconds": time.perf_counter() - start}


def _audit(folder: Path, checks: list[str]) -> dict[str, Any]:
    from curato import find_issues
    from curato.checks.registry import registered_checks

    registered_checks()  # imports and entry points load before the clock starts
    features, meta = _load(folder)
    probs = np.load(folder / "pred_probs.npy")
    start = time.perf_counter()
    result = find_issues(labels=meta["labels"], features=features, pred_probs=probs,
                         class_names=[str(c) for c in range(CLASSES)], checks=checks)
    elapsed = time.perf_counter() - start
    flags = {f.check: f.flagged for f in result.findings}
    info: dict[str, Any] = {"seconds": elapsed, "checks": {k: round(v, 2) for k, v in result.timings.items()}}
    usable = ~meta["is_outlier"]
    for finding, truth, mask in (("label_issues", "is_noisy", usable), ("near_duplicates", "is_duplicate", None),
                                 ("outliers", "is_outlier", None)):
        if finding in flags:
            info[finding] = scores(flags[finding], meta[truth], mask)
    return info


def worker_check(folder: Path, check: str) -> dict[str, Any]:
    return _audit(folder, [check])


def worker_audit(folder: Path) -> dict[str, Any]:
    return _audit(folder, list(CHECKS))


def worker_recall(folder: Path) -> dict[str, Any]:
    """The IVF graph against exact search on the first RECALL_SAMPLE rows (see the docstring)."""
    from curato.checks.duplicates import DuplicateParams
    from curato.neighbors import knn

    features, meta = _load(folder)
    m = min(RECALL_SAMPLE, len(features))
    sample = np.ascontiguousarray(features[:m])
    start = time.perf_counter()
    exact_sims, exact_idx = knn(sample, 10, exact_limit=m)
    exact_seconds = time.perf_counter() - start
    start = time.perf_counter()
    _, ivf_idx = knn(sample, 10)
    ivf_seconds = time.perf_counter() - start
    found = np.array([len(np.intersect1d(a, b)) for a, b in zip(exact_idx, ivf_idx, strict=True)])
    distance = 1.0 - exact_sims.astype(np.float64)
    scale = float(np.median(distance[:, 0][distance[:, 0] > DuplicateParams().zero_distance]))
    near = distance <= DuplicateParams().alone_ratio * scale
    rows, cols = np.nonzero(near)
    pairs = {(min(a, b), max(a, b)) for a, b in zip(rows.tolist(), exact_idx[rows, cols].tolist(), strict=True)}
    planted = meta["copy_pairs"]
    planted = planted[(planted < m).all(axis=1)]
    pairs |= {(min(a, b), max(a, b)) for a, b in planted.tolist()}
    graph = {(min(a, b), max(a, b)) for a in range(m) for b in ivf_idx[a].tolist()}
    planted_set = {(min(a, b), max(a, b)) for a, b in planted.tolist()}
    return {"seconds": exact_seconds + ivf_seconds, "rows": m, "exact_seconds": round(exact_seconds, 2),
            "ivf_seconds": round(ivf_seconds, 2), "recall_at_10": round(float(found.mean() / 10), 4),
            "near_pairs": len(pairs), "near_pair_recall": round(len(pairs & graph) / max(len(pairs), 1), 4),
            "planted_pairs": len(planted_set),
            "planted_pair_recall": round(len(planted_set & graph) / max(len(planted_set), 1), 4)}


WORKERS = {"oof": worker_oof, "knn": worker_knn, "check": worker_check, "audit": worker_audit,
           "recall": worker_recall, "ingest": worker_ingest, "embed": worker_embed}


def run_worker(name: str, folder: Path, *extra: str) -> dict[str, Any]:
    """Run one worker in a fresh process; its peak RSS comes from os.wait4."""
    label = "-".join([name, *extra])
    info_path = folder / f"{label}-info.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, str(folder), *extra, str(info_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        return {"failed": f"exit status {code}", "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 3)}
    info = json.loads(info_path.read_text())
    info["peak_rss_gb"] = round(usage.ru_maxrss / 1024**2, 3)  # ru_maxrss is in KiB on Linux
    info["seconds"] = round(info["seconds"], 2)
    # CPU seconds of the whole process (loading included): on a shared machine wall time depends on the others'
    # load, CPU time much less so.
    info["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 1)
    info_path.write_text(json.dumps(info))  # what --report reads back
    print(f"[{folder.name}] {label}: {info['seconds']} s, {info['cpu_seconds']} CPU s, {info['peak_rss_gb']} GB",
          file=sys.stderr, flush=True)
    return info


def recorded(n: int, dim: int) -> dict[str, Any]:
    """The stages measured earlier at this size (their info files), as run_size returns them."""
    folder = data_dir(n, dim)
    result: dict[str, Any] = {"n": n, "dim": dim}
    for stage in ("oof", "knn", "audit", "recall"):
        if (folder / f"{stage}-info.json").exists():
            result[stage] = json.loads((folder / f"{stage}-info.json").read_text())
    for check in CHECKS:
        if (folder / f"check-{check}-info.json").exists():
            result[check] = json.loads((folder / f"check-{check}-info.json").read_text())
    return result


def run_size(n: int, dim: int, *, stages: list[str], recall: bool) -> dict[str, Any]:
    start = time.perf_counter()
    folder = make_dataset(n, dim)
    result: dict[str, Any] = {"n": n, "dim": dim, "generate_seconds": round(time.perf_counter() - start, 1)}
    if not (folder / "pred_probs.npy").exists() or "oof" in stages:
        result["oof"] = run_worker("oof", folder)
    if "knn" in stages:
        result["knn"] = run_worker("knn", folder)
    for check in CHECKS:
        if check in stages:
            result[check] = run_worker("check", folder, check)
    if "audit" in stages:
        result["audit"] = run_worker("audit", folder)
    if recall and n >= RECALL_SAMPLE:
        result["recall"] = run_worker("recall", folder)
    return result


def growth(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage, the exponent of time vs N between consecutive sizes."""
    exponents: dict[str, dict[str, float]] = {}
    for small, large in itertools.pairwise(runs):
        key = f"{small['n']}->{large['n']}"
        for stage in ("oof", "knn", *CHECKS, "audit", "ingest", "embed"):
            for measure, suffix in (("seconds", ""), ("cpu_seconds", " cpu")):
                a, b = small.get(stage, {}).get(measure), large.get(stage, {}).get(measure)
                if a and b:
                    exponent = math.log(b / a) / math.log(large["n"] / small["n"])
                    exponents.setdefault(stage, {})[key + suffix] = round(exponent, 2)
    return exponents


def print_image_table(runs: list[dict[str, Any]], exponents: dict[str, dict[str, float]]) -> None:
    print(f"{'stage':8}" + "".join(f"{run['n']:>44,}" for run in runs) + "   growth exponent (wall, cpu)")
    for stage in ("ingest", "embed"):
        cells = []
        for run in runs:
            info = run.get(stage)
            if info is None:
                cells.append("")
                continue
            cells.append(info.get("failed") or f"{info['seconds']:.0f} s/{info['cpu_seconds']:.0f} cpu "
                         f"{info['peak_rss_gb']:.2f} GB {info['items_per_cpu_s']:.0f}/cpu-s")
        print(f"{stage:8}" + "".join(f"{c:>44}" for c in cells) + "   " +
              ", ".join(f"{k} {v}" for k, v in exponents.get(stage, {}).items()))


def print_table(runs: list[dict[str, Any]], exponents: dict[str, dict[str, float]]) -> None:
    stages = ("oof", "knn", *CHECKS, "audit")
    print(f"{'stage':14}" + "".join(f"{run['n']:>26,}" for run in runs) + "   growth exponent (wall, cpu)")
    for stage in stages:
        cells = []
        for run in runs:
            info = run.get(stage)
            cells.append("" if info is None else info.get("failed") or
                         f"{info['seconds']:.0f} s/{info.get('cpu_seconds', 0):.0f} cpu {info['peak_rss_gb']:.2f} GB")
        print(f"{stage:14}" + "".join(f"{c:>26}" for c in cells) + "   " +
              ", ".join(f"{k} {v}" for k, v in exponents.get(stage, {}).items()))
    for finding in ("label_issues", "near_duplicates", "outliers"):
        cells = []
        for run in runs:
            s = run.get("audit", {}).get(finding)
            cells.append("" if s is None else f"F1 {s['f1']:.3f} ({s['precision']:.2f}/{s['recall']:.2f})")
        print(f"{finding:14}" + "".join(f"{c:>26}" for c in cells))
    for run in runs:
        if "recall" in run:
            print(f"IVF vs exact on {run['recall']['rows']:,} rows of N={run['n']:,}: {run['recall']}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        name, folder, *extra, info_path = sys.argv[2:]
        info = WORKERS[name](Path(folder), *extra)
        Path(info_path).write_text(json.dumps(info))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated sample counts ('' for none)")
    parser.add_argument("--image-sizes", default="", help="comma-separated image counts for ingest and embed")
    parser.add_argument("--image-stages", default="ingest,embed", help="ingest, embed or both (embed needs ingest)")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension")
    parser.add_argument("--stages", default=",".join(("oof", "knn", *CHECKS, "audit")),
                        help="which stages to run (oof, knn, the check names, audit)")
    parser.add_argument("--skip-recall", action="store_true", help="skip IVF-vs-exact recall on 100k rows")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--report", action="store_true", help="run nothing: print what earlier runs recorded")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    sizes = [int(size) for size in args.sizes.split(",") if size]
    image_sizes = [int(size) for size in args.image_sizes.split(",") if size]
    if args.report:
        runs = [recorded(size, args.dim) for size in sizes]
    else:
        runs = [run_size(size, args.dim, stages=stages, recall=not args.skip_recall) for size in sizes]
    image_stages = tuple(s.strip() for s in args.image_stages.split(",") if s.strip())
    image_runs = [run_images(size, image_stages) for size in image_sizes]
    exponents = growth(runs)
    image_exponents = growth(image_runs)
    load = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    if args.json:
        print(json.dumps({"runs": runs, "growth": exponents, "image_runs": image_runs,
                          "image_growth": image_exponents, "load_average": load, "commit": commit}, indent=2))
    else:
        if runs:
            print_table(runs, exponents)
        if image_runs:
            print_image_table(image_runs, image_exponents)
        print(f"commit {commit}; load average at the end (other processes share the 2 cores): {load}")


if __name__ == "__main__":
    main()
