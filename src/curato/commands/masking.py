"""The mask workflow behind ``curato serve``'s mask tool (``#/mask``): which image to mask next, its superpixels,
the pre-label model's proposal, saving a mask as one decision that can be undone, and the background refit.

- **Next image**: the image this annotator claimed and has not saved yet, else queued images (``curato select``'s
  order) without a current human mask first, then any image without one, by sample id -- skipping images someone
  else claimed within the lease (``lease_minutes`` of the app settings). Handing one out claims it in one
  statement (:meth:`Catalog.claim_mask`), so two annotators asking at once get different images; saving or
  skipping (``exclude``) releases the claim, an abandoned one lapses with the lease.
- **Superpixels** come from :func:`curato.features.superpixels.cached_superpixels` (one file per content hash
  and level in the workspace cache); the loop computes them ahead for the image ``next`` hands out.
- **Saving** appends the mask with :meth:`Catalog.save_semantic_mask` (origin human, the annotator) and a
  ``decisions`` row (queue ``masks``) whose effects name the new rows and ``from_proposal``: the share of the
  saved pixels that kept the class of the proposal the server last showed for that image (None without one).
  Undo (:func:`retract_mask`, called by ``undo_decision``) marks the saved rows superseded and makes the
  previous human mask current again; a mask saved later over it must be undone first.
- **Pre-labels**: :class:`PrelabelLoop` refits :func:`curato.models.prelabel.fit_prelabel_model` in a thread
  whenever the number of saved masks changed, on the newest :data:`MAX_TRAINING_MASKS` current human masks,
  with every image scaled to :data:`MODEL_SIDE` pixels on its longer side (the features of a 4k photo at full
  size would cost seconds and gigabytes). A proposal is predicted at that size and then snapped to the
  full-size ``medium`` superpixels (each takes the majority class), so it lines up with what the tool paints.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, func, select, update

from curato.catalog.catalog import utcnow
from curato.catalog.schema import annotations, decisions, queue, samples
from curato.commands.labelling import ConflictError, NotFoundError, User, class_names, sample_uri
from curato.commands.live import BackgroundLoop
from curato.errors import InputError
from curato.workspace import Workspace

MASK_QUEUE = "masks"
LEVELS = ("coarse", "medium", "fine")
DEFAULT_LEVEL = "medium"
MODEL_LEVEL = "medium"
MODEL_SIDE = 768
MAX_TRAINING_MASKS = 60
MAX_MASK_CLASSES = 255
IMAGE_CACHE = 4


# -- images ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskImage:
    """A catalogued image as the mask tool sees it: decoded upright, its size and its content key."""

    sample_id: str
    uri: str
    content_hash: str
    pixels: np.ndarray

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


_images: OrderedDict[tuple[str, str], MaskImage] = OrderedDict()
_images_lock = threading.Lock()
_compute_locks: dict[tuple[str, str], threading.Lock] = {}


def mask_image(workspace: Workspace, sample_id: str) -> MaskImage:
    """The decoded image of a catalogued image sample (NotFoundError for anything else); the last few are kept."""
    from curato.imageio import load_rgb

    uri = sample_uri(workspace, sample_id)
    with workspace.catalog.engine.connect() as conn:
        stored = conn.execute(select(samples.c.content_hash).where(samples.c.sample_id == sample_id)).scalar()
    key = (str(workspace.root), sample_id)
    with _images_lock:
        found = _images.get(key)
        if found is not None and found.uri == uri and (stored is None or found.content_hash == stored):
            _images.move_to_end(key)
            return found
    pixels = load_rgb(uri)
    content_hash = stored or hashlib.sha1(pixels.tobytes()).hexdigest()
    image = MaskImage(sample_id, uri, str(content_hash), pixels)
    with _images_lock:
        _images[key] = image
        while len(_images) > IMAGE_CACHE:
            _images.popitem(last=False)
    return image


def superpixel_map(workspace: Workspace, sample_id: str, level: str = DEFAULT_LEVEL) -> np.ndarray:
    """(H, W) int32 superpixel labels 0..S-1 of the image at ``level`` (coarse, medium, fine), from the cache."""
    from curato.features.superpixels import cached_superpixels

    if level not in LEVELS:
        raise InputError(f"level {level!r}: use one of {', '.join(LEVELS)}")
    image = mask_image(workspace, sample_id)
    key = (image.content_hash, level)
    with _images_lock:
        lock = _compute_locks.setdefault(key, threading.Lock())
    with lock:  # the loop warming the cache and a request for the same map compute it once
        return cached_superpixels(workspace.root, image.content_hash, image.pixels, level)


# -- classes and the next image ----------------------------------------------------------------------------------


def mask_class_names(workspace: Workspace) -> list[str]:
    """The classes the mask tool offers, in number-key order: the workspace's mask classes (in their stored
    order), then the image-level classes no mask uses yet. Label value i + 1 is class i; 0 is background."""
    names = workspace.catalog.mask_classes()
    return names + [name for name in class_names(workspace) if name not in names]


def human_masked(workspace: Workspace) -> set[str]:
    """Samples whose human mask is current (saved and neither superseded nor undone)."""
    with workspace.catalog.engine.connect() as conn:
        rows = conn.execute(select(annotations.c.sample_id, annotations.c.data).where(
            annotations.c.kind == "rle", annotations.c.origin == "human"))
        return {sid for sid, data in rows
                if isinstance(data, dict) and data.get("semantic") and not data.get("superseded_by")}


def next_mask_item(workspace: Workspace, user: User, *, exclude: Iterable[str] = (),
                   lease_minutes: float = 30.0) -> dict[str, Any]:
    """The next image for ``user`` to mask, claimed for them (see the module docstring), or
    ``{"sample_id": None}`` when every image has a mask or is being masked by someone else."""
    catalog = workspace.catalog
    skipped = set(exclude)
    now = utcnow()
    lease_start = now - dt.timedelta(minutes=lease_minutes)
    if skipped:
        with catalog.transaction() as conn:
            catalog.release_mask_claims(conn, user.name, skipped)
    done = human_masked(workspace)
    claims = catalog.mask_claims(current_after=lease_start)
    own = sorted(sid for sid, who in claims.items() if who == user.name and sid not in done | skipped)
    unavailable = done | skipped | {sid for sid, who in claims.items() if who != user.name}
    image_rows = (samples.c.kind == "image", samples.c.readable.is_(True))

    def candidates(conn: Connection) -> Iterator[tuple[str, bool]]:
        yield from ((sid, False) for sid in own)
        queued = conn.execute(select(queue.c.sample_id).join(samples, samples.c.sample_id == queue.c.sample_id)
                              .where(*image_rows).order_by(queue.c.run_id, queue.c.rank))
        yield from ((sid, True) for (sid,) in queued if sid not in unavailable)
        everyone = conn.execute(select(samples.c.sample_id).where(*image_rows).order_by(samples.c.sample_id))
        yield from ((sid, False) for (sid,) in everyone if sid not in unavailable)

    chosen, from_queue = None, None
    with catalog.engine.connect() as reading:
        total = int(reading.execute(select(func.count()).select_from(samples).where(*image_rows)).scalar() or 0)
        for sid, queued_item in candidates(reading):
            with catalog.transaction() as conn:  # a lost race (someone claimed it just now) moves on to the next
                if catalog.claim_mask(conn, sid, user.name, now=now, expired_before=lease_start):
                    chosen, from_queue = sid, queued_item
                    break
    remaining = max(0, total - len(done))
    if chosen is None:
        return {"sample_id": None, "remaining": remaining, "classes": mask_class_names(workspace)}
    return mask_item(workspace, chosen, queued=from_queue, remaining=remaining)


def mask_item(workspace: Workspace, sample_id: str, *, queued: bool | None = None,
              remaining: int | None = None) -> dict[str, Any]:
    """What the tool needs to open one image: its size, classes, levels and whether a mask exists."""
    image = mask_image(workspace, sample_id)
    current = workspace.catalog.semantic_mask(sample_id)
    if remaining is None:
        with workspace.catalog.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(samples).where(
                samples.c.kind == "image", samples.c.readable.is_(True))).scalar() or 0)
        remaining = max(0, total - len(human_masked(workspace)))
    return {"sample_id": sample_id, "width": image.width, "height": image.height, "queued": queued,
            "remaining": remaining, "classes": mask_class_names(workspace), "levels": list(LEVELS),
            "level": DEFAULT_LEVEL, "has_mask": current is not None}


# -- saving and undo ---------------------------------------------------------------------------------------------


def check_classes(classes: Sequence[str]) -> list[str]:
    names = [str(name) for name in classes]
    if len(names) > MAX_MASK_CLASSES:
        raise InputError(f"{len(names)} classes: an indexed PNG mask holds at most {MAX_MASK_CLASSES}")
    if any(not name.strip() or len(name) > 1024 for name in names):
        raise InputError("class names must be non-empty and at most 1024 characters")
    if len(set(names)) != len(names):
        raise InputError("class names must be distinct")
    return names


def remap(label_map: np.ndarray, names: Sequence[str], to_names: Sequence[str]) -> np.ndarray:
    """A label map over ``names`` expressed over ``to_names`` (by class name); classes missing there become -1."""
    lookup = np.array([0] + [to_names.index(name) + 1 if name in to_names else -1 for name in names], dtype=np.int32)
    return lookup[np.clip(label_map, 0, len(names))]


def save_mask(workspace: Workspace, user: User, sample_id: str, label_map: np.ndarray, classes: Sequence[str], *,
              proposal: tuple[np.ndarray, Sequence[str]] | None = None,
              duration_ms: int | None = None) -> dict[str, Any]:
    """Store a human mask of ``sample_id`` (label value i + 1 = ``classes[i]``) as one undoable decision.

    The map must have the image's size and values 0..len(classes); otherwise InputError and nothing is written.
    ``proposal``: the (label map, classes) the annotator started from, for the ``from_proposal`` share."""
    from curato.models.prelabel import proposal_overlap

    names = check_classes(classes)
    image = mask_image(workspace, sample_id)
    label_map = np.asarray(label_map)
    if label_map.shape != (image.height, image.width):
        raise InputError(f"the mask is {label_map.shape[1] if label_map.ndim > 1 else '?'}x{label_map.shape[0]}, "
                         f"the image {image.width}x{image.height}: send a mask of the image's size")
    if label_map.size and int(label_map.max()) > len(names):
        raise InputError(f"the mask holds class value {int(label_map.max())} but only {len(names)} classes were "
                         "given (value i + 1 = classes[i], 0 = background)")
    if duration_ms is not None and not 0 <= duration_ms <= 24 * 3600 * 1000:
        raise InputError(f"duration_ms={duration_ms}: use milliseconds between 0 and one day")
    share = None
    if proposal is not None and np.shape(proposal[0]) == label_map.shape:
        share = round(proposal_overlap(remap(proposal[0], list(proposal[1]), names), label_map), 6)
    with workspace.catalog.transaction() as conn:
        ids = workspace.catalog.save_semantic_mask(conn, sample_id, label_map.astype(np.uint8), names,
                                                   origin="human", annotator=user.name)
        workspace.catalog.release_mask_claims(conn, user.name, [sample_id])
        effects = {"mask": ids, "from_proposal": share, "classes": names}
        decision = int(conn.execute(decisions.insert().values(
            queue=MASK_QUEUE, item=sample_id, action="mask", sample_ids=[sample_id], effects=effects,
            user=user.name, source_run=None, duration_ms=duration_ms, created_at=utcnow())).inserted_primary_key[0])
    return {"decision": decision, "mask": ids, "from_proposal": share, "sample_id": sample_id}


def retract_mask(conn: Connection, decision_id: int, effects: Mapping[str, Any]) -> None:
    """Undo a saved mask inside ``conn``: its rows stay as history marked superseded, the human mask they had
    superseded is current again. ConflictError when a later save already superseded them."""
    ids = [int(i) for i in effects.get("mask") or []]
    if not ids:
        return
    rows = conn.execute(select(annotations.c.id, annotations.c.sample_id, annotations.c.data)
                        .where(annotations.c.id.in_(ids))).all()
    if any(isinstance(data, dict) and data.get("superseded_by") for _, _, data in rows):
        raise ConflictError(f"a newer mask was saved over decision {decision_id}'s; undo that one first")
    for row_id, _, data in rows:
        conn.execute(update(annotations).where(annotations.c.id == row_id).values(
            data={**(data or {}), "superseded_by": "undone", "undone_decision": decision_id}))
    sample_ids = {sid for _, sid, _ in rows}
    previous = conn.execute(select(annotations.c.id, annotations.c.data).where(
        annotations.c.sample_id.in_(sample_ids), annotations.c.kind == "rle", annotations.c.origin == "human")).all()
    for row_id, data in previous:
        if isinstance(data, dict) and data.get("superseded_by") == ids[0]:
            conn.execute(update(annotations).where(annotations.c.id == row_id).values(
                data={key: value for key, value in data.items() if key != "superseded_by"}))


def saved_mask_count(workspace: Workspace) -> int:
    """Mask decisions that still count (saved and not undone): the refit trigger."""
    with workspace.catalog.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(decisions).where(
            decisions.c.queue == MASK_QUEUE, decisions.c.undone_at.is_(None))).scalar() or 0)


# -- the pre-label model -----------------------------------------------------------------------------------------


def _shrink(pixels: np.ndarray, side: int = MODEL_SIDE) -> np.ndarray:
    from PIL import Image

    height, width = pixels.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return pixels
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))


def _nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = np.minimum(np.arange(shape[0]) * array.shape[0] // shape[0], array.shape[0] - 1)
    cols = np.minimum(np.arange(shape[1]) * array.shape[1] // shape[1], array.shape[1] - 1)
    return array[rows[:, None], cols[None, :]]


def fit_mask_model(workspace: Workspace, *, limit: int = MAX_TRAINING_MASKS) -> tuple[Any, list[str]] | None:
    """The pre-label model fitted on the newest ``limit`` current human masks (and their class names), or None
    without any."""
    from curato.features.superpixels import level_counts, superpixels
    from curato.models.prelabel import fit_prelabel_model

    with workspace.catalog.engine.connect() as conn:
        rows = conn.execute(select(decisions.c.item).where(decisions.c.queue == MASK_QUEUE,
                                                           decisions.c.undone_at.is_(None))
                            .order_by(decisions.c.id.desc())).all()
    chosen: list[str] = []
    for (sid,) in rows:
        if sid not in chosen:
            chosen.append(sid)
        if len(chosen) >= limit:
            break
    names = mask_class_names(workspace)
    images, maps, segments = [], [], []
    for sid in chosen:
        found = workspace.catalog.semantic_mask(sid, names)
        if found is None:
            continue
        label_map, names = found[0], found[1]
        try:
            small = _shrink(mask_image(workspace, sid).pixels)
        except (NotFoundError, InputError, OSError):
            continue  # the file went away since: train on the others
        images.append(small)
        maps.append(_nearest(label_map, small.shape[:2]))
        segments.append(superpixels(small, n_segments=level_counts(small.shape)[MODEL_LEVEL]))
    if not images:
        return None
    return fit_prelabel_model(images, maps, segments), list(names)


def propose(workspace: Workspace, model: Any, sample_id: str) -> np.ndarray:
    """The model's (H, W) int32 proposal for an image at full size, one class per ``medium`` superpixel."""
    from curato.features.superpixels import level_counts, superpixels
    from curato.models.prelabel import majority_labels, propose_mask

    image = mask_image(workspace, sample_id)
    small = _shrink(image.pixels)
    guess = propose_mask(model, small, superpixels(small, n_segments=level_counts(small.shape)[MODEL_LEVEL]))
    full = _nearest(np.asarray(guess, dtype=np.int64), (image.height, image.width))
    segments = superpixel_map(workspace, sample_id, MODEL_LEVEL)
    majority, _ = majority_labels(full, segments)
    return majority.astype(np.int32)[segments]


class PrelabelLoop(BackgroundLoop):
    """The server's pre-label thread: refits after masks are saved or undone, computes superpixels ahead for
    the images ``next`` hands out, and keeps the proposals it served (to measure what a save kept of them)."""

    thread_name = "curato-prelabel-loop"

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self._ahead: deque[str] = deque(maxlen=8)
        self._model: tuple[int, Any, list[str]] | None = None
        self._fitted_on: int | None = None
        self._served: OrderedDict[str, tuple[np.ndarray, list[str]]] = OrderedDict()
        self._proposals: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self.state: dict[str, Any] = {"refits": 0, "masks": 0, "running": False, "error": None, "seconds": None}
        self._wake.set()  # fit once at start on the masks already saved

    def ahead(self, sample_id: str) -> None:
        """Compute this image's superpixels (every level) and proposal in the background."""
        self._ahead.append(sample_id)
        self._wake.set()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.state, "model": self._model is not None}

    def has_model(self) -> bool:
        return self._model is not None

    def proposal(self, sample_id: str) -> tuple[np.ndarray, list[str]] | None:
        """The current model's proposal for an image (and the class names of its values), None without a model.
        Remembered as the proposal this image was last shown with."""
        model = self._model
        if model is None:
            return None
        version, fitted, names = model
        key = (sample_id, version)
        with self._lock:
            cached = self._proposals.get(key)
        if cached is None:
            cached = propose(self.workspace, fitted, sample_id)
            with self._lock:
                self._proposals[key] = cached
                while len(self._proposals) > IMAGE_CACHE:
                    self._proposals.popitem(last=False)
        with self._lock:
            self._served[sample_id] = (cached, names)
            self._served.move_to_end(sample_id)
            while len(self._served) > 64:
                self._served.popitem(last=False)
        return cached, names

    def served(self, sample_id: str) -> tuple[np.ndarray, list[str]] | None:
        with self._lock:
            return self._served.get(sample_id)

    def _tick(self) -> None:
        """Refit when the number of saved masks changed; then the images queued by :meth:`ahead`."""
        self._refit_if_due()
        while self._ahead and not self._stop.is_set():
            sample_id = self._ahead.popleft()
            for level in LEVELS:
                superpixel_map(self.workspace, sample_id, level)
            self.proposal(sample_id)
            self._refit_if_due()

    def _refit_if_due(self) -> None:
        count = saved_mask_count(self.workspace)
        if count == self._fitted_on:
            return
        self._fitted_on = count
        with self._lock:
            self.state.update(running=True, error=None, masks=count)
        started = time.monotonic()
        fitted = fit_mask_model(self.workspace) if count else None
        with self._lock:
            version = (self._model[0] + 1) if self._model is not None else 1
            self._model = None if fitted is None else (version, fitted[0], fitted[1])
            self.state.update(running=False, refits=self.state["refits"] + (fitted is not None),
                              seconds=round(time.monotonic() - started, 3))


COMPLETION_LEVEL = "fine"
"""The superpixel level whose region graph the completion runs on (docs/benchmarks.md chose it)."""
GRAPH_CACHE_BYTES = 768 * 1024 * 1024
"""The region graphs kept for completions, by memory (~16 bytes a pixel: 135 MB for a 4k image, 800 MB at 50 Mpx)."""


def graph_bytes(graph: Any) -> int:
    """The memory a region graph holds (its arrays)."""
    return sum(value.nbytes for value in vars(graph).values() if isinstance(value, np.ndarray))


class GraphCache:
    """The last region graphs built, least recently used out first once they hold more than ``max_bytes``
    (the newest is always kept): a stroke then a completion of the same image reuses its graph."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.graphs: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.graphs:
                self.graphs.move_to_end(key)
                return self.graphs[key]
        graph = build()
        with self.lock:
            self.graphs[key] = graph
            while len(self.graphs) > 1 and sum(map(graph_bytes, self.graphs.values())) > self.max_bytes:
                self.graphs.popitem(last=False)
        return graph


def complete_from_seeds(workspace: Workspace, sample_id: str, painted: np.ndarray, classes: Sequence[str], *,
                        start: tuple[np.ndarray, Sequence[str]] | None = None, graphs: GraphCache) -> np.ndarray:
    """The mask of ``sample_id`` completed from the painted pixels (255 = not painted; value i + 1 =
    ``classes[i]``) over its cached region graph; ``start`` (a label map and its class names: the proposal or
    saved mask the page opened) leans the unpainted superpixels to its classes. InputError for bad classes."""
    from curato.features.propagation import UNPAINTED, complete_mask, prior_from_mask, region_graph

    names = check_classes(classes) if classes else []
    if len(names) >= UNPAINTED:
        raise InputError(f"at most {UNPAINTED - 1} classes can be completed ({UNPAINTED} means not painted)")
    if painted[painted != UNPAINTED].max(initial=0) > len(names):
        raise InputError(f"the painted pixels hold class {int(painted[painted != UNPAINTED].max())}, "
                         f"but only {len(names)} classes were named")
    image = mask_image(workspace, sample_id)
    graph = graphs.get((image.content_hash, COMPLETION_LEVEL), lambda: region_graph(
        image.pixels, superpixel_map(workspace, sample_id, COMPLETION_LEVEL)))
    options: dict[str, Any] = {}
    if start is not None:
        prior = remap(start[0], start[1], names)
        prior[prior < 0] = 0  # a class the page does not know: background
        if prior.shape != painted.shape:
            raise InputError("the saved mask does not have the image's size")
        options["prior"], options["prior_classes"] = prior_from_mask(graph, prior)
    return complete_mask(graph, painted, **options)


__all__ = ["COMPLETION_LEVEL", "DEFAULT_LEVEL", "GRAPH_CACHE_BYTES", "LEVELS", "MASK_QUEUE", "GraphCache", "MaskImage",
           "PrelabelLoop", "complete_from_seeds", "fit_mask_model", "graph_bytes", "human_masked",
           "mask_class_names", "mask_image", "mask_item", "next_mask_item", "propose", "remap", "retract_mask",
           "save_mask", "saved_mask_count", "superpixel_map"]
