"""Mask pre-labels: a per-superpixel classifier trained on the masks saved so far.

Every superpixel becomes one row of features and is labelled with the majority class of its pixels
in a saved mask; the classifier then proposes a class for every superpixel of a new image, and the
proposal is painted segment by segment. People correct the proposal instead of painting from scratch.
Pieces of the proposal under 0.5% of the image (``MIN_PIECE_SHARE``) are merged into their surroundings:
a person fixes a proposal one wrong piece at a time, and scattered small pieces cost more actions than
they save (on the benchmark's twelve photos with hand-drawn masks, 163 -> 152 actions). Not more: at 1%
the nuclei of a microscopy image (0.8% of a tile each) were merged away, 37 -> 55 actions
(docs/benchmarks.md).

Features per superpixel (``superpixel_features``):

- colour: mean and standard deviation in CIE Lab (6);
- texture: histogram of uniform local binary patterns (P=8, R=1; 10 bins) and the mean and standard
  deviation of the Sobel gradient magnitude (2);
- position and size: centroid row and column as shares of the image, log of the area share (3);
- optionally (``cnn=True``), EfficientNet-Lite0 head activations (the default embedder's
  ``extract_features`` map at 448 px, 14x14x1280) averaged inside the superpixel, reduced to 16
  dimensions by a PCA fitted on the training rows. Off by default: on the benchmark's twelve photos with
  hand-drawn masks it raised held-out pixel accuracy by 5-6 points (0.60 -> 0.65-0.66) but cost 3-4x the
  feature time and 2.5-5x the fit time, needs torch, and its proposals (151 actions against 152) still
  cost more than an empty start (118) (docs/benchmarks.md).

The classifier is a standardised LogisticRegression (``classifier="hgb"``: HistGradientBoosting), rows
weighted by superpixel area so it optimises pixel accuracy. Chosen by measurement: HistGradientBoosting
took 5-9 s per fit of 160 rows on the 2-core machines (OpenMP overhead), too slow to refit as masks
are saved; LogisticRegression fits in well under a second (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curato.errors import InputError

CNN_SIZE = 448
CNN_COMPONENTS = 16
CLASSIFIERS = ("hgb", "logreg")
# Proposal pieces smaller than this share of the image are merged away (see propose_mask).
MIN_PIECE_SHARE = 0.005
# Below this proposal_confidence, proposals cost more than an empty start on the benchmark's photos (see there).
MIN_CONFIDENCE = 0.85
_cnn_model: Any = None


@dataclass
class PrelabelModel:
    """A fitted per-superpixel classifier (or a constant class when only one was ever labelled)."""

    classes: np.ndarray
    classifier: Any = None
    cnn: bool = False
    cnn_projection: Any = None
    constant: int | None = None
    n_rows: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def _check(image: np.ndarray, superpixel_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    superpixel_map = np.asarray(superpixel_map)
    if image.shape[:2] != superpixel_map.shape:
        raise InputError(f"image {image.shape[:2]} and superpixel map {superpixel_map.shape} differ in size")
    return image, superpixel_map.astype(np.int64, copy=False)


def _cnn_feature_map(image: np.ndarray) -> np.ndarray:
    """(h, w, 1280) EfficientNet-Lite0 head activations of the image stretched to CNN_SIZE px."""
    global _cnn_model
    import torch

    from curato.features.embedders.efficientnet import load_torch_model, resize_batch

    if _cnn_model is None:
        _cnn_model = load_torch_model()
    pixels = resize_batch([np.ascontiguousarray(image, dtype=np.uint8)], CNN_SIZE)
    with torch.inference_mode():
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        features = _cnn_model.extract_features(x)[0]
    return features.permute(1, 2, 0).numpy().astype(np.float32)


def _mean_per_segment(values: np.ndarray, segments: np.ndarray, count: int) -> np.ndarray:
    sums = np.stack([np.bincount(segments, weights=values[:, j], minlength=count) for j in range(values.shape[1])], 1)
    sizes = np.maximum(np.bincount(segments, minlength=count), 1)
    return sums / sizes[:, None]


def superpixel_features(image: np.ndarray, superpixel_map: np.ndarray, *, cnn: bool = False) -> np.ndarray:
    """(S, F) float32 features, one row per superpixel label 0..S-1 (see the module docstring)."""
    from skimage.color import rgb2gray, rgb2lab
    from skimage.feature import local_binary_pattern
    from skimage.filters import sobel

    image, superpixel_map = _check(image, superpixel_map)
    height, width = superpixel_map.shape
    segments = superpixel_map.ravel()
    count = int(segments.max()) + 1
    lab = rgb2lab(image).reshape(-1, 3)
    gray = rgb2gray(image)
    gradient = sobel(gray).ravel()[:, None]
    lbp = local_binary_pattern((gray * 255).astype(np.uint8), P=8, R=1, method="uniform").astype(np.int64).ravel()
    rows, cols = np.mgrid[0:height, 0:width]
    per_pixel = np.concatenate(
        [lab, lab**2, gradient, gradient**2, np.eye(10, dtype=np.float64)[lbp],
         (rows.ravel() / height)[:, None], (cols.ravel() / width)[:, None]],
        axis=1,
    )
    means = _mean_per_segment(per_pixel, segments, count)
    colour_mean, colour_sq = means[:, 0:3], means[:, 3:6]
    colour_std = np.sqrt(np.maximum(colour_sq - colour_mean**2, 0))
    grad_mean = means[:, 6:7]
    grad_std = np.sqrt(np.maximum(means[:, 7:8] - grad_mean**2, 0))
    area = np.log(np.maximum(np.bincount(segments, minlength=count), 1) / segments.size)[:, None]
    parts = [colour_mean, colour_std, grad_mean, grad_std, means[:, 8:18], means[:, 18:20], area]
    if cnn:
        fmap = _cnn_feature_map(image)
        fh, fw = fmap.shape[:2]
        cell = (np.minimum(rows * fh // height, fh - 1) * fw + np.minimum(cols * fw // width, fw - 1)).ravel()
        # Overlap counts of superpixels with feature-map cells, row-normalised: an area-weighted pool.
        weights = np.zeros((count, fh * fw), dtype=np.float64)
        np.add.at(weights, (segments, cell), 1.0)
        weights /= np.maximum(weights.sum(1, keepdims=True), 1)
        parts.append(weights @ fmap.reshape(fh * fw, -1).astype(np.float64))
    return np.concatenate(parts, axis=1).astype(np.float32)


def majority_labels(label_map: np.ndarray, superpixel_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per superpixel: the majority class of its pixels in ``label_map``, and that class's share."""
    label_map = np.asarray(label_map).astype(np.int64).ravel()
    segments = np.asarray(superpixel_map).astype(np.int64).ravel()
    if label_map.shape != segments.shape:
        raise InputError("label map and superpixel map differ in size")
    count, classes = int(segments.max()) + 1, int(label_map.max()) + 1
    table = np.bincount(segments * classes + label_map, minlength=count * classes).reshape(count, classes)
    majority = table.argmax(1)
    share = table.max(1) / np.maximum(table.sum(1), 1)
    return majority, share


def _make_classifier(name: str) -> Any:
    if name == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, max_leaf_nodes=31, random_state=0)
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    raise InputError(f"unknown pre-label classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")


def fit_prelabel_model(
    images: Sequence[np.ndarray],
    label_maps: Sequence[np.ndarray],
    superpixel_maps: Sequence[np.ndarray],
    *,
    cnn: bool = False,
    classifier: str = "logreg",
    features: Sequence[np.ndarray] | None = None,
) -> PrelabelModel:
    """Fit the per-superpixel classifier on saved masks (``label_maps``: (H, W) class ids per image).

    ``features``: the images' ``superpixel_features`` when the caller already has them (same ``cnn``).
    """
    if not (len(images) == len(label_maps) == len(superpixel_maps)) or not images:
        raise InputError("fit_prelabel_model needs one label map and one superpixel map per image, and an image")
    rows, targets, weights = [], [], []
    for index, (image, label_map, superpixel_map) in enumerate(zip(images, label_maps, superpixel_maps, strict=True)):
        rows.append(features[index] if features is not None else superpixel_features(image, superpixel_map, cnn=cnn))
        majority, _ = majority_labels(label_map, superpixel_map)
        targets.append(majority)
        weights.append(np.bincount(np.asarray(superpixel_map).ravel(), minlength=len(majority)).astype(np.float64))
    x, y, w = np.concatenate(rows), np.concatenate(targets), np.concatenate(weights)
    classes = np.unique(y)
    if len(classes) == 1:
        return PrelabelModel(classes=classes, cnn=cnn, constant=int(classes[0]), n_rows=len(y))
    projection = None
    if cnn:
        from sklearn.decomposition import PCA

        base = x.shape[1] - 1280
        projection = PCA(n_components=min(CNN_COMPONENTS, len(x)), random_state=0).fit(x[:, base:])
        x = np.concatenate([x[:, :base], projection.transform(x[:, base:])], axis=1)
    from threadpoolctl import threadpool_limits

    model = _make_classifier(classifier)
    fit_weights = w / w.mean()
    # One thread: the tables are small, and OpenMP threads spin-waiting on busy cores made one fit
    # take 13 s instead of 0.2 s when another process shared the machine.
    with threadpool_limits(1):
        if classifier == "hgb":
            model.fit(x, y, sample_weight=fit_weights)
        else:
            model.fit(x, y, logisticregression__sample_weight=fit_weights)
    return PrelabelModel(classes=classes, classifier=model, cnn=cnn, cnn_projection=projection, n_rows=len(y),
                         info={"classifier": classifier})


def merge_small_pieces(label_map: np.ndarray, min_share: float) -> np.ndarray:
    """Pieces (4-connected pixels of one class) under ``min_share`` of the image take the class of the
    nearest pixel of a larger piece; the map is returned unchanged when no piece is that large."""
    from scipy import ndimage

    label_map = np.asarray(label_map)
    if min_share <= 0:
        return label_map
    keep = np.zeros(label_map.shape, dtype=bool)
    for value in np.unique(label_map):
        pieces, _ = ndimage.label(label_map == value)
        large = np.bincount(pieces.ravel()) >= min_share * label_map.size
        large[0] = False
        keep |= large[pieces]
    if keep.all() or not keep.any():
        return label_map
    _, (rows, cols) = ndimage.distance_transform_edt(~keep, return_indices=True)
    return label_map[rows, cols]


def _model_rows(model: PrelabelModel, image: np.ndarray, segments: np.ndarray,
                features: np.ndarray | None) -> np.ndarray:
    """The classifier's input rows for an image's superpixels (CNN columns projected as in the fit)."""
    x = features if features is not None else superpixel_features(image, segments, cnn=model.cnn)
    if model.cnn:
        base = x.shape[1] - 1280
        x = np.concatenate([x[:, :base], model.cnn_projection.transform(x[:, base:])], axis=1)
    return x


def proposal_confidence(
    model: PrelabelModel,
    image: np.ndarray,
    superpixel_map: np.ndarray,
    *,
    features: np.ndarray | None = None,
) -> float:
    """How sure the classifier is of its proposal: the top class probability per superpixel, averaged over
    the image's pixels (1.0 for a model that only ever saw one class).

    Why: a person corrects a proposal one wrong piece at a time, so an unsure proposal can cost more than
    an empty start. On the benchmark's twelve photos with hand-drawn masks (docs/benchmarks.md), leave-one-out,
    the six proposals under 0.85 (0.71-0.82) cost more actions than an empty start but one; those at 0.91-0.94
    (the video frames, the shelf bin) cost the same or less but two frames; the nuclei tiles score 0.96-0.97.
    Not offering proposals under ``MIN_CONFIDENCE`` (0.85, read off those same photos) took the scripted
    annotator from 152 to 121 actions there (118 from empty). It is no out-of-distribution detector: a
    logistic regression is sure far from its data (a model fitted on coins scores unrelated photos 0.93-1.0).
    """
    image, segments = _check(image, superpixel_map)
    if model.constant is not None:
        return 1.0
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        probabilities = np.asarray(model.classifier.predict_proba(_model_rows(model, image, segments, features)))
    area = np.bincount(segments.ravel(), minlength=len(probabilities)).astype(np.float64)
    return float((probabilities.max(1) * area).sum() / max(area.sum(), 1.0))


def propose_mask(
    model: PrelabelModel,
    image: np.ndarray,
    superpixel_map: np.ndarray,
    *,
    features: np.ndarray | None = None,
    min_piece_share: float = MIN_PIECE_SHARE,
) -> np.ndarray:
    """(H, W) int32 proposed class per pixel: each superpixel painted with its predicted class, then pieces
    under ``min_piece_share`` of the image merged into their surroundings (``merge_small_pieces``).

    Why the merge: a person fixes a proposal one wrong piece at a time, so scattered small wrong pieces
    cost more actions than they save (docs/benchmarks.md, "Superpixels and pre-labels").
    """
    image, segments = _check(image, superpixel_map)
    if model.constant is not None:
        return np.full(segments.shape, model.constant, dtype=np.int32)
    x = _model_rows(model, image, segments, features)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        predicted = np.asarray(model.classifier.predict(x)).astype(np.int32)
    return merge_small_pieces(predicted[segments], min_piece_share)


def proposal_overlap(proposed: np.ndarray, saved: np.ndarray) -> float:
    """Share of the saved mask's pixels that kept the proposal's class (1.0: accepted unchanged)."""
    proposed, saved = np.asarray(proposed), np.asarray(saved)
    if proposed.shape != saved.shape:
        raise InputError(f"proposal {proposed.shape} and saved mask {saved.shape} differ in size")
    if saved.size == 0:
        return 1.0
    return float((proposed == saved).mean())
