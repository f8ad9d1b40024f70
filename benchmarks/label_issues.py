# Run from the repository root. Once: a separate virtualenv for cleanlab (no torch, no change to .venv):
#   .venv/bin/python -m venv .bench/cleanlab-venv && \
#       .bench/cleanlab-venv/bin/pip install cleanlab==2.9.0 -c constraints.txt
# Then (embeds the 10k images on first use, ~40 s; OOF probabilities are cached under .bench/label_issues/):
#   .venv/bin/python benchmarks/label_issues.py --seeds 0 1 --json .bench/label_issues.json
# Held-out checks of the method (other images, other seeds):
#   .venv/bin/python benchmarks/label_issues.py --subset 1 --seeds 2 3
#   .venv/bin/python benchmarks/label_issues.py --split t10k --seeds 0 1
"""Label-error detection F1 of curato's ``find_label_issues`` against cleanlab 2.9.0 and "argmax != label".

Data: 10,000 Fashion-MNIST training images (``--subset`` picks which block of 10k of the 60k), embedded
with ``efficientnet-lite0-112`` (cached under ``.bench/label_issues/``). Noise is injected into the true
labels at 5%, 20%, 40% and 60% of the samples, two ways:

* uniform: a random ``rate`` share of all samples gets a label drawn uniformly from the other 9 classes;
* class-conditional: in every class a random ``rate`` share of its samples is flipped to one of that
  class's fixed "confusable" classes (``CONFUSABLE``: the one or two classes an EfficientNet-Lite0 linear
  probe confuses it with most on clean data, e.g. Shirt -> T-shirt/top or Coat; with two targets each
  flipped sample picks one of them at random).

For every (noise, rate, seed) the out-of-fold probabilities come from
``curato.models.oof.out_of_fold_probabilities`` (5 folds) on the noisy labels, and the SAME labels and
probabilities go to: curato ``find_label_issues`` (method="auto"), cleanlab's
``cleanlab.filter.find_label_issues(labels, pred_probs)`` (defaults: prune_by_noise_rate; run by the python
of ``--cleanlab-python`` on an .npz, so cleanlab and its dependencies stay out of curato's virtualenv;
its other ``filter_by`` variants are reported too, as "cleanlab best" = the best of them per cell, which
a user could only pick with the truth in hand) and argmax != label. A flagged sample is a true
positive when its noisy label differs from the original label.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from curato.checks.label_issues import find_label_issues
from curato.imageio import read_idx
from curato.models.oof import OOF_SETTINGS_VERSION, out_of_fold_probabilities

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".bench" / "label_issues"
FASHION = Path("/usr/share/datasets/fashion-mnist")
EMBEDDER = "efficientnet-lite0-112"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Each class's most confused classes in the OOF predictions of a linear probe on clean labels (10k
# training images; counts of the two largest off-diagonal cells per row), fixed here.
CONFUSABLE = {0: (6, 3), 1: (3,), 2: (4, 6), 3: (0, 6), 4: (6, 2), 5: (7, 9), 6: (0, 4), 7: (5, 9), 8: (6, 0),
              9: (7,)}
RATES = (0.05, 0.2, 0.4, 0.6)
NOISES = ("uniform", "class-conditional")
CLEANLAB_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
                    "low_normalized_margin", "low_self_confidence")
SUBSET_SIZE = 10_000

CLEANLAB_CHILD = """
import sys, numpy as np
from cleanlab.filter import find_label_issues
data = np.load(sys.argv[1])
out = {}
for key in [k for k in data.files if k.startswith("labels_")]:
    tag = key[len("labels_"):]
    for filter_by in sys.argv[3].split(","):
        out[f"{filter_by}|{tag}"] = find_label_issues(data[key], data["probs_" + tag], filter_by=filter_by)
np.savez_compressed(sys.argv[2], **out)
"""


def embeddings(subset: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and true labels of images ``subset*10k .. (subset+1)*10k`` of ``split`` (cached)."""
    start, stop = subset * SUBSET_SIZE, (subset + 1) * SUBSET_SIZE
    labels = read_idx(FASHION / f"{split}-labels-idx1-ubyte.gz")[start:stop].astype(np.int64)
    path = CACHE / f"fmnist-{split}-{start}-{stop}-{EMBEDDER}.npy"
    if not path.exists():
        from curato.features.embedders import get_embedder

        images = read_idx(FASHION / f"{split}-images-idx3-ubyte.gz")[start:stop]
        embedder = get_embedder(EMBEDDER)
        vectors = np.concatenate([embedder.embed([np.repeat(im[..., None], 3, axis=2) for im in images[i:i + 512]])
                                  for i in range(0, len(images), 512)])
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors.astype(np.float32))
    return np.load(path), labels


def inject_noise(labels: np.ndarray, noise: str, rate: float, seed: int) -> np.ndarray:
    """Noisy copy of ``labels``: exactly ``round(rate * n)`` (uniform) or ``round(rate * n_c)`` per class flipped."""
    rng = np.random.default_rng([seed, int(rate * 1000), NOISES.index(noise)])
    noisy = labels.copy()
    k = len(CLASSES)
    if noise == "uniform":
        chosen = rng.choice(len(labels), round(rate * len(labels)), replace=False)
        # a uniform draw from the k-1 other classes: add 1..k-1 modulo k
        noisy[chosen] = (labels[chosen] + rng.integers(1, k, len(chosen))) % k
        return noisy
    for cls in range(k):
        members = np.flatnonzero(labels == cls)
        chosen = rng.choice(members, round(rate * len(members)), replace=False)
        targets = np.asarray(CONFUSABLE[cls])
        noisy[chosen] = targets[rng.integers(0, len(targets), len(chosen))]
    return noisy


def oof_probs(vectors: np.ndarray, noisy: np.ndarray, tag: str) -> tuple[np.ndarray, float]:
    """Out-of-fold probabilities for one noisy labelling (cached by tag and OOF settings version)."""
    path = CACHE / f"oof-v{OOF_SETTINGS_VERSION}-{tag}.npz"
    if path.exists():
        stored = np.load(path)
        if np.array_equal(stored["labels"], noisy):
            return stored["probs"], float(stored["seconds"])
    start = time.perf_counter()
    probs = out_of_fold_probabilities(vectors, noisy, n_folds=5, seed=0)
    seconds = time.perf_counter() - start
    np.savez_compressed(path, labels=noisy, probs=probs, seconds=seconds)
    return probs, seconds


def run_cleanlab(python: str, cases: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Masks from cleanlab's ``filter.find_label_issues`` for every case and filter, in one child process."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.npz", Path(folder) / "out.npz"
        arrays = {}
        for tag, (labels, probs) in cases.items():
            arrays[f"labels_{tag}"], arrays[f"probs_{tag}"] = labels, probs
        np.savez(source, **arrays)
        subprocess.run([python, "-c", CLEANLAB_CHILD, str(source), str(target), ",".join(CLEANLAB_FILTERS)],
                       check=True)
        stored = np.load(target)
        return {key: stored[key] for key in stored.files}


def scores(flagged: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of a flag mask against the true-error mask."""
    hits = int(np.sum(flagged & truth))
    precision = hits / max(int(flagged.sum()), 1)
    recall = hits / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": int(flagged.sum())}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (and write JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--subset", type=int, default=0, help="which block of 10k images (train: 0..5, t10k: 0)")
    parser.add_argument("--split", choices=("train", "t10k"), default="train",
                        help="Fashion-MNIST file to draw from (t10k: a held-out check of the method)")
    parser.add_argument("--cleanlab-python", default=str(REPO / ".bench" / "cleanlab-venv" / "bin" / "python"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    vectors, truth_labels = embeddings(args.subset, args.split)
    cases: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    settings: list[tuple[str, float, int, str]] = []
    oof_seconds = []
    for noise in NOISES:
        for rate in RATES:
            for seed in args.seeds:
                tag = f"{args.split}{args.subset}-{noise}-{int(rate * 100)}-seed{seed}"
                noisy = inject_noise(truth_labels, noise, rate, seed)
                probs, seconds = oof_probs(vectors, noisy, tag)
                oof_seconds.append(seconds)
                cases[tag] = (noisy, probs)
                settings.append((noise, rate, seed, tag))
    cleanlab = run_cleanlab(args.cleanlab_python, cases)

    rows = []
    for noise, rate, seed, tag in settings:
        noisy, probs = cases[tag]
        truth = noisy != truth_labels
        result = find_label_issues(noisy, probs)
        row: dict[str, Any] = {
            "noise": noise, "rate": rate, "seed": seed, "oof_accuracy": float(np.mean(probs.argmax(1) == noisy)),
            "estimated_noise_rate": result.estimated_noise_rate, "curato_method": result.method,
            "curato": scores(result.is_issue, truth),
            "cleanlab": scores(cleanlab[f"prune_by_noise_rate|{tag}"], truth),
            "argmax": scores(probs.argmax(1) != noisy, truth),
            "cleanlab_variants": {f: scores(cleanlab[f"{f}|{tag}"], truth) for f in CLEANLAB_FILTERS},
        }
        rows.append(row)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "subset": args.subset, "seeds": args.seeds, "rows": rows,
                                         "oof_seconds_mean": float(np.mean(oof_seconds))}, indent=1))
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per setting (mean over seeds) plus a per-seed F1 line, and the verdict."""
    print(f"{'noise':<18}{'rate':>5} | {'curato P/R/F1':>17} | {'cleanlab P/R/F1':>17} | {'argmax P/R/F1':>17} | "
          f"{'cl best':>7} | {'est.':>5} {'oofacc':>6} | curato>=both")
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["noise"], row["rate"]), []).append(row)
    wins = 0
    for (noise, rate), members in groups.items():
        def mean(tool: str, metric: str, members: list[dict[str, Any]] = members) -> float:
            return float(np.mean([m[tool][metric] for m in members]))

        def cell(tool: str) -> str:
            return f"{mean(tool, 'precision'):.2f}/{mean(tool, 'recall'):.2f}/{mean(tool, 'f1'):.3f}"

        best = float(np.mean([max(v["f1"] for v in m["cleanlab_variants"].values()) for m in members]))
        ok = mean("curato", "f1") >= max(mean("cleanlab", "f1"), mean("argmax", "f1"))
        per_seed = all(m["curato"]["f1"] >= max(m["cleanlab"]["f1"], m["argmax"]["f1"]) for m in members)
        wins += ok
        est = np.mean([m["estimated_noise_rate"] for m in members])
        acc = np.mean([m["oof_accuracy"] for m in members])
        print(f"{noise:<18}{rate:>5.2f} | {cell('curato'):>17} | {cell('cleanlab'):>17} | {cell('argmax'):>17} | "
              f"{best:>7.3f} | {est:>5.3f} {acc:>6.3f} | {'yes' if ok else 'NO'}"
              f"{'' if per_seed else ' (not every seed)'}")
    print(f"curato >= cleanlab and argmax (mean F1 over seeds) in {wins}/{len(groups)} settings")
    print("\nper seed F1, curato / cleanlab / argmax:")
    for (noise, rate), members in groups.items():
        cells = "   ".join(f"seed {m['seed']}: {m['curato']['f1']:.3f} / {m['cleanlab']['f1']:.3f} / "
                           f"{m['argmax']['f1']:.3f}" for m in members)
        print(f"{noise:<18}{rate:>5.2f} | {cells}")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
