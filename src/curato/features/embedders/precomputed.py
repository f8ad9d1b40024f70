"""``precomputed:PATH``: vectors the user already has, looked up by sample id.

Two layouts:

* ``vectors.npy`` (2-D, n x d) with ``vectors.ids.txt`` beside it: one sample id per line, line i
  naming row i;
* ``vectors.npz`` holding ``ids`` (n strings or integers) and ``embeddings`` (n x d).

Everything is checked when the embedder is built, and every problem is an InputError naming the
file: missing files, a non-2-D or non-numeric array, NaN or infinite values (with the first bad
row's id), a row count that differs from the id count, empty or duplicate ids.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curato.errors import InputError
from curato.features.embedders._common import file_sha256
from curato.features.embedders.base import PrecomputedEmbedder

# Rows checked for NaN/inf per step, so a memory-mapped file larger than RAM can be validated.
_CHECK_ROWS = 65536


def ids_path_for(npy_path: Path) -> Path:
    """``vectors.npy`` -> ``vectors.ids.txt``."""
    return npy_path.with_name(npy_path.name[: -len(".npy")] + ".ids.txt")


class NpyEmbeddings(PrecomputedEmbedder):
    """The user's vectors from a ``.npy`` + ``.ids.txt`` pair or a ``.npz`` with ids and embeddings."""

    def __init__(self, path: str | Path) -> None:
        """Load and validate ``path`` now, so a bad file fails before any work is done."""
        self.path = Path(path).expanduser()
        self.name = f"precomputed:{path}"
        if self.path.suffix not in (".npy", ".npz"):
            raise InputError(
                f"{self.path}: precomputed vectors must be a .npy (with .ids.txt) or a .npz file"
            )
        if not self.path.is_file():
            raise InputError(
                f"{self.path}: no such file (precomputed:PATH must name an existing .npy or .npz)"
            )
        if self.path.suffix == ".npy":
            self.ids_path: Path | None = ids_path_for(self.path)
            vectors, ids = self._read_npy(self.ids_path)
        else:
            self.ids_path = None
            vectors, ids = self._read_npz()
        self._vectors = vectors
        self._ids = ids
        self._check_values()
        self._row = self._index(ids)

    @property
    def dim(self) -> int:
        """Length of each stored vector."""
        return int(self._vectors.shape[1])

    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    def settings(self) -> dict[str, Any]:
        """The files (resolved paths and sha256), row count and dimension."""
        settings: dict[str, Any] = {
            "embedder": "precomputed",
            "path": str(self.path.resolve()),
            "sha256": file_sha256(self.path),
            "rows": len(self),
            "dim": self.dim,
        }
        if self.ids_path is not None:
            settings["ids_path"] = str(self.ids_path.resolve())
            settings["ids_sha256"] = file_sha256(self.ids_path)
        return settings

    def lookup(self, sample_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(float32 vectors of the ids found, in the order of ``sample_ids``; bool mask of found)."""
        rows = np.array([self._row.get(str(sample_id), -1) for sample_id in sample_ids], dtype=np.int64)
        found = rows >= 0
        # Sorted, unique row reads are fast on a memory-mapped file; then restore the asked order.
        wanted = rows[found]
        unique, inverse = np.unique(wanted, return_inverse=True)
        vectors = np.asarray(self._vectors[unique], dtype=np.float32)[inverse]
        return vectors.reshape(len(wanted), self.dim), found

    # -- reading and checking -------------------------------------------------------------------

    def _read_npy(self, ids_path: Path) -> tuple[np.ndarray, list[str]]:
        try:
            # Memory-mapped: the vectors may be larger than RAM; lookups read only the rows asked.
            vectors = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            raise InputError(f"{self.path}: not a readable .npy array ({error})") from error
        if not ids_path.is_file():
            raise InputError(
                f"{self.path}: the sample ids file {ids_path.name} is missing; write one id per line, "
                "in row order, next to the .npy"
            )
        try:
            text = ids_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"{ids_path}: cannot read sample ids ({error})") from error
        ids = text.splitlines()
        while ids and ids[-1] == "":  # a trailing blank line is an editor artefact, not an id
            ids.pop()
        self._check_array(vectors, self.path)
        if len(ids) != vectors.shape[0]:
            raise InputError(
                f"{self.path}: {vectors.shape[0]} rows but {ids_path.name} has {len(ids)} ids; "
                "they must match line for row"
            )
        return vectors, ids

    def _read_npz(self) -> tuple[np.ndarray, list[str]]:
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                missing = {"ids", "embeddings"} - set(archive.files)
                if missing:
                    raise InputError(
                        f"{self.path}: missing array(s) {', '.join(sorted(missing))}; "
                        f"a .npz needs 'ids' and 'embeddings' (it has: {', '.join(archive.files) or 'none'})"
                    )
                vectors = archive["embeddings"]
                raw_ids = archive["ids"]
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            # allow_pickle=False turns object arrays (e.g. ids saved as Python objects) into ValueError
            raise InputError(
                f"{self.path}: not a readable .npz of plain arrays ({error}); save ids as a string array, "
                "e.g. np.savez(path, ids=np.array(ids, dtype=str), embeddings=vectors)"
            ) from error
        self._check_array(vectors, self.path, what="embeddings")
        if raw_ids.ndim != 1 or raw_ids.dtype.kind not in "UiuS":
            raise InputError(
                f"{self.path}: 'ids' must be a 1-D array of strings or integers, got {raw_ids.dtype} "
                f"with shape {raw_ids.shape}"
            )
        ids = [value.decode() if isinstance(value, bytes) else str(value) for value in raw_ids.tolist()]
        if len(ids) != vectors.shape[0]:
            raise InputError(
                f"{self.path}: 'embeddings' has {vectors.shape[0]} rows but 'ids' has {len(ids)} entries"
            )
        return vectors, ids

    @staticmethod
    def _check_array(vectors: np.ndarray, path: Path, what: str = "array") -> None:
        if vectors.ndim != 2:
            raise InputError(
                f"{path}: {what} must be 2-D (one row per sample), got shape {vectors.shape}"
            )
        if vectors.dtype.kind not in "fiu":
            raise InputError(f"{path}: {what} must be numeric, got dtype {vectors.dtype}")
        if vectors.shape[0] == 0 or vectors.shape[1] == 0:
            raise InputError(f"{path}: {what} is empty (shape {vectors.shape})")

    def _check_values(self) -> None:
        if self._vectors.dtype.kind != "f":
            return
        for start in range(0, len(self), _CHECK_ROWS):
            block = np.asarray(self._vectors[start:start + _CHECK_ROWS])
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                row = start + int(np.argmax(bad))
                raise InputError(
                    f"{self.path}: row {row} (id {self._ids[row]!r}) contains NaN or infinite values"
                )

    def _index(self, ids: list[str]) -> dict[str, int]:
        row: dict[str, int] = {}
        source = self.ids_path or self.path
        for number, sample_id in enumerate(ids):
            if not sample_id.strip():
                raise InputError(f"{source}: id {number + 1} is empty; every row needs a sample id")
            if sample_id in row:
                raise InputError(
                    f"{source}: sample id {sample_id!r} appears twice (entries {row[sample_id] + 1} "
                    f"and {number + 1})"
                )
            row[sample_id] = number
        return row
