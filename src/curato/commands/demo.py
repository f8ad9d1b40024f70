"""``curato demo``: a real dataset, subsampled to run in about a minute, through the whole pipeline.

Fashion-MNIST (Debian's ``dataset-fashion-mnist``) when installed, else scikit-learn's digits. The subsample
is written as image folders, the way people keep their data, from two sources that shot the same things
differently, with a pool of images nobody has labelled yet, so that every curato command has something to
show. What is planted (see :func:`write_demo_images`) is what ``audit``, ``bias`` and ``select`` are
expected to find; the demo ends by saying so, and by printing the next commands to try.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from curato.commands.audit import run_audit, write_audit_outputs
from curato.commands.info import workspace_overview
from curato.commands.ingest import ingest
from curato.imageio import read_idx
from curato.ingest.readers import FASHION_MNIST_CLASSES
from curato.progress import SILENT, Progress
from curato.workspace import Workspace

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SEED = 0
# The planted shortcut (see write_demo_images): this class is mostly stored as JPEG.
SHORTCUT_CLASSES = frozenset({"Bag", "8"})
SHORTCUT_SHARE = 0.9
SHORTCUT_JPEG_QUALITY = 80
# Two sources: the second one's camera lifts the blacks and flattens the contrast a little
# (pixel -> LIFT + GAIN x pixel), in every class alike: a capture difference, not a shortcut.
SOURCES = ("studio", "phone")
SECOND_SOURCE_SHARE = 1 / 3
SECOND_SOURCE_LIFT = 24
SECOND_SOURCE_GAIN = 0.85
# Training images written without a class folder: the unlabelled pool that `curato select` picks from.
POOL_SHARE = 0.2


@dataclass
class DemoResult:
    """Where the demo wrote its report, what it found and what was planted, in plain words; what to run next."""

    workspace: Path
    report_path: Path
    headlines: list[str]
    dataset: str
    planted: list[str] = field(default_factory=list)
    next_commands: list[tuple[str, str]] = field(default_factory=list)  # (command, what it shows)


def _fashion_mnist() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]] | None:
    files = {split: (FASHION_MNIST_DIR / f"{stem}-images-idx3-ubyte.gz",
                     FASHION_MNIST_DIR / f"{stem}-labels-idx1-ubyte.gz")
             for split, stem in (("train", "train"), ("test", "t10k"))}
    if not all(path.exists() for pair in files.values() for path in pair):
        return None
    arrays = {split: (read_idx(images), read_idx(labels)) for split, (images, labels) in files.items()}
    return arrays, FASHION_MNIST_CLASSES


def _digits() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images / 16.0 * 255).astype(np.uint8)
    order = np.random.default_rng(SEED).permutation(len(images))
    cut = int(len(order) * 0.75)
    return ({"train": (images[order[:cut]], digits.target[order[:cut]]),
             "test": (images[order[cut:]], digits.target[order[cut:]])}, tuple(str(d) for d in range(10)))


def write_demo_images(root: Path, n_train: int, n_test: int) -> str:
    """Write a stratified subsample as ``root/<source>/{train,test}/<class>/<index>.png``; returns the dataset name.

    Planted, for the commands to find:

    - a shortcut: the images of one class (Bag, or digit 8) "came from a supplier" whose pipeline saves JPEG
      (quality 80), so nine in ten of them are ``.jpg`` files while every other class is PNG; a network could
      learn "JPEG -> Bag" (``audit``: shortcuts);
    - two sources: a third of the images of every class come from a second source (``phone``) whose camera
      lifts the blacks and flattens the contrast (``bias --by source`` tells the sources apart);
    - an unlabelled pool: a fifth of the training images lie loose in ``train/``, with no class folder
      (``select`` picks which to label first, ``route`` which the model may label).

    The duplicates, leaks, label errors and outliers the audit reports are the dataset's own.
    Files that exist are left alone, so a second run re-ingests nothing.
    """
    loaded = _fashion_mnist()
    name = "Fashion-MNIST"
    if loaded is None:
        loaded, name = _digits(), "scikit-learn digits"
    splits, class_names = loaded
    rng = np.random.default_rng(SEED)
    for split, wanted in (("train", n_train), ("test", n_test)):
        images, labels = splits[split]
        chosen = np.sort(rng.choice(len(images), size=min(wanted, len(images)), replace=False))
        second_supplier = rng.random(len(chosen)) < SHORTCUT_SHARE
        second_source = rng.random(len(chosen)) < SECOND_SOURCE_SHARE
        pooled = rng.random(len(chosen)) < (POOL_SHARE if split == "train" else 0.0)
        for index, supplied, phone, unlabelled in zip(chosen, second_supplier, second_source, pooled, strict=True):
            klass = class_names[int(labels[index])]
            folder = root / SOURCES[int(phone)] / split
            if not unlabelled:
                folder = folder / klass.replace("/", "-")
            jpeg = supplied and klass in SHORTCUT_CLASSES
            path = folder / f"{split}-{index:05d}.{'jpg' if jpeg else 'png'}"
            if not path.exists():
                folder.mkdir(parents=True, exist_ok=True)
                pixels = images[index]
                if phone:
                    lifted = SECOND_SOURCE_LIFT + SECOND_SOURCE_GAIN * pixels.astype(np.float64)
                    pixels = np.clip(np.round(lifted), 0, 255).astype(np.uint8)
                options = {"quality": SHORTCUT_JPEG_QUALITY} if jpeg else {}
                Image.fromarray(pixels).save(path, **options)
    return name


def planted(dataset: str) -> list[str]:
    """What the demo planted, in plain words (see :func:`write_demo_images`)."""
    klass = "Bag" if dataset == "Fashion-MNIST" else "8"
    return [f"a shortcut: {SHORTCUT_SHARE:.0%} of the '{klass}' images are JPEG files, every other class is PNG "
            "(found by the audit's shortcuts check)",
            f"two sources: '{SOURCES[1]}' ({SECOND_SOURCE_SHARE:.0%} of every class) shoots with lifted blacks and "
            f"flatter contrast than '{SOURCES[0]}' (curato bias --by source)",
            f"an unlabelled pool: {POOL_SHARE:.0%} of the training images have no class folder (curato select)",
            f"duplicates, train/test leaks, label errors and outliers: {dataset}'s own, not planted"]


def next_commands(workspace: Path) -> list[tuple[str, str]]:
    """The commands to try next on the demo workspace, each with what it shows."""
    ws = str(workspace)
    return [(f"curato bias -w {ws} --by source",
             "can a model tell the two sources apart, and does a model trained on one work on the other?"),
            (f"curato select -w {ws} --budget 50", "which 50 unlabelled images to label first, and why"),
            (f"curato size -w {ws} --target 0.85", "how many labels reach 85% accuracy, and what more labels buy"),
            (f"curato export clean.csv -w {ws} --drop-duplicates --relabel",
             "a cleaned label file: one copy per duplicate group, suspected label errors relabelled"),
            (f"curato users add me --role admin -w {ws}; curato serve -w {ws}",
             "review the findings and label the pool in the browser")]


def headlines(workspace: Workspace, findings: list) -> list[str]:
    """The three most important things to tell the user, in plain words."""
    # A shortcut is what a network would learn instead of the object: it leads when found.
    ordered = sorted(findings, key=lambda f: (f.check != "shortcuts", -f.rank))
    lines = [f"{f.check}: {f.message}" for f in ordered if f.severity != "none"][:3]
    overview = workspace_overview(workspace)
    rows = overview["class_split"]["rows"]
    if len(lines) < 3 and rows:
        totals = {label: sum(row.values()) for label, row in rows.items()}
        ratio = max(totals.values()) / max(1, min(totals.values()))
        lines.append(f"{overview['samples']} images in {len(rows)} classes across splits "
                     f"{', '.join(str(s) for s in overview['splits'])}; largest/smallest class = {ratio:.2f}")
    clean = [f for f in findings if f.severity == "none"]
    if len(lines) < 3 and clean:
        lines.append("no issues found by: " + ", ".join(f.check for f in clean))
    if len(lines) < 3:
        features = ", ".join(f"{f['name']} ({f['dim']}-d)" for f in overview["features"])
        lines.append(f"features computed: {features}")
    return lines[:3]


def run_demo(workspace_dir: str | Path = "curato-demo", *, n_train: int = 3000, progress: Progress = SILENT
             ) -> DemoResult:
    """Build (or refresh) the demo workspace from its two sources, run every check, write the report."""
    root = Path(workspace_dir)
    data = root / "data"
    dataset = write_demo_images(data, n_train=n_train, n_test=max(1, n_train // 3))
    workspace = Workspace.create(root)
    for source in SOURCES:
        ingest(workspace, data / source, format="imagefolder", source_name=source, progress=progress)
    written: dict[str, Path] = {}
    result = run_audit(workspace, progress=progress, on_result=lambda done: written.update(
        write_audit_outputs(workspace, done, title=f"{dataset} demo")))
    return DemoResult(workspace=workspace.root, report_path=written["report"],
                      headlines=headlines(workspace, result.findings), dataset=dataset, planted=planted(dataset),
                      next_commands=next_commands(root))
