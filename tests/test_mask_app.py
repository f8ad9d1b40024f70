"""The mask endpoints of ``curato serve`` over real HTTP on loopback (uvicorn in a thread), on real photographs
(scikit-image's ``chelsea`` and ``coffee``): save and read back, refused input writes nothing, undo, the
superpixel and proposal answers, and the per-path body limit."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from curato.api import Workspace
from curato.catalog.schema import annotations, decisions
from curato.label.masks_api import MAX_MASK_BYTES, label_png
from tests.test_label_server import _client, _fresh_postgres, serving


def _photos(root: Path) -> Path:
    """Two real photos (and a text sample) in a manifest; returns it."""
    from skimage import data

    root.mkdir(parents=True)
    Image.fromarray(data.chelsea()).save(root / "chelsea.png")
    Image.fromarray(data.coffee()).save(root / "coffee.jpg", quality=95)
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "path", "label", "split"])
        writer.writeheader()
        writer.writerow({"id": "chelsea", "path": "chelsea.png", "label": "cat", "split": "train"})
        writer.writerow({"id": "coffee", "path": "coffee.jpg", "label": "cup", "split": "train"})
    (root / "notes.csv").write_text("id,text,label\nnote1,a sentence about a cat,cat\n")
    return manifest


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("masks")
    manifest = _photos(base / "data")
    ws = Workspace.create(base / "ws")
    ws.ingest(manifest)
    ws.ingest(base / "data" / "notes.csv", format="text")
    return base / "ws"


@pytest.fixture
def workspace(built, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(built, tmp_path / "ws"))


def _tokens(root: Path) -> dict[str, str]:
    ws = Workspace.open(root)
    return {name: ws.add_user(name, role) for name, role in (("ann", "annotator"), ("bob", "annotator"),
                                                               ("root", "admin"))}


def _mask_rows(root: Path) -> tuple[int, int]:
    with Workspace.open(root).catalog.engine.connect() as conn:
        return (int(conn.execute(select(func.count()).select_from(annotations)).scalar()),
                int(conn.execute(select(func.count()).select_from(decisions)).scalar()))


def _read_png(content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(content)) as image:
        assert image.mode == "P"
        return np.asarray(image).copy()


def _save(client, sample_id: str, label_map: np.ndarray, classes: list[str], body: bytes | None = None):
    return client.post("/api/mask", params={"id": sample_id, "classes": classes},
                       content=label_png(label_map) if body is None else body,
                       headers={"content-type": "image/png"})


def _painted(shape: tuple[int, int], seed: int) -> np.ndarray:
    label_map = np.zeros(shape, dtype=np.uint8)
    h, w = shape
    label_map[h // 4: h // 2, w // 5: w // 2] = 1
    label_map[h // 2:, w // 2 + seed:] = 2
    return label_map


def test_next_superpixels_save_read_back_and_undo(workspace):
    tokens = _tokens(workspace)
    with serving(workspace) as base, _client(base, tokens["ann"]) as ann, _client(base, tokens["bob"]) as bob:
        item = ann.get("/api/mask/next").json()
        assert item["sample_id"] in ("chelsea", "coffee")
        assert item["classes"][:2] == ["cat", "cup"] and item["proposal_available"] is False
        assert ann.get("/api/mask/proposal", params={"id": "chelsea"}).status_code == 204
        shape = (300, 451)
        picture = ann.get("/api/mask/image", params={"id": "chelsea"})
        assert picture.headers["content-type"] == "image/png"
        from skimage import data

        assert np.array_equal(np.asarray(Image.open(io.BytesIO(picture.content))), data.chelsea())
        answer = ann.get("/api/mask/superpixels", params={"id": "chelsea", "level": "fine"})
        assert answer.status_code == 200 and answer.headers["x-dtype"] == "uint16"
        segments = np.frombuffer(answer.content, dtype="<u2").reshape(int(answer.headers["x-height"]),
                                                                      int(answer.headers["x-width"]))
        assert segments.shape == shape and int(segments.max()) + 1 == int(answer.headers["x-segments"]) > 300
        assert ann.get("/api/mask/superpixels", params={"id": "chelsea", "level": "huge"}).status_code == 400
        assert ann.get("/api/mask", params={"id": "chelsea"}).status_code == 404

        first = _painted(shape, 0)
        saved = _save(ann, "chelsea", first, ["cat", "cup"])
        assert saved.status_code == 200, saved.text
        first_decision = saved.json()["decision"]
        assert saved.json()["from_proposal"] is None
        back = ann.get("/api/mask", params={"id": "chelsea"})
        assert back.status_code == 200 and json.loads(unquote(back.headers["x-mask-classes"]))[:2] == ["cat", "cup"]
        assert np.array_equal(_read_png(back.content), first)
        assert ann.get("/api/mask/next").json()["sample_id"] == "coffee"

        second = _painted(shape, 40)
        second_decision = _save(bob, "chelsea", second, ["cat", "cup"]).json()["decision"]
        assert np.array_equal(_read_png(ann.get("/api/mask", params={"id": "chelsea"}).content), second)
        # another user's decision: refused, nothing changes
        assert ann.post(f"/api/decisions/{second_decision}/undo").status_code == 403
        # the older mask has been saved over: undoing it first is a conflict
        assert ann.post(f"/api/decisions/{first_decision}/undo").status_code == 409
        assert bob.post(f"/api/decisions/{second_decision}/undo").status_code == 200
        assert np.array_equal(_read_png(ann.get("/api/mask", params={"id": "chelsea"}).content), first)
        assert ann.post(f"/api/decisions/{first_decision}/undo").status_code == 200
        assert ann.get("/api/mask", params={"id": "chelsea"}).status_code == 404
        # ann still holds the image handed out after the first save: it comes back first; skipping it frees it
        assert ann.get("/api/mask/next").json()["sample_id"] == "coffee"
        assert ann.get("/api/mask/next", params={"exclude": ["coffee"]}).json()["sample_id"] == "chelsea"
        assert bob.get("/api/mask/next").json()["sample_id"] == "coffee"
    ws = Workspace.open(workspace)
    history = ws.catalog.masks("chelsea")
    assert len(history) == 4 and all(row["data"].get("superseded_by") for row in history)  # kept, not deleted
    assert ws.catalog.semantic_mask("chelsea") is None


def _declared_png(width: int, height: int) -> bytes:
    """A tiny 8-bit greyscale PNG whose header declares ``width`` x ``height`` pixels (no pixel data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_refused_masks_write_nothing(workspace):
    tokens = _tokens(workspace)
    shape = (300, 451)
    with serving(workspace) as base, _client(base, tokens["ann"]) as ann:
        before = _mask_rows(workspace)
        wrong_size = _save(ann, "chelsea", np.zeros((shape[0], shape[1] - 1), np.uint8), ["cat"])
        assert wrong_size.status_code == 400 and "451x300" in wrong_size.json()["detail"]
        too_high = _painted(shape, 0)
        too_high[0, 0] = 3
        assert _save(ann, "chelsea", too_high, ["cat", "cup"]).status_code == 400
        assert _save(ann, "chelsea", _painted(shape, 0), ["cat", "cat"]).status_code == 400
        assert _save(ann, "chelsea", _painted(shape, 0), ["cat", "cup"], body=b"not a png").status_code == 400
        rgb = io.BytesIO()
        Image.new("RGB", (shape[1], shape[0])).save(rgb, format="PNG")
        assert _save(ann, "chelsea", _painted(shape, 0), ["cat", "cup"], body=rgb.getvalue()).status_code == 400
        # a 65-byte PNG that declares 40000x40000 pixels (PIL's DecompressionBombError past twice
        # curato.imageio's MAX_IMAGE_PIXELS): a 400 on both paths that read a PNG, not a 500
        for path in ("/api/mask", "/api/mask/complete"):
            bomb = ann.post(path, params={"id": "chelsea", "classes": ["cat"]}, content=_declared_png(40000, 40000),
                            headers={"content-type": "image/png"})
            assert bomb.status_code == 400, (path, bomb.status_code, bomb.text)
        as_json = ann.post("/api/mask", params={"id": "chelsea", "classes": ["cat"]}, json={"mask": [0]})
        assert as_json.status_code == 400
        # not an image, or not in the catalog: 404 for every mask call
        for path in ("/api/mask", "/api/mask/superpixels", "/api/mask/proposal", "/api/mask/image"):
            assert ann.get(path, params={"id": "note1"}).status_code == 404, path
            assert ann.get(path, params={"id": "nope"}).status_code == 404, path
        assert _save(ann, "note1", np.zeros((1, 1), np.uint8), ["cat"]).status_code == 404
        # over the mask limit: 413 before the app reads it; JSON endpoints keep their 64 KiB limit
        huge = ann.post("/api/mask", params={"id": "chelsea", "classes": ["cat"]},
                        content=b"\0" * (MAX_MASK_BYTES + 1), headers={"content-type": "image/png"})
        assert huge.status_code == 413
        big_json = ann.post("/api/label/submit", content=b"{" + b" " * 70_000 + b"}",
                            headers={"content-type": "application/json"})
        assert big_json.status_code == 413
        assert _mask_rows(workspace) == before
        # unauthenticated: refused
        assert _client(base).get("/api/mask/next").status_code == 401


def test_proposal_after_refit_and_from_proposal(workspace):
    tokens = _tokens(workspace)
    shape = (300, 451)
    with serving(workspace) as base, _client(base, tokens["ann"]) as ann:
        first = _painted(shape, 0)
        assert _save(ann, "chelsea", first, ["cat", "cup"]).status_code == 200
        deadline = time.monotonic() + 120
        while not ann.get("/api/mask/status").json()["model"]:
            assert time.monotonic() < deadline, ann.get("/api/mask/status").json()
            time.sleep(0.2)
        proposal = ann.get("/api/mask/proposal", params={"id": "coffee"})
        assert proposal.status_code == 200, proposal.text
        proposed = _read_png(proposal.content)
        names = json.loads(unquote(proposal.headers["x-mask-classes"]))
        assert proposed.shape == (400, 600) and set(np.unique(proposed)) <= set(range(len(names) + 1))
        # keep the proposal but repaint a quarter of it: from_proposal measures what stayed
        kept = proposed.copy()
        kept[:100, :] = np.where(proposed[:100, :] == 1, 2, 1)
        answer = _save(ann, "coffee", kept, names)
        assert answer.status_code == 200, answer.text
        share = answer.json()["from_proposal"]
        assert share == pytest.approx(float((kept == proposed).mean()), abs=1e-6) and 0.7 <= share <= 0.8
        with Workspace.open(workspace).catalog.engine.connect() as conn:
            effects = conn.execute(select(decisions.c.effects).where(
                decisions.c.id == answer.json()["decision"])).scalar()
        assert effects["from_proposal"] == share and effects["mask"] == answer.json()["mask"]


def _seeds_png(painted: np.ndarray) -> bytes:
    """The painted-pixels map as the page sends it: an 8-bit greyscale PNG, 255 = not painted."""
    buffer = io.BytesIO()
    Image.fromarray(painted, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_complete_from_strokes_matches_the_library(workspace):
    """POST /api/mask/complete answers what curato.features.propagation completes over the image's fine
    superpixels: painted pixels kept, the rest following them; refused input is a 400."""
    from skimage import data

    from curato.features.propagation import UNPAINTED, complete_mask, region_graph

    tokens = _tokens(workspace)
    shape = (300, 451)
    painted = np.full(shape, UNPAINTED, np.uint8)
    painted[120:135, 180:260] = 1  # a stroke across the cat's face
    painted[10:25, 10:120] = 0  # and one on the wall behind it
    with serving(workspace) as base, _client(base, tokens["ann"]) as ann:
        answer = ann.get("/api/mask/superpixels", params={"id": "chelsea", "level": "fine"})
        segments = np.frombuffer(answer.content, dtype="<u2").reshape(shape).astype(np.int32)
        params = {"id": "chelsea", "classes": ["cat", "cup"]}
        completed = ann.post("/api/mask/complete", params=params, content=_seeds_png(painted),
                             headers={"content-type": "image/png"})
        assert completed.status_code == 200, completed.text
        assert float(completed.headers["x-completion-ms"]) > 0
        assert json.loads(unquote(completed.headers["x-mask-classes"])) == ["cat", "cup"]
        # no proposal served for this image: asking for the prior changes nothing
        with_prior = ann.post("/api/mask/complete", params={**params, "prior": "true"}, content=_seeds_png(painted),
                              headers={"content-type": "image/png"})
        assert with_prior.status_code == 200 and with_prior.content == completed.content
        assert ann.post("/api/mask/complete", params={**params, "prior": "model"}, content=_seeds_png(painted),
                        headers={"content-type": "image/png"}).status_code == 400
        # a saved mask as the prior: its class nobody painted now (cup, lower right) keeps its region
        saved = _painted(shape, 0)
        assert _save(ann, "chelsea", saved, ["cat", "cup"]).status_code == 200
        from_mask = ann.post("/api/mask/complete", params={**params, "prior": "mask"}, content=_seeds_png(painted),
                             headers={"content-type": "image/png"})
        assert from_mask.status_code == 200, from_mask.text
        kept = _read_png(from_mask.content)
        assert (kept[saved == 2] == 2).mean() > 0.8 and not (_read_png(completed.content) == 2).any()
        many = {"id": "chelsea", "classes": [f"class{i}" for i in range(255)]}  # 255 would read as not painted
        refused = ann.post("/api/mask/complete", params=many, content=_seeds_png(painted),
                           headers={"content-type": "image/png"})
        assert refused.status_code == 400 and "at most 254 classes" in refused.json()["detail"]
        too_many = painted.copy()
        too_many[50, 50] = 3  # only two classes named
        refused = ann.post("/api/mask/complete", params=params, content=_seeds_png(too_many),
                           headers={"content-type": "image/png"})
        assert refused.status_code == 400 and "class 3" in refused.json()["detail"]
        assert ann.post("/api/mask/complete", params=params, content=_seeds_png(painted[:100]),
                        headers={"content-type": "image/png"}).status_code == 400
        assert ann.post("/api/mask/complete", params=params, content=b"x" * 10,
                        headers={"content-type": "text/plain"}).status_code == 400
    result = _read_png(completed.content)
    expected = complete_mask(region_graph(data.chelsea(), segments), painted)
    assert np.array_equal(result, expected)
    assert (result[painted != UNPAINTED] == painted[painted != UNPAINTED]).all()
    cat = (result == 1).mean()
    assert 0.1 < cat < 0.9  # the strokes' classes both spread beyond the painted pixels
    assert (result == 1).sum() > 5 * (painted == 1).sum() and (result == 0).sum() > 5 * (painted == 0).sum()


def test_graph_cache_is_bounded_by_bytes_not_count():
    """Region graphs are kept while they fit the byte budget, least recently used out first; one larger than
    the budget is still kept (it is the one in use)."""
    from skimage import data

    from curato.commands.masking import GraphCache, graph_bytes
    from curato.features import superpixels as sp
    from curato.features.propagation import region_graph

    images = {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut()}
    graphs = {name: region_graph(image, sp.superpixels(image, n_segments=300)) for name, image in images.items()}
    sizes = {name: graph_bytes(graph) for name, graph in graphs.items()}
    assert sizes["chelsea"] > 300 * 451 * 3 * 4  # at least the per-pixel Lab
    assert sizes["astronaut"] > sizes["coffee"]  # 512x512 against 600x400
    cache = GraphCache(sizes["chelsea"] + sizes["astronaut"])
    built: list[str] = []

    def get(name: str):
        return cache.get(name, lambda: built.append(name) or graphs[name])

    assert get("chelsea") is graphs["chelsea"] and get("coffee") is graphs["coffee"] and get("chelsea")
    assert built == ["chelsea", "coffee"]
    get("astronaut")  # over the budget: coffee (least recently used) goes
    assert list(cache.graphs) == ["chelsea", "astronaut"]
    tiny = GraphCache(1)
    tiny.get("chelsea", lambda: graphs["chelsea"])
    tiny.get("coffee", lambda: graphs["coffee"])
    assert list(tiny.graphs) == ["coffee"]


def _mask_workspace(root: Path, postgres_url: str | None, count: int) -> Workspace:
    """``count`` real Fashion-MNIST images in a workspace (SQLite, or PostgreSQL when a URL is given)."""
    from curato.imageio import read_idx
    from tests.conftest import FASHION_MNIST_DIR

    folder = root / "data" / "item"
    folder.mkdir(parents=True)
    for index, image in enumerate(read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")[:count]):
        Image.fromarray(np.asarray(image)).save(folder / f"{index:03d}.png")
    ws = Workspace.create(root / "ws", db_url=None if postgres_url is None else _fresh_postgres(postgres_url))
    ws.ingest(root / "data")
    return ws


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_annotators_never_get_the_same_image(tmp_path, backend, postgres_url):
    """Claims: concurrent asks hand out distinct images; an annotator gets their own unsaved image back; saving
    or skipping releases it; a claim older than the lease is taken over."""
    from concurrent.futures import ThreadPoolExecutor

    from curato.commands.labelling import User
    from curato.commands.masking import next_mask_item, save_mask

    if backend == "postgresql" and not postgres_url:
        pytest.skip("CURATO_TEST_POSTGRES_URL not set (CI sets it and starts PostgreSQL)")
    ws = _mask_workspace(tmp_path, postgres_url if backend == "postgresql" else None, 11)
    people = [User(id=i, name=f"a{i}", role="annotator") for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        handed = list(pool.map(lambda user: next_mask_item(ws, user)["sample_id"], people))
    assert None not in handed and len(set(handed)) == 8  # eight people at once: eight different images
    assert next_mask_item(ws, people[0])["sample_id"] == handed[0]  # asked again: the same, unsaved image
    save_mask(ws, people[0], handed[0], np.zeros((28, 28), dtype=np.uint8), ["item"])
    after = next_mask_item(ws, people[0])["sample_id"]
    assert after not in handed  # the saved one is done, the seven others are claimed
    late = next_mask_item(ws, User(id=99, name="late", role="annotator"))["sample_id"]
    assert late not in set(handed) | {after}
    # a skipped image is free for the next person at once (the skipper gets the last unclaimed one)
    skipped = next_mask_item(ws, people[1], exclude=[handed[1]])["sample_id"]
    assert skipped != handed[1] and next_mask_item(ws, people[2], exclude=[handed[2]])["sample_id"] == handed[1]
    # with a lease of zero minutes every claim has lapsed: someone new may take any unsaved image
    taken = next_mask_item(ws, User(id=100, name="new", role="annotator"), lease_minutes=0.0)["sample_id"]
    assert taken is not None and taken != handed[0]


def test_at_most_two_completions_run_at_once_and_the_rest_wait(workspace, monkeypatch):
    """docs/server-api.md: at most two completions run at once; the rest wait (none is refused). Five requests
    sent together over real HTTP: each completion is held 0.4 s (then runs for real), so without the limit all
    five would overlap (the server's thread pool has 40 threads)."""
    import threading

    from curato.commands import masking
    from curato.features.propagation import UNPAINTED

    hold, requests = 0.4, 5
    real = masking.complete_from_seeds
    lock = threading.Lock()
    running, peak, spans = [0], [0], []

    def held(*args, **kwargs):
        began = time.monotonic()
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(hold)
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1
                spans.append((began, time.monotonic()))

    monkeypatch.setattr(masking, "complete_from_seeds", held)
    tokens = _tokens(workspace)
    painted = np.full((300, 451), UNPAINTED, np.uint8)
    painted[120:135, 180:260] = 1
    painted[10:25, 10:120] = 0
    params = {"id": "chelsea", "classes": ["cat", "cup"]}
    answers: list = [None] * requests
    with serving(workspace) as base:
        def send(index: int) -> None:
            try:
                with _client(base, tokens["ann"]) as client:
                    answers[index] = client.post("/api/mask/complete", params=params, content=_seeds_png(painted),
                                                 headers={"content-type": "image/png"})
            except Exception as error:  # kept for the assertion below: a thread's error would vanish
                answers[index] = error

        threads = [threading.Thread(target=send, args=(i,)) for i in range(requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
    assert all(not isinstance(answer, Exception) and answer is not None and answer.status_code == 200
               for answer in answers), answers
    assert len({answer.content for answer in answers}) == 1  # each waited, then got the full completion
    assert peak[0] == 2 and len(spans) == requests
    spans.sort()
    # the third started only once one of the first two had finished
    assert spans[2][0] >= min(end for _, end in spans[:2]) - 0.01
