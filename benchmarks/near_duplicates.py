# Run from the repository root:
#   .venv/bin/python benchmarks/near_duplicates.py            (add --json for machine-readable output)
# Embeddings are cached under .bench/near_duplicates/ (first run ~1 min to embed ~13k images).
"""Near-duplicate and train/test leakage detection on real images with planted copies.

Data: the first 10,000 Fashion-MNIST training images ("train") and the first 2,000 test images
("test"). Planted copies of training images, each made by one or two random edits of:

* resize to 20..84 px (bilinear) -- stored at the new size,
* JPEG re-compression at quality 40..90,
* crop of 1-3 px from one or two sides (kept at the smaller size, or resized back to 28 px),
* shift by 1-2 px (zero fill, Fashion-MNIST's background),
* brightness x 0.85..1.15.

400 copies go into train (within-split duplicates), 200 into test (train/test leakage); of each,
one in ten is a byte-identical copy instead (an exact duplicate). Every image is embedded with
``efficientnet-lite0-112``, perceptual-hashed, content-hashed (PNG / JPEG bytes) and handed to
:func:`curato.checks.duplicates.duplicate_findings` with its defaults.

Scoring (pairs): the reported pairs are all pairs inside every reported near-duplicate or
exact-duplicate group. A reported pair is correct when it is planted, or when its two images are
"the same picture" by a strict pixel criterion: after mapping each planted copy to its source image,
the two 28x28 sources differ by at most 8 grey levels in 99% of pixels and by at most 3 grey
levels on average (this is how Fashion-MNIST's own genuine duplicates -- the same product photo
entered twice -- are counted; they are listed separately, not hidden). Everything else counts as a
false positive. Recall is over the planted pairs only. Leakage: every planted train->test pair must
be inside one "split_leakage" group, with both ids listed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curato.checks.duplicates import DuplicateParams, duplicate_findings, second_look_side
from curato.features.properties import grey_squares, image_features
from curato.features.thumbnails import fourier_descriptors, grey_thumbnails
from curato.hashing import content_hash
from curato.imageio import read_idx
from curato.neighbors import knn, unit_rows

FASHION = Path("/usr/share/datasets/fashion-mnist")
CACHE = Path(".bench/near_duplicates")
EMBEDDER = "efficientnet-lite0-112"
EDITS = ("resize", "jpeg", "crop", "shift", "brightness")
PIXEL_MEAN_TOLERANCE = 3.0
PIXEL_P99_TOLERANCE = 8.0


def load_fashion(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n_train`` training and ``n_test`` test images (28x28 uint8) and labels."""
    train = read_idx(FASHION / "train-images-idx3-ubyte.gz")[:n_train]
    train_labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz")[:n_train]
    test = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:n_test]
    test_labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:n_test]
    return np.asarray(train), np.asarray(train_labels), np.asarray(test), np.asarray(test_labels)


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG encoding (what an image folder would store)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def edit(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bytes, str]:
    """One or two random edits of a 28x28 grey image; returns (pixels, stored bytes, description)."""
    chosen = list(rng.choice(EDITS, size=int(rng.integers(1, 3)), replace=False))
    # JPEG last, so its bytes are what gets stored.
    chosen.sort(key=lambda name: name == "jpeg")
    pixels = image
    steps = []
    stored = None
    for name in chosen:
        if name == "resize":
            side = int(rng.choice([24, 36, 42, 56, 84]))
            pixels = np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR))
            steps.append(f"resize{side}")
        elif name == "crop":
            # one pixel off one or two sides, kept at the smaller size or stretched back
            sides = np.zeros(4, dtype=int)
            sides[rng.choice(4, size=int(rng.integers(1, 3)), replace=False)] = 1
            top, bottom, left, right = (int(v) for v in sides)
            height, width = pixels.shape
            pixels = pixels[top:height - bottom, left:width - right]
            if rng.random() < 0.5:
                pixels = np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR))
            steps.append(f"crop{top},{bottom},{left},{right}")
        elif name == "shift":
            dy, dx = ((int(rng.choice([-1, 1])), 0) if rng.random() < 0.5 else (0, int(rng.choice([-1, 1]))))
            shifted = np.zeros_like(pixels)
            height, width = pixels.shape
            shifted[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
                pixels[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
            pixels = shifted
            steps.append(f"shift{dy},{dx}")
        elif name == "brightness":
            factor = float(rng.uniform(0.85, 1.15))
            pixels = np.clip(pixels.astype(np.float32) * factor, 0, 255).astype(np.uint8)
            steps.append(f"bright{factor:.2f}")
        else:
            quality = int(rng.choice([60, 70, 80, 90, 95]))
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
            stored = buffer.getvalue()
            pixels = np.asarray(Image.open(io.BytesIO(stored)).convert("L"))
            steps.append(f"jpeg{quality}")
    return np.ascontiguousarray(pixels), stored if stored is not None else png_bytes(pixels), "+".join(steps)


def plant(n_train: int = 10_000, n_test: int = 2_000, n_train_copies: int = 400, n_test_copies: int = 200,
          seed: int = 0) -> dict[str, Any]:
    """The benchmark dataset: originals plus planted copies, with everything the check needs."""
    train, train_labels, test, test_labels = load_fashion(n_train, n_test)
    rng = np.random.default_rng(seed)
    sources = rng.choice(n_train, size=n_train_copies + n_test_copies, replace=False)
    images = [*train, *test]
    stored = [png_bytes(image) for image in images]
    ids = [f"train/{i:05d}" for i in range(n_train)] + [f"test/{i:05d}" for i in range(n_test)]
    splits = ["train"] * n_train + ["test"] * n_test
    labels = [int(v) for v in train_labels] + [int(v) for v in test_labels]
    source_of = list(range(n_train)) + [-1] * n_test  # index into `train` of each image's source picture
    planted = []
    for number, source in enumerate(sources):
        split = "train" if number < n_train_copies else "test"
        exact = number % 10 == 0
        if exact:
            pixels, data, how = train[source], stored[source], "exact"
        else:
            pixels, data, how = edit(train[source], rng)
        planted.append({"source": ids[source], "copy": f"{split}/copy{number:04d}", "edit": how,
                        "leak": split == "test", "exact": exact})
        images.append(pixels)
        stored.append(data)
        ids.append(f"{split}/copy{number:04d}")
        splits.append(split)
        labels.append(int(train_labels[source]))
        source_of.append(int(source))
    return {"images": images, "ids": np.array(ids, dtype=object), "splits": np.array(splits, dtype=object),
            "labels": np.array(labels, dtype=object), "content_hashes": np.array([content_hash(b) for b in stored]),
            "source_of": np.array(source_of), "originals": np.concatenate([train, test]), "n_train": n_train,
            "planted": planted}


def as_rgb(images: list[np.ndarray]) -> list[np.ndarray]:
    """Grey images as HxWx3 uint8, the way an RGB loader hands them over."""
    return [np.repeat(image[:, :, None], 3, axis=2) for image in images]


def cached_embeddings(data: dict[str, Any]) -> np.ndarray:
    """Embeddings of every image, computed once and cached by the content of the dataset."""
    key = hashlib.blake2b("".join(data["content_hashes"]).encode(), digest_size=8).hexdigest()
    path = CACHE / f"{EMBEDDER}-{key}.npy"
    if path.exists():
        return np.load(path)
    from curato.features.embedders import get_embedder

    vectors = get_embedder(EMBEDDER).embed(as_rgb(data["images"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def same_picture(originals: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The strict pixel criterion: within one pixel of shift, mean |diff| <= 3 and 99th pct |diff| <= 8."""
    if first.size == 0:
        return np.zeros(0, dtype=bool)
    a = originals[first].astype(np.float32)
    b = originals[second].astype(np.float32)
    result = np.zeros(first.size, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            diff = np.abs(a - np.roll(np.roll(b, dy, axis=1), dx, axis=2)).reshape(first.size, -1)
            result |= (diff.mean(axis=1) <= PIXEL_MEAN_TOLERANCE) & \
                (np.percentile(diff, 99, axis=1) <= PIXEL_P99_TOLERANCE)
    return result


def reported_groups(findings: dict[str, Any]) -> list[list[str]]:
    """Every group reported by exact_duplicates or near_duplicates, as member id lists."""
    seen: dict[tuple[str, int], list[str]] = {}
    for check in ("exact_duplicates", "near_duplicates"):
        for detail in findings[check].details.values():
            seen.setdefault((check, detail["group"]), detail["members"])
    return list(seen.values())


def evaluate(data: dict[str, Any], findings: dict[str, Any]) -> dict[str, Any]:
    """Pair precision / recall of the reported groups and the leakage check (see the module docstring)."""
    position = {sid: i for i, sid in enumerate(data["ids"])}
    n_originals = len(data["originals"])
    picture = np.where(np.arange(len(data["ids"])) < n_originals, np.arange(len(data["ids"])), data["source_of"])
    first, second = [], []
    for members in reported_groups(findings):
        rows = np.array([position[m] for m in members])
        i, j = np.triu_indices(rows.size, k=1)
        first.append(rows[i])
        second.append(rows[j])
    first = np.concatenate(first) if first else np.empty(0, dtype=np.int64)
    second = np.concatenate(second) if second else np.empty(0, dtype=np.int64)
    low, high = np.minimum(first, second), np.maximum(first, second)
    pairs = {(int(a), int(b)) for a, b in zip(low, high, strict=True)}
    first = np.array([p[0] for p in pairs], dtype=np.int64)
    second = np.array([p[1] for p in pairs], dtype=np.int64)
    planted_pair = picture[first] == picture[second]
    identical = ~planted_pair & same_picture(data["originals"], picture[first], picture[second])
    correct = planted_pair | identical
    planted = [(position[p["source"]], position[p["copy"]]) for p in data["planted"]]
    found = np.array([(min(a, b), max(a, b)) in pairs for a, b in planted])
    by_edit: dict[str, list[bool]] = {}
    for hit, p in zip(found, data["planted"], strict=True):
        for step in p["edit"].split("+"):
            by_edit.setdefault("".join(c for c in step if c.isalpha()), []).append(bool(hit))
    leak_details = findings["split_leakage"].details
    leaks = [p for p in data["planted"] if p["leak"]]
    leaks_reported = sum(p["source"] in leak_details.get(p["copy"], {}).get("members", []) and
                         leak_details[p["copy"]]["member_splits"].get(p["source"]) == "train" for p in leaks)
    false_pairs = [(str(data["ids"][a]), str(data["ids"][b])) for a, b in zip(first[~correct], second[~correct],
                                                                              strict=True)]
    return {
        "reported_pairs": len(pairs), "correct_pairs": int(correct.sum()),
        "genuine_fashion_mnist_pairs": int(identical.sum()), "false_pairs": len(false_pairs),
        "precision": round(float(correct.mean()) if len(pairs) else 1.0, 4),
        "planted_pairs": len(planted), "planted_found": int(found.sum()), "recall": round(float(found.mean()), 4),
        "recall_by_edit": {name: round(float(np.mean(hits)), 3) for name, hits in sorted(by_edit.items())},
        "leakage_pairs": len(leaks), "leakage_pairs_reported": int(leaks_reported),
        "false_pair_examples": false_pairs[:20],
    }


def contact_sheet(data: dict[str, Any], false_pairs: list[tuple[str, str]], path: Path) -> None:
    """The false pairs side by side (56 px each) so a person can judge them."""
    position = {sid: i for i, sid in enumerate(data["ids"])}
    tiles = []
    for a, b in false_pairs[:48]:
        left = np.asarray(Image.fromarray(data["images"][position[a]]).resize((56, 56)))
        right = np.asarray(Image.fromarray(data["images"][position[b]]).resize((56, 56)))
        tiles.append(np.concatenate([left, np.full((56, 4), 128, np.uint8), right, np.zeros((56, 12), np.uint8)], 1))
    if not tiles:
        return
    while len(tiles) % 6:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.concatenate([np.concatenate(tiles[i:i + 6], axis=1) for i in range(0, len(tiles), 6)], axis=0)
    Image.fromarray(grid).save(path)


def candidate_coverage(data: dict[str, Any], embeddings: np.ndarray, thumbnails: np.ndarray) -> dict[str, float]:
    """Share of the planted (not byte-identical) pairs that rule 4 gets to compare at all: the copy among its
    source's nearest embedding or thumbnail neighbours, or the other way round -- with the thumbnail neighbours
    searched by Fourier magnitudes (what the check does) or by raw centred grey pixels (what it did before)."""
    grey = grey_thumbnails(thumbnails)
    flat = grey.reshape(len(grey), -1)
    raw = unit_rows(flat - flat.mean(axis=1, keepdims=True))
    params = DuplicateParams()
    by_embedding = knn(unit_rows(embeddings), params.registered_ranks)[1]
    position = {sid: i for i, sid in enumerate(data["ids"])}
    pairs = np.array([(position[p["source"]], position[p["copy"]]) for p in data["planted"] if not p["exact"]])

    def covered(lists: list[np.ndarray]) -> float:
        hit = np.zeros(len(pairs), dtype=bool)
        for neighbours in lists:
            hit |= (neighbours[pairs[:, 0]] == pairs[:, 1:2]).any(axis=1)
            hit |= (neighbours[pairs[:, 1]] == pairs[:, :1]).any(axis=1)
        return round(float(hit.mean()), 4)

    ranks = params.thumbnail_ranks
    return {"embedding_or_fourier": covered([by_embedding, knn(fourier_descriptors(grey), ranks)[1]]),
            "embedding_or_raw_pixels": covered([by_embedding, knn(raw, ranks)[1]])}


def run(seed: int) -> dict[str, Any]:
    """Plant, embed (cached), hash and check one dataset; returns the measurements."""
    data = plant(seed=seed)
    embeddings = cached_embeddings(data)
    _, phashes, thumbnails = image_features(as_rgb(data["images"]))
    start = time.perf_counter()
    side = second_look_side(np.array([image.shape[::-1] for image in data["images"]]))

    def second_look(rows: np.ndarray) -> np.ndarray:  # what `curato audit` decodes from the files
        return grey_squares([data["images"][row] for row in rows], side)

    findings = duplicate_findings(data["ids"], embeddings=embeddings, content_hashes=data["content_hashes"],
                                  phashes=phashes, thumbnails=thumbnails, splits=data["splits"],
                                  labels=data["labels"], second_look=None if side is None else second_look)
    elapsed = time.perf_counter() - start
    by_check = {f.check: f for f in findings}
    result = evaluate(data, by_check)
    contact_sheet(data, result["false_pair_examples"], CACHE / f"false_pairs-seed{seed}.png")
    result.update(seed=seed, images=len(data["ids"]), check_seconds=round(elapsed, 2),
                  candidate_coverage=candidate_coverage(data, embeddings, thumbnails),
                  distance_scale=by_check["near_duplicates"].summary.get("distance_scale"),
                  findings={f.check: {"severity": f.severity, "flagged": f.count, **f.summary} for f in findings})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1", help="comma-separated planting seeds (default 0,1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    results = [run(int(seed)) for seed in args.seeds.split(",")]
    if args.json:
        print(json.dumps({"embedder": EMBEDDER, "runs": results}, indent=2))
        return
    for r in results:
        print(f"seed {r['seed']}: {r['images']} images, check {r['check_seconds']} s, distance scale D = "
              f"{r['distance_scale']}")
        print(f"  near/exact-duplicate pairs: precision {r['precision']:.3f} ({r['correct_pairs']}/"
              f"{r['reported_pairs']}, {r['genuine_fashion_mnist_pairs']} genuine Fashion-MNIST pairs), "
              f"recall {r['recall']:.3f} ({r['planted_found']}/{r['planted_pairs']})")
        print("  recall by edit: " + ", ".join(f"{k} {v:.2f}" for k, v in r["recall_by_edit"].items()))
        coverage = r["candidate_coverage"]
        print(f"  planted pairs compared by rule 4 (embedding or thumbnail neighbours): "
              f"{coverage['embedding_or_fourier']:.3f} with Fourier-magnitude thumbnail neighbours, "
              f"{coverage['embedding_or_raw_pixels']:.3f} with raw-pixel ones")
        print(f"  train/test leakage pairs reported by split_leakage: {r['leakage_pairs_reported']}/"
              f"{r['leakage_pairs']}")
        for check, summary in r["findings"].items():
            print(f"  {check}: {summary}")


if __name__ == "__main__":
    main()
