"""kill -9 at each stage (ingest, embed, audit), then the same command again: the workspace ends exactly as a run
that was never interrupted (same samples, properties, thumbnails, embeddings, findings). Real processes, real
signals, bounded waits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curato.commands.ingest import _WINDOW_CHUNKS, ingest
from curato.featurestore import PROPERTIES, THUMBNAILS
from curato.imageio import read_idx
from curato.workspace import Workspace
from tests.conftest import FASHION_MNIST_DIR

CURATO = [sys.executable, "-m", "curato"]
# Ingest scans in chunks of 4,096 images: 5,000 make two, so the ingest kill (once the first chunk's parts are
# on disk) lands while the second chunk of 904 scans; the embed stage writes five chunks of 1,024.
IMAGES = 5000
CHECKS = "label_issues,duplicates,outliers"
# The audit reads the embeddings the embed stage wrote (without --embedder it would choose and compute its own,
# efficientnet-lite0-112, which took most of this test's time); its kill then lands in the out-of-fold heads,
# neighbours and checks.
AUDIT = ["--checks", CHECKS, "--embedder", "pixels"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """5,000 real Fashion-MNIST images in class folders: enough for every stage to run a few seconds."""
    images = read_idx(FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz")[:IMAGES]
    labels = read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz")[:IMAGES]
    root = tmp_path_factory.mktemp("kill") / "data"
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = root / f"class{label}" / f"{index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
    return root


def curato(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([*CURATO, *map(str, args)], capture_output=True, text=True, timeout=600)


def killed_midway(args: list[object], started: Callable[[], bool], limit: float = 120.0) -> bool:
    """Start ``curato ARGS``, SIGKILL it as soon as ``started()`` holds; True when it was killed mid-run."""
    process = subprocess.Popen([*CURATO, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if started():
                os.kill(process.pid, signal.SIGKILL)
                return process.wait(timeout=60) == -signal.SIGKILL
            time.sleep(0.02)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)


def has_parts(ws: Path, name: str) -> Callable[[], bool]:
    return lambda: any((ws / "features" / name / "parts").glob("*")) if (ws / "features" / name).exists() else False


def state(ws: Path) -> dict:
    """What a run leaves: every sample with its hash and label, and every stored feature row."""
    workspace = Workspace.open(ws)
    table = workspace.catalog.samples(("sample_id", "content_hash", "readable"))
    features = {}
    for name in (PROPERTIES, THUMBNAILS, "pixels"):
        if workspace.features.has(name):
            stored = workspace.features.load(name)
            order = np.argsort(stored.ids)
            features[name] = (stored.ids[order].tolist(), np.asarray(stored.vectors)[order])
    return {"samples": sorted(zip(*(table[c].tolist() for c in table), strict=True)),
            "labels": sorted(workspace.catalog.current_labels().items()), "features": features}


def findings(ws: Path) -> list:
    document = json.loads((ws / "reports" / "audit-latest.json").read_text())
    return [(f["check"], f["severity"], [(row["sample_id"], row["score"]) for row in f["issues"]])
            for f in document["checks"]]


@pytest.mark.slow
def test_kill_9_at_each_stage_then_rerun_equals_an_uninterrupted_run(folder, tmp_path):
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    for args in (["ingest", folder, "-w", clean], ["embed", "-w", clean, "--embedder", "pixels"],
                 ["audit", "-w", clean, *AUDIT]):
        assert curato(*args).returncode == 0
    kills = 0
    # ingest: killed once the first chunk of properties is on disk
    kills += killed_midway(["ingest", folder, "-w", crashed, "--workers", "1"], has_parts(crashed, PROPERTIES))
    assert curato("ingest", folder, "-w", crashed).returncode == 0
    # embed: killed once the first chunk of vectors is on disk
    kills += killed_midway(["embed", "-w", crashed, "--embedder", "pixels"], has_parts(crashed, "pixels"))
    assert curato("embed", "-w", crashed, "--embedder", "pixels").returncode == 0
    # audit: killed while its run is recorded as running (out-of-fold heads, neighbours, checks)
    def auditing() -> bool:
        runs = Workspace.open(crashed).catalog.runs("audit") if (crashed / "catalog.sqlite").exists() else []
        return bool(runs) and runs[-1]["status"] == "running"

    kills += killed_midway(["audit", "-w", crashed, *AUDIT], auditing)
    assert kills == 3, "every stage must really have been killed mid-run"
    assert curato("audit", "-w", crashed, *AUDIT).returncode == 0
    a, b = state(clean), state(crashed)
    assert a["samples"] == b["samples"] and a["labels"] == b["labels"]
    for name, (ids, vectors) in a["features"].items():
        assert b["features"][name][0] == ids
        np.testing.assert_array_equal(b["features"][name][1], vectors)
    assert findings(clean) == findings(crashed)
    statuses = [run["status"] for run in Workspace.open(crashed).catalog.runs()]
    assert statuses.count("interrupted") >= 3 and "running" not in statuses
    assert curato("check", "-w", crashed).returncode == 0


WINDOW_CHUNK = 2  # chunk size for the windowed kill: windows of 2 * 16 = 32 images
IMAGES_KILLED = 160  # five windows
# The child sleeps 50 ms after each part it writes, so that a fast machine cannot finish all five windows between
# two looks of the parent (every 10 ms): the kill must fall mid-run wherever the test runs.
INGEST = ("import sys, time; from curato.commands.ingest import ingest; from curato.featurestore import FeatureStore; "
          "from curato.workspace import Workspace; write = FeatureStore.write_part; "
          "FeatureStore.write_part = lambda *a, **k: (write(*a, **k), time.sleep(0.05))[0]; "
          "ingest(Workspace.create(sys.argv[1]), sys.argv[2], workers=1, chunk_size=int(sys.argv[3]))")


def test_kill_9_between_ingest_windows_then_rerun_equals_an_uninterrupted_run(fashion_mnist, tmp_path):
    """An ingest of 160 images in chunks of 2 (windows of 32) killed once its second window is writing: the first
    window's samples are committed and not rescanned, and the rerun ends as one uninterrupted ingest."""
    images, labels = fashion_mnist
    root = tmp_path / "data"
    for index in range(IMAGES_KILLED):
        path = root / f"class{labels[index]}" / f"{index:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index]).save(path)
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    script = [sys.executable, "-c", INGEST]
    ingest(Workspace.create(clean), root, workers=1)  # uninterrupted, one window
    parts = crashed / "features" / PROPERTIES / "parts"
    window_chunks = _WINDOW_CHUNKS
    process = subprocess.Popen([*script, str(crashed), str(root), str(WINDOW_CHUNK)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    killed = False
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if parts.exists() and len(list(parts.glob("part-*.npz"))) > window_chunks:  # into the second window
                os.kill(process.pid, signal.SIGKILL)
                killed = process.wait(timeout=60) == -signal.SIGKILL
                break
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
    assert killed, "the ingest must really have been killed mid-run"
    committed = {sid for sid, (_, digest, _) in Workspace.open(crashed).catalog.known_samples().items() if digest}
    assert WINDOW_CHUNK * window_chunks <= len(committed) < IMAGES_KILLED  # the first window is in, the run is not done
    resumed = ingest(Workspace.open(crashed), root, workers=1, chunk_size=WINDOW_CHUNK)
    assert resumed.samples == IMAGES_KILLED and resumed.new == IMAGES_KILLED - len(committed)
    assert resumed.scanned == IMAGES_KILLED - len(committed)  # committed rows are not rescanned; the killed chunk's are
    a, b = state(clean), state(crashed)
    assert a["samples"] == b["samples"] and a["labels"] == b["labels"]
    assert set(a["features"]) == set(b["features"]) == {PROPERTIES, THUMBNAILS}
    for name, (ids, vectors) in a["features"].items():
        assert b["features"][name][0] == ids
        np.testing.assert_array_equal(b["features"][name][1], vectors)
    assert Workspace.open(crashed).features.pending_parts(PROPERTIES) == []
