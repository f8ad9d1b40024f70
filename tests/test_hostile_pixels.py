"""Pixels and resources under hostile input: EXIF orientation, huge images, killed ingests, one picture under two
labels, non-files named as images. Real files, real subprocesses; docs/reliability.md, "Pixels and resources"."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curato import imageio
from curato.commands.embed import compute_embeddings
from curato.commands.ingest import ingest
from curato.errors import InputError, UnreadableImageError
from curato.features.embedders import get_embedder
from curato.features.scan import scan_images
from curato.imageio import load_rgb, read_raw
from curato.models.oof import out_of_fold_probabilities, whitened_pca
from curato.report.thumbnails import thumbnail_data_uri
from curato.workspace import Workspace
from tests.conftest import photo, run

ROOT = Path(__file__).resolve().parents[1]
ORIENTATION = 0x0112  # the EXIF tag

# What each EXIF orientation means, from the tag's definition (where the stored 0th row and 0th column lie in the
# displayed picture), written with numpy: the displayed pixels of stored pixels ``s``.
DISPLAYED = {
    1: lambda s: s,
    2: lambda s: s[:, ::-1],  # 0th row at the top, 0th column on the right
    3: lambda s: s[::-1, ::-1],  # bottom, right
    4: lambda s: s[::-1, :],  # bottom, left
    5: lambda s: s.transpose(1, 0, 2),  # 0th row on the left, 0th column at the top
    6: lambda s: np.rot90(s, k=-1),  # right, top: turn a quarter clockwise
    7: lambda s: s[::-1, ::-1].transpose(1, 0, 2),  # right, bottom
    8: lambda s: np.rot90(s, k=1),  # left, bottom: turn a quarter anticlockwise
}


def save_with_orientation(path: Path, stored: np.ndarray, orientation: int, **options: object) -> Path:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(stored).save(path, exif=exif, **options)
    return path


def decoded_as_stored(path: Path) -> np.ndarray:
    """The file's pixels as stored, orientation ignored (what PIL gives without being asked to turn them)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# -- 1. EXIF orientation ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def portrait_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A portrait photo as a camera held upright stores it: landscape pixels, Orientation 6 (turn clockwise)."""
    upright = photo("astronaut")[:, 96:416]  # 512 high, 320 wide
    stored = np.rot90(upright, k=1)  # lying on its side: 320 high, 512 wide
    return save_with_orientation(tmp_path_factory.mktemp("exif") / "portrait.jpg", np.ascontiguousarray(stored), 6,
                                 quality=95)


def test_every_exif_orientation_is_applied_when_pixels_are_read(tmp_path: Path) -> None:
    stored = np.ascontiguousarray(photo("coffee")[::4, ::4])  # 100 x 150, every pixel distinct enough
    for orientation, displayed in DISPLAYED.items():
        path = save_with_orientation(tmp_path / f"o{orientation}.png", stored, orientation)  # lossless
        expected = displayed(stored)
        np.testing.assert_array_equal(load_rgb(str(path)), expected, err_msg=f"orientation {orientation}")
        table = scan_images([str(path)], workers=1)
        assert (table.width[0], table.height[0]) == (expected.shape[1], expected.shape[0]), orientation
        reference = scan_images([str(save_with_orientation(tmp_path / f"r{orientation}.png",
                                                           np.ascontiguousarray(expected), 1))], workers=1)
        np.testing.assert_array_equal(table.thumbnails, reference.thumbnails, err_msg=f"orientation {orientation}")
        np.testing.assert_allclose(table.properties[:, 7:], reference.properties[:, 7:], rtol=1e-5,
                                   err_msg=f"orientation {orientation}")  # pixel properties, not file_bytes


def test_a_portrait_jpeg_is_read_upright_everywhere(portrait_jpeg: Path) -> None:
    upright = np.rot90(decoded_as_stored(portrait_jpeg), k=-1)
    assert upright.shape[:2] == (512, 320)
    np.testing.assert_array_equal(load_rgb(str(portrait_jpeg)), upright)
    table = scan_images([str(portrait_jpeg)], workers=1)
    assert (table.width[0], table.height[0]) == (320, 512)  # as displayed, not as stored
    assert load_rgb(str(portrait_jpeg), min_side=100).shape[0] > load_rgb(str(portrait_jpeg), min_side=100).shape[1]
    thumbnail = thumbnail_data_uri(str(portrait_jpeg), size=96)
    assert thumbnail is not None
    with Image.open(io.BytesIO(base64.b64decode(thumbnail.split(",", 1)[1]))) as small:
        assert small.size == (60, 96)  # portrait


def test_embedding_sees_the_portrait_upright(tmp_path: Path, portrait_jpeg: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(portrait_jpeg, folder / "portrait.jpg")
    workspace = Workspace.create(tmp_path / "ws")
    ingest(workspace, folder, workers=1)
    features, summary = compute_embeddings(workspace, "pixels")
    assert summary.failed == []
    stored = np.asarray(features.vectors)[0]
    embedder = get_embedder("pixels")
    upright = embedder.embed([np.rot90(decoded_as_stored(portrait_jpeg), k=-1)])[0]
    lying = embedder.embed([decoded_as_stored(portrait_jpeg)])[0]
    np.testing.assert_allclose(stored, upright, atol=1e-6)
    assert np.abs(stored - lying).max() > 0.1
    assert workspace.catalog.samples(("width", "height"))["width"].tolist() == [320]


# -- 2. The pixel limit, and decoding large images small -------------------------------------------------------


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 megapixels (over the default 40) of a real photo, under Pillow's own limit."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.fromarray(photo("camera")[:, :, 0]).resize((8000, 6250), Image.Resampling.NEAREST).save(path,
                                                                                                    compress_level=1)
    return path


def test_an_image_over_the_pixel_limit_is_unreadable_with_a_reason(huge_png: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(photo("camera")).save(small)
    table = scan_images([str(huge_png), str(small)], workers=1)
    assert table.readable.tolist() == [False, True]
    error = table.error[0]
    assert error.startswith(str(huge_png)) and "\n" not in error
    assert "8000x6250" in error and "50.0 megapixels" in error and "limit of 40 megapixels" in error
    assert "CURATO_MAX_PIXELS" in error
    with pytest.raises(UnreadableImageError, match="over the limit"):
        load_rgb(str(huge_png))


def test_the_limit_is_checked_from_the_header_before_decoding(huge_png: Path, tmp_path: Path) -> None:
    # The header of the 50-megapixel image and only a little of its data: decoding would fail as truncated.
    cut = tmp_path / "cut.png"
    cut.write_bytes(huge_png.read_bytes()[:4096])
    assert "over the limit" in scan_images([str(cut)], workers=1).error[0]
    assert "truncated" in scan_images([str(cut)], workers=1, max_pixels=60_000_000).error[0].lower()


def test_the_limit_is_settable_by_keyword_environment_and_module_setting(huge_png: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    max_pixels = imageio.max_pixels
    assert max_pixels() == imageio.DEFAULT_MAX_PIXELS == 40_000_000
    assert scan_images([str(huge_png)], workers=1, max_pixels=50_000_000).readable.tolist() == [True]
    monkeypatch.setenv("CURATO_MAX_PIXELS", "60_000_000")
    assert max_pixels() == 60_000_000
    table = scan_images([str(huge_png)], workers=1)
    assert table.readable.tolist() == [True] and (table.width[0], table.height[0]) == (8000, 6250)
    monkeypatch.setattr(imageio, "MAX_PIXELS", 1_000_000)  # the module setting wins over the environment
    assert max_pixels() == 1_000_000 and max_pixels(5) == 5
    monkeypatch.setattr(imageio, "MAX_PIXELS", None)
    monkeypatch.setenv("CURATO_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="CURATO_MAX_PIXELS"):
        max_pixels()
    with pytest.raises(InputError, match="positive"):
        max_pixels(0)


def test_ingest_records_an_image_over_the_limit_as_unreadable(huge_png: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(huge_png, folder / "huge.png")
    Image.fromarray(photo("coffee")).save(folder / "coffee.png")
    result = run("ingest", folder, "-w", tmp_path / "ws", "--workers", "1")
    assert result.returncode == 0, result.stderr
    rows = Workspace.open(tmp_path / "ws").catalog.samples(("sample_id", "readable", "error"))
    found = {sid: (bool(ok), error) for sid, ok, error in zip(*rows.values(), strict=True)}
    assert found["coffee.png"] == (True, None)
    assert found["huge.png"][0] is False and "over the limit of 40 megapixels" in found["huge.png"][1]


def test_large_images_are_decoded_small_for_embedding(tmp_path: Path) -> None:
    big = photo("astronaut")
    big = np.ascontiguousarray(np.repeat(np.repeat(big, 5, axis=0), 5, axis=1))  # 2560 x 2560
    Image.fromarray(big).save(tmp_path / "big.png", compress_level=1)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    for name in ("big.png", "big.jpg"):
        reduced = load_rgb(str(tmp_path / name), min_side=1024)
        assert reduced.shape == (1280, 1280, 3), name  # halved: the shortest side stays >= 1024
        full = load_rgb(str(tmp_path / name))
        halved = np.asarray(Image.fromarray(full).reduce(2), dtype=np.float64)
        assert np.abs(reduced - halved).mean() < 2.0, name  # the same picture (JPEG: DCT-domain scaling)
    # A resize to an embedder's input gives nearly the same pixels from the reduced decode as from the full one.
    embedder = get_embedder("pixels")
    vectors = embedder.embed([load_rgb(str(tmp_path / "big.png"), min_side=1024), load_rgb(str(tmp_path / "big.png"))])
    assert np.abs(vectors[0] - vectors[1]).max() < 0.01


PEAK_SCRIPT = textwrap.dedent("""
    import json, sys
    from curato.commands.embed import compute_embeddings
    from curato.features.embedders import get_embedder
    from curato.workspace import Workspace

    def peak_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024

    workspace = Workspace.open(sys.argv[1])
    embedder = get_embedder("pixels")
    embedder.embed([__import__("numpy").zeros((64, 64, 3), "uint8")])
    before = peak_mb()
    features, summary = compute_embeddings(workspace, embedder)
    print(json.dumps({"before": before, "after": peak_mb(), "failed": summary.failed}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_embedding_a_large_image_holds_one_full_size_decode(tmp_path: Path) -> None:
    side = 6000  # 36 megapixels, under the default limit; 108 MB as RGB
    folder = tmp_path / "big"
    folder.mkdir()
    tile = photo("chelsea")
    picture = np.tile(tile, (side // tile.shape[0] + 1, side // tile.shape[1] + 1, 1))[:side, :side]
    Image.fromarray(np.ascontiguousarray(picture)).save(folder / "big.png", compress_level=1)
    del picture
    assert run("ingest", folder, "-w", tmp_path / "ws", "--workers", "1").returncode == 0
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "ws")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    peak = json.loads(done.stdout.strip().splitlines()[-1])
    assert peak["failed"] == []
    # One full-size decode is unavoidable for a PNG (Pillow holds RGB at 4 bytes a pixel: 137 MB); reading the
    # whole picture into arrays as well took 350 MB (decoded image, its array, the resize's stacked copy).
    full_size_mb = side * side * 3 / 2**20
    grew = peak["after"] - peak["before"]
    assert grew < 2 * full_size_mb, f"embedding one {side}x{side} PNG raised the peak by {grew:.0f} MB"


# -- 3. Workers die with a killed ingest -------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line) of every process, from /proc."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[int(name)] = (int(fields[1]), fields[0], command)
    return found


def _descendants(root: int) -> dict[int, tuple[int, str, str]]:
    table = _processes()
    found: dict[int, tuple[int, str, str]] = {}
    frontier = [root]
    for _ in range(8):  # a process tree this deep is more than a pool makes
        frontier = [pid for pid, (parent, _, _) in table.items() if parent in frontier and pid not in found]
        if not frontier:
            break
        found.update({pid: table[pid] for pid in frontier})
    return found


def _workers(root: int) -> list[int]:
    """The scan's worker processes under ``root`` (not the fork server or the resource tracker themselves)."""
    return [pid for pid, (parent, _, command) in _descendants(root).items()
            if "resource_tracker" not in command and not (parent == root and "forkserver" in command)]


def _running(pids: list[int]) -> list[int]:
    table = _processes()
    return [pid for pid in pids if pid in table and table[pid][1] != "Z"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_scan_workers_die_with_a_killed_ingest(tmp_path: Path, how: signal.Signals) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    picture = np.tile(photo("chelsea"), (5, 4, 1))  # 1500 x 1804: a fraction of a second per scan
    Image.fromarray(np.ascontiguousarray(picture)).save(folder / "0000.jpg", quality=90)
    for index in range(1, 320):  # more than one scan chunk (256), so the pool starts
        shutil.copyfile(folder / "0000.jpg", folder / f"{index:04d}.jpg")
    process = subprocess.Popen([sys.executable, "-m", "curato", "ingest", str(folder), "-w", str(tmp_path / "ws"),
                                "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(_workers(process.pid)) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = _workers(process.pid)
        assert len(workers) >= 2, "the pool never started"
        time.sleep(0.3)  # the workers are scanning now
        family = list(_descendants(process.pid))
        assert process.poll() is None, "ingest finished before it could be killed: give it more work"
        process.send_signal(how)
        process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _running(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _running(family)
        assert left == [], f"still running 10 s after the ingest was killed: {left}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        for pid in _running(list(_descendants(process.pid))) + _running(locals().get("family", [])):
            os.kill(pid, signal.SIGKILL)


# -- 4. One picture under two labels; no labels at all ----------------------------------------------------------


def test_identical_embeddings_give_finite_prior_probabilities() -> None:
    from curato.models.oof import varying_dimensions

    rows = np.tile(np.linspace(-1, 1, 64, dtype=np.float32), (40, 1))
    labels = np.array([0, 1] * 20)
    assert not varying_dimensions(rows).any()
    assert np.isfinite(whitened_pca(rows, 8, np.random.default_rng(0))).all()
    probs = out_of_fold_probabilities(rows, labels)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs, 0.5, atol=1e-3)  # nothing to learn but the class shares
    # Rounding-level differences (the same picture in another batch) are no signal either.
    noisy = rows * (1 + np.random.default_rng(1).normal(0, 1e-7, rows.shape)).astype(np.float32)
    assert not varying_dimensions(noisy).any()
    np.testing.assert_allclose(out_of_fold_probabilities(noisy, labels), 0.5, atol=1e-3)


def _audit_json(workspace: Path, tmp_path: Path) -> dict:
    out = tmp_path / "audit.json"
    result = run("audit", "-w", workspace, "--json", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text())


def _finding(document: dict, check: str) -> dict:
    return next(finding for finding in document["checks"] if finding["check"] == check)


def test_audit_of_one_picture_under_two_labels_completes(tmp_path: Path) -> None:
    picture = photo("astronaut")[::8, ::8]  # 64 x 64
    for label in ("cat", "dog"):
        (tmp_path / "same" / label).mkdir(parents=True)
        for index in range(12):
            Image.fromarray(picture).save(tmp_path / "same" / label / f"{index}.png")
    assert run("ingest", tmp_path / "same", "-w", tmp_path / "ws", "--workers", "1").returncode == 0
    document = _audit_json(tmp_path / "ws", tmp_path)
    label_issues = _finding(document, "label_issues")
    assert label_issues["severity"] == "none" and label_issues["summary"]["flagged"] == 0
    assert label_issues["summary"]["checked"] is False
    assert "same embedding" in label_issues["message"] and "not checked" in label_issues["message"]
    assert _finding(document, "conflicting_duplicates")["summary"]["flagged"] == 24  # what is wrong is found
    # The probabilities cached for the next audit are finite; NaN ones an older curato cached are recomputed.
    store = Workspace.open(tmp_path / "ws").features
    name = next(name for name in store.names() if name.startswith("oof-probs"))
    cached = store.load(name)
    assert np.isfinite(np.asarray(cached.vectors)).all()
    store.save(name, cached.ids.tolist(), cached.hashes.tolist(), np.full(cached.vectors.shape, np.nan), cached.meta)
    assert _finding(_audit_json(tmp_path / "ws", tmp_path), "label_issues")["summary"]["checked"] is False
    assert np.isfinite(np.asarray(store.load(name).vectors)).all()


def test_audit_of_an_unlabelled_workspace_completes(tmp_path: Path) -> None:
    folder = tmp_path / "loose"
    folder.mkdir()
    for index, name in enumerate(["astronaut", "chelsea", "coffee", "camera", "rocket"] * 4):
        Image.fromarray(np.roll(photo(name)[::6, ::6], index * 3, axis=1)).save(folder / f"{index:02d}.png")
    assert run("ingest", folder, "-w", tmp_path / "ws", "--workers", "1").returncode == 0
    document = _audit_json(tmp_path / "ws", tmp_path)
    assert "not checked" in _finding(document, "label_issues")["message"]
    assert "not checked" in _finding(document, "shortcuts")["message"]


# -- 5. Only regular files are read ------------------------------------------------------------------------------

NON_FILES_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a runaway read fails here, not the machine
    from curato.features.scan import scan_images
    from curato.imageio import load_rgb, read_raw
    errors = {}
    for uri in sys.argv[1:]:
        for name, read in (("read_raw", read_raw), ("load_rgb", load_rgb)):
            try:
                read(uri)
                errors[f"{name} {uri}"] = None
            except Exception as error:
                errors[f"{name} {uri}"] = f"{type(error).__name__}: {error}"
    table = scan_images(sys.argv[1:], workers=1)
    errors["scan"] = [None if e is None else str(e) for e in table.error]
    print(json.dumps(errors))
""")


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="needs FIFOs and /dev/zero")
def test_a_fifo_a_device_or_a_directory_named_as_an_image_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    uris = [str(fifo), "/dev/zero", str(folder)]
    try:
        done = subprocess.run([sys.executable, "-c", NON_FILES_SCRIPT, *uris], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO or /dev/zero as an image hung")
    assert done.returncode == 0, done.stderr[-2000:]
    errors = json.loads(done.stdout)
    for uri, kind in zip(uris, ("named pipe", "character device", "directory"), strict=True):
        for name in ("read_raw", "load_rgb"):
            assert errors[f"{name} {uri}"] == (f"UnreadableImageError: {uri}: is a {kind}"
                                               f"{' (FIFO)' if kind == 'named pipe' else ''}, not a regular file; "
                                               "only image files are read")
    assert all(error.startswith(uri) and "not a regular file" in error
               for uri, error in zip(uris, errors["scan"], strict=True))


def test_a_regular_file_is_read_whole_and_a_symlink_to_one_is_followed(tmp_path: Path) -> None:
    path = tmp_path / "coffee.png"
    Image.fromarray(photo("coffee")).save(path)
    link = tmp_path / "link.png"
    link.symlink_to(path)
    assert read_raw(str(path)).data == path.read_bytes() == read_raw(str(link)).data
    with pytest.raises(UnreadableImageError, match="cannot read file"):
        read_raw(str(tmp_path / "missing.png"))
