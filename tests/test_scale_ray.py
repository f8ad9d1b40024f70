"""`--engine ray`: ingest and embed on a local Ray instance write what the local path writes.

One Ray instance for the module (2 CPUs, started once: it takes seconds). The data: real Fashion-MNIST
PNGs, real photos as JPEG (one large enough to be reduced while scanning) and an unreadable file, ingested
and embedded once per engine into its own workspace. Texts through Ray: benchmarks/scale_ray.py (loading the
text model in every actor costs more test time than the path is worth here; it differs only in decoding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curato.api import Workspace
from curato.errors import InputError
from curato.featurestore import PROPERTIES, THUMBNAILS
from tests.conftest import photo, run

ray = pytest.importorskip("ray", reason="the 'scale' extra (ray[data]) is part of the test install (Makefile)")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _folder(root: Path, fashion_mnist: tuple[np.ndarray, np.ndarray]) -> Path:
    images, labels = fashion_mnist
    for klass in (0, 1, 7):
        folder = root / str(klass)
        folder.mkdir(parents=True)
        for index in np.flatnonzero(labels == klass)[:25]:
            Image.fromarray(images[index]).save(folder / f"{index:05d}.png")
    Image.fromarray(photo("astronaut")).resize((1200, 1200)).save(root / "1" / "astronaut.jpg", quality=85)
    Image.fromarray(photo("coffee")).save(root / "7" / "coffee.jpg", quality=90)
    (root / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    return root


def _catalog(ws: Workspace) -> dict[str, tuple]:
    table = ws.catalog.samples(("sample_id", "content_hash", "readable", "width", "height", "format", "bytes",
                                "phash"))
    return {row[0]: tuple(row[1:]) for row in zip(*table.values(), strict=True)}


def test_ray_ingest_and_embed_equal_the_local_path(tmp_path: Path, fashion_mnist, local_ray) -> None:
    source = _folder(tmp_path / "images", fashion_mnist)
    local = Workspace.create(tmp_path / "local")
    local.ingest(source)
    distributed = Workspace.create(tmp_path / "ray")
    summary = distributed.ingest(source, engine="ray")
    assert summary.samples == 78 and summary.scanned == 78 and summary.unreadable == 1

    assert _catalog(distributed) == _catalog(local)
    for table in (PROPERTIES, THUMBNAILS):
        ours, theirs = distributed.features.load(table), local.features.load(table)
        assert list(ours.ids) == list(theirs.ids)
        np.testing.assert_array_equal(ours.vectors, theirs.vectors)

    local.embed("efficientnet-lite0-112")
    embedded = distributed.embed("efficientnet-lite0-112", engine="ray")
    assert embedded.computed == 77 and len(embedded.failed) == 0
    ours, theirs = distributed.features.load("efficientnet-lite0-112"), local.features.load("efficientnet-lite0-112")
    order = {sid: i for i, sid in enumerate(theirs.ids)}
    assert sorted(ours.ids) == sorted(theirs.ids)
    matched = theirs.vectors[[order[sid] for sid in ours.ids]]
    cosines = (ours.vectors * matched).sum(1) / np.linalg.norm(ours.vectors, axis=1) / np.linalg.norm(matched, axis=1)
    assert cosines.min() >= 0.9999

    # Resumes like the local path: nothing changed, nothing recomputed; a changed file is rescanned.
    Image.fromarray(255 - fashion_mnist[0][0]).save(next((source / "0").glob("*.png")))
    again = distributed.ingest(source, engine="ray")
    assert (again.changed, again.scanned, again.unchanged) == (1, 1, 77)
    assert distributed.embed("efficientnet-lite0-112", engine="ray").computed == 1


def test_ray_ingest_in_windows_equals_the_local_path(tmp_path: Path, fashion_mnist, local_ray) -> None:
    """Ray ingest a window of chunks at a time (chunks of 4, windows of 64: two windows of 78 images) writes what
    the local path writes in one window: catalog rows, feature ids and vectors; and re-ingests the same after a
    file changed in the second window."""
    from curato.commands.ingest import ingest

    source = _folder(tmp_path / "images", fashion_mnist)
    local, distributed = Workspace.create(tmp_path / "local"), Workspace.create(tmp_path / "ray")
    for step in range(2):
        if step:
            Image.fromarray(255 - fashion_mnist[0][1]).save(sorted((source / "7").glob("*.png"))[-1])
        whole = ingest(local, source, workers=1)
        windowed = ingest(distributed, source, chunk_size=4, engine="ray")
        assert {**whole.__dict__, "source": ""} == {**windowed.__dict__, "source": ""}
        assert _catalog(distributed) == _catalog(local)
        for table in (PROPERTIES, THUMBNAILS):
            ours, theirs = distributed.features.load(table), local.features.load(table)
            assert sorted(ours.ids) == sorted(theirs.ids) and len(ours.ids) == 77
            order = {sid: i for i, sid in enumerate(theirs.ids)}
            np.testing.assert_array_equal(ours.vectors, theirs.vectors[[order[sid] for sid in ours.ids]])
    assert (windowed.changed, windowed.scanned, windowed.unchanged) == (1, 1, 77)


def test_an_unknown_engine_is_a_one_line_error(tmp_path: Path, image_folder: Path) -> None:
    result = run("ingest", image_folder, "-w", tmp_path / "ws", "--engine", "spark")
    assert result.returncode == 2 and "--engine 'spark' is unknown" in result.stderr
    with pytest.raises(InputError, match="name a registered embedder"):
        from curato.features.embedders import get_embedder

        Workspace.open(tmp_path / "ws").embed(get_embedder("pixels"), engine="ray")
