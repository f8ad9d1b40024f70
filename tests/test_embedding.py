"""The embedding driver: stores vectors per sample, resumes after an interruption, recomputes stale rows."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from curato.commands.embed import choose_embedder_name, compute_embeddings
from curato.commands.ingest import ingest
from curato.errors import UnknownEmbedderError, WorkspaceError
from curato.features.embedders import get_embedder
from curato.imageio import load_rgb
from curato.workspace import Workspace
from tests.conftest import InterruptAfter, photo


@pytest.fixture()
def workspace(tmp_path, image_folder):
    ws = Workspace.create(tmp_path / "ws")
    ingest(ws, image_folder, workers=1)
    return ws


def test_embed_all_then_reuse(workspace):
    features, summary = compute_embeddings(workspace, "classic")
    n = workspace.catalog.sample_count()
    assert summary.computed == n and summary.reused == 0 and features.vectors.shape[0] == n
    assert np.isfinite(np.asarray(features.vectors)).all()
    _, again = compute_embeddings(workspace, "classic")
    assert again.computed == 0 and again.reused == n


def test_interrupted_embedding_resumes_without_redoing_chunks(workspace):
    n = workspace.catalog.sample_count()
    with pytest.raises(KeyboardInterrupt):
        compute_embeddings(workspace, "classic", chunk_size=16, progress=InterruptAfter("embedding", 40))
    assert workspace.catalog.runs("embed")[-1]["status"] == "interrupted"
    assert not workspace.features.has("classic")  # nothing half-written is visible
    features, summary = compute_embeddings(workspace, "classic", chunk_size=16)
    assert summary.reused >= 32 and summary.computed == n - summary.reused
    assert features.vectors.shape[0] == n and workspace.features.pending_parts("classic") == []
    # rows from before and after the interruption equal a direct computation
    uris = dict(zip(*workspace.catalog.samples(("sample_id", "uri")).values(), strict=True))
    embedder = get_embedder("classic")
    for sample_id in (features.ids[0], features.ids[-1]):
        direct = embedder.embed([load_rgb(uris[sample_id])])[0]
        row = features.vectors[features.ids.tolist().index(sample_id)]
        assert np.allclose(row, direct, atol=1e-5)


def test_changed_file_makes_its_row_stale(workspace, image_folder):
    compute_embeddings(workspace, "classic")
    before = workspace.features.load("classic")
    row_before = np.array(before.vectors[before.ids.tolist().index("train/Trouser/coffee.jpg")])
    Image.fromarray(photo("astronaut")).save(image_folder / "train" / "Trouser" / "coffee.jpg")
    ingest(workspace, image_folder, workers=1)
    _, summary = compute_embeddings(workspace, "classic")
    assert summary.computed == 1
    after = workspace.features.load("classic")
    row_after = after.vectors[after.ids.tolist().index("train/Trouser/coffee.jpg")]
    assert not np.allclose(row_before, row_after)


def test_default_embedder_follows_image_size(workspace, tmp_path):
    assert choose_embedder_name(workspace) == "efficientnet-lite0-112"  # mostly 28x28 images
    empty = Workspace.create(tmp_path / "empty")
    with pytest.raises(WorkspaceError, match="curato ingest"):
        choose_embedder_name(empty)


def test_unknown_embedder(workspace):
    with pytest.raises(UnknownEmbedderError, match="classic"):
        compute_embeddings(workspace, "no-such-model")
