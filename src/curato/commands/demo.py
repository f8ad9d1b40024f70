"""``curato demo``: a real dataset, subsampled to run in about a minute, through the whole pipeline.

Fashion-MNIST (Debian's ``dataset-fashion-mnist``) when installed, else scikit-learn's digits.
The subsample is written as image class folders so the demo also exercises file ingest, with one
planted shortcut (one class mostly stored as JPEG, see :func:`write_demo_images`).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class DemoResult:
    """Where the demo wrote its report and what it found, in plain words."""

    workspace: Path
    report_path: Path
    headlines: list[str]
    dataset: str


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
    """Write a stratified subsample as ``root/{train,test}/<class>/<index>.png``; returns the dataset name.

    One realistic shortcut is planted, and the audit must catch it: the images of one class (Bag,
    or digit 8) "came from a second supplier" whose pipeline saves JPEG (quality 80), so nine in ten
    of them are ``.jpg`` files while every other class is PNG. A network could learn "JPEG -> Bag".
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
        for index, supplied in zip(chosen, second_supplier, strict=True):
            klass = class_names[int(labels[index])]
            folder = root / split / klass.replace("/", "-")
            jpeg = supplied and klass in SHORTCUT_CLASSES
            path = folder / f"{split}-{index:05d}.{'jpg' if jpeg else 'png'}"
            if not path.exists():
                folder.mkdir(parents=True, exist_ok=True)
                options = {"quality": SHORTCUT_JPEG_QUALITY} if jpeg else {}
                Image.fromarray(images[index]).save(path, **options)
    return name


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
    """Build (or refresh) the demo workspace, run every check, write the report."""
    root = Path(workspace_dir)
    data = root / "data"
    dataset = write_demo_images(data, n_train=n_train, n_test=max(1, n_train // 3))
    workspace = Workspace.create(root)
    ingest(workspace, data, format="imagefolder", source_name=dataset, progress=progress)
    written: dict[str, Path] = {}
    result = run_audit(workspace, progress=progress, on_result=lambda done: written.update(
        write_audit_outputs(workspace, done, title=f"{dataset} demo")))
    return DemoResult(workspace=workspace.root, report_path=written["report"],
                      headlines=headlines(workspace, result.findings), dataset=dataset)
