# Run from the repository root:
#   .venv/bin/python benchmarks/shortcuts_planted.py                 (add --json for machine-readable output)
#   .venv/bin/python benchmarks/shortcuts_planted.py --no-cleanlab   (curato only)
# cleanlab runs in its own venv (.bench/cleanlab-venv, see benchmarks/cleanlab_spurious.py).
"""Planted shortcuts on real Fashion-MNIST images: does the shortcut check find them, and only them?

Each run draws ``--samples`` real Fashion-MNIST training images (10 classes) and plants ONE cue: every
class c gets its own cue level with probability ``strength`` and a uniformly random level otherwise
(so the cue is present in every class and the cue-label correlation is set by ``strength``):

* ``tint``       -- the grey picture multiplied by a per-level RGB colour (stored as PNG);
* ``brightness`` -- pixel values scaled by a per-level factor 0.45..1.0;
* ``scale``      -- the object shrunk by a per-level factor 0.55..1.0 and centred on the black
  background (the object looks smaller: the "dogs close up, cats far away" cue);
* ``border``     -- a 3-px frame in a per-level grey (background/border cue);
* ``jpeg``       -- stored as JPEG at a per-level quality 20..95;
* ``size``       -- stored at a per-level side 28..82 px.

Strengths 0.5, 0.7, 0.9, 1.0. Controls: clean subsamples (nothing planted, each its own seed) and each
cue planted at strength 0 (levels drawn at random: the cue varies but says nothing about the label).

curato: :func:`curato.checks.shortcuts.shortcut_finding` on the scan's properties, the file format,
the object-size proxy and thumbnails of the planted images, with the out-of-fold EfficientNet-Lite0
head on the clean pictures as the share-of-signal reference (the object's own signal). A cue counts as
found when a flagged cue (a column or a group) belongs to the planted cue's group. A control's false
alarm is ANY flagged cue.

cleanlab: Datalab ``spurious_correlations`` on the same images and labels
(benchmarks/cleanlab_spurious.py); found when a property it flags maps to the planted group.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curato.checks.shortcuts import cue_table, shortcut_finding
from curato.features.properties import PROPERTY_COLUMNS, estimate_jpeg_quality, image_features
from curato.features.thumbnails import colour_thumbnails
from curato.imageio import read_idx
from curato.models.oof import out_of_fold_probabilities

FASHION = Path("/usr/share/datasets/fashion-mnist")
EMBEDDINGS = Path(".bench/fmnist-train-efficientnet-lite0-112.npy")
CLEANLAB_PYTHON = Path(".bench/cleanlab-venv/bin/python")
CUES = ("tint", "brightness", "scale", "border", "jpeg", "size")
EXPECTED_GROUP = {"tint": "colour", "brightness": "brightness_contrast", "scale": "object_size",
                  "border": "background_border", "jpeg": "format_compression", "size": "geometry_size"}
# cleanlab's image properties (from cleanvision) and the cue group each one belongs to.
CLEANLAB_GROUP = {"dark": "brightness_contrast", "light": "brightness_contrast", "blurry": "texture_frequency",
                  "low_information": "texture_frequency", "grayscale": "colour", "odd_size": "geometry_size",
                  "odd_aspect_ratio": "geometry_size"}
TINTS = np.array([[1.0, 0.55, 0.55], [0.55, 1.0, 0.55], [0.55, 0.55, 1.0], [1.0, 1.0, 0.5], [1.0, 0.5, 1.0],
                  [0.5, 1.0, 1.0], [1.0, 0.75, 0.5], [0.75, 0.5, 1.0], [0.6, 0.8, 0.6], [0.9, 0.9, 0.9]])


def planted_image(grey: np.ndarray, cue: str, level: int, n_levels: int) -> tuple[np.ndarray, bytes, str]:
    """(RGB pixels as decoded, stored bytes, format) of one real image carrying cue ``level``."""
    position = level / max(n_levels - 1, 1)
    fmt = "PNG"
    quality = 95
    if cue == "tint":
        rgb = (grey[:, :, None].astype(np.float32) * TINTS[level % len(TINTS)]).astype(np.uint8)
    elif cue == "brightness":
        rgb = np.repeat((grey.astype(np.float32) * (0.45 + 0.55 * position)).astype(np.uint8)[:, :, None], 3, 2)
    elif cue == "scale":
        side = max(8, round(28 * (0.55 + 0.45 * position)))
        small = np.asarray(Image.fromarray(grey).resize((side, side), Image.BILINEAR))
        canvas = np.zeros((28, 28), dtype=np.uint8)
        top = (28 - side) // 2
        canvas[top:top + side, top:top + side] = small
        rgb = np.repeat(canvas[:, :, None], 3, 2)
    elif cue == "border":
        framed = grey.copy()
        value = int(40 + 215 * position)
        framed[:3, :], framed[-3:, :], framed[:, :3], framed[:, -3:] = value, value, value, value
        rgb = np.repeat(framed[:, :, None], 3, 2)
    elif cue == "jpeg":
        rgb = np.repeat(grey[:, :, None], 3, 2)
        fmt, quality = "JPEG", int(20 + 75 * position)
    elif cue == "size":
        side = int(28 + 54 * position)
        rgb = np.repeat(np.asarray(Image.fromarray(grey).resize((side, side), Image.BILINEAR))[:, :, None], 3, 2)
    else:
        rgb = np.repeat(grey[:, :, None], 3, 2)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, quality=quality)
    stored = buffer.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))
    return decoded, stored, fmt.lower()


def build(cue: str | None, strength: float, samples: int, seed: int, pool: dict[str, np.ndarray]) -> dict[str, Any]:
    """One planted dataset: pictures, labels, stored bytes, and the rows of the pool it came from."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(pool["labels"]), size=samples, replace=False))
    labels = pool["labels"][rows].astype(np.int64)
    n_levels = 10
    mapping = rng.permutation(n_levels)  # class -> its own cue level
    own = rng.random(samples) < strength
    levels = np.where(own, mapping[labels], rng.integers(0, n_levels, samples))
    pictures, stored, formats = [], [], []
    for grey, level in zip(pool["images"][rows], levels, strict=True):
        if cue is None:
            picture, data, fmt = planted_image(grey, "none", 0, n_levels)
        else:
            picture, data, fmt = planted_image(grey, cue, int(level), n_levels)
        pictures.append(picture)
        stored.append(data)
        formats.append(fmt)
    return {"rows": rows, "labels": labels, "pictures": pictures, "stored": stored, "formats": formats}


def curato_cues(data: dict[str, Any]) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """The cue table the audit builds from a scan, for in-memory pictures."""
    sizes = np.array([(p.shape[1], p.shape[0]) for p in data["pictures"]])
    quality = np.array([estimate_jpeg_quality(Image.open(io.BytesIO(b)).quantization) if f == "jpeg" else np.nan
                        for b, f in zip(data["stored"], data["formats"], strict=True)])
    properties, _, thumbnails = image_features(data["pictures"], file_bytes=[len(b) for b in data["stored"]],
                                               jpeg_quality=quality, original_sizes=sizes)
    cues, columns, _ = cue_table(properties, list(PROPERTY_COLUMNS), formats=data["formats"], thumbnails=thumbnails)
    pixels = {"4x4": colour_thumbnails(thumbnails, 4).reshape(len(thumbnails), -1),
              "8x8": colour_thumbnails(thumbnails, 8).reshape(len(thumbnails), -1)}
    return cues, columns, pixels


def run_cleanlab(data: dict[str, Any]) -> dict[str, Any]:
    """cleanlab Datalab spurious_correlations on the same pictures (subprocess in its own venv)."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.npz", Path(folder) / "out.json"
        shapes = {p.shape for p in data["pictures"]}
        if len(shapes) == 1:
            np.savez(source, images=np.stack(data["pictures"]), labels=data["labels"])
        else:
            np.savez(source, labels=data["labels"], count=len(data["pictures"]),
                     **{f"images_{i}": p for i, p in enumerate(data["pictures"])})
        completed = subprocess.run([str(CLEANLAB_PYTHON), "benchmarks/cleanlab_spurious.py", str(source), str(target)],
                                   capture_output=True, text=True)
        if completed.returncode != 0:
            return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr else "failed"}
        return json.loads(target.read_text())


def run_one(cue: str | None, strength: float, seed: int, samples: int, pool: dict[str, np.ndarray],
            reference: np.ndarray, cleanlab: bool) -> dict[str, Any]:
    data = build(cue, strength, samples, seed, pool)
    started = time.perf_counter()
    cues, columns, pixels = curato_cues(data)
    finding = shortcut_finding(np.arange(samples).astype(str), data["labels"], cues, columns,
                               reference_probs=reference[data["rows"]], thumbnails=pixels, seed=seed)
    seconds = time.perf_counter() - started
    flagged = [r for r in finding.evidence["cues"] if r["flagged"]]
    result: dict[str, Any] = {
        "cue": cue or "clean", "strength": strength, "seed": seed, "seconds": round(seconds, 2),
        "flagged": [r["cue"] for r in flagged], "flagged_groups": sorted({r["group"] for r in flagged}),
        "top": [{k: r[k] for k in ("cue", "balanced_accuracy", "share_of_signal", "p_value")}
                for r in finding.evidence["cues"][:3]],
        "thumbnails": finding.evidence["tests"]["thumbnails"], "message": finding.message,
    }
    if cue is not None and strength > 0:
        result["found"] = EXPECTED_GROUP[cue] in result["flagged_groups"]
    if cleanlab:
        outcome = run_cleanlab(data)
        groups = sorted({CLEANLAB_GROUP.get(p, p) for p in outcome.get("flagged", [])})
        result["cleanlab"] = {"flagged": outcome.get("flagged", []), "groups": groups,
                              "seconds": outcome.get("seconds"), "error": outcome.get("error")}
        if cue is not None and strength > 0:
            result["cleanlab"]["found"] = EXPECTED_GROUP[cue] in groups
    return result


def load_pool(pool_size: int) -> dict[str, np.ndarray]:
    images = np.asarray(read_idx(FASHION / "train-images-idx3-ubyte.gz")[:pool_size])
    labels = np.asarray(read_idx(FASHION / "train-labels-idx1-ubyte.gz")[:pool_size])
    return {"images": images, "labels": labels}


def reference_probabilities(pool: dict[str, np.ndarray]) -> np.ndarray:
    """Out-of-fold EfficientNet-Lite0 head probabilities on the clean pool (the object's own signal)."""
    if not EMBEDDINGS.exists():
        sys.exit(f"{EMBEDDINGS} missing: run benchmarks/label_issues.py once (it caches the embeddings)")
    embeddings = np.load(EMBEDDINGS, mmap_mode="r")[:len(pool["labels"])]
    return out_of_fold_probabilities(np.asarray(embeddings, dtype=np.float32), pool["labels"].astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--strengths", default="0.5,0.7,0.9,1.0")
    parser.add_argument("--cues", default=",".join(CUES))
    parser.add_argument("--clean-controls", type=int, default=20)
    parser.add_argument("--no-cleanlab", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    pool = load_pool(args.pool)
    reference = reference_probabilities(pool)
    cleanlab = not args.no_cleanlab and CLEANLAB_PYTHON.exists()
    runs = []
    for cue in [c for c in args.cues.split(",") if c]:
        for strength in [float(s) for s in args.strengths.split(",")] + [0.0]:
            runs.append(run_one(cue, strength, 100 + len(runs), args.samples, pool, reference, cleanlab))
            print(_line(runs[-1]), file=sys.stderr if args.json else sys.stdout, flush=True)
    for control in range(args.clean_controls):
        runs.append(run_one(None, 0.0, 1000 + control, args.samples, pool, reference, cleanlab and control < 5))
        print(_line(runs[-1]), file=sys.stderr if args.json else sys.stdout, flush=True)
    summary = _summary(runs)
    if args.json:
        print(json.dumps({"samples": args.samples, "runs": runs, "summary": summary}, indent=2))
    else:
        print(json.dumps(summary, indent=2))


def _line(run: dict[str, Any]) -> str:
    found = {True: "FOUND", False: "missed", None: ""}[run.get("found")]
    text = f"{run['cue']:>10} s={run['strength']:.1f} {found:>6} flagged={run['flagged']} ({run['seconds']} s)"
    text += " top: " + ", ".join(
        f"{t['cue']} {t['balanced_accuracy']:.2f}/{t['share_of_signal']:.2f}/p{t['p_value']:.2f}" for t in run["top"])
    if "cleanlab" in run:
        text += f" | cleanlab {run['cleanlab']['flagged']} ({run['cleanlab']['seconds']} s)"
        if run["cleanlab"].get("error"):
            text += f" error: {run['cleanlab']['error']}"
    return text


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    detection: dict[str, dict[str, Any]] = {}
    for run in runs:
        if "found" in run:
            row = detection.setdefault(run["cue"], {})
            row[f"{run['strength']:.1f}"] = {"curato": run["found"], "cleanlab": run.get("cleanlab", {}).get("found")}
    controls = [r for r in runs if r["cue"] == "clean" or r["strength"] == 0.0]
    return {
        "detection": detection,
        "curato_found": sum(r["found"] for r in runs if "found" in r),
        "cleanlab_found": sum(bool(r.get("cleanlab", {}).get("found")) for r in runs if "found" in r),
        "planted_runs": sum("found" in r for r in runs),
        "controls": len(controls), "curato_false_alarms": sum(bool(r["flagged"]) for r in controls),
        "cleanlab_controls": sum("cleanlab" in r for r in controls),
        "cleanlab_false_alarms": sum(bool(r.get("cleanlab", {}).get("flagged")) for r in controls),
    }


if __name__ == "__main__":
    main()
