# Run from the repository root:
#   .venv/bin/python benchmarks/shortcuts_planted.py                 (all-class plantings; --json [OUT] for JSON)
#   .venv/bin/python benchmarks/shortcuts_planted.py --no-cleanlab   (curato only)
#   .venv/bin/python benchmarks/shortcuts_planted.py --one-class --json .bench/shortcuts_planted/one_class.json
#       (one-class plantings + clean and no-correlation controls on Fashion-MNIST, digits and LFW, then the
#        all-class plantings; --quick for a smaller grid, --reference planted to embed the planted pictures)
#   Iterating on the one-class rule: --cache DIR stores every run's scan once (--scan-only: nothing else),
#   --reuse DIR re-judges the stored scans (only the shortcut check runs), --only WORDS picks runs by tag
#   (seeds as in the whole plan, so a pass can be split across processes and joined with --merge A.json B.json),
#   --reuse DIR --cue-medians prints the figures behind the visible floor.
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

``--one-class`` (issue 20): the cue singles out ONE class, as in the tank, husky and watermark stories.
The cue is planted in a fraction P(cue | class) in {0.6, 0.8, 1.0} of one class's images and a fraction
P(cue | others) in {0, 0.1} of the other classes' images (exact counts, images drawn at random), on:

* ``fmnist`` -- Fashion-MNIST training images (28x28 grey clothing), 2,000 drawn per run from the first
  10,000; K = 10 (all classes) and K = 2 (two classes, the pair rotating across runs);
* ``digits`` -- scikit-learn's ``load_digits()`` (1,797 handwritten digits, 8x8 at 17 grey levels),
  upscaled to 32x32 with bilinear interpolation; K = 10 and K = 2 (about 360 images);
* ``lfw``    -- scikit-image's ``lfw_subset()`` (100 faces vs 100 non-face crops, 25x25 grey photographs,
  kept at 25x25); K = 2 only.

K = 100 is not run: no 100-class image dataset is available offline here, and none is faked.
The class that carries the cue rotates across runs. Cues (sizes scale with the side ``s``, given at 28 px):
``tint`` 0.6*image + 0.4*colour; ``brightness`` +60 grey levels, clipped; ``frame`` a 3-px coloured frame;
``corner`` a white patch of side s/6 in the top-right corner (watermark-like); ``scale`` the object drawn at
half size, centred on a canvas filled with the image's background (median of its outer ring); ``blur``
Gaussian, sigma 1.2 px; ``jpeg`` stored as JPEG quality 30 (others PNG); ``format`` JPEG quality 95 vs PNG;
``size`` stored at twice the side. Found: a flagged cue in the planted cue's expected group(s)
(``found_group``) and, stricter, one whose per-class list names the planted class (``found_class``). A run
counts as ``found`` when ``found_class`` holds or, with K = 2, ``found_group`` does: with two classes a cue that
separates one class from the other separates both, and the finding may name either side ("'non-face' images
have a darker background" when the faces were brightened).
``--seed-offset N`` draws other samples, pairs and carrier classes (held-out runs: the thresholds of the
one-class test were chosen on offset 0).
Controls: clean subsamples of each dataset (K = 2 and 10, nothing planted; a false alarm is ANY flagged cue)
and every cue planted at P(cue | class) = P(cue | others) = 0.5 (no correlation).
Reference: the out-of-fold EfficientNet-Lite0 head on the CLEAN pictures (embeddings cached under
.bench/), or with ``--reference planted`` on the planted pictures themselves (what a user's audit sees;
every run embeds its pictures, slower).
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

from curato.checks.shortcuts import VISIBLE_FLOOR, cue_table, frame_depths, shortcut_finding
from curato.features.properties import PROPERTY_COLUMNS, estimate_jpeg_quality, image_features
from curato.features.thumbnails import colour_thumbnails, grey_thumbnails
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


def scan_pictures(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(properties, thumbnail rows) the ingest scan computes, for in-memory pictures and their stored bytes."""
    sizes = np.array([(p.shape[1], p.shape[0]) for p in data["pictures"]])
    quality = np.array([estimate_jpeg_quality(Image.open(io.BytesIO(b)).quantization) if f == "jpeg" else np.nan
                        for b, f in zip(data["stored"], data["formats"], strict=True)])
    properties, _, thumbnails = image_features(data["pictures"], file_bytes=[len(b) for b in data["stored"]],
                                               jpeg_quality=quality, original_sizes=sizes)
    return properties, thumbnails


def curato_cues(data: dict[str, Any]) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """The cue table the audit builds from a scan, for in-memory pictures."""
    return cues_from_scan(*scan_pictures(data), data["formats"])


def cues_from_scan(properties: np.ndarray, thumbnails: np.ndarray,
                   formats: list[str]) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """The cue table and the 4x4 / 8x8 thumbnail features of a scan (what ``--reuse`` recomputes)."""
    cues, columns, _ = cue_table(properties, list(PROPERTY_COLUMNS), formats=formats, thumbnails=thumbnails)
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


def embed_greys(greys: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """EfficientNet-Lite0 (112 px) embeddings of grey or RGB uint8 pictures, in batches of 256."""
    from curato.features.embedders import get_embedder

    embedder = get_embedder(EMBEDDER)
    rgb = [g if g.ndim == 3 else np.repeat(g[..., None], 3, axis=2) for g in greys]
    return np.concatenate([embedder.embed(rgb[i:i + 256]) for i in range(0, len(rgb), 256)]).astype(np.float32)


def cached_embeddings(path: Path, greys: np.ndarray) -> np.ndarray:
    """Embeddings of the clean pictures, computed once and cached at ``path``."""
    if path.exists():
        cached = np.load(path, mmap_mode="r")
        if len(cached) >= len(greys):
            return np.asarray(cached[:len(greys)], dtype=np.float32)
    started = time.perf_counter()
    print(f"embedding {len(greys)} clean pictures into {path} ...", file=sys.stderr, flush=True)
    vectors = embed_greys(greys)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    print(f"  {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return vectors


def reference_probabilities(pool: dict[str, np.ndarray]) -> np.ndarray:
    """Out-of-fold EfficientNet-Lite0 head probabilities on the clean pool (the object's own signal)."""
    embeddings = cached_embeddings(EMBEDDINGS, pool["images"])
    return out_of_fold_probabilities(embeddings, pool["labels"].astype(np.int64))


# --------------------------------------------------------------------------------------------------
# One-class plantings (issue 20)

EMBEDDER = "efficientnet-lite0-112"
CACHE = Path(".bench/shortcuts_planted")
DATASETS = ("fmnist", "digits", "lfw")
ONE_CLASS_CUES = ("tint", "brightness", "frame", "corner", "scale", "blur", "jpeg", "format", "size")
ONE_CLASS_EXPECTED = {
    "tint": ("colour", "background_border"), "brightness": ("brightness_contrast", "background_border"),
    "frame": ("background_border",), "corner": ("background_border", "brightness_contrast"),
    "scale": ("object_size",), "blur": ("texture_frequency",), "jpeg": ("format_compression",),
    "format": ("format_compression",), "size": ("geometry_size",)}
P_CLASS = (0.6, 0.8, 1.0)
P_OTHERS = (0.0, 0.1)
CONTROL_P = 0.5  # no-correlation controls: P(cue | class) = P(cue | others) = 0.5
PALETTE = np.array([[230, 60, 30], [40, 190, 70], [50, 90, 230], [240, 200, 30]], dtype=np.float32)
FASHION_NAMES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def load_dataset(name: str, fmnist_pool: int = 10_000) -> dict[str, Any]:
    """Grey uint8 pictures (n, s, s), labels, class names and the clean-picture embeddings of one dataset."""
    if name == "fmnist":
        pool = load_pool(fmnist_pool)
        images, labels, names = pool["images"], pool["labels"].astype(np.int64), list(FASHION_NAMES)
        path = EMBEDDINGS
    elif name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.stack([np.asarray(Image.fromarray(np.clip(x * 255 / 16, 0, 255).round().astype(np.uint8))
                                      .resize((32, 32), Image.BILINEAR)) for x in digits.images])
        labels, names = digits.target.astype(np.int64), [str(k) for k in range(10)]
        path = CACHE / f"digits-clean-{EMBEDDER}.npy"
    elif name == "lfw":
        from skimage.data import lfw_subset

        images = (lfw_subset() * 255).round().astype(np.uint8)
        labels, names = np.repeat([0, 1], 100).astype(np.int64), ["face", "non-face"]
        path = CACHE / f"lfw-clean-{EMBEDDER}.npy"
    else:
        raise SystemExit(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}")
    return {"name": name, "images": images, "labels": labels, "names": names,
            "embeddings": cached_embeddings(path, images)}


def one_class_image(grey: np.ndarray, cue: str | None, colour: np.ndarray) -> tuple[np.ndarray, bytes, str]:
    """(RGB pixels as decoded, stored bytes, format) of one picture, carrying ``cue`` (None: clean PNG)."""
    side = grey.shape[0]
    unit = side / 28
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    fmt, quality = "PNG", 95
    if cue == "tint":
        rgb = np.clip(0.6 * rgb.astype(np.float32) + 0.4 * colour, 0, 255).round().astype(np.uint8)
    elif cue == "brightness":
        rgb = np.clip(rgb.astype(np.int16) + 60, 0, 255).astype(np.uint8)
    elif cue == "frame":
        width = max(1, round(3 * unit))
        rgb = rgb.copy()
        rgb[:width], rgb[-width:], rgb[:, :width], rgb[:, -width:] = colour, colour, colour, colour
    elif cue == "corner":
        patch = max(2, round(side / 6))
        rgb = rgb.copy()
        rgb[:patch, -patch:] = 255
    elif cue == "scale":
        ring = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
        half = max(2, round(side / 2))
        canvas = np.full_like(grey, int(np.median(ring)))
        top = (side - half) // 2
        canvas[top:top + half, top:top + half] = np.asarray(Image.fromarray(grey).resize((half, half), Image.BILINEAR))
        rgb = np.repeat(canvas[:, :, None], 3, axis=2)
    elif cue == "blur":
        from scipy.ndimage import gaussian_filter

        blurred = gaussian_filter(grey.astype(np.float32), sigma=1.2 * unit)
        rgb = np.repeat(np.clip(blurred, 0, 255).round().astype(np.uint8)[:, :, None], 3, axis=2)
    elif cue == "jpeg":
        fmt, quality = "JPEG", 30
    elif cue == "format":
        fmt, quality = "JPEG", 95
    elif cue == "size":
        rgb = np.asarray(Image.fromarray(rgb).resize((2 * side, 2 * side), Image.BILINEAR))
    elif cue is not None:
        raise SystemExit(f"unknown one-class cue {cue!r}: choose from {', '.join(ONE_CLASS_CUES)}")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, quality=quality)
    stored = buffer.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB")) if fmt == "JPEG" else rgb
    return decoded, stored, fmt.lower()


def one_class_build(dataset: dict[str, Any], k: int, cue: str | None, p_class: float, p_others: float,
                    rotation: int, seed: int, samples: int) -> dict[str, Any]:
    """One planted dataset: K classes (rotating), the cue in ``p_class`` of one class and ``p_others`` of the rest."""
    rng = np.random.default_rng(seed)
    n_classes = len(dataset["names"])
    if k >= n_classes:
        classes = list(range(n_classes))
        carrier = rotation % n_classes
    else:  # K = 2: the pair and the carrier rotate (a, a+1+r//C ...), never the same class twice in a pair
        first = rotation % n_classes
        second = (first + 1 + (rotation // n_classes) % (n_classes - 1)) % n_classes
        classes = [first, second][:k]
        carrier = first
    pool_rows = np.flatnonzero(np.isin(dataset["labels"], classes))
    rows = np.sort(rng.choice(pool_rows, size=min(samples, pool_rows.size), replace=False))
    original = dataset["labels"][rows]
    labels = np.searchsorted(np.array(sorted(classes)), original).astype(np.int64)
    names = [dataset["names"][c] for c in sorted(classes)]
    carries = np.zeros(rows.size, dtype=bool)
    if cue is not None:
        for mask, share in ((original == carrier, p_class), (original != carrier, p_others)):
            members = np.flatnonzero(mask)
            carries[rng.choice(members, size=round(share * members.size), replace=False)] = True
    colour = PALETTE[seed % len(PALETTE)]
    pictures, stored, formats = [], [], []
    for grey, flag in zip(dataset["images"][rows], carries, strict=True):
        picture, data, fmt = one_class_image(grey, cue if flag else None, colour)
        pictures.append(picture)
        stored.append(data)
        formats.append(fmt)
    return {"rows": rows, "labels": labels, "names": names, "carrier": dataset["names"][carrier],
            "carries": carries, "pictures": pictures, "stored": stored, "formats": formats}


def one_class_reference(dataset: dict[str, Any], data: dict[str, Any], mode: str,
                        seed: int) -> tuple[np.ndarray, float]:
    """Out-of-fold head probabilities for this run's samples, and the seconds spent embedding (planted mode)."""
    seconds = 0.0
    if mode == "planted" and data["carries"].any():
        started = time.perf_counter()
        embeddings = embed_greys(data["pictures"])
        seconds = time.perf_counter() - started
    else:  # clean pictures (or nothing planted: the planted pictures are the clean ones)
        embeddings = dataset["embeddings"][data["rows"]]
    return out_of_fold_probabilities(embeddings, data["labels"], seed=seed), seconds


def one_class_scan(dataset: dict[str, Any], k: int, cue: str | None, p_class: float, p_others: float,
                   rotation: int, seed: int, samples: int, reference_mode: str, cleanlab: bool,
                   kind: str) -> dict[str, Any]:
    """Everything a one-class run computes before the shortcut check (what ``--cache`` stores): the labels, which
    images carry the cue, the scan's properties and thumbnails, the formats, the reference probabilities, and
    cleanlab's outcome when it ran."""
    started = time.perf_counter()
    data = one_class_build(dataset, k, cue, p_class, p_others, rotation, seed, samples)
    reference, embed_seconds = one_class_reference(dataset, data, reference_mode, seed)
    properties, thumbnails = scan_pictures(data)
    meta: dict[str, Any] = {"kind": kind, "dataset": dataset["name"], "cue": cue or "clean", "p_class": p_class,
                            "p_others": p_others, "class": data["carrier"] if cue is not None else None,
                            "seed": seed, "names": data["names"], "embed_seconds": round(embed_seconds, 2),
                            "scan_seconds": round(time.perf_counter() - started, 2)}
    if cleanlab:
        meta["cleanlab_outcome"] = run_cleanlab(data)
    return {"meta": meta, "labels": data["labels"], "carries": data["carries"], "properties": properties,
            "thumbnails": thumbnails, "formats": np.array(data["formats"]), "reference": reference}


def save_scan(folder: Path, index: int, scan: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {key: value for key, value in scan.items() if key != "meta"}
    partial = folder / f"{index:04d}.partial.npz"  # renamed when complete: an interrupted pass leaves no torn file
    np.savez_compressed(partial, meta=np.array(json.dumps(scan["meta"])), **arrays)
    partial.replace(folder / f"{index:04d}.npz")


def load_scans(folder: Path, only: str = "") -> list[dict[str, Any]]:
    """The cached scans of a ``--cache`` run, in plan order; ``only``: comma-separated words every kept run's
    tag ("planted lfw K=2 blur P_class=0.8 P_others=0.1") contains."""
    words = [w for w in only.split(",") if w]
    scans = []
    for path in sorted(folder.glob("[0-9][0-9][0-9][0-9].npz")):
        with np.load(path) as stored:
            scan = {key: stored[key] for key in stored.files if key != "meta"}
            scan["meta"] = json.loads(str(stored["meta"]))
        if all(word in _scan_tag(scan["meta"]) for word in words):
            scans.append(scan)
    if not scans:
        raise SystemExit(f"no cached scans in {folder}{' matching ' + only if only else ''}: run with --cache first")
    return scans


def _scan_tag(meta: dict[str, Any]) -> str:
    return (f"{meta['kind']} {meta['dataset']} K={len(meta['names'])} {meta['cue']} P_class={meta['p_class']:.1f} "
            f"P_others={meta['p_others']:.1f}")


def one_class_judge(scan: dict[str, Any]) -> dict[str, Any]:
    """The shortcut check on one scanned run, and whether it found the planted cue (or alarmed on a control)."""
    meta = scan["meta"]
    started = time.perf_counter()
    cues, columns, pixels = cues_from_scan(scan["properties"], scan["thumbnails"], [str(f) for f in scan["formats"]])
    labels = np.asarray(scan["labels"], dtype=np.int64)
    finding = shortcut_finding(np.arange(len(labels)).astype(str), labels, cues, columns, class_names=meta["names"],
                               reference_probs=scan["reference"], thumbnails=pixels, seed=meta["seed"])
    seconds = meta["scan_seconds"] + time.perf_counter() - started
    flagged = [r for r in finding.evidence["cues"] if r["flagged"]]
    kind, cue = meta["kind"], meta["cue"]
    result: dict[str, Any] = {
        "kind": kind, "dataset": meta["dataset"], "k": len(meta["names"]), "n": len(labels),
        "cue": cue, "p_class": meta["p_class"], "p_others": meta["p_others"], "class": meta["class"],
        "seed": meta["seed"], "seconds": round(seconds, 2), "embed_seconds": meta["embed_seconds"],
        "flagged": [r["cue"] for r in flagged], "flagged_groups": sorted({r["group"] for r in flagged}),
        "flagged_classes": {r["cue"]: _named_classes(r) for r in flagged if _named_classes(r)},
        "severity": finding.severity, "message": finding.message,
        "top": [{key: r.get(key) for key in ("cue", "balanced_accuracy", "share_of_signal", "p_value",
                                              "class_p_value")} for r in finding.evidence["cues"][:3]],
        "reference_balanced_accuracy": finding.summary.get("reference_balanced_accuracy"),
        "thumbnails": finding.evidence["tests"]["thumbnails"],
    }
    if kind == "planted":
        expected = ONE_CLASS_EXPECTED[cue]
        in_group = [r for r in flagged if r["group"] in expected]
        result["expected_groups"] = list(expected)
        result["found_group"] = bool(in_group)
        result["found_class"] = any(meta["class"] in _named_classes(r) for r in in_group)
        result["found"] = result["found_class"] or (result["k"] == 2 and result["found_group"])
        per_class = finding.evidence.get("per_class") or []
        result["per_class_top"] = [{key: r.get(key) for key in ("class", "column", "share_of_class",
                                                                 "share_of_others", "text")} for r in per_class[:3]]
    if "cleanlab_outcome" in meta:
        outcome = meta["cleanlab_outcome"]
        groups = sorted({CLEANLAB_GROUP.get(name, name) for name in outcome.get("flagged", [])})
        result["cleanlab"] = {"flagged": outcome.get("flagged", []), "groups": groups,
                              "seconds": outcome.get("seconds"), "error": outcome.get("error")}
        if kind == "planted":
            result["cleanlab"]["found"] = bool(set(groups) & set(ONE_CLASS_EXPECTED[cue]))
    return result


def cue_medians(scans: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures behind the visible floor, per visible-floor column: on the clean controls, how far each class's
    median lies from the other classes' median (natural differences: the largest, per dataset and K); on the
    planted runs, how far the carrier's carrying images lie from the other classes' images without the cue (per
    cue: the smallest and largest over the goal cases). Differences on the 0..1 scale; the focus as a ratio."""
    natural: dict[str, dict[str, Any]] = {}
    planted: dict[str, dict[str, list[float]]] = {}
    for scan in scans:
        meta = scan["meta"]
        if meta["kind"] == "no_correlation" or (meta["kind"] == "planted" and (meta["p_class"] < 0.8
                                                                              or meta["p_others"] > 0.1)):
            continue
        cues, columns, _ = cues_from_scan(scan["properties"], scan["thumbnails"], [str(f) for f in scan["formats"]])
        labels, carries = np.asarray(scan["labels"]), np.asarray(scan["carries"], dtype=bool)
        for column, (_, kind) in VISIBLE_FLOOR.items():
            values = cues[:, columns.index(column)]
            if meta["kind"] == "clean":
                key = f"{meta['dataset']} K={len(meta['names'])}"
                for klass, name in enumerate(meta["names"]):
                    shift = _median_shift(values[labels == klass], values[labels != klass], kind)
                    best = natural.setdefault(column, {}).setdefault(key, {"shift": 0.0 if kind == "difference"
                                                                             else 1.0, "class": None})
                    if shift is not None and shift > best["shift"]:
                        best.update(shift=round(shift, 3), **{"class": name})
            else:
                carrier = meta["names"].index(meta["class"])
                shift = _median_shift(values[(labels == carrier) & carries], values[(labels != carrier) & ~carries],
                                      kind)
                if shift is not None:
                    planted.setdefault(column, {}).setdefault(meta["cue"], []).append(shift)
    return {"natural_largest": natural,
            "planted_goal_cases": {column: {cue: {"runs": len(v), "smallest": round(min(v), 3),
                                                  "median": round(float(np.median(v)), 3), "largest": round(max(v), 3)}
                                            for cue, v in by_cue.items()} for column, by_cue in planted.items()}}


def _median_shift(inside: np.ndarray, others: np.ndarray, kind: str) -> float | None:
    """|median(inside) - median(others)|, or for a ratio the larger median over the smaller (None if empty)."""
    inside, others = inside[np.isfinite(inside)], others[np.isfinite(others)]
    if not inside.size or not others.size:
        return None
    a, b = float(np.median(inside)), float(np.median(others))
    if kind == "ratio":
        low, high = sorted((abs(a), abs(b)))
        return high / low if low > 0 else None
    return abs(a - b)


def _named_classes(row: dict[str, Any]) -> list[str]:
    """Class names a cue row singles out (``classes`` list of {"class", ...}; also a plain ``class`` field)."""
    named = [str(c["class"]) for c in row.get("classes") or [] if isinstance(c, dict) and "class" in c]
    named += [str(c) for c in row.get("classes") or [] if isinstance(c, str)]
    if row.get("class") is not None:
        named.append(str(row["class"]))
    return named


def one_class_plan(args: argparse.Namespace, datasets: dict[str, dict[str, Any]]) -> list[tuple]:
    """(dataset, K, cue, P_class, P_others, rotation, seed, kind) of every one-class run and control."""
    cues = [c for c in args.cues.split(",") if c in ONE_CLASS_CUES]
    ks = [int(k) for k in args.k.split(",") if k]
    p_class = (0.8, 1.0) if args.quick else P_CLASS
    p_others = P_OTHERS
    plan: list[tuple] = []
    combos = [(name, k) for name in datasets for k in ks if k <= len(datasets[name]["names"])]
    seed = 20_000 + args.seed_offset
    for name, k in combos:
        rotation = args.seed_offset
        for cue in cues:
            for pc in p_class:
                for po in p_others:
                    if args.quick and pc < 1.0 and po > 0.0:
                        continue
                    plan.append((name, k, cue, pc, po, rotation, seed, "planted"))
                    rotation, seed = rotation + 1, seed + 1
        if not args.quick or k == ks[0]:
            for cue in cues:
                plan.append((name, k, cue, CONTROL_P, CONTROL_P, rotation, seed, "no_correlation"))
                rotation, seed = rotation + 1, seed + 1
    # Clean controls: round-robin over the (dataset, K) combinations until there are enough.
    for index in range(args.clean_controls_one_class):
        name, k = combos[index % len(combos)]
        plan.append((name, k, None, 0.0, 0.0, index + args.seed_offset, 30_000 + args.seed_offset + index, "clean"))
    return plan


def one_class_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    planted = [r for r in runs if r["kind"] == "planted"]
    table: dict[str, dict[str, Any]] = {}
    for r in planted:
        row = table.setdefault(f"{r['cue']} P_class={r['p_class']:.1f} P_others={r['p_others']:.1f}",
                               {"runs": 0, "found": 0, "found_group": 0, "found_class": 0, "cleanlab_found": 0,
                                "cases": []})
        row["runs"] += 1
        row["found"] += r["found"]
        row["found_group"] += r["found_group"]
        row["found_class"] += r["found_class"]
        row["cleanlab_found"] += bool(r.get("cleanlab", {}).get("found"))
        row["cases"].append(f"{r['dataset']} K={r['k']} '{r['class']}': "
                            f"{'class' if r['found_class'] else 'group' if r['found_group'] else 'missed'}")
    goal = [r for r in planted if r["p_class"] >= 0.8 and r["p_others"] <= 0.1]

    def controls(kind: str) -> dict[str, Any]:
        members = [r for r in runs if r["kind"] == kind]
        alarms = [r for r in members if r["flagged"]]
        cues: dict[str, int] = {}
        for r in alarms:
            for cue in r["flagged"]:
                cues[cue] = cues.get(cue, 0) + 1
        with_cleanlab = [r for r in members if "cleanlab" in r]
        return {"runs": len(members), "datasets": sorted({f"{r['dataset']} K={r['k']}" for r in members}),
                "curato_false_alarms": len(alarms), "flagged_cues": cues,
                "alarms": [f"{r['dataset']} K={r['k']} {r['cue']} seed {r['seed']}: {r['flagged']}" for r in alarms],
                "cleanlab_runs": len(with_cleanlab),
                "cleanlab_false_alarms": sum(bool(r["cleanlab"]["flagged"]) for r in with_cleanlab),
                "cleanlab_flagged": sorted({p for r in with_cleanlab for p in r["cleanlab"]["flagged"]})}

    by_cue = {}
    for cue in ONE_CLASS_CUES:
        members = [r for r in goal if r["cue"] == cue]
        if members:
            by_cue[cue] = {"runs": len(members), "found": sum(r["found"] for r in members),
                           "found_group": sum(r["found_group"] for r in members),
                           "found_class": sum(r["found_class"] for r in members),
                           "cleanlab_found": sum(bool(r.get("cleanlab", {}).get("found")) for r in members)}
    by_dataset_k = {}
    for key in sorted({(r["dataset"], r["k"]) for r in goal}):
        members = [r for r in goal if (r["dataset"], r["k"]) == key]
        by_dataset_k[f"{key[0]} K={key[1]}"] = {
            "runs": len(members), "found": sum(r["found"] for r in members),
            "found_group": sum(r["found_group"] for r in members),
            "found_class": sum(r["found_class"] for r in members),
            "missed": sorted({r["cue"] for r in members if not r["found"]})}
    return {
        "detection": table,
        "goal_cases": {"definition": "P_class >= 0.8 and P_others <= 0.1", "runs": len(goal),
                       "found": sum(r["found"] for r in goal),
                       "found_group": sum(r["found_group"] for r in goal),
                       "found_class": sum(r["found_class"] for r in goal),
                       "cleanlab_runs": sum("cleanlab" in r for r in goal),
                       "cleanlab_found": sum(bool(r.get("cleanlab", {}).get("found")) for r in goal),
                       "by_cue": by_cue, "by_dataset_k": by_dataset_k},
        "all_planted": {"runs": len(planted), "found": sum(r["found"] for r in planted),
                        "found_group": sum(r["found_group"] for r in planted),
                        "found_class": sum(r["found_class"] for r in planted)},
        "clean_controls": controls("clean"),
        "no_correlation_controls": controls("no_correlation"),
        "not_run": "K = 100: no 100-class image dataset is available offline here (none faked); "
                   "lfw has 2 classes (K = 2 only)",
        "seconds": round(sum(r["seconds"] for r in runs), 1),
        "embed_seconds": round(sum(r["embed_seconds"] for r in runs), 1),
    }


def _one_class_line(run: dict[str, Any]) -> str:
    if run["kind"] == "planted":
        found = "CLASS" if run["found_class"] else "found" if run["found"] else "group" if run["found_group"] else (
            "missed")
    else:
        found = "ALARM" if run["flagged"] else "quiet"
    text = (f"{run['kind'][:8]:>8} {run['dataset']:>6} K={run['k']:<2} {run['cue']:>10} P_class={run['p_class']:.1f} "
            f"P_others={run['p_others']:.1f} class={run['class']!s:>10} {found:>6} flagged={run['flagged']}")
    if run["flagged_classes"]:
        text += f" classes={run['flagged_classes']}"
    text += f" ({run['seconds']} s"
    text += f", embedding {run['embed_seconds']} s)" if run["embed_seconds"] else ")"
    if "cleanlab" in run:
        text += f" | cleanlab {run['cleanlab']['flagged']} ({run['cleanlab']['seconds']} s)"
        if run["cleanlab"].get("error"):
            text += f" error: {run['cleanlab']['error']}"
    return text


def run_one_class(args: argparse.Namespace, cleanlab: bool, out: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Scan and judge every run of the plan (``--cache DIR``: also store each scan), or with ``--reuse DIR`` judge
    the stored scans again (only the shortcut check runs: a rule change costs minutes)."""
    runs = []
    if args.reuse:
        scans = load_scans(Path(args.reuse), args.only)
        print(f"one-class: {len(scans)} cached runs from {args.reuse} "
              f"({sum(s['meta']['kind'] == 'planted' for s in scans)} planted)", file=out, flush=True)
        for scan in scans:
            runs.append(one_class_judge(scan))
            print(_one_class_line(runs[-1]), file=out, flush=True)
        return runs, one_class_summary(runs)
    names = [d for d in args.datasets.split(",") if d]
    datasets = {name: load_dataset(name, args.pool) for name in names}
    plan = one_class_plan(args, datasets)
    print(f"one-class: {len(plan)} runs ({sum(p[-1] == 'planted' for p in plan)} planted), "
          f"reference on the {args.reference} pictures", file=out, flush=True)
    words = [w for w in args.only.split(",") if w]
    handled = 0  # runs of this pass so far (judged, scanned or already cached): every N-th gets cleanlab
    for index, (name, k, cue, pc, po, rotation, seed, kind) in enumerate(plan):
        tag = _scan_tag({"kind": kind, "dataset": name, "names": range(min(k, len(datasets[name]["names"]))),
                         "cue": cue or "clean", "p_class": pc, "p_others": po})
        if not all(word in tag for word in words):
            continue
        handled += 1
        if args.scan_only and (Path(args.cache) / f"{index:04d}.npz").exists():
            continue  # a --scan-only pass resumes where an interrupted one stopped
        with_cleanlab = cleanlab and (args.cleanlab_controls or rotation < 8 if kind == "clean"
                                      else (handled - 1) % args.cleanlab_every == 0)
        scan = one_class_scan(datasets[name], k, cue, pc, po, rotation, seed, args.one_class_samples,
                              args.reference, with_cleanlab, kind)
        if args.cache:
            save_scan(Path(args.cache), index, scan)
            if args.scan_only:
                continue
        runs.append(one_class_judge(scan))
        print(_one_class_line(runs[-1]), file=out, flush=True)
    return runs, one_class_summary(runs)


def frame_counts(scans: list[dict[str, Any]]) -> dict[str, dict[str, list[int]]]:
    """Where ``frame_depths`` (the frame the focus leaves out) fires on the cached scans, per dataset: [framed,
    pictures] among the pictures carrying a planted frame, among the pictures drawn at half size on a flat canvas
    (the ``scale`` cue), and among the pictures carrying no planted cue. Picture rows summed over the runs (a
    picture drawn into several runs counts in each)."""
    counts: dict[str, dict[str, list[int]]] = {}
    for scan in scans:
        meta = scan["meta"]
        carries = np.asarray(scan["carries"], dtype=bool) if meta["cue"] else np.zeros(len(scan["labels"]), bool)
        found = (frame_depths(grey_thumbnails(scan["thumbnails"]).astype(np.float64)) > 0).any(axis=1)
        by = counts.setdefault(meta["dataset"], {"planted frame": [0, 0], "canvas (scale)": [0, 0],
                                                 "no planted cue": [0, 0]})
        for group, rows in (("planted frame", carries if meta["cue"] == "frame" else None),
                            ("canvas (scale)", carries if meta["cue"] == "scale" else None),
                            ("no planted cue", ~carries)):
            if rows is not None:
                by[group][0] += int(found[rows].sum())
                by[group][1] += int(rows.sum())
    return counts


def print_cue_medians(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    """``--cue-medians``: the visible-floor figures (see :func:`cue_medians`) of the cached scans, as lines."""
    figures = cue_medians(load_scans(Path(args.reuse), args.only))
    for column, by_key in figures["natural_largest"].items():
        unit = "x" if VISIBLE_FLOOR[column][1] == "ratio" else ""
        shown = ", ".join(f"{key} {v['shift']}{unit} ('{v['class']}')" if v["class"] else f"{key} none"
                          for key, v in by_key.items())
        print(f"natural  {column:>22}: largest class-vs-others median shift on clean controls: {shown}", file=out)
    for column, by_cue in figures["planted_goal_cases"].items():
        unit = "x" if VISIBLE_FLOOR[column][1] == "ratio" else ""
        shown = ", ".join(f"{cue} {v['smallest']}-{v['largest']}{unit} (median {v['median']}, {v['runs']} runs)"
                          for cue, v in by_cue.items())
        print(f"planted  {column:>22}: carriers vs others without the cue: {shown}", file=out)
    return figures


def write_json(document: Any, target: str | None) -> None:
    """``document`` as indented JSON to stdout (``-``), to the file ``target`` (its folder made), or nowhere."""
    if not target:
        return
    text = json.dumps(document, indent=2)
    if target == "-":
        print(text)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000, help="images per all-class run")
    parser.add_argument("--pool", type=int, default=10_000, help="Fashion-MNIST training images drawn from")
    parser.add_argument("--strengths", default=None, help="all-class strengths (default 0.5,0.7,0.9,1.0)")
    parser.add_argument("--cues", default=",".join(dict.fromkeys(CUES + ONE_CLASS_CUES)),
                        help="cues to plant (all-class: tint,brightness,scale,border,jpeg,size; one-class: "
                             "tint,brightness,frame,corner,scale,blur,jpeg,format,size)")
    parser.add_argument("--clean-controls", type=int, default=None,
                        help="clean Fashion-MNIST controls (all-class; default 20, 6 with --quick)")
    parser.add_argument("--one-class", action="store_true", help="run the one-class plantings and controls too")
    parser.add_argument("--skip-all-class", action="store_true", help="with --one-class: skip the all-class runs")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="one-class datasets: fmnist,digits,lfw")
    parser.add_argument("--k", default="2,10", help="one-class numbers of classes (K = 100: no such data here)")
    parser.add_argument("--one-class-samples", type=int, default=2000, help="images per one-class run (at most)")
    parser.add_argument("--clean-controls-one-class", type=int, default=32)
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="one-class runs: shift seeds, pairs and carrier classes (held-out runs: 7003)")
    parser.add_argument("--reference", choices=("clean", "planted"), default="clean",
                        help="embed the clean pictures (cached) or the planted ones for the reference head")
    parser.add_argument("--quick", action="store_true",
                        help="smaller grid: P_class 0.8/1.0, no-correlation controls for the first K only, "
                             "all-class strengths 0.7,1.0 with 6 clean controls")
    parser.add_argument("--cleanlab-controls", action="store_true",
                        help="run cleanlab on every clean one-class control too (default: planted and "
                             "no-correlation runs plus the first 8 clean controls)")
    parser.add_argument("--cleanlab-every", type=int, default=1,
                        help="one-class: cleanlab on every N-th planted/no-correlation run only (about 20-40 s "
                             "a run on 2,000 images)")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="one-class: store each run's scan (labels, properties, thumbnails, formats, reference, "
                             "cleanlab's outcome) in DIR, for --reuse")
    parser.add_argument("--scan-only", action="store_true",
                        help="with --cache: only store the scans (judge them later with --reuse)")
    parser.add_argument("--reuse", default=None, metavar="DIR",
                        help="one-class: judge the scans stored by --cache again (only the shortcut check runs)")
    parser.add_argument("--only", default="",
                        help="one-class: run only the runs whose tag contains every one of these comma-separated "
                             "words, seeds as in the whole plan (e.g. 'planted,lfw,blur'; tags as in the run lines); "
                             "with --reuse, judge only those")
    parser.add_argument("--cue-medians", action="store_true",
                        help="with --reuse: print the visible-floor figures (per-class medians of the background, "
                             "corner and focus columns on clean controls, and what each planted cue moves them by) "
                             "and stop")
    parser.add_argument("--frame-counts", action="store_true",
                        help="with --reuse: print where the frame finder (left out of the focus) fires -- on "
                             "pictures carrying a planted frame, on the half-size canvas pictures, on pictures "
                             "without a planted cue -- and stop")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="one summary of the one-class runs in these --json outputs (a pass split by --only)")
    parser.add_argument("--no-cleanlab", action="store_true")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                        help="write everything as JSON to OUT (no OUT or '-': stdout, lines go to stderr)")
    args = parser.parse_args()
    started = time.perf_counter()
    out = sys.stderr if args.json == "-" else sys.stdout
    cleanlab = not args.no_cleanlab and CLEANLAB_PYTHON.exists()
    if not args.no_cleanlab and not cleanlab:
        print(f"cleanlab skipped: {CLEANLAB_PYTHON} missing (see benchmarks/cleanlab_spurious.py)", file=out)
    report: dict[str, Any] = {"cleanlab": cleanlab, "reference": args.reference}
    if args.cue_medians:
        if not args.reuse:
            raise SystemExit("--cue-medians reads the scans of a --cache run: give --reuse DIR")
        figures = print_cue_medians(args, out)
        write_json(figures, args.json)
        return
    if args.frame_counts:
        if not args.reuse:
            raise SystemExit("--frame-counts reads the scans of a --cache run: give --reuse DIR")
        counts = frame_counts(load_scans(Path(args.reuse), args.only))
        for dataset, by in counts.items():
            print(f"frame found {dataset:>7}: " + ", ".join(f"{group} {n:,} / {total:,}"
                                                            for group, (n, total) in by.items()), file=out)
        write_json(counts, args.json)
        return
    if args.merge:  # one summary over one-class runs made in parts (e.g. one --only DATASET per process)
        runs = [run for path in args.merge for run in json.loads(Path(path).read_text())["one_class"]["runs"]]
        merged = {"one_class": {"runs": runs, "summary": one_class_summary(runs)}, "merged_from": args.merge}
        if args.json and args.json != "-":
            Path(args.json).write_text(json.dumps(merged, indent=2))
        summary = merged["one_class"]["summary"]
        summary["detection"] = {key: {k: v for k, v in row.items() if k != "cases"}
                                for key, row in summary["detection"].items()}
        print(json.dumps(summary, indent=2))
        return
    if args.reuse:
        args.one_class, args.skip_all_class = True, True
    if args.one_class:
        runs, summary = run_one_class(args, cleanlab, out)
        report["one_class"] = {"runs": runs, "summary": summary}
    if not args.one_class or not args.skip_all_class:
        strengths = args.strengths or ("0.7,1.0" if args.quick else "0.5,0.7,0.9,1.0")
        controls = args.clean_controls if args.clean_controls is not None else 6 if args.quick else 20
        pool = load_pool(args.pool)
        reference = reference_probabilities(pool)
        runs = []
        for cue in [c for c in args.cues.split(",") if c in CUES]:
            for strength in [float(s) for s in strengths.split(",")] + [0.0]:
                runs.append(run_one(cue, strength, 100 + len(runs), args.samples, pool, reference, cleanlab))
                print(_line(runs[-1]), file=out, flush=True)
        for control in range(controls):
            runs.append(run_one(None, 0.0, 1000 + control, args.samples, pool, reference, cleanlab and control < 5))
            print(_line(runs[-1]), file=out, flush=True)
        report["all_class"] = {"samples": args.samples, "runs": runs, "summary": _summary(runs)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    summaries = {key: report[key]["summary"] for key in ("one_class", "all_class") if key in report}
    if args.one_class:
        detection = summaries["one_class"]["detection"]
        summaries["one_class"] = {**summaries["one_class"], "detection": {
            key: {k: v for k, v in row.items() if k != "cases"} for key, row in detection.items()}}
    write_json(report, args.json)
    if args.json != "-":
        print(json.dumps({**summaries, "seconds": report["seconds"]}, indent=2))


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
