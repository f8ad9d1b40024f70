# Run from the repository root (2 cores: a few minutes for the 10-image substitute set):
#   .venv/bin/python benchmarks/superpixel_effort.py --substitute .bench/sp_data --json .bench/superpixel_effort.json
#   .venv/bin/python benchmarks/superpixel_effort.py --images DIR --masks DIR --json OUT
"""Superpixel effort: actions a scripted annotator needs to reach IoU >= 0.9, with and without superpixels.

Data: ``--images DIR`` (PNG/JPEG) and ``--masks DIR`` (PNGs named by the image's stem; 0 = background,
1..K = classes). ``--substitute DIR`` writes and uses a SUBSTITUTE set instead (no photographs with
human-made masks are installable here): ten scikit-image photographs with masks made by a deterministic
segmentation that is not superpixel-based (three-class multi-Otsu on the Gaussian-smoothed grey image,
components under 0.2% of the image merged into their nearest neighbour class).

The scripted annotator always fixes the largest wrong connected region (4-connected pixels whose current
class is wrong and whose reference class is the same k), one action at a time, until the mean IoU over
the reference's classes (background included) reaches ``--target``:

* brush stroke: a disc of radius r in ``BRUSH_RADII`` dragged along a path of at most ``STROKE_LENGTH`` px
  paints at most 2*r*L + pi*r^2 pixels. It may only paint where a disc of radius r fits inside the
  reference region of class k (a morphological opening: the annotator does not paint over other classes),
  one connected piece per stroke, in a zigzag of lanes 2r+1 px high. The annotator picks the radius that
  fixes most pixels. Radius 0 is a 1-px pen.
* superpixel click or drag: paints whole superpixels (at coarse, medium or fine; switching level is a key
  press and not counted) with class k. A click paints one; a drag of at most ``STROKE_LENGTH`` px paints
  at most STROKE_LENGTH / sqrt(mean segment area) of them (the segments a zigzag of that length crosses).
  The annotator paints the segments overlapping the region with the largest positive net gain (pixels
  fixed minus correct pixels overwritten), if that beats the best brush stroke; both count one action.

Three ways per image: ``brush`` (from an all-background mask, brush only), ``superpixels`` (same start,
clicks + brush), ``prelabel`` (starting from ``curato.models.prelabel`` trained on the OTHER images'
reference masks, leave-one-out, then clicks + brush). Also measured: superpixel time per 640x480 and
1024x768 image against scikit-image ``slic()``, boundary recall at equal segment counts, and the
pre-label classifier's held-out pixel accuracy (HistGradientBoosting vs LogisticRegression, with and
without pooled CNN features, against the majority class).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from curato.features.superpixels import (
    METHODS,
    boundary_recall,
    level_counts,
    superpixel_levels,
    superpixels,
)
from curato.models.prelabel import fit_prelabel_model, majority_labels, propose_mask, superpixel_features

BRUSH_RADII = (32, 16, 8, 4, 2, 1, 0)
STROKE_LENGTH = 256
SUBSTITUTE = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "immunohistochemistry", "clock",
              "cell", "retina")
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def substitute_mask(image: np.ndarray, classes: int = 3) -> np.ndarray:
    """The substitute reference: multi-Otsu classes of the smoothed grey image, small pieces merged away."""
    from skimage.color import rgb2gray
    from skimage.filters import gaussian, threshold_multiotsu

    grey = gaussian(rgb2gray(image), sigma=2)
    mask = np.digitize(grey, threshold_multiotsu(grey, classes=classes)).astype(np.uint8)
    keep = np.zeros(mask.shape, bool)
    for k in range(classes):
        pieces, _ = ndi.label(mask == k)
        sizes = np.bincount(pieces.ravel())
        large = sizes >= mask.size // 500
        large[0] = False
        keep |= large[pieces]
    _, nearest = ndi.distance_transform_edt(~keep, return_indices=True)
    return mask[nearest[0], nearest[1]]


def write_substitute(root: Path) -> tuple[Path, Path]:
    """Write the substitute set (scikit-image photos + multi-Otsu masks) as PNGs; return (images, masks)."""
    import skimage.data
    from PIL import Image
    from skimage.transform import resize

    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in SUBSTITUTE:
            image = getattr(skimage.data, name)()
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            image = image[:, :, :3]
            if max(image.shape[:2]) > 640:
                scale = 640 / max(image.shape[:2])
                size = (round(image.shape[0] * scale), round(image.shape[1] * scale))
                image = (resize(image, size, anti_aliasing=True) * 255).round().astype(np.uint8)
            Image.fromarray(image).save(images / f"{name}.png")
            Image.fromarray(substitute_mask(image)).save(masks / f"{name}.png")
    return images, masks


def load_pairs(images: Path, masks: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(stem, RGB uint8 image, int mask) for every image that has a mask of the same size."""
    from PIL import Image

    pairs = []
    for path in sorted(p for p in images.iterdir() if p.suffix.lower() in EXTENSIONS):
        mask_path = masks / f"{path.stem}.png"
        if not mask_path.exists():
            continue
        image = np.asarray(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(mask_path)).astype(np.int32)
        if mask.ndim == 3:
            mask = mask[:, :, 0]
        if mask.shape != image.shape[:2]:
            print(f"skip {path.name}: mask {mask.shape} vs image {image.shape[:2]}", file=sys.stderr)
            continue
        pairs.append((path.stem, image, mask))
    if not pairs:
        raise SystemExit(f"no image in {images} has a mask in {masks}")
    return pairs


def mean_iou(current: np.ndarray, reference: np.ndarray, classes: np.ndarray) -> float:
    """Mean IoU over the reference's classes."""
    scores = []
    for k in classes:
        a, b = current == k, reference == k
        scores.append((a & b).sum() / max((a | b).sum(), 1))
    return float(np.mean(scores))


def _opening(region: np.ndarray, radius: int) -> np.ndarray:
    """Morphological opening by a disc (via distance transforms: fast for large radii)."""
    if radius == 0:
        return region
    eroded = ndi.distance_transform_edt(np.pad(region, 1)) [1:-1, 1:-1] > radius
    if not eroded.any():
        return eroded
    return ndi.distance_transform_edt(~eroded) <= radius


def _zigzag_first(pixels: np.ndarray, radius: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` pixels of a boolean region in a zigzag of lanes 2r+1 px high."""
    rows, cols = np.nonzero(pixels)
    lane = rows // (2 * radius + 1)
    order = np.lexsort((np.where(lane % 2 == 0, cols, -cols), lane))[:count]
    return rows[order], cols[order]


class Annotator:
    """The scripted annotator for one image (see the module docstring)."""

    def __init__(self, reference: np.ndarray, levels: list[np.ndarray], target: float, limit: int) -> None:
        self.reference, self.levels, self.target, self.limit = reference, levels, target, limit
        self.classes = np.unique(reference)
        self.open = {(int(k), r): _opening(reference == k, r) for k in self.classes for r in BRUSH_RADII}

    def _largest_wrong(self, current: np.ndarray) -> tuple[int, np.ndarray] | None:
        best: tuple[int, int, np.ndarray] | None = None
        wrong = current != self.reference
        for k in self.classes:
            pieces, n = ndi.label(wrong & (self.reference == k))
            if n == 0:
                continue
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            index = int(sizes.argmax())
            if best is None or sizes[index] > best[0]:
                best = (int(sizes[index]), int(k), pieces == index)
        return None if best is None else (best[1], best[2])

    def _brush(self, k: int, region: np.ndarray) -> tuple[int, tuple[np.ndarray, np.ndarray]]:
        rows, cols = np.nonzero(region)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        crop = region[top:bottom, left:right]
        best: tuple[int, tuple[np.ndarray, np.ndarray]] = (0, (rows[:0], cols[:0]))
        for radius in BRUSH_RADII:
            paintable = crop & self.open[(k, radius)][top:bottom, left:right]
            if not paintable.any():
                continue
            pieces, _ = ndi.label(paintable, structure=np.ones((3, 3), bool))
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            piece = pieces == sizes.argmax()
            cap = int(2 * radius * STROKE_LENGTH + np.pi * radius**2) if radius else STROKE_LENGTH
            gain = min(int(sizes.max()), cap)
            if gain > best[0]:
                r, c = _zigzag_first(piece, radius, cap)
                best = (gain, (r + top, c + left))
        return best

    def _click(self, k: int, region: np.ndarray, current: np.ndarray) -> tuple[int, np.ndarray | None]:
        fix = ((self.reference == k) & (current != k)).ravel().astype(np.float64)
        harm = ((self.reference != k) & (current == self.reference)).ravel().astype(np.float64)
        best: tuple[int, np.ndarray | None] = (0, None)
        for segments in self.levels:
            flat = segments.ravel()
            count = int(flat.max()) + 1
            gains = np.bincount(flat, weights=fix - harm, minlength=count)
            candidates = np.unique(segments[region])
            candidates = candidates[gains[candidates] > 0]
            if not len(candidates):
                continue
            # A drag of at most STROKE_LENGTH px crosses about STROKE_LENGTH / side segments.
            reach = max(1, int(STROKE_LENGTH / np.sqrt(flat.size / count)))
            chosen = candidates[np.argsort(-gains[candidates], kind="stable")[:reach]]
            gain = int(gains[chosen].sum())
            if gain > best[0]:
                best = (gain, np.isin(segments, chosen))
        return best

    def run(self, start: np.ndarray) -> dict[str, Any]:
        """Actions (clicks, strokes) from ``start`` until mean IoU >= target (or the limit)."""
        current = start.astype(np.int32).copy()
        clicks = strokes = 0
        while mean_iou(current, self.reference, self.classes) < self.target and clicks + strokes < self.limit:
            found = self._largest_wrong(current)
            if found is None:
                break
            k, region = found
            brush_gain, brushed = self._brush(k, region)
            click_gain, segment = self._click(k, region, current) if self.levels else (0, None)
            if segment is not None and click_gain >= brush_gain:
                current[segment] = k
                clicks += 1
            else:
                current[brushed] = k
                strokes += 1
        return {"actions": clicks + strokes, "clicks": clicks, "strokes": strokes,
                "iou": round(mean_iou(current, self.reference, self.classes), 4),
                "start_iou": round(mean_iou(start, self.reference, self.classes), 4)}


def _timed(function: Any, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def speed(photo: np.ndarray, methods: list[str]) -> dict[str, Any]:
    """Seconds per image at 640x480 and 1024x768 (medium level count) per method, and slic() defaults."""
    from skimage.segmentation import slic
    from skimage.transform import resize

    out: dict[str, Any] = {}
    for width, height in ((640, 480), (1024, 768)):
        image = (resize(photo, (height, width), anti_aliasing=True) * 255).round().astype(np.uint8)
        count = level_counts(image.shape)["medium"]
        row: dict[str, Any] = {"n_segments": count, "slic_defaults_n100": _timed(lambda image=image: slic(image))}
        row["slic_defaults_same_n"] = _timed(lambda image=image, count=count: slic(image, n_segments=count))
        for method in methods:
            row[method] = _timed(
                lambda image=image, count=count, method=method: superpixels(image, n_segments=count, method=method),
                1 if method == "felzenszwalb" else 3,
            )
        out[f"{width}x{height}"] = {key: round(value, 4) if isinstance(value, float) else value
                                    for key, value in row.items()}
    return out


def recall_at_equal_counts(pairs: list[tuple[str, np.ndarray, np.ndarray]], methods: list[str]) -> dict[str, Any]:
    """Boundary recall (2 px) per method and level; requested counts corrected once so that every
    method's ACTUAL count matches the level's count."""
    out: dict[str, Any] = {}
    for method in methods:
        per_level: dict[str, Any] = {}
        for level in ("coarse", "medium", "fine"):
            recalls, ratios = [], []
            for _, image, mask in pairs:
                target = level_counts(image.shape)[level]
                labels = superpixels(image, n_segments=target, method=method)
                actual = int(labels.max()) + 1
                if abs(actual - target) > 0.05 * target:
                    labels = superpixels(image, n_segments=max(2, round(target * target / actual)), method=method)
                ratios.append((int(labels.max()) + 1) / target)
                recalls.append(boundary_recall(labels, mask))
            per_level[level] = {"recall": round(float(np.mean(recalls)), 4),
                                "count_ratio": round(float(np.mean(ratios)), 3)}
        out[method] = per_level
    return out


def prelabel_accuracy(pairs: list, maps: list[dict[str, np.ndarray]], use_cnn: bool) -> dict[str, Any]:
    """Leave-one-out pixel accuracy of the proposal per classifier (and CNN features), vs the majority class."""
    variants = [("logreg", False)] + ([("logreg", True)] if use_cnn else [])
    features = {cnn: [superpixel_features(img, m["medium"], cnn=cnn)
                      for (_, img, _), m in zip(pairs, maps, strict=True)]
                for cnn in {v[1] for v in variants}}
    out: dict[str, Any] = {}
    majority = []
    for i, (_, _, mask) in enumerate(pairs):
        others = np.concatenate([pairs[j][2].ravel() for j in range(len(pairs)) if j != i])
        majority.append(float((mask == np.bincount(others).argmax()).mean()))
    out["majority_class"] = round(float(np.mean(majority)), 4)
    for classifier, cnn in variants:
        scores, began = [], time.perf_counter()
        for i, (_, image, mask) in enumerate(pairs):
            rest = [j for j in range(len(pairs)) if j != i]
            model = fit_prelabel_model([pairs[j][1] for j in rest], [pairs[j][2] for j in rest],
                                       [maps[j]["medium"] for j in rest], cnn=cnn, classifier=classifier,
                                       features=[features[cnn][j] for j in rest])
            proposal = propose_mask(model, image, maps[i]["medium"], features=features[cnn][i])
            scores.append(float((proposal == mask).mean()))
        out[f"{classifier}{'+cnn' if cnn else ''}"] = {"accuracy": round(float(np.mean(scores)), 4),
                                                       "seconds": round(time.perf_counter() - began, 2)}
    ceiling = [float((majority_labels(mask, m["medium"])[0][m["medium"]] == mask).mean())
               for (_, _, mask), m in zip(pairs, maps, strict=True)]
    out["superpixel_ceiling"] = round(float(np.mean(ceiling)), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    global STROKE_LENGTH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path)
    parser.add_argument("--masks", type=Path)
    parser.add_argument("--substitute", type=Path, help="write the scikit-image substitute set here and use it")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--method", default=None, help="superpixel method for the annotator (default: curato's)")
    parser.add_argument("--methods", default=",".join(METHODS), help="methods to time and score")
    parser.add_argument("--cnn", action="store_true", help="also score pooled EfficientNet-Lite0 features")
    parser.add_argument("--prelabel-cnn", action="store_true", help="the annotator's pre-label model uses them")
    parser.add_argument("--stroke-length", type=int, default=STROKE_LENGTH, help="longest stroke or drag, px")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--limit", type=int, default=3000, help="most actions per image and way")
    args = parser.parse_args(argv)
    STROKE_LENGTH = args.stroke_length
    if args.substitute:
        args.images, args.masks = write_substitute(args.substitute)
        source = "substitute: scikit-image photos, multi-Otsu masks (not human-made)"
    elif args.images and args.masks:
        source = f"{args.images} + {args.masks}"
    else:
        parser.error("give --images and --masks, or --substitute DIR")
    pairs = load_pairs(args.images, args.masks)
    methods = [m for m in args.methods.split(",") if m]
    began = time.perf_counter()
    kwargs = {"method": args.method} if args.method else {}
    maps = [superpixel_levels(image, **kwargs) for _, image, _ in pairs]
    report: dict[str, Any] = {"source": source, "images": len(pairs), "target_iou": args.target,
                              "brush_radii": list(BRUSH_RADII), "stroke_length": STROKE_LENGTH,
                              "prelabel_cnn": args.prelabel_cnn}
    report["speed_seconds"] = speed(pairs[0][1], methods)
    report["boundary_recall"] = recall_at_equal_counts(pairs, methods)
    report["prelabel"] = prelabel_accuracy(pairs, maps, args.cnn)
    features = [superpixel_features(image, m["medium"], cnn=args.prelabel_cnn)
                for (_, image, _), m in zip(pairs, maps, strict=True)]
    per_image = []
    for i, (stem, image, mask) in enumerate(pairs):
        annotator = Annotator(mask, [], args.target, args.limit)
        blank = np.zeros_like(mask)
        row: dict[str, Any] = {"image": stem, "shape": list(mask.shape), "brush": annotator.run(blank)}
        annotator.levels = [maps[i][level] for level in ("coarse", "medium", "fine")]
        row["superpixels"] = annotator.run(blank)
        rest = [j for j in range(len(pairs)) if j != i]
        model = fit_prelabel_model([pairs[j][1] for j in rest], [pairs[j][2] for j in rest],
                                   [maps[j]["medium"] for j in rest], cnn=args.prelabel_cnn,
                                   features=[features[j] for j in rest])
        row["prelabel"] = annotator.run(propose_mask(model, image, maps[i]["medium"], features=features[i]))
        per_image.append(row)
        print(f"{stem}: brush {row['brush']['actions']}, superpixels {row['superpixels']['actions']}, "
              f"prelabel {row['prelabel']['actions']}", file=sys.stderr)
    totals = {way: sum(r[way]["actions"] for r in per_image) for way in ("brush", "superpixels", "prelabel")}
    report["per_image"] = per_image
    report["totals"] = totals
    report["ratio"] = round(totals["brush"] / max(totals["superpixels"], 1), 2)
    report["ratio_prelabel"] = round(totals["brush"] / max(totals["prelabel"], 1), 2)
    report["seconds"] = round(time.perf_counter() - began, 1)
    speed_vga = report["speed_seconds"]["640x480"]
    default = args.method or "slic-half"
    print(f"superpixel effort on {len(pairs)} images ({source}): brush {totals['brush']} actions, "
          f"superpixels {totals['superpixels']} (ratio {report['ratio']}x), with pre-labels {totals['prelabel']} "
          f"(ratio {report['ratio_prelabel']}x); {default} {speed_vga.get(default, float('nan')) * 1000:.0f} ms "
          f"vs slic {speed_vga['slic_defaults_same_n'] * 1000:.0f} ms at 640x480")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
