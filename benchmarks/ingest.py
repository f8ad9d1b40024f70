# Run from the repository root (creates the cleanvision venv on first use, writes 6,000 images, times both):
#   .venv/bin/python benchmarks/ingest.py --n-fmnist 5000 --n-photos 1000 --out .bench/ingest-data \
#       --repeats 2 --setup-cleanvision --json .bench/ingest.json
"""Throughput of curato's ingest scan against cleanvision on the same folder of real images.

Writes a dataset of Fashion-MNIST items as PNGs (one sub-folder per class) and distinct 256x256
JPEGs cut from the scikit-image sample photos (random crops, flips, scales and JPEG qualities), then
times, per sub-folder and for the whole folder:

(a) ``curato.features.scan.scan_images``: listing the files, reading, content hash, decode, all image
    properties and the perceptual hash, with one worker per core;
(b) cleanvision's ``Imagelab(data_path=...).find_issues()`` (all default issue types, ``n_jobs`` = cores),
    run by the python of a separate virtualenv; the child times only construction + find_issues and
    reports its timing as JSON.

Both report wall-clock images/s and images per CPU-second (parent + workers), which is the fairer
number when other work shares the machine; the 1-minute load average before each run is printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle_boot")
# scikit-image sample photos that ship with the package (others need a download).
COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
GREY_PHOTOS = ("camera", "moon", "coins", "grass", "gravel", "brick")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CLEANVISION_VERSION = "0.3.7"

# Runs inside the cleanvision virtualenv. Imports happen before the clock starts; cleanvision's own
# printing goes to stderr so stdout carries only the JSON result.
CLEANVISION_RUNNER = r"""
import contextlib, json, resource, sys, time

def cpu_seconds():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

if __name__ == "__main__":
    from cleanvision import Imagelab
    folder, n_jobs = sys.argv[1], int(sys.argv[2])
    with contextlib.redirect_stdout(sys.stderr):
        cpu_start, start = cpu_seconds(), time.perf_counter()
        imagelab = Imagelab(data_path=folder)
        imagelab.find_issues(n_jobs=n_jobs, verbose=False)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    print(json.dumps({"images": len(imagelab.issues), "seconds": seconds, "cpu_seconds": cpu}))
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-fmnist", type=int, default=5000, help="Fashion-MNIST items written as PNG")
    parser.add_argument("--n-photos", type=int, default=1000, help="256x256 JPEGs cut from skimage photos")
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "ingest-data", help="dataset folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for both tools")
    parser.add_argument("--repeats", type=int, default=1, help="runs per measurement; the fastest is kept")
    parser.add_argument("--reuse", action="store_true", help="keep an existing dataset in --out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cleanvision-python", type=Path,
                        default=REPO / ".bench" / "cleanvision-venv" / "bin" / "python")
    parser.add_argument("--setup-cleanvision", action="store_true",
                        help=f"create the cleanvision=={CLEANVISION_VERSION} virtualenv if it is missing")
    return parser.parse_args()


def setup_cleanvision(python: Path) -> None:
    """Create the separate virtualenv; constraints.txt pins torch so pip can never pull another one."""
    venv = python.parent.parent
    subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"cleanvision=={CLEANVISION_VERSION}",
                    "-c", str(REPO / "constraints.txt")], check=True)


def write_fashion_mnist(folder: Path, count: int) -> int:
    from curato.imageio import read_idx

    images = read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    if count > len(images):
        raise SystemExit(f"--n-fmnist {count}: Fashion-MNIST has {len(images)} training images")
    for name in FASHION_CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(images[index]).save(folder / FASHION_CLASSES[labels[index]] / f"{index:05d}.png")
    return count


def sample_photos() -> dict[str, np.ndarray]:
    import skimage.data

    photos = {name: getattr(skimage.data, name)() for name in COLOUR_PHOTOS}
    for name in GREY_PHOTOS:  # grey pictures stored as 3-channel JPEGs, as many datasets do
        photos[name] = np.dstack([getattr(skimage.data, name)()] * 3)
    return photos


def write_photo_crops(folder: Path, count: int, seed: int) -> int:
    """Distinct 256x256 JPEGs: a random square crop (40-100% of the short side), flip and quality."""
    rng = np.random.default_rng(seed)
    photos = sample_photos()
    names = sorted(photos)
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        name = names[index % len(names)]
        photo = photos[name]
        height, width = photo.shape[:2]
        side = int(min(height, width) * rng.uniform(0.4, 1.0))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = photo[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        image = Image.fromarray(np.ascontiguousarray(crop)).resize((256, 256), Image.Resampling.BILINEAR)
        image.save(folder / name / f"{index:05d}.jpg", quality=int(rng.integers(70, 96)))
    return count


def list_images(folder: Path) -> list[str]:
    return sorted(str(path) for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_curato(folder: Path, workers: int) -> dict[str, Any]:
    from curato.features.scan import scan_images

    cpu_start, start = cpu_seconds(), time.perf_counter()
    uris = list_images(folder)
    table = scan_images(uris, workers=workers)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    if not table.readable.all():
        raise SystemExit(f"curato could not read {int((~table.readable).sum())} images in {folder}")
    return {"images": len(uris), "seconds": seconds, "cpu_seconds": cpu}


def time_cleanvision(python: Path, folder: Path, workers: int) -> dict[str, Any]:
    result = subprocess.run([str(python), "-c", CLEANVISION_RUNNER, str(folder), str(workers)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"cleanvision failed on {folder}:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def best_of_interleaved(repeats: int, measures: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Run the tools in turn ``repeats`` times (so background load hits both alike); keep each one's fastest."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            load_before = os.getloadavg()[0]
            runs[name].append({**measure(), "load_average_1m": load_before})
    best = {}
    for name, results in runs.items():
        fastest = min(results, key=lambda run: run["seconds"])
        fastest["images_per_s"] = fastest["images"] / fastest["seconds"]
        fastest["images_per_cpu_s"] = fastest["images"] / fastest["cpu_seconds"]
        fastest["all_seconds"] = [run["seconds"] for run in results]
        best[name] = fastest
    return best


def main() -> None:
    args = parse_args()
    if importlib.util.find_spec("curato") is None:  # running from a checkout without `pip install -e .`
        sys.path.insert(0, str(REPO / "src"))
    if not args.cleanvision_python.exists():
        if not args.setup_cleanvision:
            raise SystemExit(f"{args.cleanvision_python} not found: rerun with --setup-cleanvision "
                             f"(creates a virtualenv with cleanvision=={CLEANVISION_VERSION})")
        setup_cleanvision(args.cleanvision_python)

    png_folder, jpeg_folder = args.out / "fmnist-png", args.out / "photos-jpeg"
    if not (args.reuse and png_folder.is_dir() and jpeg_folder.is_dir()):
        if args.out.exists():
            shutil.rmtree(args.out)
        start = time.perf_counter()
        written = write_fashion_mnist(png_folder, args.n_fmnist) + write_photo_crops(jpeg_folder, args.n_photos,
                                                                                        args.seed)
        print(f"wrote {written} images to {args.out} in {time.perf_counter() - start:.1f} s")

    print(f"{os.cpu_count()} cores, {args.workers} workers per tool, best of {args.repeats}")
    header = (f"{'folder':<12} {'images':>7} {'curato img/s':>13} {'cleanvision img/s':>18} {'ratio':>6}"
              f"   {'curato img/cpu-s':>16} {'cleanvision img/cpu-s':>21} {'ratio':>6}   load")
    print(header)
    results = {}
    for label, folder in (("png", png_folder), ("jpeg", jpeg_folder), ("overall", args.out)):
        best = best_of_interleaved(args.repeats, {
            "curato": lambda folder=folder: time_curato(folder, args.workers),
            "cleanvision": lambda folder=folder: time_cleanvision(args.cleanvision_python, folder, args.workers),
        })
        curato, cleanvision = best["curato"], best["cleanvision"]
        if curato["images"] != cleanvision["images"]:
            raise SystemExit(f"{folder}: curato saw {curato['images']} images, cleanvision {cleanvision['images']}")
        ratio = curato["images_per_s"] / cleanvision["images_per_s"]
        cpu_ratio = curato["images_per_cpu_s"] / cleanvision["images_per_cpu_s"]
        results[label] = {"folder": str(folder), "curato": curato, "cleanvision": cleanvision,
                          "ratio": ratio, "cpu_ratio": cpu_ratio}
        print(f"{label:<12} {curato['images']:>7} {curato['images_per_s']:>13.0f} "
              f"{cleanvision['images_per_s']:>18.0f} {ratio:>5.1f}x   {curato['images_per_cpu_s']:>16.0f} "
              f"{cleanvision['images_per_cpu_s']:>21.0f} {cpu_ratio:>5.1f}x   "
              f"{curato['load_average_1m']:.1f}/{cleanvision['load_average_1m']:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"cores": os.cpu_count(), "workers": args.workers, "repeats": args.repeats,
                  "n_fmnist": args.n_fmnist, "n_photos": args.n_photos, "cleanvision": CLEANVISION_VERSION,
                  "results": results}
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
