"""Shared fixtures: small real datasets written to disk the way users have them."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curato.imageio import read_idx
from curato.ingest.readers import FASHION_MNIST_CLASSES

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``curato ARGS`` in this process (typer's CliRunner): exit code, stdout and stderr as a user sees them.

    Fast enough for every CLI test; tests/test_cli.py keeps a few real-process smoke tests.
    """
    import typer.testing
    from typer.testing import CliRunner

    from curato import cli

    # typer rebuilds the click command tree from the app on every invoke (~0.05 s of CPU, hundreds of calls in
    # the suite): build it once per app; the tree is not changed by running it
    if not hasattr(typer.testing._get_command, "cache_info"):
        typer.testing._get_command = functools.cache(typer.testing._get_command)
    cli.console.width = cli.errors.width = 200  # one table row per line, whatever the terminal
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(cli.app, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a crash is a failing test, not an exit code to compare
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The first 2,000 Fashion-MNIST training images and labels (Debian's dataset-fashion-mnist)."""
    images_path = FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz"
    if not images_path.exists():
        pytest.fail("Fashion-MNIST is missing: run `make system` (apt-get install dataset-fashion-mnist)")
    images = read_idx(images_path)[:2000]
    labels = read_idx(FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz")[:2000]
    return np.array(images), np.array(labels)


def photo(name: str) -> np.ndarray:
    """An offline scikit-image photo as RGB uint8."""
    import skimage.data

    array = getattr(skimage.data, name)()
    return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array[..., :3]


def write_fashion_folder(root: Path, fashion_mnist: tuple[np.ndarray, np.ndarray]) -> Path:
    """``root/train/<class>/*.png`` and ``root/test/<class>/*.png`` from real Fashion-MNIST (20 + 6 per class,
    classes T-shirt/top, Trouser, Sneaker); returns ``root``."""
    images, labels = fashion_mnist
    for split, start, per_class in (("train", 0, 20), ("test", 1000, 6)):
        for klass in (0, 1, 7):
            picks = np.flatnonzero(labels[start:] == klass)[:per_class] + start
            folder = root / split / FASHION_MNIST_CLASSES[klass].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for index in picks:
                Image.fromarray(images[index]).save(folder / f"{index:05d}.png")
    return root


@pytest.fixture()
def image_folder(tmp_path: Path, fashion_mnist: tuple[np.ndarray, np.ndarray]) -> Path:
    """:func:`write_fashion_folder` plus two real photos as JPEG in the train split."""
    root = write_fashion_folder(tmp_path / "folder", fashion_mnist)
    Image.fromarray(photo("chelsea")).save(root / "train" / "Trouser" / "cat.jpg", quality=90)
    Image.fromarray(photo("coffee")).save(root / "train" / "Trouser" / "coffee.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def postgres_url() -> str | None:
    """A PostgreSQL URL from CURATO_TEST_POSTGRES_URL (CI starts a server); None runs SQLite only."""
    return os.environ.get("CURATO_TEST_POSTGRES_URL")


class InterruptAfter:
    """A Progress that presses Ctrl-C once ``limit`` units of the stage starting with ``prefix`` are done."""

    def __init__(self, prefix: str, limit: int) -> None:
        self.prefix, self.limit, self.seen, self.active = prefix, limit, 0, False

    def stage(self, description: str, total: int) -> None:
        self.active = description.startswith(self.prefix)

    def advance(self, amount: int = 1) -> None:
        if self.active:
            self.seen += amount
            if self.seen >= self.limit:
                raise KeyboardInterrupt
