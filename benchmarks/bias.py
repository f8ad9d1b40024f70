# Run from the repository root (embeds 2 x N images on first use, ~30 s at N=2000; cached under .bench/bias/):
#   .venv/bin/python benchmarks/bias.py --json .bench/bias.json
# Other sizes / capture settings:
#   .venv/bin/python benchmarks/bias.py --n 1000 --splits 40 --quality 50 75 --side 20
"""Name That Dataset on Fashion-MNIST: two real sources apart from a capture change, and random-split controls.

* source A: ``N`` Fashion-MNIST training images as stored (PNG-sized files);
* source B: ``N`` OTHER training images after a realistic capture change: down-scaled to ``--side`` px
  (default 20, PIL bilinear with antialiasing) and back up to 28 px, then JPEG-compressed at a quality
  drawn per image from ``--quality`` (default 50..75) and decoded again.

Both are embedded with ``efficientnet-lite0-112`` straight from the IDX arrays (``get_embedder(...).embed``)
and cached under ``.bench/bias/``. ``curato.checks.bias.analyse_bias`` then reports the Name-That-Dataset
accuracy against chance with both intervals, the property differences and the cross-dataset matrix
(label head trained on A, tested on B and vice versa).

Controls: ``--splits`` random halves of source A alone (one seed each). No split should be flagged and
their accuracies should stay inside the chance interval: the false-alarm count is printed, along with how
many would fall outside the plain binomial interval (what the over-dispersion correction is for).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curato.checks.bias import analyse_bias
from curato.features.properties import PROPERTY_COLUMNS, image_properties
from curato.imageio import read_idx

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".bench" / "bias"
FASHION = Path("/usr/share/datasets/fashion-mnist")
EMBEDDER = "efficientnet-lite0-112"


def recapture(image: np.ndarray, side: int, quality: int) -> bytes:
    """Down-scale to ``side`` px and back to the original size, then encode as JPEG at ``quality``."""
    height, width = image.shape
    picture = Image.fromarray(image).resize((side, side), Image.BILINEAR).resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def stored(image: np.ndarray) -> bytes:
    """The image as a PNG file, for its file size."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def build_sources(n: int, side: int, quality: tuple[int, int], seed: int) -> dict[str, Any]:
    """Pixels, file sizes, JPEG qualities and labels of sources A and B (2 x ``n`` different images)."""
    images = read_idx(FASHION / "train-images-idx3-ubyte.gz")[: 2 * n]
    labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz")[: 2 * n].astype(np.int64)
    qualities = np.random.default_rng(seed).integers(quality[0], quality[1] + 1, n)
    files = [stored(im) for im in images[:n]] + [recapture(im, side, q) for im, q in zip(images[n:], qualities,
                                                                                          strict=True)]
    pixels = list(images[:n]) + [np.asarray(Image.open(io.BytesIO(data)).convert("L")) for data in files[n:]]
    return {"pixels": pixels, "file_bytes": np.array([len(f) for f in files], dtype=np.float64),
            "jpeg_quality": np.concatenate([np.full(n, np.nan), qualities.astype(np.float64)]), "labels": labels}


def embed(pixels: list[np.ndarray], path: Path) -> tuple[np.ndarray, float]:
    """EfficientNet-Lite0 (112 px) embeddings, cached at ``path``; seconds spent (0 when cached)."""
    if path.exists():
        return np.load(path), 0.0
    from curato.features.embedders import get_embedder

    embedder = get_embedder(EMBEDDER)
    started = time.perf_counter()
    vectors = np.concatenate([embedder.embed([np.repeat(im[..., None], 3, axis=2) for im in pixels[i:i + 256]])
                              for i in range(0, len(pixels), 256)])
    seconds = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors.astype(np.float32))
    return np.load(path), seconds


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """The numbers a row of the report needs."""
    keys = ("accuracy", "balanced_accuracy", "chance", "interval", "chance_interval", "binomial_chance_interval",
            "overdispersion", "permutations", "effect", "verdict")
    return {key: document[key] for key in keys}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print what it measured (and write JSON when asked)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="images per source")
    parser.add_argument("--side", type=int, default=20, help="source B is down-scaled to this many pixels")
    parser.add_argument("--quality", type=int, nargs=2, default=[50, 75], help="JPEG quality range of source B")
    parser.add_argument("--splits", type=int, default=20, help="random splits of source A (controls)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    n = args.n
    sources = build_sources(n, args.side, tuple(args.quality), args.seed)
    tag = f"n{n}-side{args.side}-q{args.quality[0]}-{args.quality[1]}-seed{args.seed}"
    vectors, embed_seconds = embed(sources["pixels"], CACHE / f"fmnist-{tag}-{EMBEDDER}.npy")
    properties = image_properties(sources["pixels"], file_bytes=sources["file_bytes"],
                                  jpeg_quality=sources["jpeg_quality"])
    groups = np.array(["A"] * n + ["B"] * n, dtype=object)
    ids = np.array([f"{g}/{i:05d}" for i, g in enumerate(groups)], dtype=object)
    labels = sources["labels"].astype(str).astype(object)

    started = time.perf_counter()
    document, _ = analyse_bias(ids, vectors, groups, labels=labels, properties=properties,
                               property_columns=PROPERTY_COLUMNS, by="source", seed=args.seed)
    seconds = time.perf_counter() - started
    real = summary(document)
    print(f"source A: {n} Fashion-MNIST images as stored; source B: {n} other images, {args.side} px and back, "
          f"JPEG {args.quality[0]}-{args.quality[1]}; {EMBEDDER} embeddings"
          + (f" ({embed_seconds:.1f} s)" if embed_seconds else " (cached)"))
    print(f"\nName That Dataset, A vs B (n={2 * n}, {seconds:.1f} s with cross-dataset and properties):")
    print(f"  accuracy {real['accuracy']:.4f}  99% interval {real['interval'][0]:.4f}-{real['interval'][1]:.4f}  "
          f"balanced {real['balanced_accuracy']:.4f}")
    print(f"  chance   {real['chance']:.4f}  99% chance interval {real['chance_interval'][0]:.4f}-"
          f"{real['chance_interval'][1]:.4f}  effect {real['effect']:.3f}  -> {real['verdict']}")
    print("  properties that differ most (Cliff's delta, A vs B):")
    for row in document["property_differences"][:5]:
        print(f"    {row['property']:<16} {row['cliffs_delta']:+.3f}  median {row['group_median']:.4g} vs "
              f"{row['rest_median']:.4g}")
    cross = document["cross_dataset"]
    print("\nCross-dataset label accuracy (row = trained on, column = tested on; diagonal = 5-fold CV):")
    print("         " + "".join(f"{name:>9}" for name in cross["groups"]))
    for name, row in zip(cross["groups"], cross["accuracy"], strict=True):
        print(f"  {name:<7}" + "".join(f"{value:>9.4f}" for value in row))
    for pair in cross["pairs"]:
        print(f"  train {pair['train']} -> test {pair['test']}: {pair['accuracy']:.4f} vs "
              f"{pair['in_source_accuracy']:.4f} in-source, drop {pair['drop']:+.4f}")

    controls = []
    started = time.perf_counter()
    for split in range(args.splits):
        halves = np.random.default_rng(1000 + split).permutation(np.repeat(np.array(["x", "y"], dtype=object),
                                                                           [n // 2, n - n // 2]))
        control, _ = analyse_bias(ids[:n], vectors[:n], halves, by="split", seed=split)
        controls.append(summary(control))
    control_seconds = time.perf_counter() - started
    flagged = sum(c["verdict"] == "distinguishable" for c in controls)
    outside = sum(not c["chance_interval"][0] <= c["accuracy"] <= c["chance_interval"][1] for c in controls)
    outside_binomial = sum(not c["binomial_chance_interval"][0] <= c["accuracy"] <= c["binomial_chance_interval"][1]
                           for c in controls)
    accuracies = np.array([c["accuracy"] for c in controls])
    print(f"\nControls: {args.splits} random halves of source A (n={n} each, {control_seconds:.1f} s):")
    print(f"  accuracy mean {accuracies.mean():.4f}, min {accuracies.min():.4f}, max {accuracies.max():.4f}; "
          f"binomial 99% chance interval {controls[0]['binomial_chance_interval'][0]:.4f}-"
          f"{controls[0]['binomial_chance_interval'][1]:.4f}")
    print(f"  flagged distinguishable: {flagged}/{args.splits} (false alarms); outside the chance interval: "
          f"{outside}/{args.splits}; outside the plain binomial interval: {outside_binomial}/{args.splits}")
    shuffled = [c for c in controls if c["permutations"]]
    if shuffled:
        print(f"  shuffles run for {len(shuffled)} split(s); over-dispersion "
              + ", ".join(f"{c['overdispersion']:.2f}" for c in shuffled))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "n": n, "side": args.side, "quality": args.quality, "embedder": EMBEDDER, "seconds": seconds,
            "real": real, "cross_dataset": cross, "property_differences": document["property_differences"][:10],
            "controls": controls, "false_alarms": flagged, "outside_chance_interval": outside,
            "outside_binomial_interval": outside_binomial}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
