"""Complete a mask from a few strokes: the painted pixels are seeds, the rest of the image follows them.

Every other mask tool labels only the pixels a person touches, so a superpixel click and a big brush stroke
cost the same one action. Here the person's strokes are SEEDS and the tool labels the rest of the image
(the idea of "Lazy Snapping", Li, Sun, Tang & Shum, SIGGRAPH 2004: a cut over pre-segmented regions seeded by
strokes, with a colour model learnt from the strokes; solved here as a multi-class random walker with priors,
Grady, CVPR 2005 / PAMI 2006, on the same region graph instead of a min-cut):

- nodes are superpixels; two touching superpixels are joined by an edge of weight
  ``boundary length x exp(-|mean Lab difference|^2 / (2 * edge_sigma^2))``: a walker crosses easily between
  similar neighbours and hardly across a colour edge;
- each painted pixel ties its superpixel to its class with weight 1 (a fully painted superpixel is all but
  fixed, a superpixel a stroke only grazes is nudged);
- a colour model from the strokes ties every superpixel to the class whose painted colours are nearest (with
  weight ``colour_weight`` per pixel): Lazy Snapping's likelihood term, which also labels look-alike regions
  that no stroke reaches (the other nuclei of a microscopy image, the other wheel). Without a prior nothing is
  completed before background AND a class are painted (every unpainted pixel stays background); with a prior
  and no background painted yet, a superpixel whose colour is further than ``background_distance`` from every
  painted colour leans to background;
- an optional prior (a model's proposal, as class shares per superpixel) ties each superpixel to it with
  weight ``prior_weight`` per pixel.

The class probabilities of all superpixels come from ONE sparse symmetric positive definite solve,
``(L + D) X = B`` with ``L`` the graph Laplacian, ``D`` the diagonal of the ties and ``B`` their targets (one
column per class): a few thousand unknowns, milliseconds. Painted pixels keep their class; every other pixel
takes its superpixel's most probable class, except in superpixels that touch one of another class: there each
pixel weighs its superpixel's probabilities against its OWN colour's distance to the painted colours
(:func:`refine_edges`, ``pixel_sigma``; 0 turns it off), since superpixels straddle the edges people draw.
The numbers that chose the defaults are in docs/benchmarks.md ("Superpixels and pre-labels").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curato.errors import InputError

UNPAINTED = 255
"""Value of a pixel nobody painted in the ``painted`` map that :func:`complete_mask` takes."""
# Colour distances are in units of the image's contrast (RegionGraph.contrast: the root mean square Lab
# difference between touching superpixels), so a dim microscopy image and a bright photo behave alike.
EDGE_SIGMA = 1.0
COLOUR_SIGMA = 1.0
COLOUR_WEIGHT = 10.0
BACKGROUND_DISTANCE = 1.0
PRIOR_WEIGHT = 10.0
MIN_SAMPLE_SHARE = 0.5
PIXEL_SIGMA = 1.0


@dataclass(frozen=True)
class RegionGraph:
    """The superpixel adjacency graph of one image: what :func:`complete_mask` needs, computed once."""

    segments: np.ndarray  # (H, W) int32 superpixel ids 0..S-1
    sizes: np.ndarray  # (S,) pixels per superpixel
    colours: np.ndarray  # (S, 3) mean CIELAB colour
    lab: np.ndarray  # (H * W, 3) float32 CIELAB of every pixel (for the strokes' colour model)
    first: np.ndarray  # (E,) edge ends, first < second
    second: np.ndarray
    boundary: np.ndarray  # (E,) pixel pairs across the shared boundary
    contrast: float  # root mean square Lab difference across the edges: the unit of colour distances

    @property
    def count(self) -> int:
        return int(self.sizes.size)


def region_graph(image: np.ndarray, segments: np.ndarray) -> RegionGraph:
    """The region graph of an (H, W, 3) uint8 image over its (H, W) superpixel map (ids 0..S-1)."""
    from skimage.color import rgb2lab

    image = np.asarray(image)
    segments = np.asarray(segments)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[:2] != segments.shape or image.ndim != 3:
        raise InputError(f"image {image.shape} and superpixel map {segments.shape} differ in size")
    segments = segments.astype(np.int32, copy=False)
    count = int(segments.max()) + 1
    flat = segments.ravel()
    sizes = np.bincount(flat, minlength=count).astype(np.float64)
    lab = rgb2lab(image[:, :, :3]).reshape(-1, 3).astype(np.float32)
    colours = np.stack([np.bincount(flat, weights=lab[:, c], minlength=count) for c in range(3)], 1)
    colours /= np.maximum(sizes, 1)[:, None]
    a = np.concatenate([segments[:, 1:].ravel(), segments[1:, :].ravel()])
    b = np.concatenate([segments[:, :-1].ravel(), segments[:-1, :].ravel()])
    cross = a != b
    low, high = np.minimum(a[cross], b[cross]).astype(np.int64), np.maximum(a[cross], b[cross]).astype(np.int64)
    keys, boundary = np.unique(low * count + high, return_counts=True)
    first, second = keys // count, keys % count
    squared = ((colours[first] - colours[second]) ** 2).sum(axis=1)
    contrast = float(np.sqrt(np.average(squared, weights=boundary))) if keys.size else 1.0
    return RegionGraph(segments=segments, sizes=sizes, colours=colours, lab=lab, first=first, second=second,
                       boundary=boundary.astype(np.float64), contrast=max(contrast, 1e-3))


def nearest_distance(points: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest sample (a k-d tree: thousands of each take milliseconds)."""
    from scipy.spatial import cKDTree

    return cKDTree(samples).query(points, k=1)[0]


def node_probabilities(
    graph: RegionGraph,
    painted: np.ndarray,
    classes: np.ndarray,
    *,
    prior: np.ndarray | None = None,
    edge_sigma: float = EDGE_SIGMA,
    colour_weight: float = COLOUR_WEIGHT,
    colour_sigma: float = COLOUR_SIGMA,
    background_distance: float = BACKGROUND_DISTANCE,
    prior_weight: float = PRIOR_WEIGHT,
    colour_samples: dict[int, np.ndarray] | None = None,
) -> np.ndarray:
    """(S, K) probability of each class in ``classes`` (class 0 first) per superpixel: the random walker's
    solution with the strokes' ties, their colour model and the optional ``prior`` ((S, K) class shares).
    ``colour_samples``, when given, receives the colour model's samples per class column."""
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import splu

    count, k = graph.count, len(classes)
    flat = painted.ravel()
    where = np.flatnonzero(flat != UNPAINTED)
    index = np.full(256, -1, np.int64)
    index[classes] = np.arange(k)
    column = index[flat[where]]
    if (column < 0).any():
        raise InputError("the painted map holds a class that is not in `classes`")
    node = graph.segments.ravel()[where].astype(np.int64)
    ties = np.bincount(node * k + column, minlength=count * k).reshape(count, k).astype(np.float64)
    # The strokes' colour model (Lazy Snapping's likelihood): the distance from a superpixel's colour to the
    # nearest colour painted with each class. A superpixel is a sample of a class when strokes of that class
    # cover at least half of it (one a stroke only grazes mixes the colours of both sides; with none such, the
    # most covered one), its colour the mean of its painted pixels. Until someone paints background, a
    # superpixel further than ``background_distance`` from every painted colour leans to background.
    distance = np.full((count, k), np.inf)
    samples: dict[int, np.ndarray] = {}
    share = ties / graph.sizes[:, None]
    for c in range(k):
        rows = np.flatnonzero(share[:, c] >= MIN_SAMPLE_SHARE)
        if rows.size == 0:
            if not share[:, c].any():
                continue
            rows = np.array([int(np.argmax(share[:, c]))])
        here = column == c
        sums = np.stack([np.bincount(node[here], weights=graph.lab[where[here], d], minlength=count)[rows]
                         for d in range(3)], 1)
        samples[c] = sums / ties[rows, c][:, None]
        distance[:, c] = nearest_distance(graph.colours, samples[c])
    if colour_samples is not None:
        colour_samples.update(samples)
    if not np.isfinite(distance[:, 0]).any():
        distance[:, 0] = background_distance * graph.contrast
    if np.isfinite(distance[0]).sum() < 2:  # nothing to tell apart by colour yet (e.g. a prior and no stroke)
        likelihood, strength = np.zeros((count, k)), np.zeros(count)
    else:
        nearest = distance.min(axis=1, keepdims=True)
        likelihood = np.exp(-(distance**2 - nearest**2) / (2 * (colour_sigma * graph.contrast) ** 2))
        likelihood /= likelihood.sum(axis=1, keepdims=True)
        strength = colour_weight * graph.sizes
    diagonal = ties.sum(axis=1) + strength
    target = ties + strength[:, None] * likelihood
    if prior is not None:
        prior = np.asarray(prior, np.float64)
        if prior.shape != (count, k):
            raise InputError(f"prior must be (superpixels, classes) = {(count, k)}, got {prior.shape}")
        diagonal = diagonal + prior_weight * graph.sizes
        target = target + (prior_weight * graph.sizes)[:, None] * prior
    difference = ((graph.colours[graph.first] - graph.colours[graph.second]) ** 2).sum(axis=1)
    weights = graph.boundary * np.exp(-difference / (2 * (edge_sigma * graph.contrast) ** 2))
    adjacency = coo_matrix((np.concatenate([weights, weights]),
                            (np.concatenate([graph.first, graph.second]), np.concatenate([graph.second, graph.first]))),
                           shape=(count, count)).tocsc()
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    system = (diags(degree + diagonal) - adjacency).tocsc()
    return splu(system).solve(target)


def complete_mask(
    graph: RegionGraph,
    painted: np.ndarray,
    *,
    prior: np.ndarray | None = None,
    prior_classes: np.ndarray | None = None,
    **options: float,
) -> np.ndarray:
    """(H, W) uint8 mask: painted pixels (``painted`` != UNPAINTED) keep their class, every other pixel takes
    its superpixel's most probable class (:func:`node_probabilities`). ``prior``: (S, K) class shares per
    superpixel for the classes ``prior_classes`` (e.g. a model's proposal, :func:`prior_from_mask`)."""
    painted = np.asarray(painted)
    if painted.shape != graph.segments.shape:
        raise InputError(f"painted map {painted.shape} and superpixel map {graph.segments.shape} differ in size")
    painted = painted.astype(np.uint8, copy=False)
    used = np.unique(painted)
    used = used[used != UNPAINTED]
    if prior is None and (used.size < 2 or used[0] != 0):
        # Until background and some class are painted there is nothing to tell apart: the rest is background.
        return np.where(painted == UNPAINTED, 0, painted).astype(np.uint8)
    extra = np.asarray(prior_classes if prior_classes is not None else [], np.int64)
    classes = np.unique(np.concatenate([[0], used, extra])).astype(np.int64)
    full_prior = None
    if prior is not None:
        if prior_classes is None:
            raise InputError("a prior needs its prior_classes")
        full_prior = np.zeros((graph.count, classes.size))
        full_prior[:, np.searchsorted(classes, extra)] = prior
    if classes.size == 1:
        best = np.zeros(graph.count, np.uint8)
    else:
        samples: dict[int, np.ndarray] = {}
        node_options = {name: value for name, value in options.items() if name != "pixel_sigma"}
        probabilities = node_probabilities(graph, painted, classes, prior=full_prior, colour_samples=samples,
                                           **node_options)
        best = classes[np.argmax(probabilities, axis=1)].astype(np.uint8)
        pixel_sigma = options.get("pixel_sigma", PIXEL_SIGMA)
        if pixel_sigma > 0 and len(samples) >= 2:
            return refine_edges(graph, painted, classes, probabilities, samples, pixel_sigma)
    return np.where(painted == UNPAINTED, best[graph.segments], painted)


def refine_edges(graph: RegionGraph, painted: np.ndarray, classes: np.ndarray, probabilities: np.ndarray,
                 samples: dict[int, np.ndarray], pixel_sigma: float) -> np.ndarray:
    """The completed mask with its edges decided pixel by pixel (Lazy Snapping's boundary step, simplified): in
    every superpixel that touches one of another class, each unpainted pixel takes the class maximising
    log P(class | its superpixel) - (d_class^2 - d_nearest^2) / (2 (pixel_sigma * contrast)^2), with d the
    distance from the PIXEL's colour to the nearest painted colour of that class. Superpixels straddle edges;
    this moves the edge to where the colours change inside them. Superpixels whose best class nobody painted
    (one only a prior proposes) have no colour to compare with and keep that class."""
    best = np.argmax(probabilities, axis=1)
    differs = best[graph.first] != best[graph.second]
    band = np.zeros(graph.count, bool)
    band[graph.first[differs]] = True
    band[graph.second[differs]] = True
    # Classes nobody painted (a proposal prior's) have no colour to compare with: their superpixels keep them.
    seen = np.zeros(len(classes), bool)
    seen[list(samples)] = True
    band &= seen[best]
    flat_segments = graph.segments.ravel()
    flat_painted = painted.ravel()
    pixels = np.flatnonzero(band[flat_segments] & (flat_painted == UNPAINTED))
    out = np.where(flat_painted == UNPAINTED, classes[best][flat_segments], flat_painted).astype(np.uint8)
    if pixels.size == 0:
        return out.reshape(painted.shape)
    # Colours rounded to 1 Lab unit (under a just noticeable difference): one query per distinct colour.
    rounded = np.round(graph.lab[pixels]).astype(np.int64) + np.array([0, 128, 128])  # L 0..100, a, b -128..127
    keys, inverse = np.unique((rounded[:, 0] * 256 + rounded[:, 1]) * 256 + rounded[:, 2], return_inverse=True)
    colours = np.stack([keys // 65536, keys // 256 % 256 - 128, keys % 256 - 128], 1).astype(np.float64)
    distance = np.full((len(colours), len(classes)), np.inf)
    for c, class_samples in samples.items():
        distance[:, c] = nearest_distance(colours, class_samples)
    distance = distance[inverse]
    nearest = distance[:, seen].min(axis=1, keepdims=True)
    score = np.log(np.clip(probabilities[flat_segments[pixels]], 1e-6, 1.0))
    score[:, seen] -= (distance[:, seen] ** 2 - nearest**2) / (2 * (pixel_sigma * graph.contrast) ** 2)
    score[:, ~seen] = -np.inf  # an edge pixel of a painted class's superpixel takes a painted class
    out[pixels] = classes[np.argmax(score, axis=1)]
    return out.reshape(painted.shape)


def prior_from_mask(graph: RegionGraph, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((S, K) class shares per superpixel, (K,) classes) of a label map (a proposal): the prior that
    :func:`complete_mask` takes."""
    mask = np.asarray(mask).astype(np.int64)
    classes = np.unique(mask)
    column = np.searchsorted(classes, mask.ravel())
    counts = np.bincount(graph.segments.ravel().astype(np.int64) * classes.size + column,
                         minlength=graph.count * classes.size).reshape(graph.count, classes.size)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1), classes


__all__ = ["UNPAINTED", "RegionGraph", "complete_mask", "node_probabilities", "prior_from_mask", "refine_edges",
           "region_graph"]
