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
takes its superpixel's most probable class. Superpixels straddle the edges people draw, so the edges are then
redrawn pixel by pixel within ``band_width`` px of every edge between classes (:func:`refine_band`: a random
walker on the pixel grid with a local colour model; 0 turns it off). The older per-pixel colour step
(:func:`refine_edges`, ``pixel_sigma`` > 0) is off by default: with the band it did worse.
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
PIXEL_SIGMA = 0.0
BAND_WIDTH = 3
BAND_SIGMA = 1.0
BAND_LOCAL = 1.0
PIXEL_OPTIONS = ("pixel_sigma", "band_width", "band_sigma", "band_local")


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
        node_options = {name: value for name, value in options.items() if name not in PIXEL_OPTIONS}
        probabilities = node_probabilities(graph, painted, classes, prior=full_prior, colour_samples=samples,
                                           **node_options)
        best = classes[np.argmax(probabilities, axis=1)].astype(np.uint8)
        pixel_sigma = options.get("pixel_sigma", PIXEL_SIGMA)
        if pixel_sigma > 0 and len(samples) >= 2:
            completed = refine_edges(graph, painted, classes, probabilities, samples, pixel_sigma)
        else:
            completed = np.where(painted == UNPAINTED, best[graph.segments], painted).astype(np.uint8)
        if used.size == 0:  # nothing painted: a prior's classes as they are
            return completed
        return refine_band(graph.lab, completed, painted, width=int(options.get("band_width", BAND_WIDTH)),
                           sigma=options.get("band_sigma", BAND_SIGMA),
                           local_weight=options.get("band_local", BAND_LOCAL))
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


def refine_band(lab: np.ndarray, mask: np.ndarray, painted: np.ndarray | None = None, *,
                width: int = BAND_WIDTH, sigma: float = BAND_SIGMA, local_weight: float = BAND_LOCAL) -> np.ndarray:
    """``mask`` with its class edges redrawn pixel by pixel, ``lab`` the image in CIELAB ((H, W, 3), or
    (H * W, 3) as :class:`RegionGraph` keeps it). A random walker with priors (Grady 2005/2006) on the PIXEL
    grid, restricted to a band of ``width`` px around every edge between classes: the pixels outside the band
    keep their class and are the seeds, painted pixels (``painted`` != UNPAINTED) too; 4-neighbours are joined
    by ``exp(-|Lab difference|^2 / (2 (sigma * c)^2))``, c the RMS difference over the band's pixel pairs; and
    each band pixel is tied (``local_weight``) to the class whose NEARBY seed colour is nearest its own
    (:func:`local_likelihood`). The edge moves to where the colour changes within ``width`` px of where it was
    drawn. Painted pixels take their painted class; a piece of a class lying wholly inside the band (thin or tiny:
    no interior to seed it) is kept.
    Superpixels, however fine, straddle edges; this lifts the ceiling they put on the completion (numbers in
    docs/benchmarks.md)."""
    from scipy import ndimage as ndi
    from scipy.sparse import coo_matrix, diags
    from skimage.measure import label as connected

    mask = np.asarray(mask).astype(np.uint8, copy=False)
    if painted is not None:
        painted = np.asarray(painted)
        mask = np.where(painted == UNPAINTED, mask, painted).astype(np.uint8)
    lab = np.asarray(lab).reshape(-1, 3)
    if lab.shape[0] != mask.size:
        raise InputError(f"Lab image of {lab.shape[0]} pixels and mask {mask.shape} differ in size")
    edge = np.zeros(mask.shape, bool)
    across, down = mask[:, 1:] != mask[:, :-1], mask[1:, :] != mask[:-1, :]
    edge[:, 1:] |= across
    edge[:, :-1] |= across
    edge[1:, :] |= down
    edge[:-1, :] |= down
    if width <= 0 or not edge.any():
        return mask
    band = ndi.maximum_filter(edge, size=2 * width - 1) if width > 1 else edge
    if painted is not None:
        band &= painted == UNPAINTED
    flat = mask.ravel()
    # A band piece of a class that touches no pixel of its class outside the band has no seed: it is kept.
    pieces = connected(np.where(band, mask.astype(np.int16), -1), connectivity=1, background=-1).ravel()
    a, b = _band_pairs(band)
    lone = band.ravel()[a] != band.ravel()[b]
    touching = lone & (flat[a] == flat[b])
    seeded = np.zeros(int(pieces.max()) + 1, bool)
    seeded[pieces[np.where(band.ravel()[a[touching]], a[touching], b[touching])]] = True
    band &= seeded[pieces].reshape(mask.shape)
    unknown = np.flatnonzero(band.ravel())
    if unknown.size == 0:
        return mask
    n = unknown.size
    index = np.full(flat.size, -1, np.int64)
    index[unknown] = np.arange(n)
    a, b = _band_pairs(band)
    squared = ((lab[a] - lab[b]) ** 2).sum(axis=1).astype(np.float64)
    scale = max(float(np.sqrt(squared.mean())), 1e-3)
    weights = np.exp(-squared / (2 * (sigma * scale) ** 2)) + 1e-6
    classes = np.unique(np.concatenate([flat[a], flat[b]]))
    lookup = np.zeros(256, np.int64)
    lookup[classes] = np.arange(classes.size)
    ia, ib = index[a], index[b]
    degree = np.bincount(ia[ia >= 0], weights=weights[ia >= 0], minlength=n) + \
        np.bincount(ib[ib >= 0], weights=weights[ib >= 0], minlength=n)
    inner = (ia >= 0) & (ib >= 0)
    system = coo_matrix((np.concatenate([degree, -weights[inner], -weights[inner]]),
                         (np.concatenate([np.arange(n), ia[inner], ib[inner]]),
                          np.concatenate([np.arange(n), ib[inner], ia[inner]]))), shape=(n, n)).tocsc()
    target = np.zeros((n, classes.size))
    for ends, other in ((ia, b), (ib, a)):  # a band pixel next to a seed: the seed's class pulls it
        rim = (ends >= 0) & (index[other] < 0)
        np.add.at(target, (ends[rim], lookup[flat[other[rim]]]), weights[rim])
    if local_weight > 0:
        system = system + diags(np.full(n, float(local_weight)))
        target += local_weight * local_likelihood(lab.reshape(*mask.shape, 3), mask, band, classes,
                                                  scale=2.0 * width, sigma=2.0 * sigma * scale)
    out = flat.copy()
    out[unknown] = classes[np.argmax(_solve(system.tocsr(), target, direct=local_weight <= 0), axis=1)]
    return out.reshape(mask.shape)


def _band_pairs(band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (a, b) of every 4-neighbour pair with an end in ``band``, each pair once (work in the band's
    size, not the image's)."""
    height, columns = band.shape
    flat = band.ravel()
    inside = np.flatnonzero(flat)
    rows, cols = np.divmod(inside, columns)
    firsts, seconds = [], []
    for step, forward, backward in ((1, cols < columns - 1, cols > 0), (columns, rows < height - 1, rows > 0)):
        ahead = inside[forward]  # (p, p + step) for every band pixel p
        firsts.append(ahead)
        seconds.append(ahead + step)
        behind = inside[backward]
        behind = behind[~flat[behind - step]]  # (p - step, p) when p - step is outside (else counted above)
        firsts.append(behind - step)
        seconds.append(behind)
    return np.concatenate(firsts), np.concatenate(seconds)


def _solve(system, target: np.ndarray, *, direct: bool) -> np.ndarray:
    """X with system @ X = target (symmetric positive definite). With the local ties on the diagonal the system
    is diagonally dominant and Jacobi-preconditioned conjugate gradients (all columns at once) converge in a few
    dozen steps, several times faster than a sparse LU of a large band; without them, the LU."""
    from scipy.sparse.linalg import splu

    if direct:
        return splu(system.tocsc()).solve(target)
    inverse = 1.0 / system.diagonal()[:, None]
    x = target * inverse
    residual = target - system @ x
    z = residual * inverse
    direction = z.copy()
    rz = (residual * z).sum(axis=0)
    limit = 1e-6 * max(float((target**2).sum()), 1e-30)
    for _ in range(200):
        step = system @ direction
        alpha = rz / np.maximum((direction * step).sum(axis=0), 1e-30)
        x += alpha * direction
        residual -= alpha * step
        if float((residual**2).sum()) < limit:
            break
        z = residual * inverse
        next_rz = (residual * z).sum(axis=0)
        direction = z + (next_rz / np.maximum(rz, 1e-30)) * direction
        rz = next_rz
    return x


def local_likelihood(lab: np.ndarray, mask: np.ndarray, band: np.ndarray, classes: np.ndarray, *,
                     scale: float, sigma: float) -> np.ndarray:
    """(U, K) likelihood of each class for each band pixel (in ``np.flatnonzero(band)`` order): from the distance
    of its colour to the class's LOCAL mean colour (a Gaussian-weighted mean, at ``scale`` px, of the class's
    pixels outside the band: normalised convolution, on blocks of ``scale / 2`` px for speed); a class with no
    pixel nearby gets none. A global colour model cannot tell a dim nucleus's rim from bright background
    elsewhere; the neighbourhood can."""
    from scipy import ndimage as ndi

    step = max(1, int(scale))
    height, width = mask.shape
    blocks = (-(-height // step), -(-width // step))
    k = classes.size
    rows, cols = np.nonzero(band)
    # Only pixels within the filter's reach (3 blocks) of a band pixel count: work near the band, not the image.
    present = np.zeros(blocks, bool)
    present[rows // step, cols // step] = True
    near = ndi.maximum_filter(present, size=7)
    needed = np.repeat(np.repeat(near, step, axis=0), step, axis=1)[:height, :width] & ~band
    outside = np.flatnonzero(needed.ravel())
    # Per block and class: how many seed pixels, and their summed colour (one bincount per channel for all).
    lookup = np.zeros(256, np.int64)
    lookup[classes] = np.arange(k)
    where_rows, where_cols = np.divmod(outside, width)
    key = ((where_rows // step) * blocks[1] + where_cols // step) * k + lookup[mask.ravel()[outside]]
    flat_lab = lab.reshape(-1, 3)[outside]
    size = blocks[0] * blocks[1] * k
    sums = [np.bincount(key, minlength=size).reshape(*blocks, k).astype(np.float32)]
    sums += [np.bincount(key, weights=flat_lab[:, d], minlength=size).reshape(*blocks, k).astype(np.float32)
             for d in range(3)]
    smooth = [ndi.gaussian_filter(total, (scale / step, scale / step, 0), truncate=3.0) for total in sums]
    at = (rows // step, cols // step)
    weight = smooth[0][at]  # (U, K)
    means = np.stack([channel[at] for channel in smooth[1:]], 2) / np.maximum(weight, 1e-12)[:, :, None]
    colours = lab[rows, cols].astype(np.float64)
    distance = np.where(weight > 1e-3, ((colours[:, None, :] - means) ** 2).sum(axis=2), np.inf)
    nearest = distance.min(axis=1, keepdims=True)
    likelihood = np.where(np.isfinite(distance), np.exp(-(distance - nearest) / (2 * sigma**2)), 0.0)
    return likelihood / np.maximum(likelihood.sum(axis=1, keepdims=True), 1e-12)


def prior_from_mask(graph: RegionGraph, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((S, K) class shares per superpixel, (K,) classes) of a label map (a proposal): the prior that
    :func:`complete_mask` takes."""
    mask = np.asarray(mask).astype(np.int64)
    classes = np.unique(mask)
    column = np.searchsorted(classes, mask.ravel())
    counts = np.bincount(graph.segments.ravel().astype(np.int64) * classes.size + column,
                         minlength=graph.count * classes.size).reshape(graph.count, classes.size)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1), classes


__all__ = ["UNPAINTED", "RegionGraph", "complete_mask", "local_likelihood", "node_probabilities", "prior_from_mask",
           "refine_band", "refine_edges", "region_graph"]
