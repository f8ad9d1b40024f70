"""What augmentation and pseudo-labelling are worth, measured on the same curve as the baseline.

* augmentation: each training image gets ``copies`` randomly flipped, cropped and colour-jittered versions
  (NumPy only), re-embedded through the same backbone; the head trains on originals + copies;
* pseudo-labels: the head trained on the subset labels the unlabelled pool; predictions at or above
  ``threshold`` confidence join the training set with their predicted labels and the head is refitted.

Either is then priced in labels with ``forecast.labels_worth``: the baseline labels needed for the
strategy's metric, minus the labels it used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curato.models.oof import fit_predict_probabilities
from curato.sizing.measure import train_and_score_head

CROP_RANGE = (0.8, 1.0)  # side of the random crop, as a share of the image side
JITTER = 0.2  # brightness, contrast and saturation factors drawn from 1 +- JITTER
PSEUDO_THRESHOLD = 0.9


def augment_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random horizontal flip, random crop (resized back, nearest neighbour) and colour jitter of an
    ``(h, w, 3)`` uint8 image; same shape and dtype."""
    image = np.asarray(image)
    height, width = image.shape[:2]
    out = image[:, ::-1] if rng.random() < 0.5 else image
    side = rng.uniform(*CROP_RANGE)
    crop_h, crop_w = max(1, round(height * side)), max(1, round(width * side))
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    rows = top + (np.arange(height) * crop_h // height)
    cols = left + (np.arange(width) * crop_w // width)
    out = out[rows][:, cols].astype(np.float32)
    brightness, contrast, saturation = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
    out *= brightness
    mean = out.mean()
    out = (out - mean) * contrast + mean
    grey = out.mean(axis=2, keepdims=True)
    out = (out - grey) * saturation + grey
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def augmented_images(images: list[np.ndarray], *, seed: int, copies: int = 1) -> list[np.ndarray]:
    """``copies`` augmented versions of each image, image by image (``copies`` per image, in order)."""
    rng = np.random.default_rng(seed)
    return [augment_image(image, rng) for image in images for _ in range(copies)]


def augmentation_scores(embeddings: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, eval_rows: np.ndarray,
                        augmented: np.ndarray, *, n_classes: int, seed: int = 0,
                        components: int | None = None) -> dict[str, Any]:
    """Scores of the head trained on ``train_rows`` plus their augmented embeddings ``augmented``
    (``(len(train_rows) * copies, d)``, each row's copies consecutive); ``components``: the head's width, as
    for the baseline curve (``measure.curve_components``)."""
    copies = len(augmented) // max(len(train_rows), 1)
    return train_and_score_head(embeddings, labels, train_rows, eval_rows, n_classes=n_classes, seed=seed,
                                extra_embeddings=augmented, extra_labels=np.repeat(labels[train_rows], copies),
                                components=components)


def pseudo_label_scores(embeddings: np.ndarray, labels: np.ndarray, train_rows: np.ndarray,
                        unlabeled_rows: np.ndarray, eval_rows: np.ndarray, *, n_classes: int,
                        threshold: float = PSEUDO_THRESHOLD, seed: int = 0,
                        components: int | None = None) -> dict[str, Any]:
    """Scores of the head refitted on ``train_rows`` plus the unlabelled rows it labels with confidence
    >= ``threshold``; adds ``pseudo_labeled`` (how many joined) and, when ``labels`` holds their hidden
    true labels (>= 0), ``pseudo_label_accuracy``. ``components``: both heads' width, as for the baseline curve."""
    x = np.concatenate([embeddings[train_rows], embeddings[unlabeled_rows]]).astype(np.float32, copy=False)
    y = np.concatenate([labels[train_rows], np.full(len(unlabeled_rows), -1)]).astype(np.int64)
    weights = np.zeros(len(x))
    weights[:len(train_rows)] = 1.0
    probs = fit_predict_probabilities(x, y, weights, n_classes=n_classes, seed=seed,
                                      components=components)[len(train_rows):]
    confident = probs.max(axis=1) >= threshold
    guessed = probs.argmax(axis=1)[confident]
    scores = train_and_score_head(embeddings, labels, train_rows, eval_rows, n_classes=n_classes, seed=seed,
                                  extra_embeddings=embeddings[unlabeled_rows[confident]], extra_labels=guessed,
                                  components=components)
    hidden = labels[unlabeled_rows[confident]]
    known = hidden >= 0
    scores["pseudo_labeled"] = int(confident.sum())
    scores["pseudo_label_accuracy"] = float(np.mean(guessed[known] == hidden[known])) if known.any() else None
    return scores
