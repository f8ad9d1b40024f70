"""The mask tool's HTTP endpoints (docs/server-api.md, "Masks"), a thin shell over :mod:`curato.commands.masking`.

Binary answers are chosen for what a browser decodes fastest on a 4k image:

- superpixels: the (H, W) label map as little-endian ``uint16`` (``uint32`` past 65535 segments), row-major,
  gzip content-encoded (the browser inflates it natively; a SLIC map of 8 Mpx is a few hundred KiB), with
  ``X-Width``, ``X-Height``, ``X-Dtype`` and ``X-Segments`` headers;
- masks and proposals: 8-bit indexed PNGs (value = class index, 0 = background) with the class names as a
  percent-encoded JSON list in ``X-Mask-Classes``;
- completion (``POST /api/mask/complete``): the page sends the pixels the person painted (an 8-bit PNG, 255 =
  not painted) and gets back the whole mask completed from them over the cached superpixels'
  region graph (:func:`curato.commands.masking.complete_from_seeds`), as the same kind of PNG.

A mask upload is the only request allowed a large body (:data:`MAX_MASK_BYTES`, via the server's BodyLimit).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from curato.commands import masking
from curato.commands.labelling import NotFoundError, User, read_app_settings
from curato.errors import InputError
from curato.workspace import Workspace

MAX_MASK_BYTES = 16 * 1024 * 1024
MASK_PATH = "/api/mask"
COMPLETE_PATH = "/api/mask/complete"
COMPLETIONS_AT_ONCE = 2
"""Completions computed at the same time (each a few seconds of CPU and ~1 GB at 4k); the rest wait their turn."""
PRIORS = {"": None, "false": None, "true": "proposal", "proposal": "proposal", "mask": "mask"}
"""What ``POST /api/mask/complete?prior=`` may name: the start the completion leans to."""
BODY_LIMITS = {MASK_PATH: MAX_MASK_BYTES, COMPLETE_PATH: MAX_MASK_BYTES}
"""Per-path body limits that override the server's 64 KiB default."""
SampleId = Annotated[str, Query(max_length=4096)]


def label_png(label_map: np.ndarray) -> bytes:
    """An 8-bit indexed PNG of a label map (values 0..255), fast to write (zlib level 1)."""
    from PIL import Image

    from curato.masks import default_palette

    image = Image.fromarray(np.asarray(label_map).astype(np.uint8), mode="L").convert("P")
    image.putpalette(default_palette())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1, bits=8)
    return buffer.getvalue()


def read_label_png_bytes(body: bytes, shape: tuple[int, int]) -> np.ndarray:
    """The label map in an uploaded PNG (mode P or L); its size is checked before the pixels are inflated."""
    from PIL import Image, UnidentifiedImageError

    try:
        # a few bytes can declare 40000x40000 pixels: PIL refuses that with DecompressionBombError, not an OSError
        with Image.open(io.BytesIO(body)) as image:
            if image.format != "PNG" or image.mode not in ("P", "L"):
                raise InputError(f"send the mask as an 8-bit indexed (mode P) or greyscale PNG, not "
                                 f"{image.format} mode {image.mode}")
            if (image.height, image.width) != shape:
                raise InputError(f"the mask is {image.width}x{image.height}, the image {shape[1]}x{shape[0]}: "
                                 "send a mask of the image's size")
            return np.asarray(image, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"the body is not a readable PNG ({str(error).splitlines()[0] if str(error) else error})"
                         ) from error


def _classes_header(names: list[str]) -> str:
    return quote(json.dumps(names, ensure_ascii=False), safe="")


def _png_response(label_map: np.ndarray, names: list[str], **headers: str) -> Response:
    return Response(label_png(label_map), media_type="image/png",
                    headers={"x-mask-classes": _classes_header(names), "cache-control": "no-store", **headers})


def _image_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def include_mask_routes(app: FastAPI, workspace: Workspace, *, anyone: Any) -> masking.PrelabelLoop:
    """Add the ``/api/mask`` endpoints to ``app`` (every role may use them: ``anyone`` is the server's
    authentication dependency) and run the pre-label loop for the app's lifetime."""
    loop = masking.PrelabelLoop(workspace)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[Any]:
        loop.start()
        try:
            async with inner(application) as state:
                yield state
        finally:
            loop.stop()

    app.router.lifespan_context = lifespan
    app.state.prelabel_loop = loop
    router = APIRouter()

    @router.get("/api/mask/next")
    def mask_next(exclude: Annotated[list[str], Query(max_length=200)] = [],  # noqa: B006 (FastAPI's idiom)
                  user: User = anyone) -> dict[str, Any]:
        settings = read_app_settings(workspace)
        result = masking.next_mask_item(workspace, user, exclude=exclude, lease_minutes=settings.lease_minutes)
        if result["sample_id"] is not None:
            loop.ahead(result["sample_id"])
        return _with_links(result, loop)

    @router.get("/api/mask/item")
    def mask_item(id: SampleId, user: User = anyone) -> dict[str, Any]:
        loop.ahead(id)
        return _with_links(masking.mask_item(workspace, id), loop)

    @router.get("/api/mask/image")
    def mask_image(id: SampleId, user: User = anyone) -> Response:
        image = masking.mask_image(workspace, id)
        return Response(_image_png(image.pixels), media_type="image/png",
                        headers={"cache-control": "private, max-age=600"})

    @router.get("/api/mask/superpixels")
    def mask_superpixels(id: SampleId, level: Annotated[str, Query(max_length=16)] = masking.DEFAULT_LEVEL,
                         user: User = anyone) -> Response:
        labels = masking.superpixel_map(workspace, id, level)
        count = int(labels.max()) + 1 if labels.size else 0
        dtype = "uint16" if count <= 65536 else "uint32"
        body = gzip.compress(labels.astype("<u2" if dtype == "uint16" else "<u4").tobytes(), compresslevel=1)
        return Response(body, media_type="application/octet-stream", headers={
            "content-encoding": "gzip", "x-width": str(labels.shape[1]), "x-height": str(labels.shape[0]),
            "x-dtype": dtype, "x-segments": str(count), "x-level": level, "cache-control": "private, max-age=600"})

    @router.get("/api/mask/proposal")
    def mask_proposal(id: SampleId, user: User = anyone) -> Response:
        masking.mask_image(workspace, id)  # 404 for anything but an image, model or not
        found = loop.proposal(id)
        if found is None:
            return Response(status_code=204, headers={"cache-control": "no-store"})
        return _png_response(found[0], found[1])

    @router.get("/api/mask/status")
    def mask_status(user: User = anyone) -> dict[str, Any]:
        return {**loop.snapshot(), "masked": len(masking.human_masked(workspace))}

    @router.get(MASK_PATH)
    def mask_get(id: SampleId, user: User = anyone) -> Response:
        masking.mask_image(workspace, id)
        found = workspace.catalog.semantic_mask(id)
        if found is None:
            raise NotFoundError(f"sample {id!r} has no mask yet")
        label_map, names = found
        return _png_response(label_map, names)

    @router.post(MASK_PATH)
    async def mask_save(request: Request, id: SampleId,
                        classes: Annotated[list[str], Query(max_length=1024)] = [],  # noqa: B006
                        duration_ms: Annotated[int | None, Query(ge=0, le=24 * 3600 * 1000)] = None,
                        user: User = anyone) -> dict[str, Any]:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "image/png":
            raise InputError("send the mask as the body with Content-Type: image/png")
        body = await request.body()

        def save() -> dict[str, Any]:
            image = masking.mask_image(workspace, id)
            label_map = read_label_png_bytes(body, (image.height, image.width))
            return masking.save_mask(workspace, user, id, label_map, classes, proposal=loop.served(id),
                                     duration_ms=duration_ms)

        result = await run_in_threadpool(save)
        loop.notify()
        return result

    graphs = masking.GraphCache(masking.GRAPH_CACHE_BYTES)
    completions = asyncio.Semaphore(COMPLETIONS_AT_ONCE)

    @router.post(COMPLETE_PATH)
    async def mask_complete(request: Request, id: SampleId,
                            classes: Annotated[list[str], Query(max_length=1024)] = [],  # noqa: B006
                            prior: Annotated[str, Query(max_length=16)] = "", user: User = anyone) -> Response:
        """Complete the mask from the painted pixels (255 = not painted; value i + 1 = ``classes[i]``). ``prior``
        names what the page started from, which then leans the unpainted superpixels to its classes: ``proposal``
        (or ``true``) the pre-label proposal served for the image, ``mask`` its saved mask (what GET /api/mask
        serves); empty (or ``false``) none."""
        if prior not in PRIORS:
            raise InputError(f"prior must be one of {', '.join(sorted(name for name in PRIORS if name))}, "
                             f"not {prior!r}")
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "image/png":
            raise InputError("send the painted pixels as the body with Content-Type: image/png")
        body = await request.body()

        def complete() -> tuple[np.ndarray, float]:
            import time

            began = time.perf_counter()
            image = masking.mask_image(workspace, id)
            painted = read_label_png_bytes(body, (image.height, image.width))
            start = None
            if PRIORS[prior] == "proposal":
                start = loop.served(id)
            elif PRIORS[prior] == "mask":
                start = workspace.catalog.semantic_mask(id)
            completed = masking.complete_from_seeds(workspace, id, painted, classes, start=start, graphs=graphs)
            return completed, time.perf_counter() - began

        async with completions:
            completed, seconds = await run_in_threadpool(complete)
        return _png_response(completed, list(classes), **{"x-completion-ms": f"{seconds * 1000:.1f}"})

    app.router.routes.extend(router.routes)  # plain routes: the server's tests list app.routes by path
    return loop


def _with_links(item: dict[str, Any], loop: masking.PrelabelLoop) -> dict[str, Any]:
    sid = item.get("sample_id")
    if sid is None:
        return item
    q = quote(sid, safe="")
    return {**item, "image": f"/api/mask/image?id={q}", "superpixels": f"/api/mask/superpixels?id={q}",
            "mask": f"{MASK_PATH}?id={q}", "proposal": f"/api/mask/proposal?id={q}",
            "proposal_available": loop.has_model()}


__all__ = ["BODY_LIMITS", "COMPLETE_PATH", "MAX_MASK_BYTES", "include_mask_routes", "label_png", "read_label_png_bytes"]
