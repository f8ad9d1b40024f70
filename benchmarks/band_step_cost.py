# Run from the repository root, one size and class count per process (peak RSS is per process):
#   .venv/bin/python benchmarks/band_step_cost.py --size 4096x3072 --classes 60
#   .venv/bin/python benchmarks/band_step_cost.py --size 4096x3072 --classes 60 --module OLD/propagation.py
"""The mask completion's band step (:func:`curato.features.propagation.refine_band`): CPU seconds and memory of
one call on an image of ``--size`` with ``--classes`` classes, the cost the server pays per completion.

Data (synthetic on purpose: the cost depends on the band's size and the class count, not on what the image
shows): ``--blobs`` discs of random radius (2-8% of the short side), the i-th of class 1 + i mod (classes - 1),
on background 0; each class a random CIELAB colour plus noise (sd 3). The mask handed to the band step is the
reference snapped to 16 px blocks (blocky edges, as superpixels leave them) with every 97th row x 89th column
painted with the reference. Prints one line: CPU s of the call (imports not counted), tracemalloc's peak
(NumPy's arrays; not SciPy's internal C buffers), the process's peak RSS (the image and Lab arrays included),
the band's pixels off the reference before and after. ``--module PATH`` times another copy of propagation.py
(e.g. `git show COMMIT:src/curato/features/propagation.py > OLD/propagation.py`)."""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import time
import tracemalloc

import numpy as np


def synthetic(height: int, width: int, classes: int, blobs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H * W, 3) float32 Lab image and its (H, W) uint8 reference mask: discs of ``classes - 1`` classes."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), np.uint8)
    rows, cols = np.ogrid[:height, :width]
    for i in range(blobs):
        radius = rng.uniform(0.02, 0.08) * min(height, width)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        top, left = max(0, int(cy - radius)), max(0, int(cx - radius))
        box = (slice(top, int(cy + radius) + 1), slice(left, int(cx + radius) + 1))
        disc = (rows[box[0]] - cy) ** 2 + (cols[:, box[1]] - cx) ** 2 <= radius**2
        truth[box][disc] = 1 + i % (classes - 1)
    colours = rng.uniform([20, -60, -60], [90, 60, 60], (256, 3)).astype(np.float32)
    lab = colours[truth] + rng.normal(0, 3, (height, width, 3)).astype(np.float32)
    return lab.reshape(-1, 3), truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4096x3072", help="WIDTHxHEIGHT")
    parser.add_argument("--classes", type=int, default=3, help="classes with background (2..255)")
    parser.add_argument("--blobs", type=int, default=60)
    parser.add_argument("--module", default=None, help="another propagation.py to time")
    args = parser.parse_args()
    width, height = (int(value) for value in args.size.split("x"))
    if args.module:
        spec = importlib.util.spec_from_file_location("propagation_under_test", args.module)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        refine_band, unpainted = module.refine_band, module.UNPAINTED
    else:
        from curato.features.propagation import UNPAINTED as unpainted
        from curato.features.propagation import refine_band
    for name in ("scipy.ndimage", "scipy.sparse.csgraph", "scipy.sparse.linalg", "scipy.spatial"):
        importlib.import_module(name)  # imports are not part of the call's cost

    lab, truth = synthetic(height, width, args.classes, args.blobs)
    step = 16
    blocky = np.repeat(np.repeat(truth[step // 2::step, step // 2::step], step, 0), step, 1)[:height, :width].copy()
    painted = np.full(truth.shape, unpainted, np.uint8)
    painted[::97, ::89] = truth[::97, ::89]
    tracemalloc.start()
    started = time.process_time()
    refined = refine_band(lab, blocky, painted, width=3)
    cpu = time.process_time() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    kept = bool((refined[painted != unpainted] == painted[painted != unpainted]).all())
    print(f"band step {width}x{height}, {np.unique(truth).size} classes present ({args.blobs} blobs): "
          f"{cpu:.2f} s CPU, traced peak {peak:.0f} MiB, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; pixels off the reference "
          f"{int((blocky != truth).sum())} -> {int((refined != truth).sum())}; painted kept: {kept}")


if __name__ == "__main__":
    main()
